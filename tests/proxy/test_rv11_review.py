"""Reviewer rv11 (failing tests) on a106f84 (docs/DESIGN.md §4.7, `ControllerViewSource.start`): a round asks each
listed controller once (`_next_unasked`), after `_failed` has moved `controllers.current` and logged the move."""

from __future__ import annotations

import asyncio
import itertools
import logging

import httpx

from fedkafka.controller.app import create_app
from fedkafka.proxy.view_source import ControllerViewSource
from proxy.test_member_secret_proxy import INSTANCE, TOKEN, _controller, _state
from proxy.test_rv10_review import _FailoverWithStaleHint


def test_start_logs_the_controller_it_goes_on_to_not_one_the_round_skips(tmp_path, caplog):
    """urls old, standby, controller: old fails, `_failed` logs "following controller http://standby" (asked next:
    true); standby's 503 names old, `_failed` logs "following controller http://old", and `_next_unasked` silently
    moves on to http://controller (view_source.py:186-187 then 197-205). The operator reading the log during a
    failover is told the proxy follows the dead controller, and never that it went to the one it registered with."""
    ctl = _controller(tmp_path / "ctl.db")

    async def run() -> list[str]:
        ctl.publisher.bind(asyncio.get_running_loop())
        source, state = ControllerViewSource("http://old,http://standby,http://controller", TOKEN, INSTANCE,
                                             lambda start, size: None), _state()
        transport = _FailoverWithStaleHint(httpx.ASGITransport(app=create_app(ctl, TOKEN, background=False)))
        source.client = httpx.AsyncClient(transport=transport, timeout=10)
        await asyncio.wait_for(source.start(state), 60)  # a guard against a hang, not a timing assertion
        assert source._registered and source.controllers.current == "http://controller"
        await source.client.aclose()
        return transport.asked

    caplog.set_level(logging.INFO, logger="fedkafka.proxy.view_source")
    try:
        asked = asyncio.run(run())
    finally:
        ctl.stop()
    followed = [r.getMessage().removeprefix("following controller http://") for r in caplog.records
                if r.getMessage().startswith("following controller ")]
    moves = [host for before, host in itertools.pairwise(asked) if host != before]
    assert followed == moves, f"logged following {followed}; the round went on to {moves} (asked {asked})"


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
    from fedkafka.proxy.view_cache import ViewCache
    from proxy.test_member_secret_proxy import _heartbeat, _source

    ctl = _controller(tmp_path / "ctl.db")
    cache = ViewCache(tmp_path / "view.json", INSTANCE)

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        old, old_state = _source(ctl), _state()
        old.cache = cache
        await old.start(old_state)  # the previous run: registered, its view and deadline saved
        restarted, state = ControllerViewSource("http://controller", "not-the-token", INSTANCE,
                                                lambda start, size: None), _state()
        transport = _DownThenUp(httpx.ASGITransport(app=create_app(ctl, TOKEN, background=False)))
        restarted.client = httpx.AsyncClient(transport=transport, timeout=10)
        restarted.cache = cache
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
        assert await _heartbeat(old, old.member_id, old.member_secret, ctl.view.version) == 200  # it acks
        produces = state.lease_valid()
        registering.cancel()
        await asyncio.gather(registering, return_exceptions=True)
        await old.client.aclose()
        await restarted.client.aclose()
        assert not produces, ("the active controller answered (401) and takes the previous run's acks; the "
                              "restart still produces under its saved view")

    try:
        asyncio.run(run())
    finally:
        ctl.stop()
