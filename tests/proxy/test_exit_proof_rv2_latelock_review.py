"""Review s33-rv2 of s33-latelock (docs/DESIGN.md §4.9 F4 "Taken late"): a start that found the view cache's lock
held takes it once free, then binds its own deadline to it (`ControllerViewSource._take_lock_once_free`,
`_bind_deadline`). Each test names the defect it shows; each FAILS on s33-latelock (b5c6cd0)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from fedkafka.controller.models import ProxyRow
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
    _source,
    _state,
)


def _saved_version(path) -> int:
    return json.loads(path.read_text())["version"]


def test_rv2_data_a_lock_taken_late_binds_its_deadline_beside_a_view_the_previous_holder_saved(tmp_path):
    """[data] DEFECT: the late take binds our deadline to the lock (`_bind_deadline`, then each renewal) whatever view
    the file PATH holds, but while we were lockless the previous holder A, alive, still saved views there (it
    follows the view stream though superseded: 403 on heartbeats, 409 on registering): its save of an older view,
    delayed by its drain, may land after ours. A exits, we take the lock and bind our deadline (renewed past A's
    fence) beside A's older view; killed, our restart, cut off, produces under that older view until our deadline,
    although we acked the newer one: a move that sealed on our ack (once A's recorded fence passed) loses the
    writes (F5: the deadline on disk must go with a view at least every acked one). On main our deadline named no
    lock and the restart produced nothing."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        previous, _ = _source(app, path)
        previous_state = _state()
        await previous.start(previous_state)  # A: holds the lock, its view saved
        _lease_lapsed(ctl)  # A cut off past its lease (alive): it last renewed 14 min ago, its fence ends in 60 s
        with ctl.session() as session:
            session.query(ProxyRow).filter_by(instance_id=INSTANCE).one().fence_expires = time.time() + 60
            session.commit()
        late, _ = _source(app, path)
        late_state = _state()
        await late.start(late_state)  # lockless; registers (A's lease lapsed)
        ctl.register_proxy("127.0.0.1:9093", "127.0.0.1", 9093, "pproxy", "default")  # composes a newer view
        await late._take_current_view(late_state)  # from the stream; A (lagging) has not saved it yet: acked
        acked = late_state.applied_version
        assert not late.cache.holds_lock and acked > previous_state.view.version
        await previous._save_view(previous_state)  # A's delayed save of its older view lands after ours
        _release(previous.cache)  # A exits
        await late._heartbeat_once(late_state)  # takes the lock: our deadline bound to it
        on_disk = _saved_version(path)
        _release(late.cache)  # killed
        restart, _ = _source(app, path)
        _cut_off(restart)
        restart_state = _state()
        await restart.start(restart_state)
        produces_under = restart_state.view.version if restart_state.lease_valid() else None
        until, waited_for_a = _produces_until(restart_state), _predecessor_fence(ctl)
        _release(restart.cache)
        await _close(previous, late, restart)
        assert waited_for_a is not None and waited_for_a < time.time() + 120  # the window: A's fence to ours
        assert produces_under is None or produces_under >= acked, (
            f"the restart produces under view {produces_under} (saved by A, v{on_disk} on disk) until the deadline "
            f"bound by the late take ({until - time.time():.0f} s from now), though the process it replaces acked "
            f"view {acked}: a move counts that ack once A's recorded fence ({waited_for_a - time.time():.0f} s from "
            "now) and the grace have passed")

    _run(tmp_path, body)


def test_rv2_avail_two_tasks_taking_the_lock_late_at_once_swap_the_secret_file_twice(tmp_path):
    """[availability, minor] DEFECT: the view stream's ack heartbeat and the periodic one both run
    `_take_lock_once_free`; the second one, entering while the first is still in `lock_for_life`'s thread (the lock
    already held: `holds_lock`), swaps the secret file too, then the first one swaps again: it reads our own secret
    as an earlier holder's and shows it as our predecessor (`predecessor_secrets`), in place of the exited holders'
    secrets the first swap read (here K's, the registered run before ours, and H's). The `holds_lock` shortcut was
    meant for a call cancelled before it saved our secret, not for one still running."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        killed = ViewCache(path, INSTANCE)
        assert killed.lock_for_life()
        killed.swap_secret("k" * 43)
        killed.confirm_secret()  # K: registered (answered), then killed
        _release(killed)
        holder = ViewCache(path, INSTANCE)
        assert holder.lock_for_life()  # H: alive, exiting
        holder.swap_secret("h" * 43)
        late, _ = _source(app, path)
        late_state = _state()
        await late.start(late_state)  # no lock (H's); K never registered here: registers at once
        _release(holder)  # H exits
        take, taken, handed_back = late.cache.lock_for_life, threading.Event(), threading.Event()

        def slow_take() -> bool:  # the thread hands the lock back late (a loaded 2-core host)
            held = take()
            taken.set()
            handed_back.wait(5)
            return held

        late.cache.lock_for_life = slow_take  # type: ignore[method-assign]

        async def second() -> None:  # the other task's heartbeat, once the first one's thread holds the lock
            try:
                await asyncio.to_thread(taken.wait, 5)
                await late._take_lock_once_free(late_state)
            finally:
                handed_back.set()

        await asyncio.gather(late._take_lock_once_free(late_state), second())
        shown = late.predecessor_secrets
        _release(late.cache)
        await _close(late)
        assert late.own_secret not in shown, f"our own secret shown as an exited predecessor's: {shown}"
        assert {"k" * 43, "h" * 43} <= set(shown), f"exited holders' secrets no longer shown: {shown}"

    _run(tmp_path, body)
