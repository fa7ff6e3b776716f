"""Admin API and view distribution against a real database; physical topic creation is only recorded here
(tests/controller/test_kafka_integration.py does it on real brokers)."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from fedkafka.controller.service import Renewal
from fedkafka.nameservice.resolver import ClientRouting


def test_every_route_needs_the_token(make_api):
    api = make_api()
    for method, path in [("GET", "/v1/view"), ("GET", "/v1/clusters"), ("PUT", "/v1/clusters/c1"),
                         ("GET", "/v1/topics"), ("POST", "/v1/proxies"), ("GET", "/v1/status"),
                         ("POST", "/v1/producer-id-blocks"), ("GET", "/v1/proxies?client_id=x")]:
        assert api.request(method, path, headers={"Authorization": ""}).status_code == 401, path
        assert api.request(method, path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
    assert api.get("/metrics", headers={"Authorization": ""}).status_code == 200


def test_article_layout_creates_physical_and_shadow_topics_and_bumps_the_view(make_api):
    api = make_api()
    kafka = api.kafka
    v0 = api.get("/v1/view").json()["version"]
    assert api.put("/v1/clusters/c1", json={"bootstrap": "127.0.0.1:1"}).json()["changed"]
    assert api.put("/v1/clusters/c2", json={"bootstrap": "127.0.0.1:2"}).json()["changed"]
    v1 = api.get("/v1/view").json()["version"]
    assert v1 == v0 + 2
    res = api.put("/v1/topics/demo", json={"partitions": 8, "placement": "blocks"})
    assert res.status_code == 200, res.text
    assert kafka.created == {("c1", "demo"): 4, ("c2", "demo"): 4, ("c1", "__fedkafka-shadow-demo"): 8}
    topic = api.get("/v1/topics/demo").json()
    assert topic["partitions"] == 8
    assert [(c["segments"][0]["cluster"], c["segments"][0]["partition"]) for c in topic["chains"]] == \
        [("c1", 0), ("c1", 1), ("c1", 2), ("c1", 3), ("c2", 0), ("c2", 1), ("c2", 2), ("c2", 3)]
    view = api.get("/v1/view").json()
    assert view["version"] == v1 + 1 and view["coordination_cluster"] == "c1"
    # idempotent: the same request changes nothing, not even the version
    assert api.put("/v1/topics/demo", json={"partitions": 8, "placement": "blocks"}).json()["changed"] is False
    assert api.put("/v1/clusters/c1", json={"bootstrap": "127.0.0.1:1"}).json()["changed"] is False
    assert api.get("/v1/view").json()["version"] == v1 + 1


def test_growing_a_topic_adds_partitions_and_shrinking_is_refused(make_api):
    api = make_api()
    kafka = api.kafka
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    api.put("/v1/clusters/c2", json={"bootstrap": "h:2"})
    api.put("/v1/topics/t", json={"partitions": 4, "placement": "balanced"})
    res = api.put("/v1/topics/t", json={"partitions": 6, "placement": "balanced"})
    assert res.json()["changed"] and res.json()["topic"]["partitions"] == 6
    slots = [(c["segments"][0]["cluster"], c["segments"][0]["partition"]) for c in res.json()["topic"]["chains"]]
    assert len(set(slots)) == 6 and kafka.created[("c1", "t")] + kafka.created[("c2", "t")] == 6
    res = api.put("/v1/topics/t", json={"partitions": 3})
    assert res.status_code == 409 and "only grow" in res.json()["detail"]
    assert api.get("/v1/topics/t").json()["partitions"] == 6


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/v1/topics/bad name", {"partitions": 1}, 422, "topic name"),
    ("/v1/topics/__x", {"partitions": 1}, 422, "reserved"),
    ("/v1/topics/t", {"partitions": 0}, 422, "partitions must be between"),
    ("/v1/topics/t", {"partitions": "many"}, 422, "partitions"),
    ("/v1/topics/t", {"partitions": 2, "placement": "zigzag"}, 422, "placement"),
    ("/v1/topics/t", {"partitions": 2, "config": {"retention.ms": 5}}, 422, "config"),
    ("/v1/clusters/c 1", {"bootstrap": "h:1"}, 422, "cluster id"),
    ("/v1/clusters/c9", {"bootstrap": "no-port"}, 422, "HOST:PORT"),
    ("/v1/clusters/c9", {}, 422, "bootstrap"),
    ("/v1/client-rules/r", {"match": "regex", "pattern": "a", "pool": "p"}, 422, "exact or prefix"),
])
def test_bad_input_is_refused_with_a_message_and_writes_nothing(make_api, path, body, status, words):
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    before = (api.get("/v1/view").json(), api.get("/v1/client-rules").json())
    res = api.put(path, json=body)
    assert res.status_code == status, res.text
    assert words in res.json()["detail"]
    assert (api.get("/v1/view").json(), api.get("/v1/client-rules").json()) == before


def test_kafka_refusal_or_dead_cluster_leaves_no_topic(make_api):
    api = make_api()
    kafka = api.kafka
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    kafka.refuse_config = True
    res = api.put("/v1/topics/t", json={"partitions": 2, "config": {"no.such.config": "1"}})
    assert res.status_code == 422 and "no.such.config" in res.json()["detail"]
    kafka.refuse_config = False
    kafka.down.add("c1")
    res = api.put("/v1/topics/t", json={"partitions": 2})
    assert res.status_code == 503 and "nothing was changed" in res.json()["detail"]
    assert api.get("/v1/topics").json() == [] and api.get("/v1/topics/t").status_code == 404


def test_cluster_states_and_unknown_cluster(make_api):
    api = make_api()
    assert api.post("/v1/clusters/nope/state", json={"state": "read_only"}).status_code == 404
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    api.put("/v1/clusters/c2", json={"bootstrap": "h:2", "coordination": True})
    clusters = {c["id"]: c for c in api.get("/v1/clusters").json()}
    assert clusters["c2"]["coordination"] and not clusters["c1"]["coordination"]
    assert api.post("/v1/clusters/c1/state", json={"state": "sleeping"}).status_code == 422
    api.put("/v1/topics/t", json={"partitions": 2})
    res = api.post("/v1/clusters/c1/state", json={"state": "removed"})
    assert res.status_code == 409 and "segments" in res.json()["detail"]
    assert api.post("/v1/clusters/c1/state", json={"state": "read_only"}).json()["cluster"]["state"] == "read_only"
    assert api.post("/v1/clusters/c1/state", json={"state": "active"}).json()["changed"]
    view = api.get("/v1/view").json()
    assert {c["id"]: c["state"] for c in view["clusters"]} == {"c1": "active", "c2": "active"}


def test_proxies_register_heartbeat_and_lose_their_lease(make_api, clock):
    api = make_api(lease_ms=400, fence_ms=400)
    body = {"instance_id": "p-a", "host": "127.0.0.1", "port": 9101, "role": "both", "pool": "default"}
    first = api.post("/v1/proxies", json=body).json()
    again = api.post("/v1/proxies", json=body).json()
    assert first["node_id"] == again["node_id"] and first["lease_ms"] == 400
    blocks = [first["producer_id_block"], again["producer_id_block"], api.post("/v1/producer-id-blocks").json()]
    ranges = [range(b["start"], b["start"] + b["size"]) for b in blocks]
    assert all(not set(a) & set(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    view = api.get("/v1/view").json()
    assert [p["node_id"] for p in view["proxies"]] == [first["node_id"]]
    hb = api.post(f"/v1/proxies/{first['node_id']}/heartbeat", json={"applied_version": view["version"], "load": {}})
    assert hb.json()["view_version"] == view["version"]
    assert api.get("/v1/status").json()["proxies"][0]["applied_version"] == view["version"]
    clock.advance(0.5)
    api.controller.expire_leases()
    assert api.get("/v1/view").json()["proxies"] == []
    assert api.post(f"/v1/proxies/{first['node_id']}/heartbeat", json={"applied_version": 1}).status_code == 404


def test_a_proxy_silent_longer_than_its_lease_renews_while_its_fence_holds(make_api, clock):
    """docs/DESIGN.md §4.9: the lease decides view membership, the fence whether the proxy may go on writing with
    the view it has. A proxy cut off for longer than a lease (or a restarted controller) renews without
    registering again, and is listed again at once; one whose fence ran out must register again (404)."""
    api = make_api(lease_ms=400, fence_ms=1500)
    body = {"instance_id": "p-a", "host": "127.0.0.1", "port": 9101, "role": "both", "pool": "default"}
    node = api.post("/v1/proxies", json=body).json()
    assert node["fence_ms"] == 1500
    clock.advance(0.5)
    api.controller.expire_leases()
    assert api.get("/v1/view").json()["proxies"] == []
    hb = api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": 1})
    assert hb.status_code == 200 and hb.json()["fence_ms"] == 1500
    assert [p["node_id"] for p in api.get("/v1/view").json()["proxies"]] == [node["node_id"]]
    restarted = make_api(lease_ms=400, fence_ms=1500)  # a second controller (or a restart) on the database
    assert restarted.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": 1}).status_code == 200
    clock.advance(1.6)
    assert restarted.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": 1}).status_code == 404
    assert api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": 1}).status_code == 404


def test_registering_again_never_shortens_a_fence(make_api):
    """A controller restarted with a shorter --fence-ms must not count a proxy as fenced before the deadline it
    already granted (the proxy produces until then)."""
    from fedkafka.controller.models import ProxyRow

    body = {"instance_id": "p-a", "host": "127.0.0.1", "port": 9101, "role": "both", "pool": "default"}
    long = make_api(lease_ms=400, fence_ms=60_000)
    node = long.post("/v1/proxies", json=body).json()["node_id"]
    short = make_api(lease_ms=400, fence_ms=400)
    short.post("/v1/proxies", json=body).raise_for_status()
    with short.controller.session() as s:
        assert s.get(ProxyRow, node).fence_expires > time.time() + 50


def test_a_renewal_committed_too_late_is_not_acknowledged(make_api, monkeypatch):
    """If writing a renewal took long, a move may have stopped counting the proxy meanwhile: the proxy is not
    told it may go on (503, its deadline stays), though the database keeps the longer fence (the safe side)."""
    from fedkafka.controller import service

    api = make_api(lease_ms=60_000)
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    monkeypatch.setattr(service, "LATE_RENEWAL_S", -1.0)
    hb = api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": 1})
    assert hb.status_code == 503 and "took longer" in hb.json()["detail"]


def test_a_fence_shorter_than_the_lease_is_refused(db_url):
    from fedkafka.controller.service import Settings

    with pytest.raises(ValueError, match="at least the lease"):
        Settings(db_url=db_url, lease_ms=10_000, fence_ms=5_000)


def test_a_restarted_controller_lists_the_proxies_it_inherits_for_one_lease(make_api, clock):
    """Leases run out while no controller runs; the next one keeps those proxies in the view for one lease
    (dropping and re-adding them one by one would move partition leaders between proxies), but they are
    still fenced: a heartbeat on the lapsed lease is refused until the proxy registers again."""
    first = make_api(lease_ms=400, fence_ms=400)
    body = {"instance_id": "p-a", "host": "127.0.0.1", "port": 9101, "role": "both", "pool": "default"}
    node = first.post("/v1/proxies", json=body).json()["node_id"]
    clock.advance(0.5)  # the controller is gone (never asked again); the lease and the fence run out
    restarted = make_api(lease_ms=400, fence_ms=400)
    restarted.controller.expire_leases()
    assert [p["node_id"] for p in restarted.get("/v1/view").json()["proxies"]] == [node]
    assert restarted.post(f"/v1/proxies/{node}/heartbeat", json={"applied_version": 1}).status_code == 404
    clock.advance(0.5)  # the grace is one lease: a proxy that did not come back is dropped
    restarted.controller.expire_leases()
    assert restarted.get("/v1/view").json()["proxies"] == []
    assert restarted.post("/v1/proxies", json=body).json()["node_id"] == node  # registering again: same id
    assert [p["node_id"] for p in restarted.get("/v1/view").json()["proxies"]] == [node]


def test_long_poll_answers_204_then_the_next_view(make_api):
    api = make_api()
    v = api.get("/v1/view").json()["version"]
    started = time.monotonic()
    assert api.get("/v1/view", params={"after": v, "wait_ms": 200}).status_code == 204
    assert time.monotonic() - started >= 0.2
    got = {}

    def poll():
        got["resp"] = api.get("/v1/view", params={"after": v, "wait_ms": 10_000})

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.2)
    assert "resp" not in got
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    t.join(5)
    assert got["resp"].status_code == 200 and got["resp"].json()["version"] == v + 1
    delta = api.get("/v1/view", params={"after": v, "delta": "true"}).json()["delta"]
    assert delta["from_version"] == v and [c["id"] for c in delta["clusters"]["upsert"]] == ["c1"]


def test_name_service_rules_exact_then_longest_prefix_then_default(make_api):
    api = make_api()
    for i, pool in enumerate(["default", "analytics", "payments"]):
        api.post("/v1/proxies", json={"instance_id": f"p{i}", "host": "127.0.0.1", "port": 9200 + i,
                                      "role": "both", "pool": pool})
    api.put("/v1/client-rules/a", json={"match": "prefix", "pattern": "ana", "pool": "analytics"})
    api.put("/v1/client-rules/b", json={"match": "prefix", "pattern": "analytics-pay", "pool": "payments"})
    api.put("/v1/client-rules/c", json={"match": "exact", "pattern": "analytics-payroll", "pool": "analytics"})
    pools = {cid: api.get("/v1/proxies", params={"client_id": cid}).json()
             for cid in ["analytics-1", "analytics-pay-2", "analytics-payroll", "other", ""]}
    assert {k: v["pool"] for k, v in pools.items()} == {"analytics-1": "analytics", "analytics-pay-2": "payments",
                                                       "analytics-payroll": "analytics", "other": "default",
                                                       "": "default"}
    assert [p["port"] for p in pools["analytics-pay-2"]["proxies"]] == [9202]
    assert len(api.get("/v1/client-rules").json()) == 3


def test_the_name_services_routing_matches_every_client_id_as_the_controller_does(make_api):
    """GET /v1/client-routing (what the name service fetches, fedkafka/nameservice/resolver.py) matched locally
    gives each client.id the pool and proxies GET /v1/proxies gives it, ties between rules included."""
    api = make_api()
    for i, pool in enumerate(["default", "analytics", "payments"]):
        api.post("/v1/proxies", json={"instance_id": f"p{i}", "host": "127.0.0.1", "port": 9200 + i,
                                      "role": "both", "pool": pool})
    api.put("/v1/client-rules/a", json={"match": "prefix", "pattern": "ana", "pool": "analytics"})
    api.put("/v1/client-rules/b", json={"match": "prefix", "pattern": "analytics-pay", "pool": "payments"})
    api.put("/v1/client-rules/c", json={"match": "exact", "pattern": "analytics-payroll", "pool": "analytics"})
    api.put("/v1/client-rules/d", json={"match": "prefix", "pattern": "anb", "pool": "payments"})
    api.put("/v1/client-rules/e", json={"match": "prefix", "pattern": "ana", "pool": "payments"})  # tie: a wins
    routing = ClientRouting.from_dict(api.get("/v1/client-routing").json())
    for cid in ["analytics-1", "analytics-pay-2", "analytics-payroll", "anb", "ana", "other", "", "x" * 200]:
        expected = api.get("/v1/proxies", params={"client_id": cid}).json()
        assert routing.answer(cid).to_dict() == expected, cid
    assert routing.answer("ana").pool == "analytics"


def test_restart_on_the_same_database_keeps_everything(make_api, db_url):
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    api.put("/v1/topics/t", json={"partitions": 3, "config": {"retention.ms": "1000"}})
    node = api.post("/v1/proxies", json={"instance_id": "p", "host": "h", "port": 1, "role": "cproxy"}).json()
    before = api.get("/v1/view").json()
    api.__exit__(None, None, None)
    again = make_api(url=db_url)
    assert again.get("/v1/view").json() == before
    assert again.post("/v1/proxies", json={"instance_id": "p", "host": "h", "port": 1,
                                           "role": "cproxy"}).json()["node_id"] == node["node_id"]
    assert again.get("/v1/topics/t").json()["config"] == {"retention.ms": "1000"}


def test_a_stale_controller_cannot_overwrite_a_newer_view(make_api, db_url):
    a, b = make_api(), make_api(url=db_url)
    start = b.controller.view.version
    a.put("/v1/clusters/x", json={"bootstrap": "h:1"})  # a commits start+1; b's cache still says `start`
    assert b.controller.view.version == start
    b.put("/v1/clusters/y", json={"bootstrap": "h:2"})  # b's compare-and-set on `start` fails: it re-reads
    view = b.get("/v1/view").json()
    assert view["version"] == start + 2 and {c["id"] for c in view["clusters"]} == {"x", "y"}


def test_two_controllers_writing_at_once_agree_on_one_history(make_api, db_url):
    a, b = make_api(), make_api(url=db_url)
    seen = {"a": [], "b": []}

    def writer(api, prefix):
        for i in range(15):
            api.put(f"/v1/clusters/{prefix}{i}", json={"bootstrap": f"h:{i + 1}"})
            seen[prefix].append(api.controller.view.version)

    threads = [threading.Thread(target=writer, args=(a, "a")), threading.Thread(target=writer, args=(b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v == sorted(v) for v in seen.values())  # each controller only ever moved forward
    a.controller.compose()
    b.controller.compose()
    final_a, final_b = a.get("/v1/view").json(), b.get("/v1/view").json()
    assert final_a == final_b and len(final_a["clusters"]) == 30


def test_metrics_expose_view_version_and_push_latency(make_api):
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    node = api.post("/v1/proxies", json={"instance_id": "p", "host": "h", "port": 1, "role": "both"}).json()
    version = api.get("/v1/view").json()["version"]
    api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": version})
    text = api.get("/metrics").text
    assert f"fedkafka_view_version {float(version)}" in text
    assert "fedkafka_view_push_seconds_count 1.0" in text


def test_the_lease_loop_drops_a_silent_proxy_and_keeps_a_heartbeating_one(make_api):
    api = make_api(lease_ms=600, background=True)
    silent = api.post("/v1/proxies", json={"instance_id": "silent", "host": "h", "port": 1, "role": "both"}).json()
    alive = api.post("/v1/proxies", json={"instance_id": "alive", "host": "h", "port": 2, "role": "both"}).json()
    deadline = time.monotonic() + 10
    while True:
        api.post(f"/v1/proxies/{alive['node_id']}/heartbeat", json={"applied_version": 0}).raise_for_status()
        nodes = [p["node_id"] for p in api.get("/v1/view").json()["proxies"]]
        if silent["node_id"] not in nodes:
            break
        assert time.monotonic() < deadline, "silent proxy still in the view long after its lease"
        time.sleep(0.1)
    assert nodes == [alive["node_id"]]
    for _ in range(10):  # longer than a lease: in-memory renewals must have kept it alive in the database
        api.post(f"/v1/proxies/{alive['node_id']}/heartbeat", json={"applied_version": 0}).raise_for_status()
        time.sleep(0.1)
    assert [p["node_id"] for p in api.get("/v1/view").json()["proxies"]] == [alive["node_id"]]
    assert [p["node_id"] for p in api.get("/v1/status").json()["proxies"]] == [alive["node_id"]]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/workflows/99999999999999999999999", None),
    ("GET", "/v1/workflows/-1", None),
    ("POST", "/v1/proxies/99999999999999999999999/heartbeat", {"applied_version": 1}),
    ("POST", "/v1/proxies/1/heartbeat", {"applied_version": 2**64}),
    ("GET", "/v1/view?after=99999999999999999999999", None),
    ("PUT", "/v1/topics/t", {"partitions": 2**70}),
    ("POST", "/v1/proxies", {"instance_id": "i", "host": "h", "port": 2**70, "role": "both"}),
])
def test_numbers_a_database_cannot_hold_are_refused_not_an_internal_error(make_api, method, path, body):
    api = make_api()
    res = api.request(method, path, json=body)
    assert res.status_code == 422, res.text


class _FailingCommits:
    """The controller's database refuses every commit while `failing` is set (a hiccup: network, failover)."""

    def __init__(self, ctl):
        self.failing = False
        self._real = ctl.session
        ctl.session = self._session

    def _session(self):
        from sqlalchemy.exc import OperationalError

        s = self._real()
        if self.failing:
            def refuse():
                raise OperationalError("COMMIT", {}, ConnectionError("database unreachable"))
            s.commit = refuse
        return s


