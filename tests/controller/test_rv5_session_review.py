"""Review rv5 of this session's proxy-member lifecycle (takeover fence, deregistration, conditional renewal):
failing tests for interleavings the conditional renewal (`Controller._write_renewal`) does not cover.

(1) [data] A registration reads the member row, decides (`_refuse_live_member`, `_record_predecessor`) and writes
it back from what it read: on SQLite the read is not in the write transaction (pysqlite begins one only at the
first write; WAL), and on PostgreSQL only worker 0's row is read FOR UPDATE (`_refuse_takeover` locks the node's
row, not a worker's own `host:port/w<i>` row). A renewal of the previous process committing in between is answered
renewed (a new lease, a fence and a deadline `send time + fence` for the proxy), and the registration then takes
the member over as if that lease had run out, recording the fence it read, older than the deadline just granted:
once that stale fence and the grace have passed a move seals on the new process's ack while the previous process,
cut off again, may still write until its renewed deadline.

(2) A deregistration committing between a heartbeat batch's `now` (taken before its UPDATEs) and the UPDATE of
that member's row: the deregistration's fence (its own, later, now) is still above the batch's `now`, so the
condition `fence_expires > :now` matches and the renewal revives the lease and the fence the deregistration ended
(docs/DESIGN.md §5.2 says it "renews nothing ... answered 404"): the restart is refused 409 for a lease, then its
takeover records a predecessor fence moves wait up to a fence for. On PostgreSQL the same window is the UPDATE
waiting on the deregistration's row lock (it evaluates the condition again, with the old `:now`)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from fedkafka.controller.errors import Conflict
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.controller.service import _secret_hash
from fedkafka.fencing import FENCE_GRACE_S

LEASE_S, FENCE_S = 10.0, 60.0
SECRET_HEADER = "X-Fedkafka-Member-Secret"
PROXY = {"instance_id": "h:9092", "host": "h", "port": 9092, "role": "pproxy", "pool": "p1", "member_secret": True}
OLD, NEW, WORKER0 = "old-process-".ljust(43, "o"), "new-process-".ljust(43, "n"), "worker-zero-".ljust(43, "z")


@pytest.fixture
def api(make_api, clock):
    return make_api(lease_ms=int(LEASE_S * 1000), fence_ms=int(FENCE_S * 1000))


def _register(ctl, secret: str, worker: int) -> dict:
    return ctl.register_proxy(PROXY["instance_id"], "h", 9092, "pproxy", "p1", worker=worker, member_secret=True,
                              presented=secret)


def _row(api, member: int) -> ProxyRow:
    with api.controller.session() as s:
        row = s.get(ProxyRow, member)
        s.expunge(row)
        return row


@pytest.mark.parametrize("worker", [0, 1], ids=["worker-0", "worker-1"])
def test_rv5_a_renewal_committed_while_a_takeover_decides_is_covered_by_the_recorded_predecessor_fence(
        api, clock, monkeypatch, worker):
    """The previous process's lease ran out (its fence did not); its heartbeat (secret checked, as the route does
    first) is written while a new process's registration of the member has read the row and not yet written it.
    Either order is fine alone: renewal first, then the registration must see the live lease (409) or record the
    renewed fence; registration first, then the renewal is refused (403). Interleaved, the old process is answered
    renewed with a deadline up to its send time + the fence, and the takeover commits with the fence it read
    before (11 s older here): a move counts the previous process only until that older fence plus the grace."""
    ctl = api.controller
    if worker:
        _register(ctl, WORKER0, 0)  # the node's own row (worker 0), live
    member = _register(ctl, OLD, worker)["member_id"]
    clock.advance(LEASE_S + 1)  # the lease ran out, the fence (60 s) did not: a new process may take the member
    renewal: dict = {}

    def old_heartbeat():
        try:
            renewal["answer"] = ctl.heartbeat(member, 0, {}, _secret_hash(OLD))
        except Exception as e:  # a refusal is the right outcome; recorded for the assertion
            renewal["refused"] = e

    original, ran = ctl._refuse_live_member, []

    def hooked(row, presented, now):
        if not ran:  # the registration has read the row: the old process's renewal is written now
            ran.append(threading.Thread(target=old_heartbeat, daemon=True))
            ran[0].start()
            ran[0].join(5.0)  # PostgreSQL, worker 0: blocked on the row lock until the registration commits
        return original(row, presented, now)

    monkeypatch.setattr(ctl, "_refuse_live_member", hooked)
    try:
        taken = _register(ctl, NEW, worker)
    except Conflict:  # the renewal committed first and the registration saw its live lease: safe
        taken = None
    assert ran, "the registration never reached its decision"
    ran[0].join()
    if "answer" not in renewal:
        return  # the renewal was refused: the previous process drains and registers again (safe)
    renewed_deadline = clock.now + FENCE_S  # the proxy's deadline: its send time (now) + the fence
    recorded = (_row(api, member).predecessor_fence_expires or 0.0) if taken is not None else None
    assert taken is None or recorded >= renewed_deadline, (
        f"the old process was answered renewed (deadline {renewed_deadline - clock.now:+.0f} s from now) and the "
        f"takeover committed recording predecessor fence {recorded - clock.now:+.0f} s from now: a move seals once "
        "that and the grace passed while the previous process may still write")


def test_rv5_a_move_seals_while_a_renewed_previous_process_may_still_write(api, clock, monkeypatch):
    """The outcome of the interleaving above for a move: the new process acks the view; one second before the old
    process's renewed deadline plus the grace (it may have sent a write just before its deadline, still out at a
    broker), a move's ack wait must still wait for it. It counts the member as acked (the recorded fence, 11 s
    older, and the grace have passed): the move reads its seal, and that write lands above it, acked, lost."""
    ctl = api.controller
    monkeypatch.setattr("fedkafka.controller.moves.time", SimpleNamespace(
        time=clock.time, monotonic=time.monotonic, sleep=time.sleep))
    member = _register(ctl, OLD, 0)["member_id"]
    clock.advance(LEASE_S + 1)
    original, renewed = ctl._refuse_live_member, []

    def old_heartbeat():
        try:
            renewed.append(ctl.heartbeat(member, 0, {}, _secret_hash(OLD)))
        except Exception:  # refused: the right outcome
            renewed.append(None)

    def hooked(row, presented, now):
        if not renewed:  # the registration has read the row (SQLite: no write lock yet): the old renewal commits
            beat = threading.Thread(target=old_heartbeat, daemon=True)
            beat.start()
            beat.join(5.0)  # PostgreSQL: blocked on the row lock until the registration commits
        return original(row, presented, now)

    monkeypatch.setattr(ctl, "_refuse_live_member", hooked)
    try:
        _register(ctl, NEW, 0)
    except Conflict:
        return  # the registration saw the renewed lease: safe
    for _ in range(500):  # PostgreSQL: the renewal, blocked until the registration committed, is refused now
        if renewed:
            break
        time.sleep(0.01)
    if not renewed or renewed[0] is None:
        return
    old_deadline = clock.now + FENCE_S  # what the old process was told: its send time + the fence
    needed = ctl.view.version
    ctl.heartbeat(member, needed, {}, _secret_hash(NEW))  # the new process acks the view
    clock.now = old_deadline + FENCE_GRACE_S - 1.0  # a write the old process sent at its deadline may still land
    with pytest.raises(MoveFailed):
        Mover(ctl).await_version(needed, lambda *_: None, timeout=0.1)

def test_rv5_a_deregistration_committed_after_a_batch_took_its_now_is_not_revived_by_the_batch(
        api, clock, monkeypatch):
    """The stopping process's last heartbeat (sent before its stop) joins a batch; the batch takes `now`, then the
    deregistration commits (half a second later), then the batch's UPDATE of the row runs with the earlier `now`.
    The deregistration's fence (its own time) is above that `now`, so the renewal matches and revives the lease and
    the fence: answered 200, the restart refused 409, a takeover recording a fence-long predecessor fence. Expected
    (docs/DESIGN.md §5.2): 404, and the lease and fence stay at the deregistration's time."""
    ctl = api.controller
    member = _register(ctl, OLD, 0)["member_id"]
    clock.advance(1.0)
    original, ran = ctl._write_renewal, []

    def hooked(s, member_id, accepted, renewal, now):
        if not ran:  # the batch took `now`; the deregistration commits before its UPDATE reaches the row
            clock.advance(0.5)
            ran.append(ctl.deregister_proxy(member, OLD))
        return original(s, member_id, accepted, renewal, now)

    monkeypatch.setattr(ctl, "_write_renewal", hooked)
    late = api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": ctl.view.version, "load": {}},
                    headers={SECRET_HEADER: OLD})
    assert ran and ran[0]["deregistered"] is True
    deregistered_at = clock.now
    row = _row(api, member)
    assert row.fence_expires <= deregistered_at and row.lease_expires <= deregistered_at, (
        f"revived: lease {row.lease_expires - deregistered_at:+.1f} s, "
        f"fence {row.fence_expires - deregistered_at:+.1f} s past the deregistration "
        f"(heartbeat answered {late.status_code})")
    assert late.status_code == 404, late.text
    restart = api.post("/v1/proxies", json=PROXY, headers={SECRET_HEADER: NEW})
    assert restart.status_code == 200, restart.text


