"""Review rvview: a proxy dropped by the controller (its fence ran out) registers again while its view stream is
still draining the view it already took (docs/DESIGN.md §4.9 F3: "applying the current view (drained) before its
new deadline counts")."""

from __future__ import annotations

import asyncio
import json

import httpx

from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

INSTANCE = "127.0.0.1:9092"


def fake_controller(current: View) -> httpx.MockTransport:
    """Heartbeat 404 once (the fence ran out), then renewals; registration; the current view."""
    heartbeats = []

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/heartbeat"):
            heartbeats.append(1)
            if len(heartbeats) == 1:
                return httpx.Response(404, json={"detail": "unknown proxy"})
            return httpx.Response(200, json={"lease_ms": 10_000, "fence_ms": 900_000})
        if path == "/v1/proxies":
            return httpx.Response(200, json={"node_id": 1, "member_id": 1, "lease_ms": 10_000, "fence_ms": 900_000})
        if path == "/v1/view":
            return httpx.Response(200, content=json.dumps(current.to_dict()))
        return httpx.Response(500)

    return httpx.MockTransport(handle)


def test_a_proxy_registering_again_produces_only_once_the_view_its_stream_is_draining_is_drained():
    """The stream task applied view 7 (a partition frozen) and waits in drain(7) for produce routed under
    view 6. Meanwhile the heartbeat gets 404: the fence ran out, so the controller stopped waiting for this
    proxy and may read the seal. The proxy registers again and fetches view 7: not newer, so `state.apply`
    returns False and `_register` neither drains nor acks, yet it sets a fresh produce deadline. The produce
    routed under view 6 and held (past the fence) is then sent to the old segment, after the seal was read."""
    drained = asyncio.Event()  # drain(7) of the stream task: produce routed under view 6 still out

    async def drain(_version: int) -> None:
        await drained.wait()

    async def run() -> tuple[bool, bool]:
        state = ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))
        state.apply(View(version=7))  # taken by the stream; its drain(7) is pending
        state.applied_version = 6
        state.lease_deadline = 0.0  # the fence ran out
        source = ControllerViewSource("http://controller", "t", INSTANCE, lambda s, n: None)
        source.client = httpx.AsyncClient(transport=fake_controller(View(version=7)))
        source.member_id = 1
        source._drain = drain
        stream_drain = asyncio.ensure_future(drain(7))
        heartbeat = asyncio.ensure_future(source._heartbeat_once(state))
        for _ in range(200):  # let the heartbeat run as far as it goes without the drain finishing
            await asyncio.sleep(0)
            if heartbeat.done():
                break
        produce_allowed_before_drained = state.lease_valid() and not drained.is_set()
        drained.set()
        await asyncio.gather(stream_drain, heartbeat)
        await source.client.aclose()
        return produce_allowed_before_drained, state.lease_valid()

    allowed_early, allowed_after = asyncio.run(run())
    assert allowed_after  # registered and renewed: produce goes on once drained
    assert not allowed_early, "a fresh produce deadline while produce routed under an older view is still out"
