"""Review s32-rv6 of the exit proof (merge 3ebe6f5: the saved deadline bound to the view cache's lock; docs/DESIGN.md
§4.9 F4, "Why vouching for the lock's holders is enough"). Each test FAILS on main (3ebe6f5).

1. [data] The argument: the processes that may write under the row's fence are the registered ones and the holders
   of the lock that saved `PATH.fence`; a next lock holder vouches for exactly the lock's earlier holders, which have
   exited. A `--workers` parent's word is a second way to vouch, and it is shown even when the new worker does *not*
   get the lock (`_prove_previous_exit` returns early, leaving the parent's word in `predecessor_secrets`). Then
   another live process holds that lock (a second proxy on the cache: a second parent's worker, or a single-process
   proxy on worker 0's path), which took it after the exited worker died and so produces from that worker's saved
   deadline, the row's fence, while no controller answers it. The parent's word ends the row's fence at the new
   worker's registration: a move waits only the grace while that lock holder still produces under the old view.
"""

from __future__ import annotations

import logging
import time

from fedkafka.proxy.view_cache import ViewCache
from proxy.exit_proof_helpers import (
    INSTANCE,
    _close,
    _cut_off,
    _lease_lapsed,
    _predecessor_fence,
    _produces_until,
    _release,
    _run,
    _saved_by_a_lockless_process,
    _shown,
    _source,
    _state,
)
from proxy.exit_proof_helpers import _unreachable as _unreachable  # re-exported: test_exit_proof_rv7_review uses it


def test_rv6_a_parents_word_does_not_vouch_away_a_deadline_a_live_lock_holder_produces_from(tmp_path):
    """[data] Worker 0 A (parent X drew sA) registers, holds the lock, saves its deadline (the row's fence, 15 min),
    and dies. Before X starts it again, Q (worker 0 of a second parent on the same cache) takes the free lock: the
    deadline was saved under that very lock, so Q, cut off from the controllers, produces until it. X starts A' with
    its word (sA2, sA): the lock is Q's, so A' proves nothing by it, yet shows sA, the row's secret: the controller
    records A's fence as ending at A''s registration while Q may produce for up to that whole fence."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        exited, _ = _source(app, path, secrets=("a" * 43, None))
        exited.worker = 0
        await exited.start(_state())
        _release(exited.cache)  # A dies (kill -9): its saved deadline stays on disk, under the lock's identity
        holder, _ = _source(app, path, secrets=("q" * 43, None))
        holder.worker = 0
        _cut_off(holder)
        holder_state = _state()
        await holder.start(holder_state)  # takes the free lock; no controller answers it: serves the saved view
        assert holder.cache is not None and holder.cache._lock_fd is not None
        _lease_lapsed(ctl)
        restarted, sent = _source(app, path, secrets=("b" * 43, exited.own_secret))  # X's restart of worker 0
        restarted.worker = 0
        await restarted.start(_state())
        assert restarted.cache is not None and restarted.cache._lock_fd is None  # the lock is Q's
        shown = _shown(sent)
        recorded = _predecessor_fence(ctl)
        holder_until = _produces_until(holder_state)  # until when Q (a live holder of A's lock) may produce
        _release(holder.cache)
        await _close(exited, holder, restarted)
        assert holder_until > time.time() + 60, "Q produces from A's saved deadline (the scenario's premise)"
        assert recorded is not None and recorded >= holder_until - 1.0, (
            f"shown {shown}: Q (holding the lock) may produce for {holder_until - time.time():.0f} s more, but a "
            f"move waits only until {recorded - time.time():.0f} s + the grace")

    _run(tmp_path, body)


def test_rv6_avail_a_start_that_raced_its_previous_runs_exit_saves_usable_deadlines_once_it_is_alone(tmp_path):
    """[availability] P2 starts while P1 (its previous run) still holds the lock (a restart racing P1's exit, as the
    docs name it): P2 gets no lock, and `lock_for_life` is never tried again. P1 exits, P2 is now the only process
    on the cache, registered and renewing for weeks, but every deadline it saves names no lock; it is killed, and
    its restart P3 (the lock free, the same file, the same boot), with no controller answering, gets no produce
    deadline at all. Safe to give it: P2's deadline is P2's registered fence, and nobody vouches P2 away (its secret
    was never saved). The fix: take the lock once it is free (and save our secret under it)."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        first, _ = _source(app, path)
        await first.start(_state())
        _lease_lapsed(ctl)
        racing, _ = _source(app, path)
        racing_state = _state()
        await racing.start(racing_state)  # registers (P1's lease lapsed): the lock is still P1's
        assert racing.cache is not None and racing.cache._lock_fd is None
        _release(first.cache)  # P1 exits: P2 is the only process on the cache from now on
        await racing._heartbeat_once(racing_state)  # a renewal: its deadline saved
        _release(racing.cache)  # P2 is killed
        restart, _ = _source(app, path)
        _cut_off(restart)
        restart_state = _state()
        await restart.start(restart_state)  # the lock is free: taken; no controller answers
        assert restart.cache is not None and restart.cache._lock_fd is not None
        may_produce = restart_state.lease_valid()
        _release(restart.cache)
        await _close(first, racing, restart)
        assert may_produce, "the only process on the cache since P1 exited saved no deadline its restart may use"

    _run(tmp_path, body)


def test_rv6_a_deadline_saved_without_the_lock_is_logged_as_such(tmp_path, caplog):
    """[operability] A deadline saved by a process that held no lock (a second process on the cache, a start that
    raced its previous run) is refused to the next holder with the warning meant for a copy, a reboot or an upgrade
    ("saved under another lock or boot (a copy of the state dir, a reboot, or a release that named no lock)"): an
    operator looks for what did not happen. The file says which: `"lock": null`."""
    path = tmp_path / "view.json"
    _saved_by_a_lockless_process(path, time.time() + 900)
    restart = ViewCache(path, INSTANCE)
    assert restart.lock_for_life()
    try:
        with caplog.at_level(logging.WARNING, logger="fedkafka.proxy.view_cache"):
            saved = restart.load()
    finally:
        _release(restart)
    assert saved is not None and saved.produce_until == 0.0
    assert "a process that held no lock" in caplog.text, caplog.text
