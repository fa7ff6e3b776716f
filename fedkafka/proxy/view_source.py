"""Where the proxy's view comes from: a static JSON file, or the controller (HTTP contract: docs/DESIGN.md §5.1, §5.2).

Controller mode: register (node id, lease, producer id block), then long-poll `GET /v1/view?after=N` and
heartbeat with the applied version. The lease is renewed by each successful heartbeat; when heartbeats fail
for a whole lease the proxy stops taking produce requests (ProxyState.lease_valid) but keeps serving its
last view for everything else (static stability).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import View

log = logging.getLogger(__name__)

STREAM_KEEPALIVE_MS = 2_000


def load_view_file(path: Path) -> tuple[View, int | None]:
    """The view in a JSON file (View.to_dict form), and the optional `proxy_node_id` it names for us."""
    try:
        data = json.loads(path.read_text())
        return View.from_dict(data), data.get("proxy_node_id")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"bad view file {path}: {e}") from None


class StaticViewSource:
    """A view file, re-read when it changes (an operator may replace it with a newer version)."""

    def __init__(self, path: Path):
        self.path = path
        self._mtime = 0.0

    async def start(self, state: ProxyState) -> None:
        view, node_id = load_view_file(self.path)
        self._mtime = self.path.stat().st_mtime
        if node_id is None:
            node_id = next((p.node_id for p in view.proxies
                            if p.host == state.me.host and p.port == state.me.port), 0)
        state.set_node_id(int(node_id))
        state.apply(view)
        state.applied_version = view.version

    async def run(self, state: ProxyState, drain: Callable[[int], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                mtime = self.path.stat().st_mtime
                if mtime != self._mtime:
                    self._mtime = mtime
                    view, _ = load_view_file(self.path)
                    if state.apply(view):
                        await drain(view.version)
                        state.applied_version = view.version
                        log.info("applied view %s from %s", view.version, self.path)
            except (OSError, ValueError) as e:
                log.warning("keeping view %s: %s", state.view.version, e)


class ControllerViewSource:
    def __init__(self, url: str, token: str, instance_id: str, on_block: Callable[[int, int], None]):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.instance_id = instance_id
        self.on_block = on_block
        self.lease_ms = 10_000
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        self._drain: Callable[[int], Awaitable[None]] | None = None

    async def start(self, state: ProxyState) -> None:
        """Register and fetch the first view; retried until the controller answers."""
        delay = 0.2
        while True:
            try:
                await self._register(state)
                resp = await self.client.get(f"{self.url}/v1/view", headers=self.headers)
                resp.raise_for_status()
                state.apply(View.from_dict(resp.json()))
                state.applied_version = state.view.version
                return
            except (httpx.HTTPError, ValueError, KeyError) as e:
                log.warning("controller %s not ready: %s", self.url, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _register(self, state: ProxyState, refresh_view: bool = False) -> None:
        """Register (again). `refresh_view`: our lease ran out, so the controller stopped waiting for our acks
        and may have sealed segments we still write to; take the current view before the new lease counts."""
        sent = time.monotonic()
        resp = await self.client.post(f"{self.url}/v1/proxies", headers=self.headers, json={
            "instance_id": self.instance_id, "host": state.me.host, "port": state.me.port,
            "role": state.me.role.value, "pool": state.me.pool,
            "listeners": [[e.protocol, e.host, e.port] for e in state.me.listeners]})
        resp.raise_for_status()
        body = resp.json()
        state.set_node_id(int(body["node_id"]))
        self.lease_ms = int(body["lease_ms"])
        if refresh_view:
            current = await self.client.get(f"{self.url}/v1/view", headers=self.headers)
            current.raise_for_status()
            view = View.from_dict(current.json())
            if state.apply(view):
                if self._drain is not None:  # an ack like any other: nothing routed under an older view is out
                    await self._drain(view.version)
                state.applied_version = view.version
        state.lease_deadline = sent + self.lease_ms / 1000
        block = body.get("producer_id_block")
        if block:
            self.on_block(int(block["start"]), int(block["size"]))

    async def fetch_block(self) -> tuple[int, int]:
        resp = await self.client.post(f"{self.url}/v1/producer-id-blocks", headers=self.headers)
        resp.raise_for_status()
        body = resp.json()
        return int(body["start"]), int(body["size"])

    async def run(self, state: ProxyState, drain: Callable[[int], Awaitable[None]]) -> None:
        self._drain = drain
        await asyncio.gather(self._poll(state, drain), self._heartbeat(state))

    async def _poll(self, state: ProxyState, drain: Callable[[int], Awaitable[None]]) -> None:
        """Follow the controller's view stream (one JSON view per line, a blank keepalive line every
        STREAM_KEEPALIVE_MS): one open connection instead of a long-poll round trip per change."""
        while True:
            try:
                async with self.client.stream(
                        "GET", f"{self.url}/v1/view/stream", headers=self.headers,
                        params={"after": state.view.version, "keepalive_ms": STREAM_KEEPALIVE_MS},
                        timeout=httpx.Timeout(10.0, read=STREAM_KEEPALIVE_MS / 1000 * 3)) as resp:
                    resp.raise_for_status()
                    async for line in resp.aiter_lines():
                        if not line.strip():
                            continue  # keepalive: the stream is alive
                        view = View.from_dict(json.loads(line))
                        if state.apply(view):
                            await drain(view.version)  # older views' produce finishes first (docs/DESIGN.md §6.1)
                            state.applied_version = view.version
                            await self._heartbeat_once(state)  # ack promptly: the controller waits for it
                raise httpx.RemoteProtocolError("view stream ended")
            except (httpx.HTTPError, ValueError, KeyError) as e:
                log.warning("view stream failed (serving view %s): %s", state.view.version, e)
                await asyncio.sleep(1.0)

    async def _heartbeat(self, state: ProxyState) -> None:
        while True:
            await asyncio.sleep(max(self.lease_ms / 3000, 0.05))
            try:
                await self._heartbeat_once(state)
            except (httpx.HTTPError, ValueError, KeyError) as e:
                log.warning("heartbeat failed (lease %s): %s", "valid" if state.lease_valid() else "EXPIRED", e)

    async def _heartbeat_once(self, state: ProxyState) -> None:
        sent = time.monotonic()
        resp = await self.client.post(f"{self.url}/v1/proxies/{state.me.node_id}/heartbeat", headers=self.headers,
                                      json={"applied_version": state.applied_version, "load": {}})
        if resp.status_code == 404:  # the controller dropped us (lease ran out): register again
            state.lease_deadline = min(state.lease_deadline or 0.0, time.monotonic())  # no produce meanwhile
            await self._register(state, refresh_view=True)
            return
        resp.raise_for_status()
        body = resp.json()
        self.lease_ms = int(body["lease_ms"])
        state.lease_deadline = sent + self.lease_ms / 1000
