"""Reviewer rv8 (failing tests) on fixrv6 (e3d8acc, docs/DESIGN.md §5.2): a restart refused because its previous
run's lease is live must not produce until it registers, whichever of the listed controllers it asks first."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from fedkafka.controller.service import Controller
from fedkafka.controllers import ACTIVE_HEADER
from fedkafka.proxy.view_source import RegistrationRefused
from proxy.test_member_secret_proxy import (
    _app_transport,
    _close,
    _previous_run,
    _renews,
    _saved_views,
    _source,
    _state,
    _with_controller,
)


class _StandbyThenActive(httpx.AsyncBaseTransport):
    """Two controllers on one database: `http://standby` answers every /v1/ request 503 naming the active one
    (`StandbyGate`), `http://controller` is the active controller's app."""

    def __init__(self, active: httpx.AsyncBaseTransport):
        self.active = active

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "standby":
            return httpx.Response(503, headers={ACTIVE_HEADER: "http://controller"},
                                  json={"detail": "standby controller", "active": "http://controller"})
        return await self.active.handle_async_request(request)


def test_a_restart_refused_while_its_previous_run_is_alive_does_not_produce_when_a_standby_is_listed_first(tmp_path):
    """fixrv6 keeps a restart whose registration is refused 409 DUPLICATE_BROKER_REGISTRATION (its previous run,
    maybe still alive, holds the member) from producing under its saved view: `start` serves it with
    `produce=False`. But `start` falls back to the saved view, with the saved deadline (`produce=True`), at the
    first failure of any kind, and a standby's 503 is one (view_source.py:183-188): with a standby listed first,
    the active controller's 409 is never asked for before `start` returns, and the restart produces under the
    saved view while the previous run acks for the member, until `_register_from_cache` (a background task,
    spawned after `start`, racing the listener) gets the refusal. The standby answered: it named the active
    controller, which would have refused."""
    cache = _saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        old, _ = await _previous_run(ctl, cache)  # the previous run: registered, its view and deadline saved
        restarted, state = _source(ctl, "http://standby,http://controller", cache=cache,
                                   transport=_StandbyThenActive(_app_transport(ctl))), _state()
        await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
        assert not restarted._registered  # the active controller would refuse it: the previous run is live
        # the previous run is alive: its heartbeats renew the member and ack views for it
        assert await _renews(old, ctl.view.version) == 200
        assert not state.lease_valid(), ("a restart that met a standby first produces under its saved view while "
                                         "its previous run acks for the member")
        await _close(old, restarted)

    _with_controller(tmp_path / "ctl.db", run)


class _RefusesThenFailsOver(httpx.AsyncBaseTransport):
    """The active controller answers the first request (a registration it refuses), then fails over: it restarts
    as a standby that does not know the new active one yet (503, no hint), as `restart_as_standby` does."""

    def __init__(self, active: httpx.AsyncBaseTransport):
        self.active, self.answered = active, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.answered += 1
        if self.answered == 1:
            return await self.active.handle_async_request(request)
        return httpx.Response(503, json={"detail": "standby controller; the active one is not known yet"})


def test_a_restart_refused_for_another_address_does_not_produce_after_a_failover_blip(tmp_path):
    """DESIGN §11: "a proxy that starts with a controller answering holds its saved view unserved while refused"
    (409 from `_refuse_takeover`: a live member of its instance id is registered at another address). `start`
    retries the refusal, but its next attempt meeting a failing controller (a failover: the leader restarts as a
    standby) falls back to the saved view with the saved deadline (view_source.py:183-188, `produce=True`):
    the proxy the controller just refused opens its listener producing under a view it does not ack."""
    cache = _saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        old, _ = await _previous_run(ctl, cache)  # registered at 127.0.0.1:9092, its view and deadline saved
        moved = _state()
        moved.me = replace(moved.me, host="127.0.0.2")  # the same instance id at another address: refused
        restarted = _source(ctl, cache=cache, transport=_RefusesThenFailsOver(_app_transport(ctl)))
        refusals: list[RegistrationRefused] = []

        async def quick(refusal: RegistrationRefused, delay: float) -> float:
            refusals.append(refusal)
            return 0.01

        restarted._wait_refused = quick  # type: ignore[method-assign]
        await asyncio.wait_for(restarted.start(moved), 60)  # a guard against a hang, not a timing assertion
        assert len(refusals) == 1 and not refusals[0].our_previous_run  # the takeover refusal, then the failover
        assert not restarted._registered
        assert not moved.lease_valid(), "refused for another address, then produces under the saved deadline"
        await _close(old, restarted)

    _with_controller(tmp_path / "ctl.db", run)
