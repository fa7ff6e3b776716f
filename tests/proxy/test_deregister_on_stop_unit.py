"""A stopping proxy deregisters its member only once it provably sends no write upstream again: no client
connection left and no produce or group offset write out (`ProxyServer.stop`, docs/DESIGN.md §4.9 "deregistered").
A deregistration sent with a write still out would let a move stop counting this proxy and seal while that write
may still land above the seal. Also: its saved produce deadline is 0 before the call is sent, and stays 0."""

from __future__ import annotations

import asyncio
import json
import os

import httpx

from fedkafka.proxy.core import server as server_module
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.view.model import ProxyRole

SECRET = "s" * 43


class _Controller:
    """Records the deregistrations it is sent, and what the saved deadline was when each arrived."""

    def __init__(self, cache: ViewCache) -> None:
        self.cache = cache
        self.calls: list[tuple[str, str | None, float]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        saved = json.loads(self.cache.fence_path.read_text())["produce_until"]
        self.calls.append((request.url.path, request.headers.get("X-Fedkafka-Member-Secret"), saved))
        return httpx.Response(200, json={"member_id": 7, "deregistered": True})


def _registered_server(tmp_path) -> tuple[ProxyServer, _Controller]:
    """A proxy as after its registration (member 7, its secret, a live deadline saved), not listening."""
    server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=9092, advertised_host="127.0.0.1",
                                     controller="http://controller", token="t",
                                     view_cache=tmp_path / "view.json"))
    source = server.source
    assert source.cache is not None
    # its start took the view cache's lock: a deadline on disk is only ever used by that lock's holders (§4.9 F4)
    assert source.cache.lock_for_life()
    source.cache.save_fence(4_000_000_000.0)  # a live deadline on disk, as a renewal saved it
    controller = _Controller(source.cache)
    source.client = httpx.AsyncClient(transport=httpx.MockTransport(controller.handle))
    source.member_id, source.member_secret = 7, SECRET
    return server, controller


def test_a_stop_deregisters_only_after_the_writes_out_end(tmp_path):
    async def run() -> None:
        server, controller = _registered_server(tmp_path)
        server.inflight.by_version[3] += 1  # a produce routed under view 3, its answer not in yet
        stopping = asyncio.create_task(server.stop())
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert not stopping.done() and controller.calls == []  # not while the write is out
        server.inflight.by_version[3] -= 1  # answered
        await stopping
        assert controller.calls == [("/v1/proxies/7/deregister", SECRET, 0.0)]  # once, deadline 0 saved first
        server.source.cache.save_fence(4_000_000_000.0)  # a renewal's save still running: written no more
        assert json.loads(server.source.cache.fence_path.read_text())["produce_until"] == 0.0

    asyncio.run(run())


def test_a_stop_with_a_write_that_does_not_end_sends_no_deregistration(tmp_path, monkeypatch):
    """A write still out once its connections were closed and the wait is over: no deregistration (the lease runs
    out instead), and the saved deadline is left as it was (this process did not give up its member)."""
    monkeypatch.setattr(server_module, "SHUTDOWN_GRACE_S", 0.05)
    monkeypatch.setattr(server_module, "WRITES_END_WAIT_S", 0.05)

    async def run() -> None:
        server, controller = _registered_server(tmp_path)
        server.inflight.by_version[3] += 1  # never answered
        await server.stop()
        assert controller.calls == []
        assert json.loads(server.source.cache.fence_path.read_text())["produce_until"] == 4_000_000_000.0

    asyncio.run(run())


def _exited(server: ProxyServer) -> None:
    """The view cache's lock released, as at the process's exit (the next stop in this test takes it again)."""
    assert server.source.cache is not None and server.source.cache._lock_fd is not None
    os.close(server.source.cache._lock_fd)
    server.source.cache._lock_fd = None


def _stop_with_controller_answering(tmp_path, answer) -> tuple[list, float]:
    """Stop a registered proxy whose deregistration gets `answer` (a response, or an exception raised): the
    deregistrations sent and the deadline left on disk."""
    async def run() -> tuple[list, float]:
        server, _recorder = _registered_server(tmp_path)
        sent: list = []

        def handle(request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            if isinstance(answer, Exception):
                raise answer
            return answer

        server.source.client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
        await server.stop()
        _exited(server)
        return sent, json.loads(server.source.cache.fence_path.read_text())["produce_until"]

    return asyncio.run(run())


def test_a_deregistration_surely_not_committed_puts_the_saved_deadline_back(tmp_path):
    """No controller reached (connection refused: a restart while no controller runs serves its saved view, §4.7),
    or a refusal (409): the member is still counted until its deadline, which goes back on disk. An answer lost
    after sending (a read timeout) may follow the commit: 0 stays."""
    refused = httpx.Response(409, json={"detail": "missing or wrong member secret"})
    assert _stop_with_controller_answering(tmp_path, httpx.ConnectError("refused"))[1] == 4_000_000_000.0
    assert _stop_with_controller_answering(tmp_path, refused)[1] == 4_000_000_000.0
    sent, saved = _stop_with_controller_answering(tmp_path, httpx.ReadTimeout("no answer"))
    assert sent == ["/v1/proxies/7/deregister"] and saved == 0.0
