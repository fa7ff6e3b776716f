"""A proxy whose fence ran out registers again (fedkafka/proxy/view_source.py): its new lease counts from the
controller's registration, and the registration's own steps (the current view, its drain, its save) can take most
of it on a loaded machine. It renews at once after them, or its lease runs out again before its next heartbeat, the
next view drops it and the one after lists it again: partition leaders move twice, each move §4.2's window for a
plain producer's order (seen in tests/workflows/test_replicated_faults.py's database outage)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.service import Controller, Settings
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "reregistration-token"
LEASE_S = 6.0  # lease and fence, as tests/workflows/test_replicated_faults.py runs them


class Clock:
    """The controller's wall clock, moved by the test: leases run out because the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_a_proxy_renews_at_once_after_registering_again_so_a_slow_registration_keeps_it_listed(tmp_path,
                                                                                              monkeypatch):
    clock = Clock()
    monkeypatch.setattr("fedkafka.controller.service.time", SimpleNamespace(
        time=clock.time, perf_counter=time.perf_counter, monotonic=time.monotonic, sleep=time.sleep))
    ms = int(LEASE_S * 1000)
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'ctl.db'}", lease_ms=ms, fence_ms=ms),
                     kafka=KafkaAdmin(2.0))
    app = create_app(ctl, TOKEN, background=False)

    def listed() -> bool:
        return any(p.port == 9092 for p in ctl.view.proxies)

    async def slow_drain(_version: int) -> None:
        clock.now += LEASE_S - 1  # the registration's drain (or save) took most of a lease

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        source = ControllerViewSource("http://controller", TOKEN, "127.0.0.1:9092", lambda s, n: None)
        source.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10)
        source._drain = slow_drain
        state = ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))
        await source.start(state)
        assert listed()
        clock.now += LEASE_S + 1  # the database was away: lease and fence ran out, no controller dropped it yet
        await source.client.post("http://controller/v1/proxies", headers={"Authorization": f"Bearer {TOKEN}"}, json={
            "instance_id": "other:1", "host": "other", "port": 1, "role": "pproxy", "pool": "default"})
        assert not listed()  # a newer view to take and drain on registering again
        await source._heartbeat_once(state)  # 404: registers again, takes the current view, drains it slowly
        assert listed()
        clock.now += LEASE_S / 3  # the heartbeat loop's pause before its next renewal
        ctl.expire_leases()
        assert listed(), "the proxy's lease ran out right after it registered: the view dropped it again"
        await source.client.aclose()

    try:
        asyncio.run(run())
    finally:
        ctl.stop()
