"""Draining a proxy node before a restart (docs/DESIGN.md §4.11): the composed view no longer lists it, so it leads
no partition, and names it draining; every other partition keeps its leader (rendezvous hashing)."""

from __future__ import annotations

import pytest

from fedkafka.view.model import ProxyRole, View

PARTITIONS = 48


@pytest.fixture
def api(make_api):
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": PARTITIONS, "placement": "blocks"}).raise_for_status()
    return api


def _register(api, port: int, worker: int = 0, role: str = "pproxy", pool: str = "default") -> dict:
    answer = api.post("/v1/proxies", json={"instance_id": f"h:{port}", "host": "h", "port": port, "role": role,
                                           "pool": pool, "worker": worker})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _view(api) -> View:
    return View.from_dict(api.get("/v1/view").json())


def _leaders(view: View) -> dict[int, int]:
    candidates = view.proxies_in_pool("default", ProxyRole.PPROXY)
    return {p: view.leader_for("t", p, candidates).node_id for p in range(PARTITIONS)}


def test_a_drained_proxy_leads_no_partition_and_the_others_keep_theirs(api):
    a, b, c = (_register(api, port)["node_id"] for port in (9001, 9002, 9003))
    before = _view(api)
    led = _leaders(before)
    assert {a, b, c} == set(led.values())  # each led something: the drain below moves real leadership

    answer = api.post(f"/v1/proxies/{b}/drain")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"node_id": b, "instance_id": "h:9002", "draining": True, "changed": True,
                             "view_version": before.version + 1}
    after = _view(api)
    assert after.version == before.version + 1
    assert after.draining == (b,)
    assert {p.node_id for p in after.proxies} == {a, c}  # not in Metadata for anyone
    moved = _leaders(after)
    assert b not in moved.values()
    assert {p: n for p, n in moved.items() if led[p] != b} == {p: n for p, n in led.items() if n != b}

    # the status still lists it (it heartbeats, serves what is in flight) and says it is draining
    status = {p["node_id"]: p for p in api.get("/v1/status").json()["proxies"]}
    assert status[b]["draining"] is True and status[a]["draining"] is False


def test_draining_twice_changes_nothing_and_undrain_brings_the_leadership_back(api):
    _a, b = (_register(api, port)["node_id"] for port in (9001, 9002))
    led = _leaders(_view(api))
    first = api.post(f"/v1/proxies/{b}/drain").json()
    again = api.post(f"/v1/proxies/{b}/drain").json()
    assert again["changed"] is False and again["view_version"] == first["view_version"]
    back = api.post(f"/v1/proxies/{b}/undrain").json()
    assert back["changed"] is True and back["view_version"] == first["view_version"] + 1
    view = _view(api)
    assert view.draining == () and _leaders(view) == led
    assert api.post(f"/v1/proxies/{b}/undrain").json()["changed"] is False


def test_a_drain_outlives_a_restart_of_the_proxy(api):
    """A worker its parent restarts registers again: that must not hand it its leadership back mid-drain."""
    _register(api, 9001)
    b = _register(api, 9002)["node_id"]
    api.post(f"/v1/proxies/{b}/drain").raise_for_status()
    assert _register(api, 9002)["node_id"] == b
    view = _view(api)
    assert view.draining == (b,) and b not in {p.node_id for p in view.proxies}


def test_draining_a_worker_drains_its_whole_node(api):
    a = _register(api, 9001)["node_id"]
    node = _register(api, 9002, worker=0)["node_id"]
    worker1 = _register(api, 9002, worker=1)
    assert worker1["node_id"] == node and worker1["member_id"] != node
    answer = api.post(f"/v1/proxies/{worker1['member_id']}/drain").json()
    assert answer["node_id"] == node and answer["changed"] is True
    view = _view(api)
    assert view.draining == (node,)
    assert [p.node_id for p in view.proxies] == [a]  # no worker of the node names its address
    status = {p["node_id"]: p for p in api.get("/v1/status").json()["proxies"]}
    assert status[node]["draining"] is True and len(status[node]["workers"]) == 2


def test_the_last_proxy_of_a_pool_and_role_is_not_drained(api):
    solo = _register(api, 9001)["node_id"]
    _register(api, 9002, role="cproxy", pool="readers")  # another pool's proxy leads nothing in this one
    answer = api.post(f"/v1/proxies/{solo}/drain")
    assert answer.status_code == 409, answer.text
    assert "last live pproxy of pool 'default'" in answer.json()["detail"]
    assert _view(api).draining == ()


def test_draining_an_unknown_proxy_is_404(api):
    assert api.post("/v1/proxies/77/drain").status_code == 404


def test_two_drains_of_a_pools_last_two_proxies_leave_one_of_them_leading(api, monkeypatch):
    """The second drain counts the first one's committed row, not the view (composed after the lock is let go):
    two drains at once must not both see the other as the pool's remaining leader."""
    a, b = (_register(api, port)["node_id"] for port in (9001, 9002))
    monkeypatch.setattr(api.controller, "compose", lambda: api.controller.view)  # the first drain's view not out
    assert api.post(f"/v1/proxies/{a}/drain").status_code == 200
    refused = api.post(f"/v1/proxies/{b}/drain")
    assert refused.status_code == 409 and "last live pproxy" in refused.text, refused.text


def test_a_drained_proxys_heartbeats_do_not_recompose_the_view(api, monkeypatch):
    _, b = (_register(api, port)["node_id"] for port in (9001, 9002))
    assert api.post(f"/v1/proxies/{b}/drain").status_code == 200
    version = _view(api).version
    composed = []
    real_compose = api.controller.compose
    monkeypatch.setattr(api.controller, "compose", lambda: composed.append(1) or real_compose())
    for _ in range(3):
        answer = api.post(f"/v1/proxies/{b}/heartbeat", json={"applied_version": version})
        assert answer.status_code == 200, answer.text
    assert composed == [] and _view(api).version == version


def test_each_committed_views_log_line_names_its_proxies(api, caplog):
    """Leadership follows the listed proxies: the log shows when it moved (tests/workflows/test_replicated_faults.py
    reads it to tell §4.2's window)."""
    caplog.set_level("INFO", logger="fedkafka.controller.service")
    a, b = (_register(api, port)["node_id"] for port in (9001, 9002))
    api.post(f"/v1/proxies/{b}/drain").raise_for_status()
    lines = [r.getMessage() for r in caplog.records if " committed (proxies " in r.getMessage()]
    assert lines[-2:] == [f"view {_view(api).version - 1} committed (proxies {[a, b]})",
                          f"view {_view(api).version} committed (proxies {[a]})"]
