"""Review rvapi: a controller that lost the leader row and does not know yet (paused past its lease; it notices
within a third of one) still commits the topic writes its API takes. The expansion workflow's new partitions are
fenced (`check_leader`, docs/DESIGN.md §3.6: test_leadership.test_a_controller_that_lost_the_row_adds_no_partition);
the same partitions added by `PUT /v1/topics/{name}` or a proxy's CreatePartitions/CreateTopics are not, so two
controllers place segments of one topic at once, each under its own process's write lock."""

from __future__ import annotations

from controller.test_leadership import _lost_row


def _two_clusters_and_a_topic(api) -> None:
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()


def test_a_controller_that_lost_the_row_adds_no_partition_through_put_topic(make_api):
    api = make_api()
    _two_clusters_and_a_topic(api)
    api.controller.leadership, _new = _lost_row(api.controller)
    resp = api.put("/v1/topics/t", json={"partitions": 4, "placement": "blocks"})
    grown = api.controller.get_topic("t")["partitions"]
    assert (resp.status_code, grown) == (503, 2), resp.text


def test_a_controller_that_lost_the_row_adds_no_partition_a_proxy_forwards(make_api):
    api = make_api()
    _two_clusters_and_a_topic(api)
    api.controller.leadership, _new = _lost_row(api.controller)
    resp = api.post("/v1/admin/topics/t/partitions", json={"count": 4})
    grown = api.controller.get_topic("t")["partitions"]
    assert (resp.status_code, grown) == (503, 2), resp.text


def test_a_controller_that_lost_the_row_creates_no_topic(make_api):
    api = make_api()
    _two_clusters_and_a_topic(api)
    api.controller.leadership, _new = _lost_row(api.controller)
    resp = api.post("/v1/admin/topics", json={"name": "fresh", "partitions": 3})
    created = [t["name"] for t in api.controller.list_topics()]
    assert resp.status_code == 503 and "fresh" not in created, (resp.status_code, created)
