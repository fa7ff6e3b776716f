"""Review s32-rv1 of the view cache's exit proof (docs/DESIGN.md §4.9 F4, "proved by the view cache's lock").

The proof is "I took PATH.lock, so the process that wrote PATH.secret has exited". That holds only when the lock
we took is the very lock (the same inode, on the same kernel) that the secret's writer held. The secret file does
not say which lock it was written under, so a secret that outlived or left its lock is taken as an exited
process's while that process still runs: the controller records its fence as ending now, and a move waits only
the grace while it may still produce (and ack) on the old segment for its whole fence. Both tests FAIL on main
(e8c4119): the live process's secret is shown as the predecessor's."""

from __future__ import annotations

import shutil

from fedkafka.proxy.view_source import ControllerViewSource
from proxy.exit_proof_helpers import (
    _close,
    _fence_of_row,
    _lease_lapsed,
    _predecessor_fence,
    _release,
    _restart_after_a_killed_run_and_an_unregistered_one,
    _run,
    _shown,
    _source,
    _state,
)


async def _second_start_while_the_first_lives(ctl, app, path, first: ControllerViewSource) -> tuple[list, float]:
    """A second process starts on `path` once the live first one's lease lapsed; both are then stopped. Returns the
    predecessor secrets it showed and the predecessor fence recorded."""
    _lease_lapsed(ctl)
    second, sent = _source(app, path)
    await second.start(_state())
    shown = _shown(sent)
    recorded = _predecessor_fence(ctl)
    _release(first.cache)
    _release(second.cache)
    await _close(first, second)
    return shown, recorded


def test_rv32_a_copied_view_cache_does_not_vouch_for_its_live_original(tmp_path):
    """The proxy's state dir copied while the proxy runs (moved to a new disk or host under the same advertised
    name, a backup restored there, a cloned VM, a block volume re-attached elsewhere): the copy's lock file is
    another file, free, so the new process takes it and shows the running original's secret as an exited
    predecessor's. The original, cut off from the controllers, may still produce for its whole fence: that fence
    must be recorded, not `now`."""
    original, copy = tmp_path / "old", tmp_path / "new"

    async def body(ctl, app) -> None:
        first, _ = _source(app, original / "view.json")
        await first.start(_state())  # alive for the whole test: holds old/view.json.lock
        first_fence = _fence_of_row(ctl)
        shutil.copytree(original, copy)
        # the original is cut off from the controllers (not from its clients and brokers): its lease lapses
        shown, recorded = await _second_start_while_the_first_lives(ctl, app, copy / "view.json", first)
        assert shown == [None], "the live original's secret was shown as an exited predecessor's"
        assert recorded == first_fence  # the live original's whole fence is waited for

    _run(tmp_path, body)


def test_rv32_a_lock_file_removed_under_its_live_holder_does_not_vouch_for_it(tmp_path):
    """`view.json.lock` removed while its holder runs (a cleanup of "stale" lock files, tmpfiles' age limit on a
    cache under /tmp, the state dir restored in place): the next process creates a new lock file, locks it at
    once, and shows the live holder's secret as an exited predecessor's."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        first, _ = _source(app, path)
        await first.start(_state())  # alive for the whole test: holds the (now unlinked) lock
        first_fence = _fence_of_row(ctl)
        first.cache.lock_path.unlink()
        shown, recorded = await _second_start_while_the_first_lives(ctl, app, path, first)
        assert shown == [None], "the live holder's secret was shown as an exited predecessor's"
        assert recorded == first_fence

    _run(tmp_path, body)


def test_rv32_avail_a_restart_that_exits_before_registering_keeps_the_proof_of_the_run_before(tmp_path):
    """[availability, not data] Killed run K (the row's holder), then a restart R1 stopped before its registration
    committed (SIGTERM'd while K's lease was still live, its registration refused 409, or it crashed), then R2: R1
    replaced K's secret on disk before registering, so R2 shows R1's, which the row never held, and K's whole fence
    (15 min) is waited for although K is proved dead by the same lock. Fails on main: the fence recorded is K's."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        recorded, registered_by = await _restart_after_a_killed_run_and_an_unregistered_one(ctl, app, path)
        assert recorded is not None and recorded <= registered_by  # K's exit proved: the grace only

    _run(tmp_path, body)
