"""Reviewer rv11 (failing tests) on a106f84 (docs/DESIGN.md §4.7, `ControllerViewSource.start`): a round asks each
listed controller once (`_next_unasked`), after `_failed` has moved `controllers.current` and logged the move."""

from __future__ import annotations

import asyncio
import logging

import httpx

from fedkafka.controller.service import Controller
from proxy.test_member_secret_proxy import _app_transport, _source, _state, _with_controller
from proxy.test_rv10_review import _FailoverWithStaleHint


def test_start_logs_the_controller_it_goes_on_to_not_one_the_round_skips(tmp_path, caplog):
    """urls old, standby, controller: old fails, `_failed` logs "following controller http://standby" (asked next:
    true); standby's 503 names old, `_failed` logs "following controller http://old", and `_next_unasked` silently
    moves on to http://controller (view_source.py:186-187 then 197-205). The operator reading the log during a
    failover is told the proxy follows the dead controller, and never that it went to the one it registered with."""
    async def run(ctl: Controller) -> list[str]:
        transport = _FailoverWithStaleHint(_app_transport(ctl))
        source, state = _source(ctl, "http://old,http://standby,http://controller", transport=transport), _state()
        await asyncio.wait_for(source.start(state), 60)  # a guard against a hang, not a timing assertion
        assert source._registered and source.controllers.current == "http://controller"
        await source.client.aclose()
        return transport.asked

    caplog.set_level(logging.INFO, logger="fedkafka.proxy.view_source")
    asked = _with_controller(tmp_path / "ctl.db", run)
    followed = [r.getMessage().removeprefix("following controller http://") for r in caplog.records
                if r.getMessage().startswith("following controller ")]
    # A round now asks every controller at once (test_start_round_asks_at_once.py) and takes the registration
    # `controller` grants first: the one line names it, never the dead one the standby's stale hint names. (Asked
    # one after the other, the lines were to equal the round's moves in request order: standby, then controller.)
    assert sorted(asked[:3]) == ["controller", "old", "standby"]  # the round's registrations, each controller once
    assert followed == ["controller"], f"logged following {followed} (asked {asked})"


class _DownThenUp(httpx.AsyncBaseTransport):
    """The controller unreachable while `down`, then the app; `answered` set once the app answered a 4xx."""

    def __init__(self, app: httpx.AsyncBaseTransport):
        self.app, self.down, self.answered = app, True, asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        resp = await self.app.handle_async_request(request)
        if 400 <= resp.status_code < 500:
            self.answered.set()
        return resp


def test_a_restart_started_without_a_controller_stops_producing_once_the_active_one_answers_401(tmp_path, monkeypatch):
    """a106f84 takes an active controller's 4xx in `start` as a refusal (view_source.py:187): up, it "may be taking
    another process's acks for our member" (its previous run's), so no produce under the saved deadline. The same
    answer one second later, to `_register_from_cache` (a restart that found no controller, the controller back
    up), is taken as "still unreachable" (view_source.py:410-413): only a 409 ends the saved deadline (:407), so
    the restart keeps producing under its saved view while the controller takes its previous run's acks: the
    hazard rv10's 401 test closed for `start`, reached by the other order."""
    from fedkafka.proxy import view_source
    from proxy.test_member_secret_proxy import _close, _previous_run, _renews, _saved_views

    cache = _saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        old, _ = await _previous_run(ctl, cache)  # the previous run: registered, its view and deadline saved
        transport = _DownThenUp(_app_transport(ctl))
        restarted, state = _source(ctl, token="not-the-token", cache=cache, transport=transport), _state()
        await asyncio.wait_for(restarted.start(state), 60)  # no controller answers: the saved deadline
        assert state.lease_valid()  # F5: as designed while no controller answers
        transport.down = False  # the controller is back, and refuses the restart's token
        handled = asyncio.Event()  # `_register_from_cache` handled an answer: it backs off before asking again
        backed_off = view_source._backed_off

        async def backing_off(delay: float) -> float:
            handled.set()
            return await backed_off(delay)

        monkeypatch.setattr(view_source, "_backed_off", backing_off)
        registering = asyncio.create_task(restarted._register_from_cache(state))
        await asyncio.wait_for(handled.wait(), 60)  # a guard against a hang, not a timing assertion
        assert transport.answered.is_set()  # the controller answered 4xx, not a connection error
        assert await _renews(old, ctl.view.version) == 200  # it acks
        produces = state.lease_valid()
        registering.cancel()
        await asyncio.gather(registering, return_exceptions=True)
        await _close(old, restarted)
        assert not produces, ("the active controller answered (401) and takes the previous run's acks; the "
                              "restart still produces under its saved view")

    _with_controller(tmp_path / "ctl.db", run)