def _db_lease(ctl, node_id: int) -> float:
    from fedkafka.controller.models import ProxyRow

    with ctl.session() as s:
        return s.get(ProxyRow, node_id).lease_expires


def test_a_renewal_acknowledged_to_a_proxy_is_in_the_database(make_api):
    """Issue #12, hole 3: renewals were acknowledged from memory and written every 200 ms; a failed write
    dropped them. After a hiccup longer than a lease, live proxies counted as dead for a move's ack wait
    (which reads the database, possibly on another controller). Now a renewal is answered only once it is
    committed; a failed write answers 503 (the proxy's lease is not extended) and keeps the renewal pending."""
    api = make_api(lease_ms=60_000)
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    registered = _db_lease(ctl, node["node_id"])
    db = _FailingCommits(ctl)
    db.failing = True
    sent = time.time()
    applied = ctl.view.version  # a proxy acks views the controller composed (a newer one would not count)
    hb = api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": applied - 1, "load": {}})
    with contextlib.suppress(Exception):
        ctl.flush_heartbeats()  # the lease loop's next batch: refused as well
    db.failing = False
    ctl.flush_heartbeats()
    if hb.status_code == 200:  # told: lease until at least sent + lease
        assert _db_lease(ctl, node["node_id"]) >= sent + 60
    else:
        assert hb.status_code == 503 and "not renewed" in hb.json()["detail"]
        assert _db_lease(ctl, node["node_id"]) > registered  # kept pending, written by the next batch
    hb = api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": applied, "load": {}})
    assert hb.status_code == 200 and _db_lease(ctl, node["node_id"]) >= sent + 60
    assert api.get("/v1/status").json()["proxies"][0]["applied_version"] == applied


