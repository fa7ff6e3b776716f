"""Reviewer rv10 (failing tests) on fixrv8 (2189983, docs/DESIGN.md §4.7): "No controller answers" is one round of
`start`, "each listed controller asked once (a standby's 503 names the active one, asked next)". The round is
`len(urls)` asks of `controllers.current`, which `_failed` moves: to a standby's hint, else to the next in the list
after the one that failed. A hint naming a controller already asked (a standby that still names the failed active
one during a failover, until its next poll of the leader row) brings the round back to it, and the round's asks run
out before a later-listed controller (the new active one) is asked at all."""

from __future__ import annotations

import asyncio

import httpx

from fedkafka.controller.service import Controller
from fedkafka.controllers import ACTIVE_HEADER
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


class _FailoverWithStaleHint(httpx.AsyncBaseTransport):
    """Three controllers on one database, mid-failover: `http://old` (the former active one) is down, `http://standby`
    still names it (503, its leader row not polled since), `http://controller` is the new active one (the app)."""

    def __init__(self, active: httpx.AsyncBaseTransport):
        self.active, self.asked = active, []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.host)
        if request.url.host == "old":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.host == "standby":
            return httpx.Response(503, headers={ACTIVE_HEADER: "http://old"},
                                  json={"detail": "standby controller; the active one is http://old"})
        return await self.active.handle_async_request(request)


def test_a_round_of_start_asks_every_listed_controller_even_when_a_standby_names_one_already_asked(tmp_path):
    """urls old, standby, controller: old fails (next: standby), standby names old (next: old), old fails (next:
    standby): three asks, the round is over, `controller` never asked (view_source.py:171-186), and the restart
    serves its saved view with the saved deadline while the active controller would refuse it 409
    DUPLICATE_BROKER_REGISTRATION: its previous run is alive and acks for the member (the hazard fixrv8 closed for
    a standby listed first)."""
    cache = _saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        old, _ = await _previous_run(ctl, cache)  # the previous run: registered, its view and deadline saved
        transport = _FailoverWithStaleHint(_app_transport(ctl))
        restarted, state = _source(ctl, "http://old,http://standby,http://controller", cache=cache,
                                   transport=transport), _state()
        await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
        assert not restarted._registered  # the active controller refuses it: the previous run is live
        assert await _renews(old, ctl.view.version) == 200  # and it acks
        assert "controller" in transport.asked, f"a round of start asked {transport.asked}, not every controller"
        assert not state.lease_valid(), ("a restart whose round skipped the active controller produces under its "
                                         "saved view while its previous run acks for the member")
        await _close(old, restarted)

    _with_controller(tmp_path / "ctl.db", run)


def test_a_restart_the_active_controller_answers_401_does_not_produce_under_its_saved_deadline(tmp_path):
    """DESIGN §4.7 lists what refuses nothing: "unreachable, timed out, a 5xx or a standby's 503" (a controller that
    cannot register this proxy cannot take another process's acks for its member either). A 4xx other than 409 is
    none of those, yet `start` takes it as one (`except httpx.HTTPError`, view_source.py:183-185, `refused` stays
    False): the active controller answers 401 (the restart's --token mistyped, or rotated on this host only), it is
    up and takes the previous run's acks, and the restart serves its saved view with the saved deadline."""
    cache = _saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        old, _ = await _previous_run(ctl, cache)  # the previous run: registered, its view and deadline saved
        restarted, state = _source(ctl, token="not-the-token", cache=cache), _state()
        await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
        assert not restarted._registered
        assert await _renews(old, ctl.view.version) == 200  # it acks
        assert not state.lease_valid(), ("the active controller answered (401) and takes the previous run's acks; "
                                         "the restart produces under its saved view meanwhile")
        await _close(old, restarted)

    _with_controller(tmp_path / "ctl.db", run)
