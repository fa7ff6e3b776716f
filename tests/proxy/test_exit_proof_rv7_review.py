"""Review s32-rv7 of the exit proof (merge 3d81af0: a `--workers` parent's word shown only by a worker that took its
view cache's lock, `ControllerViewSource._drop_parents_word`; docs/DESIGN.md §4.9 F4). Each test FAILS on main
(3d81af0).

1. [data] "Took its cache's lock" is not "took the lock the dead worker's deadline was saved under". The lock file
   removed while a live process holds it (the case rv32 covers for the secret file: a lock file deleted under its
   holder): the next worker creates and locks a new file (another inode), so `lock_for_life` is True, and it shows
   its parent's word, though the live holder of the old inode (a second proxy on the cache, rv6's premise) may
   produce from the dead worker's deadline, which names the old inode. The saved secret is refused for exactly this
   (identity compared); the parent's word is not compared with anything.
2. [availability] The merge drops the parent's word on every OSError of `_prove_previous_exit`, also when the lock
   WAS taken and only the secret file could not be read or written (a full disk): holding the lock, no live process
   can produce from the dead worker's deadline, and the parent saw that worker exit, so the word is as good as in
   the normal restart (the docs' rule: shown "by a worker that took its cache's lock"); dropped, every move waits
   the dead worker's whole fence (15 min) instead of the grace.
"""

from __future__ import annotations

import errno
import os
import time

import httpx

from fedkafka.controllers import PREDECESSOR_SECRET_HEADER
from fedkafka.proxy import view_cache
from proxy.test_exit_proof_rv6_review import _unreachable
from proxy.test_view_cache_exit_proof import _lease_lapsed, _predecessor_fence, _release, _run, _source, _state


def test_rv7_a_parents_word_does_not_vouch_away_a_deadline_saved_under_a_removed_lock_file_a_live_process_holds(
        tmp_path):
    """[data] Worker 0 A (parent X drew sA) registers under the lock (inode I1), saves its deadline and dies. Q (a
    second proxy on the cache) takes I1 and, cut off, produces from A's deadline. The lock file is removed (a
    cleanup of the state dir). X starts A' with its word (sB, sA): A' creates and locks a new file (inode I2), so it
    "holds its lock", and shows sA, the row's secret: A's fence recorded as ending at A''s registration while Q may
    produce for up to that whole fence."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        exited, _ = _source(app, path, secrets=("a" * 43, None))
        exited.worker = 0
        await exited.start(_state())
        _release(exited.cache)  # A dies: its deadline stays on disk, naming the lock file's inode I1
        holder, _ = _source(app, path, secrets=("q" * 43, None))
        holder.worker = 0
        holder.client = httpx.AsyncClient(transport=httpx.MockTransport(_unreachable), timeout=10)
        holder_state = _state()
        await holder.start(holder_state)  # takes I1; no controller answers it: produces from A's saved deadline
        assert holder.cache is not None and holder.cache._lock_fd is not None
        os.unlink(holder.cache.lock_path)  # the lock file removed under its live holder
        _lease_lapsed(ctl)
        restarted, sent = _source(app, path, secrets=("b" * 43, exited.own_secret))  # X's restart of worker 0
        restarted.worker = 0
        await restarted.start(_state())
        assert restarted.cache is not None and restarted.cache._lock_fd is not None  # a new file: I2, not Q's I1
        shown = [h.get(PREDECESSOR_SECRET_HEADER) for h, _ in sent.registrations]
        recorded = _predecessor_fence(ctl)
        holder_until = (time.time() + holder_state.lease_deadline - time.monotonic()
                        if holder_state.lease_valid() else 0.0)
        _release(holder.cache)
        _release(restarted.cache)
        for source in (exited, holder, restarted):
            await source.client.aclose()
        assert holder_until > time.time() + 60, "Q produces from A's saved deadline (the scenario's premise)"
        assert recorded is not None and recorded >= holder_until - 1.0, (
            f"shown {shown}: Q (holding the removed lock file A saved its deadline under) may produce for "
            f"{holder_until - time.time():.0f} s more, but a move waits only until {recorded - time.time():.0f} s "
            f"+ the grace")

    _run(tmp_path, body)


def test_rv7_avail_a_worker_holding_its_lock_keeps_its_parents_word_when_the_secret_file_cannot_be_written(
        tmp_path, monkeypatch):
    """[availability] Worker 0 A (sA) registers under the lock and dies; the disk is full. X starts A' with its
    word (sB, sA): A' takes the lock (only the lock's exited holders could produce from the saved deadline), then
    cannot save its secret (ENOSPC). Its parent saw A exit: sA is shown and A's fence ends at A''s registration
    (a move waits the grace), as before 3d81af0."""
    path = tmp_path / "view.json"
    write = view_cache.write_atomically

    def disk_full_for_the_secret(target, data: bytes) -> None:
        if target.name.endswith(".secret"):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        write(target, data)

    async def body(ctl, app) -> None:
        exited, _ = _source(app, path, secrets=("a" * 43, None))
        exited.worker = 0
        await exited.start(_state())
        _release(exited.cache)  # A dies; its parent sees it exit
        _lease_lapsed(ctl)
        monkeypatch.setattr(view_cache, "write_atomically", disk_full_for_the_secret)
        restarted, sent = _source(app, path, secrets=("b" * 43, exited.own_secret))
        restarted.worker = 0
        before = time.time()
        await restarted.start(_state())
        after = time.time()
        assert restarted.cache is not None and restarted.cache._lock_fd is not None  # the lock is ours
        shown = [h.get(PREDECESSOR_SECRET_HEADER) for h, _ in sent.registrations]
        recorded = _predecessor_fence(ctl)
        _release(restarted.cache)
        for source in (exited, restarted):
            await source.client.aclose()
        assert shown == [exited.own_secret], shown
        assert recorded is not None and before <= recorded <= after, (
            f"A's fence recorded {recorded - after:.0f} s after A''s registration: a move waits it all")

    _run(tmp_path, body)
