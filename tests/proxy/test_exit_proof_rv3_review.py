"""Review s32-rv3 of the exit proof (merge cfed363 in the context of e8c4119; docs/DESIGN.md §4.9 F4, "proved by
the view cache's lock"). Each test FAILS on main (e1cdf51).

1. [data] The lock proves that every process that *held* `PATH.lock` has exited. It says nothing of a process that
   runs on the same view cache *without* the lock (a restart racing its previous run, two proxies on one cache: the
   case the docs name), yet that process serves the saved view and, with no controller answering, produces until
   the saved deadline `PATH.fence`, which is the row's fence (F5). The next lock holder shows the exited holder's
   secret, the controller records the row's fence as ending now, and a move waits only the grace while the lockless
   process still produces to the old segment under the old view for up to that whole fence: acked records land
   above the seal. The same with a process on a *copy* of the state dir (it holds the copy's lock): the saved
   deadline must be bound to the lock it was saved under, as `.secret` now is.
2. [availability] A `--workers` parent's word replaces the file's list: a worker restarted twice before its
   registration was answered shows only the short-lived process's secret, which the row never held, although the
   file beside its cache holds the row holder's too (proved exited by the same lock): the whole fence is waited.
3. [availability] Four runs that exit before any registration is answered push the last answered run's secret (the
   one the row holds) out of the file: the fifth waits the row holder's whole fence.
"""

from __future__ import annotations

import shutil
import time

from proxy.exit_proof_helpers import (
    _close,
    _cut_off,
    _lease_lapsed,
    _predecessor_fence,
    _produces_until,
    _release,
    _restart_after_a_killed_run_and_an_unregistered_one,
    _run,
    _shown,
    _source,
    _state,
)


def test_rv3_a_process_serving_the_cache_without_its_lock_is_not_vouched_away(tmp_path):
    """[data] P1 holds the lock and the row (fence 15 min, saved in PATH.fence). P2 starts on the same cache while P1
    runs (a restart racing it, a second proxy on the cache): the lock is held, so P2 shows nothing, but with no
    controller answering it serves the saved view and produces until the saved deadline. P1 exits; P3 takes the free
    lock, shows P1's secret: the controller records the row's fence as ending at P3's registration. P2 still may
    produce (old view, old segment) long after a move waited only the grace."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        first, _ = _source(app, path)
        await first.start(_state())
        lockless, _ = _source(app, path)
        _cut_off(lockless)
        lockless_state = _state()
        await lockless.start(lockless_state)  # the lock is P1's: P2 serves the saved view from the cache
        assert lockless.cache._lock_fd is None
        _release(first.cache)  # P1 exits
        _lease_lapsed(ctl)
        third, sent = _source(app, path)
        await third.start(_state())
        shown = _shown(sent)
        recorded = _predecessor_fence(ctl)
        lockless_until = _produces_until(lockless_state)  # until when P2 may still produce under the row's fence
        _release(third.cache)
        await _close(first, lockless, third)
        assert shown == [first.own_secret]  # P1's exit is proved: the lock
        assert recorded is not None and recorded >= lockless_until - 1.0, (
            f"P2 (never held the lock) may produce for {lockless_until - time.time():.0f} s more, but a move waits "
            f"only until {recorded - time.time():.0f} s + the grace")

    _run(tmp_path, body)


def test_rv3_a_process_serving_a_copy_of_the_cache_is_not_vouched_away(tmp_path):
    """[data] The same hole with a copy of the state dir (rv32's case: moved to a new disk or host under the same
    advertised name, a backup restored there): P2 on the copy holds the copy's lock (another inode), serves the
    saved view and, cut off from the controllers, produces until the saved deadline, the row's fence. P1 (the
    original) exits, P3 takes the original's lock and shows P1's secret: the row's fence is recorded as ending at P3's
    registration while P2 may still produce for that whole fence. Refusing produce only to a process that failed
    the lock does not cover this: the saved deadline must be bound to the lock it was saved under."""
    original, copy = tmp_path / "old", tmp_path / "new"

    async def body(ctl, app) -> None:
        first, _ = _source(app, original / "view.json")
        await first.start(_state())
        shutil.copytree(original, copy)
        on_copy, _ = _source(app, copy / "view.json")
        _cut_off(on_copy)
        copy_state = _state()
        await on_copy.start(copy_state)  # the copy's lock is free: held; no controller answers it
        _release(first.cache)  # P1 exits
        _lease_lapsed(ctl)
        third, sent = _source(app, original / "view.json")
        await third.start(_state())
        shown = _shown(sent)
        recorded = _predecessor_fence(ctl)
        copy_until = _produces_until(copy_state)
        for source in (on_copy, third):
            _release(source.cache)
        await _close(first, on_copy, third)
        assert shown == [first.own_secret]
        assert recorded is not None and recorded >= copy_until - 1.0, (
            f"P2 (on a copy) may produce for {copy_until - time.time():.0f} s more, but a move waits only until "
            f"{recorded - time.time():.0f} s + the grace")

    _run(tmp_path, body)


def test_rv3_avail_a_workers_parent_word_does_not_hide_the_row_holder_kept_in_the_file(tmp_path):
    """[availability] Worker 0: process K (parent's secret sK) registered, then died (kill -9: its lease still live);
    the parent started W1 with (s1, sK): refused 409 while K's lease lives, it serves its saved view; W1 dies too;
    the parent starts W2 with (s2, s1). The file beside the cache holds [s1, sK], all proved exited by the lock W2
    holds, but W2 shows only its parent's s1, which the row never held: K's whole fence (15 min) is waited for."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        recorded, registered_by = await _restart_after_a_killed_run_and_an_unregistered_one(ctl, app, path,
                                                                                            parents_word=True)
        assert recorded is not None and recorded <= registered_by  # K's exit proved: the grace only

    _run(tmp_path, body)


def test_rv3_avail_four_unanswered_runs_do_not_push_out_the_row_holders_secret(tmp_path):
    """[availability] K registered (its secret confirmed alone in the file) and died; four restarts each exited
    before a registration of theirs was answered (refused 409 while K's lease lived, then stopped). The fifth shows
    the four newest secrets only, K's (the row's) dropped: K's whole fence is waited for although the same lock
    proves K exited. The secret a registration answered names the row's likeliest holder: keep it."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        killed, _ = _source(app, path)
        await killed.start(_state())
        _release(killed.cache)
        sources = [killed]
        for _ in range(4):
            short_lived, sent = _source(app, path)
            await short_lived.start(_state())  # refused: K's lease is live
            assert short_lived.member_id is None and len(sent.registrations) == 1
            _release(short_lived.cache)
            sources.append(short_lived)
        _lease_lapsed(ctl)
        restart, _ = _source(app, path)
        await restart.start(_state())
        registered_by = time.time()
        recorded = _predecessor_fence(ctl)
        _release(restart.cache)
        await _close(*sources, restart)
        assert recorded is not None and recorded <= registered_by  # K's exit proved: the grace only

    _run(tmp_path, body)

