"""Deregistration: a cleanly stopped proxy process ends its member's lease and fence at once (docs/DESIGN.md §5.2,
§4.9 "deregistered"), only with the secret of the member's latest registration, so a restart registers at once
and a move stops counting it, without ever ending a successor's lease."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient

from controller.service_members import SECRET_HEADER, own_secret, registration, service_clients
from controller.test_leadership import _lost_row
from fedkafka.controller.errors import Conflict
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.fencing import FENCE_GRACE_S


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    """Factory: a controller on a copy of the migrated database (or on `database`, a restart), service token on."""
    yield from service_clients(tmp_path, migrated_sqlite)


def _members_counted(api: TestClient, needed: int) -> int:
    """How many members a move's ack wait for view `needed` counts (`Mover.await_version`'s progress), and raise
    MoveFailed when one of them has not acked it (a short wait: the test asserts who is counted, not a time)."""
    counted: list[int] = []
    Mover(api.controller).await_version(needed, lambda _phase, _done, total: counted.append(total), timeout=0.1)
    return counted[-1]


def _deregister(api: TestClient, member: int, headers: dict):
    return api.post(f"/v1/proxies/{member}/deregister", headers=headers)


def test_a_restart_registers_at_once_after_its_previous_run_deregistered(make_client):
    """Without a deregistration a restarted process (a new secret) is refused while the old lease is live (409,
    `_refuse_live_member`); after it, registered at once, and the old process's secret renews nothing."""
    api = make_client()
    old = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()
    assert api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(2)).status_code == 409
    gone = _deregister(api, old["member_id"], own_secret(1))
    assert gone.status_code == 200, gone.text
    assert gone.json()["deregistered"] is True
    assert all(p.node_id != old["node_id"] for p in api.controller.view.proxies)  # dropped from the view now
    new = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(2))
    assert new.status_code == 200, new.text
    assert new.json()["member_id"] == old["member_id"]
    assert any(p.node_id == old["node_id"] for p in api.controller.view.proxies)
    beat = {"applied_version": 0, "load": {}}
    assert api.post(f"/v1/proxies/{old['member_id']}/heartbeat", json=beat,
                    headers=own_secret(1)).status_code == 403


def test_a_move_counts_a_deregistered_member_for_the_grace_then_no_longer(make_client, move_clock):
    """A silent member is counted by a move's ack wait until its fence plus the grace (15 min by default). A
    deregistered one attested that it sends no write again: its fence ends at the deregistration, and it is counted
    for the grace after it (a write it gave up on before may still be appended that long, §4.1), then not at all."""
    api = make_client()
    a = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()
    b = api.post("/v1/proxies", json=registration("b", 9093), headers=own_secret(2)).json()
    needed = api.controller.view.version
    api.post(f"/v1/proxies/{b['member_id']}/heartbeat", json={"applied_version": needed, "load": {}},
             headers=own_secret(2))
    with pytest.raises(MoveFailed, match="did not apply"):
        _members_counted(api, needed)  # a has not acked: the move waits for it
    deregistered_at = move_clock.now
    assert _deregister(api, a["member_id"], own_secret(1)).status_code == 200
    with api.controller.session() as s:
        row = s.get(ProxyRow, a["member_id"])
        assert row.lease_expires <= deregistered_at and row.fence_expires == deregistered_at
        assert row.applied_version < needed
    move_clock.advance(FENCE_GRACE_S - 1)
    with pytest.raises(MoveFailed, match="did not apply"):
        _members_counted(api, needed)  # within the grace after its fence: a write it gave up on may still land
    move_clock.advance(2)
    assert _members_counted(api, needed) == 1  # b alone, acked: the wait ends


def test_a_restart_within_the_grace_registers_at_once_and_holds_a_move_only_for_the_grace(make_client, move_clock):
    """The restart of a deregistered process registers at once (the lease ended). Registered within the grace after
    the deregistration, it takes over a member whose fence (the deregistration's time) has not passed the grace, so
    the controller records that fence as its predecessor's: a move waits for it, whatever the restart acks, but
    only until the deregistration plus the grace, not a full fence (15 min)."""
    api = make_client()
    old = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()
    deregistered_at = move_clock.now
    assert _deregister(api, old["member_id"], own_secret(1)).status_code == 200
    move_clock.advance(1)
    new = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(2))
    assert new.status_code == 200, new.text
    member = new.json()["member_id"]
    assert member == old["member_id"]
    with api.controller.session() as s:
        assert s.get(ProxyRow, member).predecessor_fence_expires == deregistered_at
    needed = api.controller.view.version
    beat = api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": needed, "load": {}},
                    headers=own_secret(2))
    assert beat.status_code == 200, beat.text
    with pytest.raises(MoveFailed, match="taken over"):
        _members_counted(api, needed)  # acked, but the deregistered run's grace has not passed
    move_clock.advance(FENCE_GRACE_S)
    assert _members_counted(api, needed) == 1  # the restart alone, acked: the wait ends


def test_a_restart_within_the_grace_logs_that_the_previous_fence_ended_not_a_negative_time(make_client, move_clock,
                                                                                          caplog):
    """The takeover's log line for a restart within the grace after its previous run deregistered: that run's fence
    ended at the deregistration, so it "may still produce" for no time at all (the line said "for -20 s"); it says
    the fence ended that long ago and how long moves still count it (the grace after that fence)."""
    api = make_client()
    old = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()
    assert _deregister(api, old["member_id"], own_secret(1)).status_code == 200
    ago = int(FENCE_GRACE_S) // 2  # within the grace after the deregistration
    move_clock.advance(ago)
    caplog.set_level(logging.INFO, logger="fedkafka.controller.service")
    new = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(2))
    assert new.status_code == 200, new.text
    lines = [r.getMessage() for r in caplog.records if "taken over by a new process" in r.getMessage()]
    assert len(lines) == 1, lines
    assert not re.search(r"-\d", lines[0]), lines[0]  # no negative duration
    assert "may still produce" not in lines[0] and f"its fence ended {ago} s ago" in lines[0], lines[0]
    assert f"moves count it as acked only {FENCE_GRACE_S - ago:.0f} s from now" in lines[0], lines[0]


