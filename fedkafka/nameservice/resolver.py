"""client.id -> the proxies that client should use.

The rules (exact, then longest prefix, then pool "default": fedkafka/client_rules.py) live in the controller's
database. The name service fetches all of them with every pool's proxies (`GET /v1/client-routing`) and matches
each client.id itself, with the same function the controller's `GET /v1/proxies` uses. The fetched routing is
reused for a few seconds and kept while the controller is unreachable (static stability).

client.id is chosen by the client, so nothing here is kept or asked per client.id: whatever ids clients send,
the controller is asked at most once per `ttl` seconds (one fetch at a time, also while it does not answer),
the fallback for an outage is the whole last routing (no id can push another's answer out), and an id of any
length is matched without going into a URL.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from fedkafka.client_rules import pool_for
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


@dataclass(frozen=True, slots=True)
class ClientRouting:
    """The controller's client rules and every pool's proxies, as `GET /v1/client-routing` answers them."""
    rules: tuple[dict[str, str], ...]
    pools: dict[str, PoolAnswer]

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ClientRouting:
        """Raises KeyError, TypeError or ValueError on a malformed answer."""
        rules = tuple({"match": str(r["match"]), "pattern": str(r["pattern"]), "pool": str(r["pool"])}
                      for r in body["rules"])
        pools = {str(pool): PoolAnswer(str(pool), tuple(_proxy_address(p) for p in proxies))
                 for pool, proxies in body["pools"].items()}
        return cls(rules, pools)

    def answer(self, client_id: str) -> PoolAnswer:
        pool = pool_for(client_id, self.rules)
        return self.pools.get(pool) or PoolAnswer(pool, ())


def _proxy_address(p: dict[str, Any]) -> ProxyAddress:
    return ProxyAddress(int(p["node_id"]), str(p["host"]), int(p["port"]), str(p.get("role", "both")),
                        tuple((str(e[0]), str(e[1]), int(e[2])) for e in p.get("listeners") or ()))


class ControllerResolver:
    """Matches client.ids against the controller's routing, fetched again when older than `ttl` seconds."""

    def __init__(self, controller_url: str, token: str, ttl: float = 5.0, timeout: float = 2.0) -> None:
        self._controllers = ControllerList(controller_url)  # several on one database: follow the active one
        self._client = httpx.AsyncClient(timeout=timeout, headers={"Authorization": f"Bearer {token}"},
                                         verify=tls_verify())  # an https controller: $FEDKAFKA_CA_FILE
        self._ttl = ttl
        self._routing: ClientRouting | None = None
        self._asked_at = 0.0  # time.monotonic() when the last fetch ended, answered or not
        self._fetch: asyncio.Future[ClientRouting] | None = None
        self._first_failure: ResolverError | None = None  # no routing fetched yet and the last fetch failed
        self.controller_calls = 0  # since start (tests, logs and metrics)
        self.controller_errors = 0
        self.stale_answers = 0  # answers from the kept routing because the controller did not answer
        self.controller_ok = True  # the last controller call answered (optimistic before the first)

    async def resolve(self, client_id: str) -> PoolAnswer:
        routing = await self._current_routing()
        if not self.controller_ok:
            self.stale_answers += 1  # static stability: the last routing beats no answer
        return routing.answer(client_id)

    async def _current_routing(self) -> ClientRouting:
        """The kept routing while younger than ttl (or, after a failed fetch, until ttl after it); else one fetch
        at a time, which every caller meanwhile waits for. Before a first routing was fetched, a failed fetch is
        not retried before ttl either: every caller meanwhile gets its ResolverError."""
        if time.monotonic() - self._asked_at < self._ttl:
            if self._routing is not None:
                return self._routing
            if self._first_failure is not None:
                raise ResolverError(str(self._first_failure))
        if self._fetch is None:
            self._fetch = asyncio.ensure_future(self._fetch_routing())
            self._fetch.add_done_callback(self._fetch_done)
        return await asyncio.shield(self._fetch)  # one waiter giving up does not cancel the others' fetch

    def _fetch_done(self, future: asyncio.Future) -> None:
        self._fetch = None
        if not future.cancelled():
            future.exception()  # retrieved: waiters that gave up must not leave "never retrieved" noise

    async def _fetch_routing(self) -> ClientRouting:
        self.controller_calls += 1
        try:
            routing = ClientRouting.from_dict(await self._ask())
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.controller_errors += 1
            self.controller_ok = False
            self._asked_at = time.monotonic()
            if self._routing is None:
                self._first_failure = ResolverError(f"controller unreachable and no client routing fetched yet: {exc}")
                raise self._first_failure from exc
            return self._routing
        self.controller_ok = True
        self._first_failure = None
        self._routing, self._asked_at = routing, time.monotonic()
        return routing

    @property
    def has_routing(self) -> bool:
        """A routing was fetched: clients get a pool even while the controller does not answer."""
        return self._routing is not None

    @property
    def cached_rules(self) -> int:
        return len(self._routing.rules) if self._routing is not None else 0

    async def _ask(self) -> dict:
        """GET /v1/client-routing from the active controller: each one in the list at most once."""
        for attempt in range(len(self._controllers.urls)):
            url = self._controllers.current
            try:
                resp = await self._client.get(f"{url}/v1/client-routing")
                resp.raise_for_status()
                return resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                self._controllers.failed(url, active_hint(exc))
                if attempt == len(self._controllers.urls) - 1:
                    raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._client.aclose()
