"""Set-up shared by the exit-proof tests (docs/DESIGN.md §4.9 F4, "proved by the view cache's lock"): a proxy's
controller link against the controller's real app in process (ASGI), each registration recorded, and the lock's
release as the kernel does it at a process's exit. Not a test module: pytest collects it nowhere."""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.service import Controller, Settings
from fedkafka.controllers import PREDECESSOR_SECRET_HEADER
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "exit-proof-token"
INSTANCE = "127.0.0.1:9092"
FENCE_MS = 900_000


def _release(cache: ViewCache) -> None:
    """What the kernel does at this process's exit: the lock's descriptor closed (tests only)."""
    if getattr(cache, "_lock_fd", None) is not None:
        os.close(cache._lock_fd)
        cache._lock_fd = None


def _secret_on_disk(path) -> str | None:
    """The member secret saved beside the view cache at `path` (None: no file)."""
    try:
        return json.loads(path.with_name(path.name + ".secret").read_text())["member_secret"]
    except FileNotFoundError:
        return None


class _Recording(httpx.AsyncBaseTransport):
    """The controller's app; each registration's headers are kept with the secret file's content at that moment."""

    def __init__(self, app, cache: ViewCache):
        self.inner = httpx.ASGITransport(app=app)
        self.cache = cache
        self.registrations: list[tuple[httpx.Headers, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/proxies":
            self.registrations.append((request.headers, _secret_on_disk(self.cache.path)))
        return await self.inner.handle_async_request(request)


def _state() -> ProxyState:
    return ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.BOTH, "default"))


def _source(app, path, secrets: tuple[str, str | None] | None = None) -> tuple[ControllerViewSource, _Recording]:
    cache = ViewCache(path, INSTANCE)
    source = ControllerViewSource("http://controller", TOKEN, INSTANCE, lambda s, n: None, cache=cache,
                                  chosen_secrets=secrets)
    transport = _Recording(app, cache)
    source.client = httpx.AsyncClient(transport=transport, timeout=10)
    return source, transport


def _predecessor_fence(ctl: Controller) -> float | None:
    with ctl.session() as s:
        return s.query(ProxyRow).filter_by(instance_id=INSTANCE).one().predecessor_fence_expires


def _run(tmp_path, body) -> None:
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'ctl.db'}", lease_ms=10_000, fence_ms=FENCE_MS),
                     kafka=KafkaAdmin(2.0))
    app = create_app(ctl, TOKEN, background=False)

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        await body(ctl, app)

    try:
        asyncio.run(run())
    finally:
        ctl.stop()


def _lease_lapsed(ctl: Controller) -> None:
    """The previous process's lease ran out (its fence has not): as if it stopped renewing a lease ago."""
    with ctl.session() as s:
        row = s.query(ProxyRow).filter_by(instance_id=INSTANCE).one()
        row.lease_expires = time.time() - 1
        s.commit()



def _fence_of_row(ctl: Controller) -> float:
    with ctl.session() as s:
        return s.query(ProxyRow).filter_by(instance_id=INSTANCE).one().fence_expires


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("controller unreachable from this process", request=request)


def _cut_off(source: ControllerViewSource) -> None:
    """No controller answers this process (it still serves its clients and brokers)."""
    source.client = httpx.AsyncClient(transport=httpx.MockTransport(_unreachable), timeout=10)


def _shown(sent: _Recording) -> list[str | None]:
    """The predecessor secret each registration showed."""
    return [h.get(PREDECESSOR_SECRET_HEADER) for h, _ in sent.registrations]


def _produces_until(state: ProxyState) -> float:
    """Until when (wall clock) a process with this state may still produce under the row's fence; 0: it may not."""
    return time.time() + state.lease_deadline - time.monotonic() if state.lease_valid() else 0.0


async def _close(*sources: ControllerViewSource) -> None:
    for source in sources:
        await source.client.aclose()


def _saved_by_a_lockless_process(path, produce_until: float) -> None:
    """A holder of the lock saved a view; a second process on the cache, failing the lock, saved a deadline; the
    holder exits."""
    holder = ViewCache(path, INSTANCE)
    holder.save_view(View(version=7), node_id=3)
    assert holder.lock_for_life()
    lockless = ViewCache(path, INSTANCE)
    assert not lockless.lock_for_life()
    lockless.save_fence(produce_until)
    _release(holder)


async def _restart_after_a_killed_run_and_an_unregistered_one(ctl, app, path, parents_word: bool = False
                                                              ) -> tuple[float | None, float]:
    """Killed run K (the row's holder; kill -9: its lease still live), then R1 refused 409 while K's lease lives
    (serves its saved view, never registered) and stopped, then R2 once K's lease lapsed. With `parents_word`, all
    three are worker 0 of a `--workers` parent that gives each its own secret and the one before's. Returns the
    predecessor fence recorded at R2's registration and a time just after it."""

    def start(own: str, word_of: ControllerViewSource | None):
        secrets = (own * 43, word_of.own_secret if word_of else None) if parents_word else None
        source, sent = _source(app, path, secrets=secrets)
        if parents_word:
            source.worker = 0
        return source, sent

    killed, _ = start("k", None)
    await killed.start(_state())
    _release(killed.cache)  # K dies: no deregistration, its lease still live for a while
    short_lived, sent = start("1", killed)
    await short_lived.start(_state())  # refused (K's live lease): serves its saved view, not registered
    assert short_lived.member_id is None and len(sent.registrations) == 1
    _release(short_lived.cache)  # R1 stops before it registered
    _lease_lapsed(ctl)
    restart, _ = start("2", short_lived)
    await restart.start(_state())
    registered_by = time.time()
    recorded = _predecessor_fence(ctl)
    _release(restart.cache)
    await _close(killed, short_lived, restart)
    return recorded, registered_by


async def _restart_cut_off(app, path) -> tuple[int | None, float]:
    """The killed process's restart on the same cache, no controller answering it: the view version it produces
    under (None: it may not produce) and until when (`_produces_until`). It exits (lock released, client closed)."""
    restart, _ = _source(app, path)
    _cut_off(restart)
    restart_state = _state()
    await restart.start(restart_state)
    produces_under = restart_state.view.version if restart_state.lease_valid() else None
    until = _produces_until(restart_state)
    _release(restart.cache)
    await _close(restart)
    return produces_under, until


async def _started_beside_an_exiting_holder(app, path) -> tuple[ViewCache, ControllerViewSource, ProxyState]:
    """H (exiting, never registered) holds the lock when P2 starts: P2 registers at once (no row), lockless.
    Returns H's cache (still holding the lock), P2 and its state."""
    exiting = ViewCache(path, INSTANCE)
    assert exiting.lock_for_life()  # H
    late, _ = _source(app, path)
    late_state = _state()
    await late.start(late_state)
    return exiting, late, late_state


async def _late_start_then_the_holder_saves_an_older_view_and_exits(app, path
                                                                    ) -> tuple[ControllerViewSource, ProxyState, int]:
    """P2 started lockless beside H (`_started_beside_an_exiting_holder`): registered, its view saved and acked; H
    saves an older view after P2's, then exits. Returns P2, its state and the view version it acked."""
    exiting, late, late_state = await _started_beside_an_exiting_holder(app, path)
    acked = late_state.applied_version
    exiting.save_view(View(version=acked - 1, federation_id=late_state.view.federation_id), node_id=1)
    _release(exiting)  # H exits, its older view on disk
    return late, late_state, acked


async def _drained(version: int) -> None:
    """A view change's drain with nothing in flight (`ControllerViewSource._take_view`'s `drain`)."""
    return None
