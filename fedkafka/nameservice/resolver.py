"""client.id -> the proxies that client should use.

The rules (exact, then longest prefix, then pool "default") live in the controller's database; the
controller answers `GET /v1/proxies?client_id=`. The name service caches each answer for a few
seconds and keeps serving the last one it got while the controller is unreachable (static stability).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import httpx


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    node_id: int
    host: str
    port: int
    role: str = "both"


@dataclass(frozen=True, slots=True)
class PoolAnswer:
    pool: str
    proxies: tuple[ProxyAddress, ...]

    def to_dict(self) -> dict:
        return {"pool": self.pool, "proxies": [{"node_id": p.node_id, "host": p.host, "port": p.port,
                                                 "role": p.role} for p in self.proxies]}


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
    def __init__(self, controller_url: str, token: str, ttl: float = 5.0, timeout: float = 2.0) -> None:
        self._client = httpx.AsyncClient(base_url=controller_url.rstrip("/"), timeout=timeout,
                                         headers={"Authorization": f"Bearer {token}"})
        self._ttl = ttl
        self._cache: dict[str, tuple[float, PoolAnswer]] = {}

    async def resolve(self, client_id: str) -> PoolAnswer:
        now = time.monotonic()
        cached = self._cache.get(client_id)
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        try:
            resp = await self._client.get("/v1/proxies", params={"client_id": client_id})
            resp.raise_for_status()
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            if cached:
                return cached[1]  # static stability: the last answer beats no answer
            raise ResolverError(f"controller unreachable and no cached pool for {client_id!r}: {exc}") from exc
        answer = PoolAnswer(body["pool"], tuple(ProxyAddress(p["node_id"], p["host"], p["port"], p.get("role", "both"))
                                                for p in body["proxies"]))
        self._cache[client_id] = (now, answer)
        return answer

    async def aclose(self) -> None:
        await self._client.aclose()
