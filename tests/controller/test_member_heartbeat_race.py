"""A heartbeat whose secret was checked before a takeover or a deregistration committed, and whose renewal is
written after it (docs/DESIGN.md §4.9 F4 and "deregistered", §5.2).

The heartbeat route checks the member secret, then renews in a separate step. The old code wrote that renewal
whatever had committed in between: (1) the previous holder of a member just taken over was answered renewed, a
deadline past the predecessor fence the takeover recorded, so a move could read its seal while that process may
still write; (2) a renewal the stopping process sent before its deregistration revived the lease and fence the
deregistration ended (its restart refused 409, a takeover recording a predecessor fence). Now the renewal's write
holds only for the secret it was accepted with, and only while the row's fence has not passed, compared in the
writing statement; one that matches nothing is refused as a late heartbeat is (403 superseded, 404 deregistered).
The steps are interleaved by hooks in the controller, deterministically, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from fedkafka.controller.errors import Forbidden
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.service import _secret_hash

LEASE_S, FENCE_S = 10.0, 60.0
SECRET_HEADER = "X-Fedkafka-Member-Secret"
PROXY = {"instance_id": "h:9092", "host": "h", "port": 9092, "role": "pproxy", "pool": "p1", "member_secret": True}
OLD, NEW = "old-process-".ljust(43, "o"), "new-process-".ljust(43, "n")


@pytest.fixture
def api(make_api, clock):
    return make_api(lease_ms=int(LEASE_S * 1000), fence_ms=int(FENCE_S * 1000))


def _register(api, secret: str):
    return api.post("/v1/proxies", json=PROXY, headers={SECRET_HEADER: secret})


def _beat(api, member: int, secret: str):
    return api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": api.controller.view.version,
                                                             "load": {}}, headers={SECRET_HEADER: secret})


def _row(api, member: int) -> ProxyRow:
    with api.controller.session() as s:
        row = s.get(ProxyRow, member)
        s.expunge(row)
        return row


def _once_after(monkeypatch, ctl, method: str, step) -> list:
    """Run `step` once, right after controller method `method` returns (before, for flush_heartbeats); what it
    returned is the list's item. A call of `method` from within `step` runs plain."""
    original, ran = getattr(ctl, method), []

    def once() -> None:
        if not ran:
            ran.append(None)
            ran[0] = step()

    def hooked(*args, **kwargs):
        if method == "flush_heartbeats":
            once()
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        once()
        return result

    monkeypatch.setattr(ctl, method, hooked)
    return ran


@pytest.mark.parametrize("through_database", [False, True], ids=["batched", "through-database"])
def test_a_heartbeat_checked_before_a_takeover_is_not_renewed_after_it(api, clock, monkeypatch, through_database):
    """(1): the old process's lease ran out (its fence did not), its late heartbeat passes the secret check, a new
    process takes the member over (a predecessor fence recorded), then the renewal is written: refused 403 now
    (the old code answered 200, a deadline past the recorded fence). `through_database`: this controller does not
    know the lease (a renewal checked in the database, as after a failover)."""
    ctl = api.controller
    old = _register(api, OLD).json()
    member = old["member_id"]
    clock.advance(LEASE_S + 1)  # the lease ran out, the fence (60 s) did not: a new process may take the member

    def takeover():
        if through_database:
            ctl._leases.pop(member, None)
        return ctl.register_proxy(PROXY["instance_id"], "h", 9092, "pproxy", "p1", member_secret=True,
                                  presented=NEW)

    ran = _once_after(monkeypatch, ctl, "check_member_secret", takeover)
    late = _beat(api, member, OLD)
    assert ran and ran[0]["member_id"] == member  # the takeover committed between the check and the write
    assert late.status_code == 403, late.text  # the old process is told to register again (it drains first)
    row = _row(api, member)
    assert row.predecessor_fence_expires == pytest.approx(clock.now - LEASE_S - 1 + FENCE_S)
    assert _beat(api, member, NEW).status_code == 200  # the new process's secret renews
    assert _beat(api, member, OLD).status_code == 403


def test_a_heartbeat_taken_before_a_deregistration_does_not_revive_the_member(api, clock, monkeypatch):
    """(2): the stopping process's renewal is taken (batched) before its deregistration commits and written after
    it: refused 404 now, the lease and fence stay ended (at the deregistration), so its restart registers at once
    and its takeover records no later predecessor fence than the deregistration's time: a move waits the grace
    after it, not a fence (the old code renewed both: the restart 409, then a takeover waiting up to a fence). A
    repeat of the deregistration still answers 200."""
    ctl = api.controller
    old = _register(api, OLD).json()
    member = old["member_id"]
    clock.advance(1.0)
    ran = _once_after(monkeypatch, ctl, "flush_heartbeats", lambda: ctl.deregister_proxy(member, OLD))
    late = _beat(api, member, OLD)
    assert ran and ran[0]["deregistered"] is True
    assert late.status_code == 404, late.text
    row = _row(api, member)
    deregistered_at = clock.now
    assert row.lease_expires <= deregistered_at and row.fence_expires <= deregistered_at  # (fixrv4: fence = now)
    assert api.post(f"/v1/proxies/{member}/deregister", headers={SECRET_HEADER: OLD}).status_code == 200
    restart = _register(api, NEW)
    assert restart.status_code == 200, restart.text
    assert (_row(api, member).predecessor_fence_expires or 0.0) <= deregistered_at


def test_a_superseded_renewal_never_replaces_the_holders_pending_one(api, clock, monkeypatch):
    """Renewals wait in one batch per member, newest wins. A superseded process's renewal (accepted just before a
    takeover) taken while the holder's waits must not replace it: the holder would be answered renewed on a batch
    that wrote nothing for it. It is written on its own, through the database, and refused 403 there."""
    ctl = api.controller
    member = _register(api, NEW).json()["member_id"]
    new_hash = ctl.check_member_secret(member, NEW)
    old_hash = _secret_hash(OLD)  # what the old process's check accepted, before the takeover committed
    clock.advance(1.0)
    lease_before = _row(api, member).lease_expires
    outcome: dict = {}

    def superseded_renewal():
        outcome["batched"] = ctl.renew_lease(member, 0, {}, old_hash)
        with pytest.raises(Forbidden):
            ctl.heartbeat(member, 0, {}, old_hash)
        return True

    ran = _once_after(monkeypatch, ctl, "flush_heartbeats", superseded_renewal)
    renewed = ctl.renew_lease(member, 0, {}, new_hash)
    assert ran == [True] and outcome["batched"] is None
    assert renewed is not None and _row(api, member).lease_expires == pytest.approx(clock.now + LEASE_S)
    assert _row(api, member).lease_expires > lease_before
