"""Review s33-fix2 (rv5): the saved deadline bound to one view save (`view_save`, docs/DESIGN.md §4.9 F4 "Taken
late" (5)). Both findings are availability only (the restart produces nothing from the cache where it safely could:
the deadline on disk is the restart's previous run's own, and the view on disk is that run's own, at least every
view it acked); no data finding."""

from __future__ import annotations

import dataclasses
import time

import httpx
import pytest

from fedkafka.controller.models import ProxyRow
from proxy.exit_proof_helpers import (
    INSTANCE,
    _close,
    _cut_off,
    _drained,
    _late_start_then_the_holder_saves_an_older_view_and_exits,
    _produces_until,
    _release,
    _restart_cut_off,
    _run,
    _source,
    _state,
)


def test_rv5_avail_a_killed_restart_after_our_own_view_save_still_produces_from_our_deadline(tmp_path):
    """[availability, normal single process] DEFECT: K (holds the lock from its start, registered, deadline saved)
    takes a newer view, drains, saves and acks it; the ack heartbeat finds no controller (the controller went away
    just after publishing it), so no renewal writes a deadline naming the new save. K is killed; its restart, cut
    off too, holds the same lock and finds K's own deadline beside K's own, newer, view, yet produces nothing: the
    deadline names K's previous save (`view_save`), and `load` uses it only beside that very save. On main it
    produced under the new view until K's deadline (sound: the view is K's newest, the deadline K's, at most the
    row's fence). Every own view save leaves the deadline on disk unusable until the next renewal; saving the
    deadline again naming the new save right after it (the same `until`) would keep it usable."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        killed, _ = _source(app, path)
        state = _state()
        await killed.start(state)
        assert killed.cache.holds_lock and state.lease_valid()
        granted_until = _produces_until(state)
        newer = dataclasses.replace(state.view, version=state.view.version + 1)
        _cut_off(killed)  # the controller goes away right after publishing `newer`
        with pytest.raises(httpx.ConnectError):
            await killed._take_view(state, newer, _drained)  # applied, drained, saved, acked; its heartbeat fails
        acked = state.applied_version
        _release(killed.cache)  # K killed
        produces_under, until = await _restart_cut_off(app, path)
        await _close(killed)
        assert acked == newer.version
        assert produces_under == acked, (
            f"K's restart produces under view {produces_under}; K acked {acked} and saved its deadline (until "
            f"{granted_until - time.time():.0f} s from now) under the same lock")
        assert abs(until - granted_until) < 60

    _run(tmp_path, body)


def test_rv5_avail_a_lock_taken_late_while_our_lease_lapsed_leaves_our_deadlines_beside_the_exited_holders_view(
        tmp_path):
    """[availability, late take] DEFECT: P2 registered lockless and saved (acked) its view; H, the holder still
    exiting, saved its older view after P2's. The controller was unreachable long enough for P2's lease and fence to
    run out. H exits; the controller answers again: P2's heartbeat takes the lock, but `_bind_deadline` binds nothing
    (our lease is not valid then), the renewal answers 404 and P2 registers again (the view unchanged: no save), and
    every deadline P2 saves from then on names P2's lockless save, while H's view lies on disk: P2 killed, its
    restart (cut off) produces nothing until P2 saves a new view (the next view change, maybe hours). Forgetting
    our save id at the take (or saving our view again at the take whatever the lease) would bind the next deadline
    to a save of ours."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        late, late_state, acked = await _late_start_then_the_holder_saves_an_older_view_and_exits(app, path)
        late_state.lease_deadline = time.monotonic() - 1  # unreachable for a whole fence: lapsed here...
        with ctl.session() as s:  # ...and at the controller
            row = s.query(ProxyRow).filter_by(instance_id=INSTANCE).one()
            row.lease_expires = row.fence_expires = time.time() - 1
            s.commit()
        await late._heartbeat_once(late_state)  # takes the lock; 404: registers again, renews, saves the deadline
        holds = late.cache.holds_lock
        granted_until = _produces_until(late_state)
        _release(late.cache)  # P2 killed
        produces_under, until = await _restart_cut_off(app, path)
        await _close(late)
        assert holds and granted_until > 0
        assert produces_under == late_state.view.version >= acked, (
            f"P2's restart produces under view {produces_under}; P2 serves {late_state.view.version} and saved "
            f"its deadline under the lock it took")
        assert abs(until - granted_until) < 60

    _run(tmp_path, body)
