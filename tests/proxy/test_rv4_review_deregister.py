"""Reviewer rv4, on the deregistration of a cleanly stopped proxy (merge 21ac0da, docs/DESIGN.md §4.9 case 4 "R
deregistered", §5.2). Each test here fails on that merge.

The deregistration of that merge ended the member's fence FENCE_GRACE_S ago, so a move stopped counting the proxy at
once: sound only if, when the call is sent, this process can start no produce or group offset write again and none
it sent or gave up on can still be appended by a broker. Two ways it still can are shown below."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import select

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.controller.service import Controller, Settings
from fedkafka.controllers import MEMBER_SECRET_HEADER
from fedkafka.proxy.core import server as server_module
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.view.model import ProxyRole

SECRET = "s" * 43
TOKEN = "t"
LIVE_DEADLINE = 4_000_000_000.0


def _registered_server(tmp_path, transport: httpx.AsyncBaseTransport) -> ProxyServer:
    """A proxy as after its registration (member 7, its secret, a live deadline saved), not listening; its
    controller calls go through `transport`."""
    server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=9092, advertised_host="127.0.0.1",
                                     controller="http://controller", token=TOKEN,
                                     view_cache=tmp_path / "view.json"))
    source = server.source
    assert source.cache is not None
    source.cache.save_fence(LIVE_DEADLINE)
    source.client = httpx.AsyncClient(transport=transport)
    source.member_id, source.member_secret = 7, SECRET
    return server


class _ServedConnection:
    """A client connection as `_on_client` serves it (`ClientConnection.run` reads requests, Produce and
    OffsetCommit among them, until `stop_reading()`)."""

    def __init__(self, *_args) -> None:
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        await self._stopped.wait()

    def stop_reading(self) -> None:
        self._stopped.set()


class _Writer:
    def __init__(self) -> None:
        self.closed = False

    def get_extra_info(self, _name, default=None):
        return default

    def close(self) -> None:  # (fixrv4) as asyncio.StreamWriter's: a connection refused once stopping is closed
        self.closed = True


class _Reader:
    peer = ("127.0.0.1", 40000)


def test_a_connection_served_once_the_stop_began_keeps_the_deregistration_back(tmp_path, monkeypatch):
    """A connection accepted before the listeners closed reaches `_on_client` only once its TLS handshake (up to the
    frame timeout) or a trusted relay's PROXY header is done, or one loop step after its accept: here while the stop
    awaits (its supervisor's stop; the end_fence thread and the POST are awaits too). It is never told to stop
    reading (`stop()` stopped only the connections it found first) and `_writes_ended` already answered, so the
    deregistration is sent while this connection reads and forwards requests: a produce routed before `deregister`
    lowers the in-memory deadline, and an OffsetCommit at any time (no lease check), to the old coordinator of the
    view frozen when the view task stopped, while a move already stops counting this proxy. Expected: no
    deregistration while a client connection that can still start a request is open (refused at `_on_client` once
    stopping, or stopped and waited for before the call)."""
    open_at_call: list[int] = []

    def handle(_request: httpx.Request) -> httpx.Response:
        open_at_call.append(len(server.connections))
        return httpx.Response(200, json={"member_id": 7, "deregistered": True})

    server = _registered_server(tmp_path, httpx.MockTransport(handle))
    monkeypatch.setattr(server_module, "ClientConnection", _ServedConnection)
    server.dispatcher = object()  # type: ignore[assignment]  # `_on_client` asserts start() made one
    listener = server.config.all_listeners()[0]
    late: list[asyncio.Task] = []
    late_writer = _Writer()
    supervisor_stop = server.supervisor.stop

    async def stop_supervisor() -> None:
        # the handshake of a connection accepted before `server.close()` completes now
        late.append(asyncio.create_task(server._on_client(listener, _Reader(), late_writer)))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await supervisor_stop()

    monkeypatch.setattr(server.supervisor, "stop", stop_supervisor)

    async def run() -> None:
        await asyncio.wait_for(server.stop(), 60)
        for conn in list(server.connections):  # the test's own clean-up
            conn.stop_reading()
        await asyncio.gather(*late)

    asyncio.run(run())
    assert open_at_call in ([], [0]), f"deregistration sent with {open_at_call} client connections open"
    assert open_at_call == [] or late_writer.closed  # (fixrv4) sent only with the late connection closed, not served


def test_a_write_given_up_on_at_the_stop_does_not_end_the_fence_a_grace_ago(tmp_path, monkeypatch):
    """A produce still out when the connections ended has its upstream connection closed (`_writes_ended`, after
    WRITES_END_WAIT_S; a written-then-abandoned one is released by the same close, `AbandonedWrites.close`), its
    count goes, and the deregistration is sent at once. But the broker may have read and queued that request:
    closing the connection drops only its answer, and §4.1 / `fencing.py` assume such a request is appended 'if at
    all, within FENCE_GRACE_S of giving up', which is what the grace after a fence is for (a broker slow enough
    that the proxy had to close is the overloaded queue of that limit). Merge 21ac0da ended the fence a grace ago,
    so a move sealed at once, taking the grace away from exactly the requests it covers. Expected (the coordinator's
    fix: the deregistration ends the fence at its own time): the controller, a real one, still counts the member
    until the give-up plus FENCE_GRACE_S, so a move frozen at a view it did not ack still waits for it."""
    monkeypatch.setattr(server_module, "WRITES_END_WAIT_S", 0.05)
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'controller.db'}"), kafka=KafkaAdmin(2.0))
    gave_up: list[float] = []

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        server = _registered_server(tmp_path, httpx.ASGITransport(app=create_app(ctl, TOKEN, background=False)))
        registered = await server.source.client.post(
            "http://controller/v1/proxies", headers={"Authorization": f"Bearer {TOKEN}", MEMBER_SECRET_HEADER: SECRET},
            json={"instance_id": "127.0.0.1:9092", "host": "127.0.0.1", "port": 9092, "role": "pproxy",
                  "pool": "default", "member_secret": True})
        assert registered.status_code == 200, registered.text
        server.source.member_id = registered.json()["member_id"]
        server.inflight.by_version[3] += 1  # a produce written under view 3, unanswered

        def close_upstream() -> int:  # `Dispatcher.close_drained_upstream`: the call fails, its count goes
            gave_up.append(time.time())
            server.inflight.by_version[3] -= 1
            return 1

        server.inflight.close_upstream = close_upstream  # type: ignore[method-assign]
        await asyncio.wait_for(server.stop(), 60)

    try:
        asyncio.run(run())
        ctl.flush_heartbeats()
        with ctl.session() as s:
            row = s.scalars(select(ProxyRow)).one()
            lease_ended, fence = row.lease_expires <= time.time(), row.fence_expires
        assert gave_up and lease_ended  # the write was given up on, then the deregistration was taken
        # a move counts the member until its fence plus the grace: that must cover the give-up plus the grace
        assert fence >= gave_up[0], f"the fence ended {gave_up[0] - fence:.1f} s before the write was given up on"
        with pytest.raises(MoveFailed):  # the member has not acked the current view: still counted
            Mover(ctl).await_version(ctl.view.version, lambda *_: None, timeout=0.1)
    finally:
        ctl.stop()