def test_a_wrong_or_missing_secret_deregisters_nothing(make_client):
    """Another token holder, or a previous run's late deregistration arriving after its successor registered
    (a new secret), must not end the live member's lease and fence: 409, the member still counted and listed."""
    api = make_client()
    a = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()
    b = api.post("/v1/proxies", json=registration("b", 9093), headers=own_secret(2)).json()
    for headers in ({}, own_secret(2), {SECRET_HEADER: "guess"}):
        refused = _deregister(api, a["member_id"], headers)
        assert refused.status_code == 409, refused.text
        assert SECRET_HEADER in refused.json()["detail"]
    assert _deregister(api, b["member_id"], own_secret(2)).status_code == 200
    restarted = api.post("/v1/proxies", json=registration("b", 9093), headers=own_secret(3))
    assert restarted.status_code == 200, restarted.text
    late = _deregister(api, b["member_id"], own_secret(2))  # the previous run's, answered late: superseded
    assert late.status_code == 409, late.text
    listed = {p.node_id for p in api.controller.view.proxies}
    assert {a["node_id"], b["node_id"]} <= listed
    with pytest.raises(MoveFailed):
        _members_counted(api, api.controller.view.version)  # neither acked this view: both still counted


def test_a_repeat_answers_success_and_an_unknown_member_404(make_client):
    """Idempotent for the process that deregistered (its answer lost, it may send again): the same answer. An
    unknown member has nothing to end: 404, as its heartbeat would be. A member registered without a secret (a
    proxy before member secrets) cannot prove it is the one stopping: refused, its lease runs out."""
    api = make_client()
    a = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()
    first = _deregister(api, a["member_id"], own_secret(1))
    again = _deregister(api, a["member_id"], own_secret(1))
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert _deregister(api, 4242, own_secret(1)).status_code == 404
    old = api.post("/v1/proxies", json={**registration("o", 9094), "member_secret": False}).json()
    refused = _deregister(api, old["member_id"], own_secret(1))
    assert refused.status_code == 409 and "without a member secret" in refused.json()["detail"]


def _deadlines(api: TestClient, member: int) -> tuple[float, float]:
    with api.controller.session() as s:
        row = s.get(ProxyRow, member)
        assert row is not None
        return row.lease_expires, row.fence_expires


def test_a_controller_that_lost_the_row_deregisters_nothing_and_the_one_holding_it_does(make_client):
    """A deregistration is a write like the others (docs/DESIGN.md §3.6): a controller that lost the leader row (it
    notices within a third of a lease) answers 503, as every other write route, and commits nothing, so the proxy
    asks the next listed controller. Before, it committed the deregistration (answered 200; the active controller's
    view listed the proxy until its lease round read the row). The controller that took the row over takes it."""
    api = make_client()
    member = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()["member_id"]
    before = _deadlines(api, member)
    api.controller.leadership, active = _lost_row(api.controller)
    refused = _deregister(api, member, own_secret(1))
    assert refused.status_code == 503 and "not the active controller" in refused.json()["detail"], refused.text
    assert _deadlines(api, member) == before
    api.controller.leadership = active
    taken = _deregister(api, member, own_secret(1))
    assert taken.status_code == 200, taken.text
    assert all(deadline < before[0] for deadline in _deadlines(api, member))


def test_a_standby_deregisters_nothing(make_client):
    """A controller started as a standby that serves the route (in process, without the leadership's gate, which
    answers 503 before any route): NotLeader, 503, nothing written."""
    api = make_client()
    member = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()["member_id"]
    before = _deadlines(api, member)
    api.controller._standby = True
    refused = _deregister(api, member, own_secret(1))
    assert refused.status_code == 503 and "standby" in refused.json()["detail"], refused.text
    assert _deadlines(api, member) == before


def test_a_compose_failing_after_the_commit_answers_the_committed_deregistration(make_client, monkeypatch):
    """Once the deregistration is committed the answer says so: a compose that fails after the commit (Conflict 503,
    the view's compare-and-set lost to too many concurrent writers) is logged and the route answers 200, never the
    503 the proxy takes as "nothing written" (it may then put its saved deadline back, §5.2; reviewer rv4,
    `test_rv4_deregister_503_review.py`, failed before). The member, its lease ended, leaves the view at the next
    lease round."""
    api = make_client()
    node = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()
    member = node["member_id"]
    before = _deadlines(api, member)

    def lost_every_race():
        raise Conflict("could not commit the view: too many concurrent writers", status=503)

    monkeypatch.setattr(api.controller, "compose", lost_every_race)
    taken = _deregister(api, member, own_secret(1))
    assert taken.status_code == 200, taken.text
    assert taken.json()["deregistered"] is True
    assert all(deadline < before[0] for deadline in _deadlines(api, member))
    assert any(p.node_id == node["node_id"] for p in api.controller.view.proxies)  # not composed yet
    monkeypatch.undo()
    api.controller.lease_round()
    assert all(p.node_id != node["node_id"] for p in api.controller.view.proxies)
