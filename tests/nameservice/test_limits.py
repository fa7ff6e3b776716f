"""Name service limits: one controller lookup per client.id at a time, a bounded answer cache, connection caps
and the first-request deadline. Real sockets; the controller is a minimal HTTP server that counts lookups."""

from __future__ import annotations

import asyncio
import json
import logging
import struct

from fedkafka.nameservice.resolver import ControllerResolver, ProxyAddress, StaticResolver
from fedkafka.nameservice.server import NameServiceServer

GUARD_S = 20.0  # only against a hang


PROXIES = [{"node_id": 1, "host": "127.0.0.1", "port": 1}]
EVERY_CLIENT_TO_P = {"rules": [{"match": "prefix", "pattern": "", "pool": "p"}], "pools": {"p": PROXIES}}


class CountingController:
    """Answers `GET /v1/client-routing` (after `delay_s`) like the controller does, and counts the lookups. Its
    one rule sends every client.id to pool "p" (a rule the controller would refuse: an empty prefix)."""

    def __init__(self, delay_s: float = 0.05, routing: dict | None = None):
        self.delay_s = delay_s
        self.routing = routing or EVERY_CLIENT_TO_P
        self.lookups: list[str] = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        request_line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        self.lookups.append(request_line.split()[1])
        await asyncio.sleep(self.delay_s)
        body = json.dumps(self.routing).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()


def test_a_burst_with_one_client_id_costs_one_controller_lookup():
    async def scenario():
        async with CountingController() as controller:
            resolver = ControllerResolver(controller.url, "token")
            answers = await asyncio.gather(*(resolver.resolve("same-id") for _ in range(50)))
            await resolver.aclose()
        assert len(controller.lookups) == 1
        assert {a.pool for a in answers} == {"p"}

    asyncio.run(scenario())


def test_a_flood_of_fresh_client_ids_costs_one_controller_lookup_and_each_is_matched_by_the_rules():
    routing = {"rules": [{"match": "prefix", "pattern": "billing-", "pool": "billing"},
                         {"match": "exact", "pattern": "billing-audit", "pool": "audit"}],
               "pools": {"billing": PROXIES, "audit": PROXIES, "default": PROXIES}}

    async def scenario():
        async with CountingController(routing=routing) as controller:
            resolver = ControllerResolver(controller.url, "token")
            ids = [f"fresh-{n}" for n in range(2_000)] + ["billing-app", "billing-audit", "\u20ac" * 10_900]
            answers = await asyncio.gather(*(resolver.resolve(cid) for cid in ids))
            await resolver.aclose()
        return len(controller.lookups), [a.pool for a in answers]

    lookups, pools = asyncio.run(scenario())
    assert lookups == 1
    assert set(pools[:2_000]) == {"default"} and pools[2_000:] == ["billing", "audit", "default"]


async def _name_service(**limits):
    server = NameServiceServer(StaticResolver([ProxyAddress(1, "127.0.0.1", 1)]), **limits)
    _host, port = await server.start("127.0.0.1", 0)
    return server, port


async def _closed_by_peer(reader) -> bool:
    try:
        async with asyncio.timeout(GUARD_S):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_a_connection_that_sends_no_complete_first_request_is_closed_at_the_header_deadline(caplog):
    async def scenario():
        server, port = await _name_service(header_timeout=0.3)
        silent_r, _silent_w = await asyncio.open_connection("127.0.0.1", port)
        trickle_r, trickle_w = await asyncio.open_connection("127.0.0.1", port)
        trickle_w.write(struct.pack(">i", 30) + b"\x00")  # a header that never completes
        assert await _closed_by_peer(silent_r)
        assert await _closed_by_peer(trickle_r)
        await server.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert "--header-timeout" in caplog.text


def test_connections_over_the_per_address_cap_are_closed_at_once(caplog):
    async def scenario():
        server, port = await _name_service(max_connections_per_ip=2, header_timeout=GUARD_S * 2)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        extra_r, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_peer(extra_r)
        other_r, other_w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        assert server.counts.refused == {"max-connections-per-ip": 1}
        for _ in range(200):  # the accept callback runs after the client's connect returned
            if server.counts.by_ip["127.0.0.2"]:
                break
            await asyncio.sleep(0.01)
        assert server.counts.by_ip == {"127.0.0.1": 2, "127.0.0.2": 1}  # another address is not held back
        for _, w in [*held, (other_r, other_w)]:
            w.close()
        await server.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert "[max-connections-per-ip]" in caplog.text


class _BrokenResolver:
    async def resolve(self, client_id: str):
        raise RuntimeError(f"unexpected, for {client_id!r}")


def test_an_unexpected_failure_closes_the_connection_counted_and_logged_in_one_line(caplog):
    async def scenario():
        server = NameServiceServer(_BrokenResolver())
        _host, port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        header = struct.pack(">hhih", 18, 3, 1, 3) + b"app"
        writer.write(struct.pack(">i", len(header)) + header)
        closed = await _closed_by_peer(reader)
        writer.close()
        await server.close()
        return closed, dict(server.unrelayed)

    with caplog.at_level(logging.ERROR, logger="fedkafka.nameservice"):
        closed, unrelayed = asyncio.run(scenario())
    assert closed and unrelayed == {"error": 1}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "RuntimeError" in errors[0].getMessage() and errors[0].exc_info is None