def test_rv5_a_late_deregistration_never_ends_the_fence_of_the_process_registered_meanwhile(api, clock, monkeypatch):
    """(3) The same read-then-write in `deregister_proxy`: it reads the row (`SELECT ... FOR UPDATE`, a no-op on
    SQLite, outside the write transaction there), compares the secret, then writes lease and fence = now. The
    previous process's lease ran out (its heartbeats failed while it stopped), a new process's registration commits
    between that read and that write: the deregistration, checked against the old secret, ends the NEW process's
    lease and fence (docs/DESIGN.md §4.9 case 4: "a row counted for a live process is never uncounted by it").
    Expected: either the deregistration is refused (409, the member is held by another registration) or the
    registration comes after it; the new process's fence stays what its registration granted."""
    ctl = api.controller
    member = _register(ctl, OLD, 0)["member_id"]
    clock.advance(LEASE_S + 1)  # the stopping process's lease ran out; its fence did not
    real_hmac = __import__("hmac")
    registered: list = []

    def next_registration():
        registered.append(_register(ctl, NEW, 0))

    def compare_digest(a, b):
        if not registered and not armed.is_set():  # the deregistration has read the row: the restart registers
            armed.set()
            worker = threading.Thread(target=next_registration, daemon=True)
            worker.start()
            worker.join(5.0)  # PostgreSQL: blocked on the deregistration's row lock until it commits
            registered.append(worker)
        return real_hmac.compare_digest(a, b)

    armed = threading.Event()
    monkeypatch.setattr("fedkafka.controller.service.hmac", SimpleNamespace(compare_digest=compare_digest,
                                                                            new=real_hmac.new))
    try:
        ctl.deregister_proxy(member, OLD)
        deregistered = True
    except Conflict:
        deregistered = False
    monkeypatch.setattr("fedkafka.controller.service.hmac", real_hmac)
    for item in registered:
        if isinstance(item, threading.Thread):
            item.join()
    answers = [item for item in registered if isinstance(item, dict)]
    assert answers, "the new process's registration did not commit"
    granted_fence = clock.now + FENCE_S  # its registration's fence (the proxy's deadline: its send time + that)
    row = _row(api, member)
    assert row.fence_expires >= granted_fence, (
        f"deregistration {'taken' if deregistered else 'refused'}; the new process (registered, deadline "
        f"{granted_fence - clock.now:+.0f} s) has fence {row.fence_expires - clock.now:+.0f} s and lease "
        f"{row.lease_expires - clock.now:+.0f} s in the row: its renewals are refused, and once the predecessor "
        "fence and the grace pass a move no longer counts it while it may still write")


