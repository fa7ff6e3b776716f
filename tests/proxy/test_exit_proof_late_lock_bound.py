"""A start that found the view cache's lock held takes it once free (docs/DESIGN.md §4.9 F4, "Taken late"): the two
places of that design no other test pins down. The take binds our live deadline to the lock at once, with our own
view saved again beside it (`ControllerViewSource._bind_deadline`), not only at the next renewal; and `start` tries
the take before each registration round, so a round after our previous run exited shows its secret."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from fedkafka.proxy.view_cache import ViewCache
from fedkafka.view.model import View
from proxy.exit_proof_helpers import (
    INSTANCE,
    _close,
    _cut_off,
    _late_start_then_the_holder_saves_an_older_view_and_exits,
    _lease_lapsed,
    _predecessor_fence,
    _produces_until,
    _release,
    _restart_cut_off,
    _run,
    _shown,
    _source,
    _started_beside_an_exiting_holder,
    _state,
)


def test_a_lock_taken_late_binds_our_deadline_and_view_even_when_no_renewal_follows(tmp_path):
    """P2 started while H (exiting, never registered) held the lock: it registered, acked its view and saved its
    deadline, all lockless (`"lock": null`: no holder produces from it). H exits; at P2's next heartbeat no
    controller answers, so no renewal follows the take: the take itself binds P2's live deadline to the lock, beside
    P2's view saved again under it. P2 is killed; its restart, cut off too, produces under P2's view until P2's
    deadline (the controller counts it: P2's row). Without the binding at the take, the restart produced nothing."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        exiting, late, late_state = await _started_beside_an_exiting_holder(app, path)
        assert not late.cache.holds_lock and late_state.lease_valid()
        acked, granted_until = late_state.applied_version, _produces_until(late_state)
        _release(exiting)  # H exits
        _cut_off(late)
        with pytest.raises(httpx.ConnectError):
            await late._heartbeat_once(late_state)  # takes the lock, then its renewal finds no controller
        holds = late.cache.holds_lock
        _release(late.cache)  # P2 killed
        produces_under, until = await _restart_cut_off(app, path)
        await _close(late)
        assert holds
        assert produces_under == acked, f"the restart produces under view {produces_under}, P2 acked {acked}"
        assert abs(until - granted_until) < 60, "the restart's deadline is not the one P2's registration got"

    _run(tmp_path, body)


def test_a_start_refused_while_its_previous_run_lives_takes_the_lock_before_its_next_round(tmp_path):
    """K holds the lock and the row (its lease live) when P2 starts with no saved view: P2's round is refused (409)
    and it waits. K exits meanwhile (its lease lapses as it does); before its next round P2 takes the lock, so that
    round shows K's secret (saved under the lock: an exited process's) and the controller records K's fence as ending
    at P2's registration, not K's whole fence (15 min). Without the take before each round, it showed none."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        killed, _ = _source(app, path)
        await killed.start(_state())  # K: registered, holds the lock, its secret saved under it
        path.unlink()  # no saved view for P2 (a new state dir but for the lock files): `start` keeps trying
        racing, sent = _source(app, path)

        async def k_exits_while_we_wait(refusal, delay: float) -> float:
            _release(killed.cache)
            _lease_lapsed(ctl)
            return delay

        racing._wait_refused = k_exits_while_we_wait  # type: ignore[method-assign]
        await racing.start(_state())
        registered_by = time.time()
        recorded = _predecessor_fence(ctl)
        holds = racing.cache.holds_lock
        _release(racing.cache)
        await _close(killed, racing)
        assert _shown(sent)[-1] is not None and killed.own_secret in _shown(sent)[-1].split(","), _shown(sent)
        assert len(sent.registrations) == 2 and holds
        assert recorded is not None and recorded <= registered_by, (
            f"K (exited: its lock was taken) waited for until {recorded - registered_by:.0f} s after P2 registered")

    _run(tmp_path, body)


def test_a_lock_taken_late_saves_our_view_again_beside_our_deadline(tmp_path):
    """While P2 was lockless, H (holding the lock, exiting) saved an older view after P2's acked one. At the take P2
    saves its own view again under the lock, then its deadline naming that save: killed, its restart, cut off,
    produces under P2's view until P2's deadline. On s33-rv2 the restart produced under H's older view (data: the
    reviewer's rv2 case); without the save again, the deadline named P2's lockless save, H's view lay beside it,
    and the restart produced nothing (sound, but for no reason)."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        late, late_state, acked = await _late_start_then_the_holder_saves_an_older_view_and_exits(app, path)
        await late._heartbeat_once(late_state)  # takes the lock: our view saved again, our deadline bound
        granted_until = _produces_until(late_state)
        _release(late.cache)  # P2 killed
        produces_under, until = await _restart_cut_off(app, path)
        await _close(late)
        assert produces_under == acked, f"the restart produces under view {produces_under}, P2 acked {acked}"
        assert abs(until - granted_until) < 60, "the restart's deadline is not P2's"

    _run(tmp_path, body)


def test_a_start_from_the_cache_saves_its_view_before_its_first_deadline(tmp_path):
    """[availability] P starts from the saved view (no controller answers; it holds the lock from its start), then
    registers from the cache and renews before any new view: it saved no view of its own, so its first deadline
    would name none and be unused. It saves its view first (`_save_fence`): killed, its restart, cut off, produces
    under that view until P's deadline. Without that save, the restart produced nothing."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        killed, _ = _source(app, path)
        await killed.start(_state())
        _release(killed.cache)  # K killed
        _lease_lapsed(ctl)
        restarted, _ = _source(app, path)
        reachable = restarted.client
        _cut_off(restarted)
        state = _state()
        await restarted.start(state)  # from the cache
        await restarted.client.aclose()
        restarted.client = reachable  # a controller answers again
        await restarted._register_from_cache(state)
        await restarted._heartbeat_once(state)
        served, granted_until = state.view.version, _produces_until(state)
        _release(restarted.cache)  # P killed
        produces_under, until = await _restart_cut_off(app, path)
        await _close(killed, restarted)
        assert produces_under == served, f"the restart produces under view {produces_under}, P served {served}"
        assert abs(until - granted_until) < 60, "the restart's deadline is not P's"

    _run(tmp_path, body)


def test_a_deadline_is_used_only_beside_the_view_save_it_names(tmp_path):
    """[unit] The deadline on disk names its writer's last view save (`ViewCache.view_save_id`): a later save by any
    other process (a lockless one, or the earlier holder still exiting) leaves it unused, so a restart never
    produces under a view older than one the deadline's writer acked; the writer's own next save makes it usable
    again at once, the same deadline saved again naming that save (`_follow_view_save`: not only at the next
    renewal), and so does its next deadline; never once the writer ended it (docs/DESIGN.md §4.9 F4 "Taken late")."""
    path = tmp_path / "view.json"
    holder = ViewCache(path, INSTANCE)
    assert holder.lock_for_life()
    holder.save_view(View(version=5), node_id=1)
    holder.save_fence(time.time() + 600)
    assert holder.load().produce_until > 0
    ViewCache(path, INSTANCE).save_view(View(version=4), node_id=1)  # a lockless process's older view lands after
    assert holder.load().produce_until == 0.0
    assert json.loads(path.with_name("view.json.fence").read_text())["view_save"] == holder.view_save_id
    granted = time.time() + 600
    holder.save_fence(granted)
    holder.save_view(View(version=6), node_id=1)  # our own save after the deadline: the same deadline names it
    assert holder.load().produce_until == granted
    assert json.loads(path.with_name("view.json.fence").read_text())["view_save"] == holder.view_save_id
    holder.save_fence(time.time() + 600)
    assert holder.load().produce_until > 0
    holder.end_fence()
    holder.save_view(View(version=7), node_id=1)  # ended: no deadline saved again beside a later save
    assert holder.load().produce_until == 0.0
    _release(holder)


def test_our_own_view_save_saves_again_only_a_deadline_we_wrote_under_the_lock_we_hold(tmp_path):
    """[unit] `_follow_view_save` never takes up a deadline this process did not write under the lock it holds: not
    a previous holder's on disk (a restart that saved its view before its first deadline), not one we wrote lockless
    (taken late: `_bind_deadline` binds only a live one)."""
    path = tmp_path / "view.json"
    earlier = ViewCache(path, INSTANCE)
    assert earlier.lock_for_life()
    earlier.save_view(View(version=5), node_id=1)
    earlier.save_fence(time.time() + 600)
    _release(earlier)
    restart = ViewCache(path, INSTANCE)
    assert restart.lock_for_life()
    assert restart.load().produce_until > 0  # the previous holder's deadline, beside its own save
    restart.save_view(View(version=5), node_id=1)
    assert restart.load().produce_until == 0.0
    lockless = ViewCache(path, INSTANCE)
    lockless.save_fence(time.time() + 600)
    assert lockless.lock_for_life() is False  # `restart` holds it: `lockless` wrote its deadline under no lock
    lockless.save_view(View(version=6), node_id=1)
    assert json.loads(path.with_name("view.json.fence").read_text())["view_save"] is None
    assert restart.load().produce_until == 0.0
    _release(restart)
