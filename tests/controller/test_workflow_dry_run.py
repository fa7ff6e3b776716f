"""`POST /v1/workflows?dry_run=true`: the plan a workflow would carry out now, with nothing done (the modules'
check mode). Physical topics are only recorded here; tests/ansible/test_modules_integration.py compares a dry
run with the real run on real brokers."""

from __future__ import annotations

import pytest

DRY = "/v1/workflows?dry_run=true"


def federation(api, partitions=5):
    """c1 (coordination) with two 5-partition topics, then c2 registered: nothing on c2 yet."""
    api.put("/v1/clusters/c1", json={"bootstrap": "127.0.0.1:1", "coordination": True})
    for topic in ("a", "b"):
        assert api.put(f"/v1/topics/{topic}", json={"partitions": partitions}).status_code == 200
    api.put("/v1/clusters/c2", json={"bootstrap": "127.0.0.1:2"})


def snapshot(api):
    return api.get("/v1/view").json()["version"], api.get("/v1/clusters").json(), api.get("/v1/workflows").json()


def test_scale_up_plans_floor_p_over_clusters_per_topic_and_writes_nothing(make_api):
    """The issue's case: two 5-partition topics, one cluster joining. The old check mode said 10 // 2 = 5 moves;
    the workflow plans floor(5 / 2) = 2 per topic, 4 in all, and so does the dry run."""
    api = make_api()
    federation(api)
    before = snapshot(api)
    plan = api.post(DRY, json={"kind": "scale_up", "cluster": "c2"})
    assert plan.status_code == 200, plan.text
    plan = plan.json()
    assert plan["dry_run"] is True and plan["changed"] is True and plan["moved"] == 4
    assert [(m["topic"], m["partition"], m["from"], m["to"]) for m in plan["partitions_moved"]] == [
        ("a", 4, "c1", "c2"), ("a", 3, "c1", "c2"), ("b", 4, "c1", "c2"), ("b", 3, "c1", "c2")]
    assert snapshot(api) == before  # no run, no move, no new view
    assert api.post(DRY, json={"kind": "scale_up", "cluster": "c2"}).json() == plan  # and so the same plan again


def test_scale_up_of_an_unregistered_cluster_plans_its_registration_without_doing_it(make_api):
    api = make_api()
    federation(api)
    plan = api.post(DRY, json={"kind": "scale_up", "cluster": "c3", "bootstrap": "127.0.0.1:3"}).json()
    assert plan["registers"] is True and plan["moved"] == 2  # floor(5 / 3) of each topic
    assert {m["to"] for m in plan["partitions_moved"]} == {"c3"}
    assert "c3" not in {c["id"] for c in api.get("/v1/clusters").json()}


def test_scale_up_expand_plans_the_partitions_it_would_add(make_api):
    api = make_api()
    federation(api)
    plan = api.post(DRY, json={"kind": "scale_up", "cluster": "c2", "strategy": "expand"}).json()
    assert plan["partitions_moved"] == [{"topic": "a", "partitions_added": 5, "to": "c2"},
                                        {"topic": "b", "partitions_added": 5, "to": "c2"}]
    assert plan["moved"] == 10 and api.get("/v1/topics/a").json()["partitions"] == 5


def test_decommission_plans_its_state_changes_and_evacuation(make_api):
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "127.0.0.1:1", "coordination": True})
    api.put("/v1/clusters/c2", json={"bootstrap": "127.0.0.1:2"})
    api.put("/v1/topics/a", json={"partitions": 4})  # blocks: 0-1 on c1, 2-3 on c2
    before = snapshot(api)
    plan = api.post(DRY, json={"kind": "decommission", "cluster": "c2", "drain": True}).json()
    assert plan["states"] == ["active -> read_only", "read_only -> draining", "draining -> removed"]
    assert [(m["partition"], m["from"], m["to"]) for m in plan["partitions_moved"]] == [(2, "c2", "c1"),
                                                                                       (3, "c2", "c1")]
    assert plan["drain"] == "groups" and plan["changed"] is True
    assert snapshot(api) == before
    api.post("/v1/clusters/c2/state", json={"state": "read_only"})
    later = api.post(DRY, json={"kind": "decommission", "cluster": "c2"}).json()
    assert later["states"] == ["read_only -> draining", "draining -> removed"]


@pytest.mark.parametrize("body, status", [
    ({"kind": "rebuild", "cluster": "c2"}, 422),
    ({"kind": "scale_up", "cluster": "c2", "strategy": "shuffle"}, 422),
    ({"kind": "scale_up", "cluster": "c9"}, 404),
    ({"kind": "decommission", "cluster": "c1"}, 409),  # the coordination cluster
])
def test_a_request_start_refuses_is_refused_the_same_way(make_api, body, status):
    api = make_api()
    federation(api)
    dry = api.post(DRY, json=body)
    real = api.post("/v1/workflows", json=body)
    assert dry.status_code == real.status_code == status, (dry.text, real.text)
    assert dry.json()["detail"] == real.json()["detail"]


def test_status_lists_the_dry_run_feature(make_api):
    """The modules ask before calling it: a controller without it would ignore ?dry_run=true and act."""
    assert "workflow_dry_run" in make_api().get("/v1/status").json()["api_features"]


def test_a_scale_up_that_only_registers_the_cluster_is_a_change_as_its_dry_run_says(make_api):
    """No topic: the scale-up onto c2 moves nothing but registers c2. The dry run says changed (registers), and
    the run's record must say so too (fedkafka_scale_up reports the record's `changed`)."""
    from fedkafka.controller.workflows import WorkflowEngine

    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "127.0.0.1:1", "coordination": True}).raise_for_status()
    request = {"kind": "scale_up", "cluster": "c2", "bootstrap": "127.0.0.1:2"}
    plan = api.post(DRY, json=request).json()
    assert plan["registers"] is True and plan["moved"] == 0 and plan["changed"] is True
    engine = WorkflowEngine(api.controller)
    run = engine.wait(engine.start("scale_up", "c2", bootstrap="127.0.0.1:2")["id"], timeout=60)
    assert run["state"] == "done" and run["moved"] == 0, run
    assert "c2" in {c["id"] for c in api.get("/v1/clusters").json()}
    assert run["changed"] is True, run
    again = engine.wait(engine.start("scale_up", "c2", bootstrap="127.0.0.1:2")["id"], timeout=60)
    assert again["changed"] is False and api.post(DRY, json=request).json()["changed"] is False  # idempotent
