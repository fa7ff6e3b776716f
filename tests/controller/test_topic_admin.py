"""The admin routes the proxies call for Kafka admin writes (`/v1/admin/topics...`): Kafka error names on every
refusal, the view version of every change, configs applied to every cluster holding the topic and stored."""

from __future__ import annotations


def _two_clusters(api):
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    api.put("/v1/clusters/c2", json={"bootstrap": "h:2"})


def test_create_answers_the_view_that_holds_the_topic_and_refuses_a_second_create(make_api):
    api = make_api()
    _two_clusters(api)
    res = api.post("/v1/admin/topics", json={"name": "t", "partitions": 4, "config": {"retention.ms": "1000"}})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["topic"]["partitions"] == 4 and body["topic"]["config"] == {"retention.ms": "1000"}
    view = api.get("/v1/view").json()
    assert body["view_version"] == view["version"] and [t["name"] for t in view["topics"]] == ["t"]
    assert api.kafka.created[("c1", "__fedkafka-shadow-t")] == 4
    again = api.post("/v1/admin/topics", json={"name": "t", "partitions": 8})
    assert again.status_code == 409 and again.json()["kafka_error"] == "TOPIC_ALREADY_EXISTS"
    assert api.get("/v1/topics/t").json()["partitions"] == 4  # not grown by the second create


def test_create_defaults_validates_and_refuses_bad_input(make_api):
    api = make_api()
    _two_clusters(api)
    assert api.post("/v1/admin/topics", json={"name": "one"}).json()["topic"]["partitions"] == 1  # -1: default
    dry = api.post("/v1/admin/topics", json={"name": "dry", "partitions": 3, "validate_only": True})
    assert dry.status_code == 200 and dry.json()["validate_only"] is True
    assert api.get("/v1/topics/dry").status_code == 404 and ("c1", "dry") not in api.kafka.created
    for body, code in [({"name": "bad/name", "partitions": 1}, "INVALID_TOPIC_EXCEPTION"),
                       ({"name": "trailing\n", "partitions": 1}, "INVALID_TOPIC_EXCEPTION"),  # `$` matched before it
                       ({"name": "__x", "partitions": 1}, "INVALID_TOPIC_EXCEPTION"),
                       ({"name": "zero", "partitions": 0}, "INVALID_PARTITIONS"),
                       ({"name": "one", "partitions": 1, "validate_only": True}, "TOPIC_ALREADY_EXISTS")]:
        res = api.post("/v1/admin/topics", json=body)
        assert res.status_code >= 400 and res.json()["kafka_error"] == code, (body, res.text)
    api.kafka.refuse_config = True
    for validate_only in (True, False):
        res = api.post("/v1/admin/topics", json={"name": "cfg", "partitions": 1, "config": {"no.such": "1"},
                                                 "validate_only": validate_only})
        assert res.status_code == 422 and res.json()["kafka_error"] == "INVALID_CONFIG", res.text
    assert api.get("/v1/topics/cfg").status_code == 404


def test_partitions_grow_and_never_shrink(make_api):
    api = make_api()
    _two_clusters(api)
    api.post("/v1/admin/topics", json={"name": "t", "partitions": 4, "config": {"retention.ms": "9"}})
    grown = api.post("/v1/admin/topics/t/partitions", json={"count": 6})
    assert grown.status_code == 200 and grown.json()["topic"]["partitions"] == 6
    assert api.get("/v1/topics/t").json()["config"] == {"retention.ms": "9"}  # kept
    for count in (3, 6):
        res = api.post("/v1/admin/topics/t/partitions", json={"count": count})
        assert res.status_code == 422 and res.json()["kafka_error"] == "INVALID_PARTITIONS", res.text
    dry = api.post("/v1/admin/topics/t/partitions", json={"count": 9, "validate_only": True})
    assert dry.status_code == 200 and api.get("/v1/topics/t").json()["partitions"] == 6
    missing = api.post("/v1/admin/topics/nope/partitions", json={"count": 9})
    assert missing.status_code == 404 and missing.json()["kafka_error"] == "UNKNOWN_TOPIC_OR_PARTITION"


def test_configs_are_applied_to_every_cluster_holding_the_topic_and_stored(make_api):
    api = make_api()
    _two_clusters(api)
    api.post("/v1/admin/topics", json={"name": "t", "partitions": 4, "config": {"retention.ms": "9"}})
    ops = [{"name": "cleanup.policy", "op": 2, "value": "delete"}, {"name": "cleanup.policy", "op": 2,
                                                                     "value": "compact"},
           {"name": "retention.ms", "op": 1}]
    res = api.post("/v1/admin/topics/t/config", json={"ops": ops})
    assert res.status_code == 200, res.text
    assert api.get("/v1/topics/t").json()["config"] == {"cleanup.policy": "delete,compact"}
    assert api.kafka.configs[("c1", "t")] == api.kafka.configs[("c2", "t")] == {"cleanup.policy": "delete,compact"}
    view = api.get("/v1/view").json()
    assert view["topics"][0]["config"] == {"cleanup.policy": "delete,compact"}
    replaced = api.post("/v1/admin/topics/t/config", json={"ops": [{"name": "segment.ms", "value": "100"}],
                                                           "replace": True})
    assert replaced.status_code == 200
    assert api.get("/v1/topics/t").json()["config"] == {"segment.ms": "100"}
    assert api.kafka.configs[("c2", "t")] == {"segment.ms": "100"}  # cleanup.policy deleted on the cluster too
    api.kafka.refuse_config = True
    bad = api.post("/v1/admin/topics/t/config", json={"ops": [{"name": "no.such", "value": "1"}]})
    assert bad.status_code == 422 and bad.json()["kafka_error"] == "INVALID_CONFIG"
    assert api.get("/v1/topics/t").json()["config"] == {"segment.ms": "100"}
    missing = api.post("/v1/admin/topics/nope/config", json={"ops": []})
    assert missing.status_code == 404 and missing.json()["kafka_error"] == "UNKNOWN_TOPIC_OR_PARTITION"


def test_delete_answers_the_view_without_the_topic(make_api):
    api = make_api()
    _two_clusters(api)
    api.post("/v1/admin/topics", json={"name": "t", "partitions": 2})
    res = api.delete("/v1/admin/topics/t")
    assert res.status_code == 200 and res.json()["view_version"] == api.get("/v1/view").json()["version"]
    assert api.get("/v1/view").json()["topics"] == []
    again = api.delete("/v1/admin/topics/t")
    assert again.status_code == 404 and again.json()["kafka_error"] == "UNKNOWN_TOPIC_OR_PARTITION"


def test_admin_routes_need_the_token(make_api):
    api = make_api()
    for method, path in [("POST", "/v1/admin/topics"), ("POST", "/v1/admin/topics/t/partitions"),
                         ("POST", "/v1/admin/topics/t/config"), ("DELETE", "/v1/admin/topics/t")]:
        assert api.request(method, path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
