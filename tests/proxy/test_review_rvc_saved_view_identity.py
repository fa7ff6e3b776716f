"""Review rvc: a proxy serving its saved view of federation A (its produce deadline from disk still live) registers
with a controller of another federation B (a database made anew at the same URL). Federation B's registration
answers a node id that federation A's view gives to another proxy. Until the proxy has left A's view, it must not
serve A's view, with a live deadline, under that id: it would answer Metadata as that other proxy (its partitions
led here, that proxy left out of the brokers listed) and coordinate that proxy's groups.

Before 07e5cef the proxy left A's view (deadline cut, view replaced) before it registered; since, it registers
first and leaves A's view only once its `GET /v1/view` is answered: the window is that whole round trip."""

from __future__ import annotations

import asyncio
import os
import time

import httpx

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.service import Controller, Settings
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "rvc-token"
INSTANCE = "127.0.0.1:9092"
URL = "http://controller"
OTHER_PROXY = ProxyInfo(1, "10.0.0.1", 9092, ProxyRole.PPROXY, "default")  # federation A's node 1, not this proxy
THIS_PROXY_IN_A = ProxyInfo(3, "127.0.0.1", 9092, ProxyRole.PPROXY, "default")


class SnapshotTransport(httpx.AsyncBaseTransport):
    """The controller's ASGI app; before each request, what the proxy serves: (node id, federation, lease live)."""

    def __init__(self, app, state: ProxyState) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.state = state
        self.seen: list[tuple[str, int, str, bool]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        s = self.state
        self.seen.append((f"{request.method} {request.url.path}", s.me.node_id, s.view.federation_id,
                          s.lease_valid()))
        return await self.inner.handle_async_request(request)


def test_a_proxy_never_serves_the_old_federations_view_under_a_node_id_the_new_federation_gave_it(tmp_path):
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'b.db'}"), kafka=KafkaAdmin(2.0))
    cache = ViewCache(tmp_path / "p.view.json", INSTANCE)
    old_view = View(version=40, federation_id="federation-a", proxies=(OTHER_PROXY, THIS_PROXY_IN_A))
    previous_run = ViewCache(tmp_path / "p.view.json", INSTANCE)  # saved it under the lock it held, then exited
    assert previous_run.lock_for_life()
    previous_run.save_view(old_view, node_id=3, controllers=[URL])  # its deadline goes with this save (F4)
    previous_run.save_fence(time.time() + 3600)  # federation A's controller granted it: produce while none answers
    os.close(previous_run._lock_fd)  # its exit: the lock released
    app = create_app(ctl, TOKEN, background=False)

    def unreachable(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async def run() -> tuple[ProxyState, list]:
        ctl.publisher.bind(asyncio.get_running_loop())
        source = ControllerViewSource(URL, TOKEN, INSTANCE, lambda s, n: None, cache=cache)
        source.client = httpx.AsyncClient(transport=httpx.MockTransport(unreachable))
        state = ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))
        await source.start(state)  # no controller: serves federation A's saved view, producing until its deadline
        await source.client.aclose()
        assert (state.me.node_id, state.view.federation_id, state.lease_valid()) == (3, "federation-a", True)
        snapshots = SnapshotTransport(app, state)
        source.client = httpx.AsyncClient(transport=snapshots, timeout=10)
        try:
            await source._register_from_cache(state)
        finally:
            await source.client.aclose()
        return state, snapshots.seen

    try:
        state, seen = asyncio.run(run())
        assert state.view.federation_id == ctl.view.federation_id and state.me.node_id == 1  # B named it node 1
        as_another = [s for s in seen if s[2] == "federation-a" and s[3] and s[1] != THIS_PROXY_IN_A.node_id]
        assert as_another == [], (
            f"served federation A's view with a live deadline as node {as_another[0][1]}, which that view gives to "
            f"{OTHER_PROXY.host}:{OTHER_PROXY.port} (requests: {seen})")
    finally:
        ctl.stop()
