"""A clean stop deregisters through the active controller when the first one listed is not it (docs/DESIGN.md §5.2,
§3.6): the deregistration is a write, refused 503 by a standby (the leadership's gate, naming the active one) and
by a controller that lost the leader row; the stopping proxy moves on to the one named, else the next listed,
within its 2 s budget, as its heartbeats and registrations do. Before, it sent one call to the first listed
controller: behind a standby, nothing was deregistered (its lease and fence ran on, a restart was refused 409
until the lease ran out, a move waited for its fence)."""

from __future__ import annotations

import asyncio
import time

import httpx
from sqlalchemy import select

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.leadership import Leadership
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.service import Controller, Settings
from fedkafka.controllers import MEMBER_SECRET_HEADER
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.view.model import ProxyRole

SECRET = "s" * 43
TOKEN = "t"
LIVE_DEADLINE = 4_000_000_000.0


class _Controllers(httpx.AsyncBaseTransport):
    """Each controller's app by its URL's host; records the hosts asked, in order."""

    def __init__(self, apps: dict) -> None:
        self.transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}
        self.asked: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.host)
        return await self.transports[request.url.host].handle_async_request(request)


def _stopped_member(tmp_path, lead: Leadership | None) -> tuple[list[str], ProxyRow]:
    """Register a proxy through the active controller, list a standby on the same database first (behind
    leadership `lead`; None: no gate) and the active one second, stop the proxy: the hosts its calls went to, and
    its member's row after the stop."""
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'controller.db'}")
    active = Controller(settings, kafka=KafkaAdmin(2.0))
    standby = Controller(settings, kafka=KafkaAdmin(2.0), standby=True)
    controllers = _Controllers({"active": create_app(active, TOKEN, background=False),
                                "first": create_app(standby, TOKEN, background=False, leadership=lead)})
    server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=9092, advertised_host="127.0.0.1",
                                     controller="http://first,http://active", token=TOKEN,
                                     view_cache=tmp_path / "view.json"))

    async def run() -> None:
        for ctl in (active, standby):
            ctl.publisher.bind(asyncio.get_running_loop())
        source = server.source
        assert source.cache is not None and source.cache.lock_for_life()
        source.cache.save_fence(LIVE_DEADLINE)
        source.client = httpx.AsyncClient(transport=controllers)
        registered = await source.client.post(
            "http://active/v1/proxies", headers={"Authorization": f"Bearer {TOKEN}", MEMBER_SECRET_HEADER: SECRET},
            json={"instance_id": "127.0.0.1:9092", "host": "127.0.0.1", "port": 9092, "role": "pproxy",
                  "pool": "default", "member_secret": True})
        assert registered.status_code == 200, registered.text
        source.member_id, source.member_secret = registered.json()["member_id"], SECRET
        controllers.asked.clear()
        await asyncio.wait_for(server.stop(), 60)

    try:
        asyncio.run(run())
        with active.session() as s:
            return controllers.asked, s.scalars(select(ProxyRow)).one()
    finally:
        active.stop()
        standby.stop()


def test_a_stop_deregisters_through_the_active_controller_a_standby_names(tmp_path):
    lead = Leadership(lambda: None, "http://first", lease_s=30)  # a standby: another holds the row, named here
    lead.active_url = "http://active"
    asked, row = _stopped_member(tmp_path, lead)
    assert row.lease_expires <= time.time() and row.fence_expires <= time.time()  # deregistered: both ended
    assert asked == ["first", "active"]


def test_a_stop_deregisters_through_the_next_listed_after_a_standby_that_serves_the_route(tmp_path):
    """A standby reached without the gate (it names no active controller): NotLeader's 503, then the next listed.
    Before, that standby committed it on the database it shares with the active one (the same row outcome: only
    who wrote it differs)."""
    asked, row = _stopped_member(tmp_path, None)
    assert row.lease_expires <= time.time() and row.fence_expires <= time.time()
    assert asked == ["first", "active"]
