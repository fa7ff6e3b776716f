"""A restart's round (`ControllerViewSource.start`, docs/DESIGN.md §4.7) asks every listed controller once before it
falls back to its saved view. Asked one after the other, each with the client's timeout, N controllers that accept
the connection and never answer (a host dropping traffic past its listener, a hung process) held the proxy's start
for N timeouts; the round now sends its registrations to all of them at once and waits about one timeout. The
decision is unchanged (tests/proxy/test_fixrv8_start_fallback.py, test_rv8_review.py, test_rv10_review.py): with no
controller answering, the saved view with its saved produce deadline. Checked on the order of the calls (every
controller asked before any ask ends), not on elapsed time."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from fedkafka.proxy.view_source import ControllerViewSource
from proxy.test_member_secret_proxy import (
    INSTANCE,
    TOKEN,
    _app_transport,
    _close,
    _previous_run,
    _saved_views,
    _source,
    _state,
    _with_controller,
)

SILENT = ("controller", "second", "third")  # the saved view was saved under http://controller (`_previous_run`)


class _SilentControllers(httpx.AsyncBaseTransport):
    """Each controller host is a loopback socket that accepts and never answers (the requests go there for real,
    over TCP); records when each request is sent and when it ends (its timeout), in order."""

    def __init__(self, ports: dict[str, int]):
        self.ports, self.calls = ports, []
        self.network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.calls.append(("sent", host))
        try:
            return await self.network.handle_async_request(httpx.Request(
                request.method, request.url.copy_with(host="127.0.0.1", port=self.ports[host]),
                headers=request.headers, content=request.content, extensions=request.extensions))
        finally:
            self.calls.append(("ended", host))

    async def aclose(self) -> None:
        await self.network.aclose()


async def _silent_socket() -> tuple[asyncio.Server, int]:
    """A listener that accepts, reads whatever comes, and never writes a byte."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_round_of_start_asks_every_silent_controller_at_once_and_serves_its_saved_view(tmp_path):
    cache = _saved_views(tmp_path)

    async def run(ctl) -> None:
        old, _ = await _previous_run(ctl, cache)  # the previous run: registered, its view and deadline saved
        await _close(old)
        servers = {host: await _silent_socket() for host in SILENT}
        transport = _SilentControllers({host: port for host, (_, port) in servers.items()})
        restarted, state = ControllerViewSource(",".join(f"http://{h}" for h in SILENT), TOKEN, INSTANCE,
                                                lambda start, size: None), _state()
        restarted.client = httpx.AsyncClient(transport=transport, timeout=0.5)  # short: a test of order, not time
        restarted.cache = cache
        try:
            await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
        finally:
            await _close(restarted)
            for server, _ in servers.values():
                server.close()
        assert not restarted._registered and state.view.version >= 1  # the saved view is served...
        assert state.lease_valid()  # ...with its saved deadline: no controller answered, none refused (F5)
        assert Counter(host for what, host in transport.calls if what == "sent") == dict.fromkeys(SILENT, 1)
        # one wait for the round, not one per controller: every controller asked before any ask timed out
        assert transport.calls[:len(SILENT)] == [("sent", host) for host in SILENT], transport.calls

    _with_controller(tmp_path / "ctl.db", run)


class _SilentThenActive(_SilentControllers):
    """`http://silent` a loopback socket that never answers, every other host the controller's app."""

    def __init__(self, port: int, active: httpx.AsyncBaseTransport):
        super().__init__({"silent": port})
        self.active = active

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "silent":
            return await super().handle_async_request(request)
        return await self.active.handle_async_request(request)


def test_a_registration_granted_in_a_round_is_taken_without_waiting_for_a_silent_controller_listed_first(tmp_path):
    """The active controller's answer wins, when it comes: taken in the round's order it would wait for the silent
    controller listed before it (a timeout) while the lease it just granted runs (the first heartbeat then late)."""
    async def run(ctl) -> None:
        server, port = await _silent_socket()
        transport = _SilentThenActive(port, _app_transport(ctl))
        source, state = _source(ctl, "http://silent,http://controller", transport=transport), _state()
        source.client = httpx.AsyncClient(transport=transport, timeout=5)  # long: the silent one must not end first
        try:
            await asyncio.wait_for(source.start(state), 60)  # a guard against a hang, not a timing assertion
            calls_at_start = list(transport.calls)
        finally:
            await _close(source)
            server.close()
        assert source._registered and state.view.version >= 1 and state.lease_valid()
        assert source.controllers.current == "http://controller"
        assert calls_at_start == [("sent", "silent")], calls_at_start  # still unanswered when start returned

    _with_controller(tmp_path / "ctl.db", run)
