"""Review rvview: the saved view (proxy/view_cache.py) and a proxy started beside it (docs/DESIGN.md §4.7, F5)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.service import Controller, Settings
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "rvview-token"
INSTANCE = "127.0.0.1:9092"


class RetriedAgain(BaseException):
    """Raised by the fake controller on a second attempt, to end a start() that keeps retrying."""


def fresh_state() -> ProxyState:
    return ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))


@pytest.mark.parametrize("content", [
    "[]",  # valid JSON, not an object
    "null",
    json.dumps({"instance_id": INSTANCE, "node_id": 1, "version": 3,
                "view": {"version": 3, "topics": [{"name": "t", "topic_id": "x", "config": ["retention.ms"],
                                                  "partitions": []}]}}),  # a config that is not an object
])
def test_a_damaged_saved_view_is_not_used_rather_than_raising(tmp_path, content):
    """A corrupt cache file must fail cleanly (None: wait for a controller), never crash the proxy."""
    path = tmp_path / "p.view.json"
    path.write_text(content)
    assert ViewCache(path, INSTANCE).load() is None


def test_a_proxy_whose_saved_view_is_damaged_waits_for_a_controller_instead_of_dying(tmp_path):
    """Started with no controller reachable and a damaged cache, start() keeps retrying (as without a cache);
    it must not raise out of the proxy's start-up."""
    path = tmp_path / "p.view.json"
    path.write_text("[]")

    attempts = []

    def unreachable(_request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) >= 2:  # it went on to try the controller again: what we want to see
            raise RetriedAgain
        raise httpx.ConnectError("connection refused")

    async def run() -> str:
        source = ControllerViewSource("http://controller", TOKEN, INSTANCE, lambda s, n: None,
                                      cache=ViewCache(path, INSTANCE))
        source.client = httpx.AsyncClient(transport=httpx.MockTransport(unreachable))
        try:
            await source.start(fresh_state())
        except RetriedAgain:
            return "still waiting for a controller"
        finally:
            await source.client.aclose()
        return "started"

    assert asyncio.run(run()) == "still waiting for a controller"


def test_a_restarted_proxy_does_not_serve_a_view_older_than_the_one_it_saved_and_acked(tmp_path):
    """The proxy saved and acked view 15; the controller's database comes back at an earlier commit (view 1:
    §3.3 "Lost commits"), and the proxy restarts. Its first registration succeeds, so start() never reads the
    cache: it applies and acks view 1, overwrites the saved view 15, and heartbeats applied_version=1, so the
    controller never hears of view 15 (its loss detection and numbering past it rely on that report)."""
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'ctl.db'}"), kafka=KafkaAdmin(2.0))
    app = create_app(ctl, TOKEN, background=False)
    cache = ViewCache(tmp_path / "p.view.json", INSTANCE)
    # saved before it was acked, by the previous run, from this federation's controller
    cache.save_view(View(version=15, federation_id=ctl.view.federation_id), node_id=1,
                    controllers=["http://controller"])

    async def run() -> tuple[int, int]:
        ctl.publisher.bind(asyncio.get_running_loop())
        source = ControllerViewSource("http://controller", TOKEN, INSTANCE, lambda s, n: None, cache=cache)
        source.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10)
        state = fresh_state()
        try:
            await source.start(state)
            await source._heartbeat_once(state)
        finally:
            await source.client.aclose()
        return state.view.version, cache.load().view.version

    try:
        assert ctl.view.version < 15
        served, saved = asyncio.run(run())
        assert (served, saved) == (15, 15) or served > 15, \
            f"serves view {served} (saved now {saved}) after having saved and acked view 15"
    finally:
        ctl.stop()


def test_a_damaged_fence_file_counts_as_no_deadline_rather_than_raising(tmp_path):
    """The fence file is read with only OSError/ValueError/KeyError/TypeError suppressed: JSON that is not an
    object raises AttributeError out of load(), and so out of a proxy's start-up from its saved view."""
    path = tmp_path / "p.view.json"
    cache = ViewCache(path, INSTANCE)
    cache.save_view(View(version=2), node_id=1)
    cache.fence_path.write_text("[]")
    assert cache.load().produce_until == 0.0


def test_a_view_saved_under_another_federations_controller_is_not_served(tmp_path):
    """The cache was keyed by instance id (host:port) only. A proxy moved to another federation (its --controller
    now names federation B's controllers, same host, port and --view-cache) that starts while B's controller does
    not answer served federation A's saved view: A's clusters, topics and node id, producing to A's clusters for
    B's clients until the saved deadline. The file now names the controllers it was saved under: a view saved
    under none of ours is not served, and the proxy waits for a controller as without a cache."""
    path = tmp_path / "p.view.json"
    ViewCache(path, INSTANCE).save_view(View(version=40, federation_id="federation-a"), node_id=3,
                                        controllers=["http://controller-of-federation-a:8080"])
    attempts = []

    def unreachable(_request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) >= 2:  # it went on to try the controller again: it did not start from A's view
            raise RetriedAgain
        raise httpx.ConnectError("connection refused")

    async def run() -> ProxyState:
        source = ControllerViewSource("http://controller-of-federation-b:8080", TOKEN, INSTANCE,
                                      lambda s, n: None, cache=ViewCache(path, INSTANCE))
        source.client = httpx.AsyncClient(transport=httpx.MockTransport(unreachable))
        state = fresh_state()
        try:
            await source.start(state)  # returns at once when it starts from the saved view
        except RetriedAgain:
            pass
        finally:
            await source.client.aclose()
        return state

    state = asyncio.run(run())
    assert state.view.federation_id != "federation-a", \
        f"serving federation-a's view {state.view.version} as node {state.me.node_id} under another controller"


def test_once_the_other_federations_controller_answers_the_proxy_takes_its_view(tmp_path):
    """Continued: B's controller answers. Its view (version 1) is not newer than A's saved 40, so `state.apply`
    ignores it: the proxy goes on serving federation A's view and heartbeats applied_version=40 to B, whose
    controller then takes its own database for one that lost commits (db_regression: moves frozen, no new
    workflow until restarted)."""
    path = tmp_path / "p.view.json"
    ViewCache(path, INSTANCE).save_view(View(version=40, federation_id="federation-a"), node_id=3)
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'ctl.db'}"), kafka=KafkaAdmin(2.0))
    app = create_app(ctl, TOKEN, background=False)

    def unreachable(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async def run() -> ProxyState:
        ctl.publisher.bind(asyncio.get_running_loop())
        source = ControllerViewSource("http://controller", TOKEN, INSTANCE, lambda s, n: None,
                                      cache=ViewCache(path, INSTANCE))
        source.client = httpx.AsyncClient(transport=httpx.MockTransport(unreachable))
        state = fresh_state()
        await source.start(state)  # from the saved view
        await source.client.aclose()
        source.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10)
        try:
            await source._register_from_cache(state)
            await source._heartbeat_once(state)
        finally:
            await source.client.aclose()
        return state

    try:
        state = asyncio.run(run())
        ctl.compose()
        assert (state.view.federation_id, ctl.db_regression) == (ctl.view.federation_id, None), \
            f"serves {state.view.federation_id} view {state.view.version}; controller: {ctl.db_regression}"
    finally:
        ctl.stop()