def test_a_failed_batch_keeps_its_renewals_and_the_newest_wins(make_api):
    api = make_api(lease_ms=60_000)
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    with ctl._hb_lock:  # two renewals taken, not yet written: an older one, then a newer one
        ctl._pending[node["node_id"]] = Renewal(time.time() + 30, time.time() + 30, 5, {}, seen_fence=0.0)
    db = _FailingCommits(ctl)
    db.failing = True
    with pytest.raises(Exception, match="database unreachable"):
        ctl.flush_heartbeats()
    with ctl._hb_lock:
        assert ctl._pending[node["node_id"]].applied == 5
        ctl._pending[node["node_id"]] = Renewal(time.time() + 90, time.time() + 90, 6, {}, seen_fence=0.0)
    db.failing = False
    ctl.flush_heartbeats()
    assert _db_lease(ctl, node["node_id"]) > time.time() + 80
    assert ctl._pending == {}


def test_a_renewal_whose_write_failed_does_not_count_later(make_api, clock):
    """docs/DESIGN.md §4.9, rule F3: a renewal answered 503 (its write failed) was remembered in memory as if it
    had been written; once the fence in the database had run out (a move stopped counting the proxy), the next
    heartbeat passed the in-memory check and the proxy went on producing with its old view. Now memory
    learns a renewal only once it is written, and that heartbeat gets 404 (register again, with the view)."""
    api = make_api(lease_ms=400, fence_ms=4000)
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    clock.advance(2.0)
    db = _FailingCommits(ctl)
    db.failing = True
    assert api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": 1}).status_code == 503
    with ctl._hb_lock:
        ctl._pending.clear()  # the write never happened (the batch was lost with the database)
    db.failing = False
    clock.advance(2.5)  # the fence the database holds ran out; the one the failed renewal asked for did not
    assert api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": 1}).status_code == 404
