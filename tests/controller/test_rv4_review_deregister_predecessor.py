"""Reviewer rv4, merge 21ac0da: a deregistration must not end the wait for a predecessor it cannot vouch for.

A member taken over by a new process while its previous one may still produce (a restart or a proxy moved to
another host, once the previous lease ran out: that process may be cut off from the controllers and still
writing on its own deadline, F1/F2) records that process's fence (`predecessor_fence_expires`,
`_record_predecessor`); a move counts the member as not acked until it and the grace have passed, whatever the new
process acks (`Mover.await_version`, docs/DESIGN.md §4.9 F4). The new process's clean stop then deregisters: it
attests only its own writes, yet `deregister_proxy` sets the row's `fence_expires` a grace ago and the move's query
(`fence_expires > now - FENCE_GRACE_S`) drops the row, predecessor fence and all. The move seals while the cut-off
predecessor may still write and ack above the seal: an acked record lost. Before the merge a row's own fence was
never behind its predecessor's (granted later, only moved forward), so the filter never hid one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controller.service_members import OPERATOR_TOKEN, own_secret, registration, service_clients
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.fencing import FENCE_GRACE_S


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    """Factory: a controller on a copy of the migrated database (or on `database`, a restart), service token on."""
    yield from service_clients(tmp_path, migrated_sqlite)


def _await_acks(api: TestClient, needed: int) -> None:
    """A move's ack wait for view `needed`, short: raises MoveFailed while a counted member has not acked it."""
    Mover(api.controller).await_version(needed, lambda *_: None, timeout=0.1)


def test_a_deregistration_does_not_drop_the_wait_for_a_taken_over_predecessor(make_client, move_clock):
    api = make_client()
    first = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()
    member = first["member_id"]
    # process 1 goes silent (cut off from the controllers, still serving its clients on its 15 min deadline): its
    # lease runs out, its fence does not
    with api.controller.session() as s:
        s.get(ProxyRow, member).lease_expires = move_clock.now - 1
        s.commit()
    api.controller._leases.pop(member, None)
    second = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(2))  # a restart elsewhere
    assert second.status_code == 200, second.text
    with api.controller.session() as s:
        predecessor_fence = s.get(ProxyRow, member).predecessor_fence_expires
    assert predecessor_fence is not None and predecessor_fence > move_clock.now + FENCE_GRACE_S  # 1 may still write
    needed = api.controller.view.version
    beat = api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": needed, "load": {}},
                    headers=own_secret(2))
    assert beat.status_code == 200, beat.text
    with pytest.raises(MoveFailed):
        _await_acks(api, needed)  # process 2 acked, process 1's fence is still waited for
    # process 2 stops cleanly: it vouches for its own writes, not for process 1's
    assert api.post(f"/v1/proxies/{member}/deregister", headers=own_secret(2)).status_code == 200
    with pytest.raises(MoveFailed):
        _await_acks(api, needed)  # process 1 may still write until its fence and the grace: still waited for
    # (fixrv4) the deregistration ends process 2's fence at its own time, so the row's own fence keeps it counted
    # for the grace: the predecessor must still be waited for once that grace has passed
    move_clock.advance(FENCE_GRACE_S + 1)
    assert move_clock.now + FENCE_GRACE_S < predecessor_fence
    with pytest.raises(MoveFailed, match="taken over"):
        _await_acks(api, needed)
    move_clock.advance(predecessor_fence + FENCE_GRACE_S - move_clock.now + 1)
    _await_acks(api, needed)  # process 1's fence and the grace have passed: process 2's ack was the last wait


def test_the_status_lists_a_deregistered_worker_whose_predecessor_a_move_still_waits_for(make_client, move_clock):
    """(fixrv4) `/v1/status` lists, under a live node, every worker a move would still wait for: one deregistered
    whose taken-over predecessor's fence has not passed with the grace is one, past its own fence's grace too."""
    api = make_client()
    as_operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    api.post("/v1/proxies", json={**registration("a", 9092), "worker": 0}, headers=own_secret(0)).raise_for_status()
    first = api.post("/v1/proxies", json={**registration("a", 9092), "worker": 1}, headers=own_secret(1))
    member = first.json()["member_id"]
    with api.controller.session() as s:  # worker 1's first process goes silent, its fence live
        s.get(ProxyRow, member).lease_expires = move_clock.now - 1
        s.commit()
    api.controller._leases.pop(member, None)
    again = api.post("/v1/proxies", json={**registration("a", 9092), "worker": 1}, headers=own_secret(2))
    assert again.status_code == 200, again.text
    assert api.post(f"/v1/proxies/{member}/deregister", headers=own_secret(2)).status_code == 200
    move_clock.advance(FENCE_GRACE_S + 1)
    beat = api.post(f"/v1/proxies/{again.json()['node_id']}/heartbeat", json={"applied_version": 0, "load": {}},
                    headers=own_secret(0))  # worker 0 lives on
    assert beat.status_code == 200, beat.text
    status = api.get("/v1/status", headers=as_operator).json()["proxies"]
    assert [w["worker"] for w in status[0].get("workers", [])] == [0, 1]
