"""Reviewer rv1 (failing tests) on d69c623 (`ControllerViewSource.start`'s concurrent round, docs/DESIGN.md §4.7):
the round sends the registration to every listed controller at once and returns early only on a grant; a refusal
(a 409) waits for every other controller's answer, however slow, before `start` takes it."""

from __future__ import annotations

import asyncio
import gc

import httpx

from fedkafka.controller.service import Controller
from fedkafka.proxy.view_source import ControllerViewSource
from proxy import test_member_secret_proxy as member_proxy
from proxy.test_start_round_asks_at_once import _silent_socket, _SilentThenActive


def test_the_active_controller_s_refusal_is_taken_without_waiting_for_a_silent_controller_listed_after_it(tmp_path):
    """urls controller, silent: the active controller (listed first, the current one) answers 409, our previous
    run's lease being live. Asked one after the other (before d69c623) the proxy took that refusal at once and
    served its saved view (Metadata and group requests, no produce) without ever asking `silent`. Now the round
    returns early only on a grant, so the refusal waits for `silent`'s client timeout (10 s in a proxy): a restart
    while the previous run's lease is live serves nothing for that long, and each round after a plain 409 (another
    address holds the instance) costs a timeout more than the backoff (0.2 s .. 5 s) `_wait_refused` intends. The
    decision does not need `silent`'s answer: the current controller, asked first in the round's order, refused."""
    cache = member_proxy._saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        # registered, its view saved; its lease live: a restart's 409
        old, _ = await member_proxy._previous_run(ctl, cache)
        server, port = await _silent_socket()
        transport = _SilentThenActive(port, member_proxy._app_transport(ctl))
        restarted = ControllerViewSource("http://controller,http://silent", member_proxy.TOKEN, member_proxy.INSTANCE,
                                         lambda start, size: None)
        state = member_proxy._state()
        # long: the silent one must not end first (5 s did, in a loaded -n 2 unit run)
        restarted.client = httpx.AsyncClient(transport=transport, timeout=30)
        restarted.cache = cache
        try:
            await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
            calls_at_start = list(transport.calls)
        finally:
            await member_proxy._close(restarted, old)
            server.close()
        assert not restarted._registered and state.view.version >= 1  # the saved view is served...
        assert not state.lease_valid()  # ...without produce: the active controller refused (§5.2)
        assert ("ended", "silent") not in calls_at_start, calls_at_start  # taken before silent's timeout ended

    member_proxy._with_controller(tmp_path / "ctl.db", run)


class _Unreachable(httpx.AsyncBaseTransport):
    """Every controller refuses the connection; counts the registrations sent."""

    def __init__(self):
        self.registrations = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/proxies":
            self.registrations += 1
        await asyncio.sleep(0)  # the other asks of the round are sent meanwhile
        raise httpx.ConnectError("connection refused", request=request)


def test_a_controller_listed_twice_is_asked_once_a_round_and_no_ask_is_left_unawaited(tmp_path, caplog):
    """`split_urls` keeps a URL listed twice ("http://c,http://c", or "http://c/,http://c" once the slash is
    stripped). `_registration_round` builds `{url: ensure_future(...) for url in urls}`: the second task replaces
    the first in the dict, so the first is sent, never awaited nor cancelled by `_dropped` (asyncio logs "Task
    exception was never retrieved" when it fails), and two registrations of our member are in flight at once at
    one controller, which the `_registration` lock exists to prevent (view_source.py: "two in flight at once ...
    may be answered in the other order than the controller committed them"). Asked one after the other (before
    d69c623) the round asked it once."""
    cache = member_proxy._saved_views(tmp_path)

    async def run(ctl: Controller) -> int:
        # a saved view, so that a round of no answers ends the start
        old, _ = await member_proxy._previous_run(ctl, cache)
        await member_proxy._close(old)
        transport = _Unreachable()
        restarted = ControllerViewSource("http://controller,http://controller", member_proxy.TOKEN,
                                         member_proxy.INSTANCE, lambda start, size: None)
        state = member_proxy._state()
        restarted.client = httpx.AsyncClient(transport=transport, timeout=5)
        restarted.cache = cache
        try:
            await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
        finally:
            await member_proxy._close(restarted)
        for _ in range(3):  # let any ask still out end
            await asyncio.sleep(0)
        assert not restarted._registered and state.lease_valid()  # saved view, saved deadline: nobody refused
        return transport.registrations

    registrations = member_proxy._with_controller(tmp_path / "ctl.db", run)
    gc.collect()  # an unawaited failed Task logs at its collection
    never_retrieved = [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert registrations == 1 and not never_retrieved, (registrations, [r.getMessage() for r in never_retrieved])
