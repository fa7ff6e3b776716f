"""client.id -> the proxies that client should use.

The rules (exact, then longest prefix, then pool "default") live in the controller's database; the
controller answers `GET /v1/proxies?client_id=`. The name service caches each answer for a few
seconds and keeps serving the last one it got while the controller is unreachable (static stability).

client.id is chosen by the client, so the cache is a bounded LRU, one lookup per client.id runs at a
time (a burst of connections with one id costs one controller call), and at most a few lookups run at
once (a flood of fresh ids queues here instead of at the controller).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Protocol

import httpx

from fedkafka.controllers import ControllerList, active_hint, tls_verify


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    node_id: int
    host: str
    port: int
    role: str = "both"
    listeners: tuple[tuple[str, str, int], ...] = ()  # (protocol, host, port); empty: PLAINTEXT at host:port

    def endpoints(self) -> tuple[tuple[str, str, int], ...]:
        return self.listeners or (("PLAINTEXT", self.host, self.port),)

    def endpoint(self, protocol: str) -> tuple[str, int] | None:
        """Where a client that came in with `protocol` is relayed: only ever a listener of that protocol."""
        for proto, host, port in self.endpoints():
            if proto == protocol:
                return host, port
        return None


@dataclass(frozen=True, slots=True)
class PoolAnswer:
    pool: str
    proxies: tuple[ProxyAddress, ...]

    def for_protocol(self, protocol: str) -> PoolAnswer:
        """Only proxies with a `protocol` listener, addressed at it (docs/DESIGN.md §11)."""
        found = []
        for p in self.proxies:
            endpoint = p.endpoint(protocol)
            if endpoint is not None:
                found.append(ProxyAddress(p.node_id, *endpoint, p.role, ((protocol, *endpoint),)))
        return PoolAnswer(self.pool, tuple(found))

    def to_dict(self) -> dict:
        return {"pool": self.pool, "proxies": [{"node_id": p.node_id, "host": p.host, "port": p.port,
                                                 "role": p.role, "listeners": [list(e) for e in p.endpoints()]}
                                                for p in self.proxies]}


class ResolverError(RuntimeError):
    """No answer for a client: controller unreachable and nothing cached, or an empty pool."""


class Resolver(Protocol):
    async def resolve(self, client_id: str) -> PoolAnswer: ...


class StaticResolver:
    """A fixed pool for every client (tests, and a name service run without a controller)."""

    def __init__(self, proxies: list[ProxyAddress], pool: str = "default") -> None:
        self.answer = PoolAnswer(pool, tuple(proxies))

    async def resolve(self, client_id: str) -> PoolAnswer:
        return self.answer


class ControllerResolver:
    def __init__(self, controller_url: str, token: str, ttl: float = 5.0, timeout: float = 2.0,
                 max_entries: int = 10_000, max_concurrent_lookups: int = 16) -> None:
        self._controllers = ControllerList(controller_url)  # several on one database: follow the active one
        self._client = httpx.AsyncClient(timeout=timeout, headers={"Authorization": f"Bearer {token}"},
                                         verify=tls_verify())  # an https controller: $FEDKAFKA_CA_FILE
        self._ttl = ttl
        self._max_entries = max_entries
        self._cache: collections.OrderedDict[str, tuple[float, PoolAnswer]] = collections.OrderedDict()
        self._lookups: dict[str, asyncio.Future[PoolAnswer]] = {}
        self._controller_calls = asyncio.Semaphore(max_concurrent_lookups)
        self.controller_calls = 0  # since start (tests, logs and metrics)
        self.controller_errors = 0
        self.stale_answers = 0  # answers from the cache because the controller did not answer
        self.controller_ok = True  # the last controller call answered (optimistic before the first)

    async def resolve(self, client_id: str) -> PoolAnswer:
        cached = self._cache.get(client_id)
        if cached and time.monotonic() - cached[0] < self._ttl:
            self._cache.move_to_end(client_id)
            return cached[1]
        lookup = self._lookups.get(client_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(client_id))
            self._lookups[client_id] = lookup
            lookup.add_done_callback(lambda f: self._lookup_done(client_id, f))
        return await asyncio.shield(lookup)  # one waiter giving up does not cancel the others' lookup

    def _lookup_done(self, client_id: str, future: asyncio.Future) -> None:
        self._lookups.pop(client_id, None)
        if not future.cancelled():
            future.exception()  # retrieved: waiters that gave up must not leave "never retrieved" noise

    async def _lookup(self, client_id: str) -> PoolAnswer:
        async with self._controller_calls:
            self.controller_calls += 1
            try:
                body = await self._ask(client_id)
            except (httpx.HTTPError, ValueError) as exc:
                self.controller_errors += 1
                self.controller_ok = False
                cached = self._cache.get(client_id)
                if cached:
                    self.stale_answers += 1
                    return cached[1]  # static stability: the last answer beats no answer
                raise ResolverError(f"controller unreachable and no cached pool for {client_id!r}: {exc}") from exc
        self.controller_ok = True
        answer = PoolAnswer(body["pool"], tuple(
            ProxyAddress(p["node_id"], p["host"], p["port"], p.get("role", "both"),
                         tuple((str(e[0]), str(e[1]), int(e[2])) for e in p.get("listeners") or ()))
            for p in body["proxies"]))
        self._remember(client_id, answer)
        return answer

    @property
    def cached_entries(self) -> int:
        return len(self._cache)

    async def _ask(self, client_id: str) -> dict:
        """GET /v1/proxies from the active controller: each one in the list at most once."""
        for attempt in range(len(self._controllers.urls)):
            url = self._controllers.current
            try:
                resp = await self._client.get(f"{url}/v1/proxies", params={"client_id": client_id})
                resp.raise_for_status()
                return resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                self._controllers.failed(url, active_hint(exc))
                if attempt == len(self._controllers.urls) - 1:
                    raise
        raise AssertionError("unreachable")

    def _remember(self, client_id: str, answer: PoolAnswer) -> None:
        self._cache[client_id] = (time.monotonic(), answer)
        self._cache.move_to_end(client_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def aclose(self) -> None:
        await self._client.aclose()
