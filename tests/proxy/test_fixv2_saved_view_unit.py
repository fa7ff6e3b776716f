"""The saved view at start (fixv2, review rvview): it comes before the controller's, it belongs to one federation,
and a damaged file or deadline never lets a proxy produce (docs/DESIGN.md §3.3 "Lost commits", §4.6, §4.7, §4.9)."""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.service import Controller, Settings, new_federation_id
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "fixv2-token"
INSTANCE = "127.0.0.1:9092"
URL = "http://controller"


def fresh_state() -> ProxyState:
    return ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))


def controller(tmp_path, name: str = "ctl.db") -> Controller:
    return Controller(Settings(db_url=f"sqlite:///{tmp_path / name}"), kafka=KafkaAdmin(2.0))


def start_against(ctl: Controller, cache: ViewCache, heartbeat: bool = True) -> ProxyState:
    app = create_app(ctl, TOKEN, background=False)

    async def run() -> ProxyState:
        ctl.publisher.bind(asyncio.get_running_loop())
        source = ControllerViewSource(URL, TOKEN, INSTANCE, lambda s, n: None, cache=cache)
        source.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10)
        state = fresh_state()
        try:
            await source.start(state)
            if heartbeat:
                await source._heartbeat_once(state)
        finally:
            await source.client.aclose()
        return state

    return asyncio.run(run())


def test_each_new_controller_database_names_its_own_federation_and_keeps_the_name(tmp_path):
    first, other = controller(tmp_path, "a.db"), controller(tmp_path, "b.db")
    try:
        named = first.view.federation_id
        assert named != other.view.federation_id and named != "fedkafka" and len(named) == 22
        assert not any(new_federation_id().startswith("-") for _ in range(500))  # the tools read "-..." as a flag
        first.register_proxy(INSTANCE, "127.0.0.1", 9092, "pproxy", "default")  # composes a new view
        assert first.view.version > 0 and first.view.federation_id == named
    finally:
        first.stop()
        other.stop()
    again = controller(tmp_path, "a.db")
    try:
        assert again.view.federation_id == named
    finally:
        again.stop()


def test_a_controller_that_lost_commits_hears_of_the_saved_view_and_numbers_its_next_view_past_it(tmp_path):
    ctl = controller(tmp_path)
    cache = ViewCache(tmp_path / "p.view.json", INSTANCE)
    cache.save_view(View(version=15, federation_id=ctl.view.federation_id), node_id=1, controllers=[URL])
    try:
        state = start_against(ctl, cache)
        assert state.view.version == 15 and cache.load([URL]).view.version == 15
        assert ctl.db_regression is not None and ctl.db_regression["seen_version"] == 15
        assert ctl.view.version > 15  # the proxy takes it from the stream: a version that never named another view
    finally:
        ctl.stop()


def test_a_first_controller_of_another_federation_replaces_the_saved_view_and_its_deadline(tmp_path):
    ctl = controller(tmp_path)
    cache = ViewCache(tmp_path / "p.view.json", INSTANCE)
    cache.save_view(View(version=40, federation_id="federation-a"), node_id=3, controllers=[URL])
    far = time.time() + 30 * 86400
    cache.save_fence(far)  # granted by federation A's controller: never to go with B's view
    try:
        state = start_against(ctl, cache)
        saved = cache.load([URL])
        assert (state.view.federation_id, saved.view.federation_id) == (ctl.view.federation_id,) * 2
        assert saved.view.version == state.view.version < 40 and saved.produce_until < far
        assert ctl.db_regression is None
    finally:
        ctl.stop()


def test_a_proxy_started_from_its_saved_view_beside_a_damaged_deadline_does_not_produce(tmp_path):
    cache = ViewCache(tmp_path / "p.view.json", INSTANCE)
    cache.save_view(View(version=5), node_id=1, controllers=[URL])
    cache.fence_path.write_text('{"instance_id": "127.0.0.1:9092", "produce_until": "soon"}')

    def unreachable(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async def run() -> ProxyState:
        source = ControllerViewSource(URL, TOKEN, INSTANCE, lambda s, n: None, cache=cache)
        source.client = httpx.AsyncClient(transport=httpx.MockTransport(unreachable))
        state = fresh_state()
        try:
            await source.start(state)
        finally:
            await source.client.aclose()
        return state

    state = asyncio.run(run())
    assert state.view.version == 5 and not state.lease_valid()


def test_a_saved_view_is_used_under_any_one_of_the_controllers_it_was_saved_under(tmp_path):
    cache = ViewCache(tmp_path / "p.view.json", INSTANCE)
    cache.save_view(View(version=5), node_id=1, controllers=["http://c1:8080", "http://c2:8080"])
    assert cache.load(["http://c2:8080", "http://c3:8080"]).view.version == 5
    assert cache.load(["http://c3:8080"]) is None


def saved_under_lock(path, produce_until: float) -> None:
    """A deadline saved by a previous run, under the view cache's lock it held, which has exited (its lock released):
    a restart that takes the lock may produce from it (docs/DESIGN.md §4.9 F4)."""
    previous = ViewCache(path, INSTANCE)
    assert previous.lock_for_life()
    previous.save_fence(produce_until)
    assert previous._lock_fd is not None
    os.close(previous._lock_fd)
    previous._lock_fd = None


class FenceUnwritable(ViewCache):
    """A cache whose fence writes fail (ENOSPC); its view writes work."""

    def save_fence(self, produce_until: float) -> None:
        raise OSError(28, "No space left on device")


def test_a_switch_of_federation_whose_deadline_cannot_be_reset_leaves_the_old_pair_on_disk(tmp_path):
    """The old federation's deadline must never end up beside the new federation's view: the proxy takes the new
    view but saves nothing more, and the disk keeps the old view with its own deadline."""
    ctl = controller(tmp_path)
    path = tmp_path / "p.view.json"
    far = time.time() + 30 * 86400
    ViewCache(path, INSTANCE).save_view(View(version=40, federation_id="federation-a"), node_id=3, controllers=[URL])
    saved_under_lock(path, far)
    try:
        state = start_against(ctl, FenceUnwritable(path, INSTANCE))
        saved = ViewCache(path, INSTANCE).load([URL])
        deadline = json.loads(path.with_name(path.name + ".fence").read_text())["produce_until"]
        assert state.view.federation_id == ctl.view.federation_id
        assert (saved.view.federation_id, saved.view.version, deadline) == ("federation-a", 40, far)
    finally:
        ctl.stop()
