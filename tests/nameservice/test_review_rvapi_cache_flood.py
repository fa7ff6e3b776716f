"""Review rvapi: the name service's answer cache is keyed by client.id, which every Kafka client picks (no
authentication before the first request). A client connecting with fresh client ids evicts every established
client's last answer; when the controller is then unreachable, those clients get no pool at all: the static
stability the cache is there for (fedkafka/nameservice/resolver.py) is lost to an anonymous flood. The answer
depends only on the rule a client.id matches, so this costs one controller lookup per fresh id as well."""

from __future__ import annotations

import asyncio

from fedkafka.nameservice.resolver import ControllerResolver, ResolverError
from nameservice.test_limits import CountingController

CACHE_ENTRIES = 3  # fresh ids sent (the rvapi LRU held 10_000; the name service now keeps no answer per id)


def test_fresh_client_ids_do_not_take_an_established_clients_pool_away_in_a_controller_outage():
    async def scenario() -> str:
        async with CountingController(delay_s=0) as controller:
            resolver = ControllerResolver(controller.url, "token", ttl=0)  # asks the controller each time
            await resolver.resolve("billing-app")
            for n in range(CACHE_ENTRIES):
                await resolver.resolve(f"hostile-{n}")
        controller.server.close()
        await controller.server.wait_closed()  # the controller is unreachable from here on
        try:
            answer = await resolver.resolve("billing-app")
        except ResolverError as exc:
            return f"refused: {exc}"
        finally:
            await resolver.aclose()
        return answer.pool

    assert asyncio.run(scenario()) == "p"