def test_rv5_a_vouched_exit_is_still_counted_for_the_grace_its_last_writes_may_take(api, clock, monkeypatch):
    """(4) A --workers parent vouches for a worker's exit (X-Fedkafka-Predecessor-Secret) and the controller then
    records no predecessor fence at all: the new worker's ack counts at once. But a process that died (killed, OOM)
    may have sent a write just before: the broker may append it up to FENCE_GRACE_S later (§4.1), the very reason
    a deregistration ends the fence at now and not a grace ago (reviewer rv4, docs/DESIGN.md §5.2). The restarted
    worker registers as soon as the dead one's lease ran out, which may be a moment after its death (it died just
    before its next heartbeat), and acks within a second: a move one second later must still count the exited
    process (its exit is at most the registration's time: a predecessor fence of `now` holds a move the grace, as
    a clean stop does). It reads the seal instead."""
    ctl = api.controller
    monkeypatch.setattr("fedkafka.controller.moves.time", SimpleNamespace(
        time=clock.time, monotonic=time.monotonic, sleep=time.sleep))
    member = _register(ctl, OLD, 0)["member_id"]
    clock.advance(LEASE_S + 0.5)  # the worker died just before its next heartbeat; its lease ran out just now
    restarted = ctl.register_proxy(PROXY["instance_id"], "h", 9092, "pproxy", "p1", member_secret=True,
                                   presented=NEW, predecessor=OLD)  # the parent vouches for the exit
    assert restarted["member_id"] == member
    needed = ctl.view.version
    ctl.heartbeat(member, needed, {}, _secret_hash(NEW))  # the restarted worker acks
    clock.advance(1.0)  # a write the dead worker sent right before it died may still be appended for ~39 s
    with pytest.raises(MoveFailed):
        Mover(ctl).await_version(needed, lambda *_: None, timeout=0.1)
