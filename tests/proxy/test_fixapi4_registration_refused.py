"""A proxy whose instance id a live registration holds under another address (it moved to another host) is refused
(409) by the controller until that lease runs out: its registration loop logs the refusal, does not start from its
saved view meanwhile (the controller answers), and registers once the old lease has run out (review rvapi)."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.service import Controller, Settings
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource, RegistrationRefused
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "moved-token"
INSTANCE = "proxy-a"


def _lease_ran_out(ctl: Controller, member_id: int) -> None:
    with ctl._hb_lock:
        ctl._leases.pop(member_id, None)
    with ctl.session() as s:
        row = s.get(ProxyRow, member_id)
        assert row is not None
        row.lease_expires = time.time() - 1
        s.commit()


def test_a_moved_proxy_retries_a_refused_registration_and_registers_once_the_old_lease_ran_out(tmp_path, caplog):
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'ctl.db'}"), kafka=KafkaAdmin(2.0))
    app = create_app(ctl, TOKEN, background=False)
    old = ctl.register_proxy(INSTANCE, "10.0.0.1", 9092, "pproxy", "default")  # its old host, lease live
    cache = ViewCache(tmp_path / "view.json", INSTANCE)
    cache.save_view(View(version=1), old["node_id"])  # a saved view it must not fall back to: the controller answers

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        source = ControllerViewSource("http://controller", TOKEN, INSTANCE, lambda start, size: None, cache=cache)
        source.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10)
        refusals: list[str] = []
        refused = asyncio.Event()
        wait = source._wait_refused

        async def counted(refusal: RegistrationRefused, delay: float) -> float:
            refusals.append(str(refusal))
            refused.set()
            return await wait(refusal, 0.01)

        source._wait_refused = counted  # type: ignore[method-assign]
        state = ProxyState(view=View(version=0), me=ProxyInfo(0, "10.0.0.2", 9092, ProxyRole.PPROXY, "default"))
        starting = asyncio.create_task(source.start(state))
        await asyncio.wait([starting, asyncio.ensure_future(refused.wait())], return_when=asyncio.FIRST_COMPLETED)
        # not registered: `start` has not returned (the listener opens after it) and no produce is allowed; the
        # saved view is held as the floor of what it may apply (docs/DESIGN.md §4.7), not served
        assert not starting.done() and not state.lease_valid()
        _lease_ran_out(ctl, old["member_id"])
        await starting
        assert state.me.node_id == old["node_id"] and state.lease_valid()
        assert [(p.host, p.port) for p in ctl.view.proxies] == [("10.0.0.2", 9092)]
        assert "'proxy-a'" in refusals[0] and "10.0.0.1:9092" in refusals[0] and "lease until" in refusals[0]
        await source.client.aclose()

    with caplog.at_level(logging.ERROR, logger="fedkafka.proxy.view_source"):
        try:
            asyncio.run(run())
        finally:
            ctl.stop()
    assert any("refused" in r.getMessage() and "trying again" in r.getMessage() for r in caplog.records)
