"""The proxy's controller link for one worker of several (docs/DESIGN.md §4.10), against the controller's real app
in process (ASGI): each worker registers as a member of one node and heartbeats as itself."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.service import Controller, Settings
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerTooOld, ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "worker-token"


def _state() -> ProxyState:
    return ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))


def _source(transport: httpx.AsyncBaseTransport, worker: int | None, cache: ViewCache | None = None):
    blocks: list[tuple[int, int]] = []
    source = ControllerViewSource("http://controller", TOKEN, "127.0.0.1:9092", lambda s, n: blocks.append((s, n)),
                                  cache=cache, worker=worker)
    source.client = httpx.AsyncClient(transport=transport, timeout=10)
    return source, blocks


def test_each_worker_registers_as_a_member_of_one_node_and_heartbeats_as_itself(tmp_path):
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'ctl.db'}"), kafka=KafkaAdmin(2.0))
    app = create_app(ctl, TOKEN, background=False)

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        transport = httpx.ASGITransport(app=app)
        workers = [_source(transport, i, ViewCache(tmp_path / f"view-{i}.json", f"127.0.0.1:9092/w{i}"))
                   for i in range(2)]
        states = [_state(), _state()]
        for (source, _), state in zip(workers, states, strict=True):
            await source.start(state)
        (w0, blocks0), (w1, blocks1) = workers
        assert states[0].me.node_id == states[1].me.node_id == w0.member_id != w1.member_id
        assert blocks0 and blocks1 and blocks0 != blocks1  # a producer-id block each
        for (source, _), state in zip(workers, states, strict=True):
            await source._heartbeat_once(state)  # as its own member: the controller renews that row
            assert state.lease_valid()
        status = ctl.status()["proxies"]
        assert len(status) == 1 and [w["worker"] for w in status[0]["workers"]] == [0, 1]
        for source, _ in workers:
            await source.client.aclose()

    try:
        asyncio.run(run())
    finally:
        ctl.stop()


def test_a_worker_refuses_a_controller_that_does_not_know_workers():
    """An older controller ignores the worker index and would give every worker one row (one ack for all)."""

    def older_controller(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/proxies"
        return httpx.Response(200, json={"node_id": 3, "lease_ms": 10_000, "fence_ms": 900_000,
                                         "producer_id_block": {"start": 1000, "size": 1000}})

    async def run() -> None:
        source, _ = _source(httpx.MockTransport(older_controller), worker=1)
        with pytest.raises(ControllerTooOld, match="does not count proxy workers"):
            await source._register(_state())
        single, _ = _source(httpx.MockTransport(older_controller), worker=None)
        state = _state()
        await single._register(state)  # one process per instance id: that controller is fine
        assert (state.me.node_id, single.member_id) == (3, 3)

    asyncio.run(run())
