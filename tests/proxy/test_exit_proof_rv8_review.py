"""Review s33-fix5 (rv8): `ViewCache._follow_view_save` (docs/DESIGN.md §4.9 F4 "Taken late" (5)). No defect found;
this guard pins the claim the re-save rests on for a superseded process: the deadline our own later view save saves
again is still covered by the fence the controller recorded for us at the takeover (`predecessor_fence_expires`, only
ever moved forward), so a restart producing from it under our newest view is accounted for."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from proxy.exit_proof_helpers import (
    _close,
    _drained,
    _lease_lapsed,
    _predecessor_fence,
    _release,
    _restart_cut_off,
    _run,
    _source,
    _state,
)


def test_rv8_guard_a_superseded_holders_deadline_saved_again_stays_under_its_recorded_fence(tmp_path):
    """[guard, data] H holds the lock, registered, deadline saved. Its lease lapses at the controller and P (lockless:
    H holds the lock) takes the member over, its view saved over H's. H, alive, takes a newer view, drains, saves it
    (the follow saves H's deadline again naming it), its ack heartbeat refused (403, then 409: P's lease is live). H
    is killed; its restart, cut off, holds the lock and produces under H's newest view until H's deadline: that
    deadline must not exceed the fence the controller recorded for H at P's takeover (moves wait for it)."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        holder, _ = _source(app, path)
        state = _state()
        await holder.start(state)
        assert holder.cache.holds_lock and state.lease_valid()
        _lease_lapsed(ctl)
        taker, _ = _source(app, path)
        taker_state = _state()
        await taker.start(taker_state)  # lockless; registered: the member taken over, its view saved over H's
        assert not taker.cache.holds_lock
        recorded = _predecessor_fence(ctl)
        newer = dataclasses.replace(state.view, version=state.view.version + 1)
        with pytest.raises(httpx.HTTPStatusError):  # 403, registering again: 409 (P's lease is live)
            await holder._take_view(state, newer, _drained)
        _release(holder.cache)  # H killed
        produces_under, until = await _restart_cut_off(app, path)
        await _close(holder, taker)
        assert recorded is not None
        assert produces_under == newer.version  # the follow kept H's deadline usable beside H's newest save
        assert until <= recorded + 1, f"produces {until - recorded:.0f} s past the fence recorded for H"

    _run(tmp_path, body)
