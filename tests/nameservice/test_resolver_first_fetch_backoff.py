"""Before its first routing was fetched, the name service's resolver waits `ttl` after a failed fetch before the
next one too (docs/DESIGN.md §4.7, "after a failed fetch the next one waits `--cache-seconds` too"): while the
controller does not answer, every new client connection is refused at once instead of starting another fetch."""

from __future__ import annotations

import asyncio

from fedkafka.nameservice.resolver import ControllerResolver, ResolverError
from nameservice.test_limits import CountingController

CONNECTIONS = 5


async def _refusals(resolver: ControllerResolver) -> list[str]:
    refusals = []
    for n in range(CONNECTIONS):
        try:
            await resolver.resolve(f"client-{n}")
        except ResolverError as exc:
            refusals.append(str(exc))
    return refusals


async def _unreachable_controller_url() -> str:
    async with CountingController() as controller:
        url = controller.url
    await controller.server.wait_closed()  # nothing listens there any more: every fetch fails at once
    return url


def test_a_failed_first_fetch_is_not_retried_before_ttl_and_every_connection_meanwhile_is_refused():
    async def scenario() -> tuple[list[str], int, int]:
        resolver = ControllerResolver(await _unreachable_controller_url(), "token", ttl=3600)
        refusals = await _refusals(resolver)
        await resolver.aclose()
        return refusals, resolver.controller_calls, resolver.controller_errors

    refusals, calls, errors = asyncio.run(scenario())
    assert len(refusals) == CONNECTIONS
    assert all("no client routing fetched yet" in r for r in refusals)
    assert (calls, errors) == (1, 1)


def test_a_failed_first_fetch_is_retried_once_ttl_passed():
    async def scenario() -> tuple[int, int]:
        resolver = ControllerResolver(await _unreachable_controller_url(), "token", ttl=0)
        await _refusals(resolver)
        await resolver.aclose()
        return resolver.controller_calls, resolver.controller_errors

    assert asyncio.run(scenario()) == (CONNECTIONS, CONNECTIONS)
