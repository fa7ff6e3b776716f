"""A live proxy's identity (address, listeners, pool, role) is not changed by another registration of its instance
id (review rvapi: the service token every proxy host holds re-pointed a live proxy's clients). The same identity
registers again at once (a restart); another one once every lease of the instance has run out (a proxy that moved).
Workers' rows (`{instance_id}/w{N}`, docs/DESIGN.md §4.10) are members of the same instance."""

from __future__ import annotations

import time

import pytest

from fedkafka.controller.models import ProxyRow

LIVE = {"instance_id": "proxy-a", "host": "10.0.0.1", "port": 9092, "role": "both", "pool": "p1",
        "listeners": [["SASL_SSL", "10.0.0.1", 9093], ["PLAINTEXT", "10.0.0.1", 9092]]}
MOVED = {**LIVE, "host": "10.0.0.2", "listeners": [["PLAINTEXT", "10.0.0.2", 9092]]}


def _register(api, body: dict, worker: int = 0):
    return api.post("/v1/proxies", json={**body, "worker": worker})


def _listed(api) -> list[tuple[int, str, int, str]]:
    return [(p["node_id"], p["host"], p["port"], p["pool"]) for p in api.get("/v1/view").json()["proxies"]]


def _lease_ran_out(ctl, member_id: int) -> None:
    """The member stopped renewing and its lease ran out a second ago (its fence may still run)."""
    with ctl._hb_lock:
        ctl._leases.pop(member_id, None)
        ctl._pending.pop(member_id, None)
    with ctl.session() as s:
        s.get(ProxyRow, member_id).lease_expires = time.time() - 1
        s.commit()


@pytest.mark.parametrize("change", [{"host": "10.6.6.6"}, {"port": 19092}, {"pool": "p2"}, {"role": "cproxy"},
                                    {"listeners": [["PLAINTEXT", "10.6.6.6", 9092]]}],
                         ids=["host", "port", "pool", "role", "listeners"])
def test_a_live_proxys_identity_is_not_changed_and_the_refusal_names_it_and_its_lease_end(make_api, change):
    api = make_api()
    first = _register(api, LIVE)
    assert first.status_code == 200, first.text
    before = _listed(api)
    refused = _register(api, {**LIVE, **change})
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "'proxy-a'" in detail and "10.0.0.1:9092" in detail and "live lease until" in detail, detail
    assert _listed(api) == before == [(first.json()["node_id"], "10.0.0.1", 9092, "p1")]


def test_a_restarted_proxy_at_the_same_address_registers_again_at_once(make_api):
    api = make_api()
    first = _register(api, LIVE).json()
    same = {**LIVE, "listeners": list(reversed(LIVE["listeners"]))}  # the same listeners, in another order
    again = _register(api, same)
    assert again.status_code == 200, again.text
    assert again.json()["node_id"] == first["node_id"]
    assert _listed(api) == [(first["node_id"], "10.0.0.1", 9092, "p1")]


def test_a_proxy_moved_to_another_host_registers_once_its_old_lease_ran_out(make_api):
    api = make_api()
    first = _register(api, LIVE).json()
    assert _register(api, MOVED).status_code == 409  # the old lease is live
    _lease_ran_out(api.controller, first["member_id"])
    moved = _register(api, MOVED)
    assert moved.status_code == 200, moved.text
    assert moved.json()["node_id"] == first["node_id"]
    assert _listed(api) == [(first["node_id"], "10.0.0.2", 9092, "p1")]


def test_a_workers_row_is_not_taken_over_while_any_member_of_its_proxy_is_live(make_api):
    api = make_api()
    w0, w1 = _register(api, LIVE, 0).json(), _register(api, LIVE, 1).json()
    assert _register(api, LIVE, 1).status_code == 200  # a restarted worker at the same address
    for worker in (1, 2):  # worker 1's own row, and a row no worker had yet
        refused = _register(api, MOVED, worker)
        assert refused.status_code == 409 and "'proxy-a'" in refused.json()["detail"], refused.text
    _lease_ran_out(api.controller, w0["member_id"])  # worker 0 is gone, worker 1 still holds the node's lease
    assert _register(api, MOVED, 0).status_code == 409
    assert _listed(api) == [(w0["node_id"], "10.0.0.1", 9092, "p1")]
    _lease_ran_out(api.controller, w1["member_id"])
    for worker in (0, 1):  # the whole proxy moved: its workers register at the new address one after another
        moved = _register(api, MOVED, worker)
        assert moved.status_code == 200, moved.text
    assert _listed(api) == [(w0["node_id"], "10.0.0.2", 9092, "p1")]


def test_another_instance_id_registers_beside_a_live_proxy(make_api):
    api = make_api()
    a = _register(api, LIVE).json()
    b = _register(api, {**MOVED, "instance_id": "proxy-b"})
    assert b.status_code == 200, b.text
    assert sorted(_listed(api)) == [(a["node_id"], "10.0.0.1", 9092, "p1"),
                                    (b.json()["node_id"], "10.0.0.2", 9092, "p1")]
