"""Review rvapi: a Kafka client's client.id (up to 32767 bytes) goes into the controller lookup's URL query.
Multibyte characters triple in percent-encoding, so a 32 KB id makes a query httpx refuses to build
(`httpx.InvalidURL`, not an `httpx.HTTPError`): the resolver does not catch it, nor does the connection handler
(it catches FrameError, ResolverError and ConnectionError). The handler task dies with an unhandled exception
(asyncio logs its traceback, then drops the socket); the refusal is counted nowhere (`unrelayed`, the metric of
connections closed unrelayed by reason), so a client doing it at will shows up only as tracebacks in the log."""

from __future__ import annotations

import asyncio
import struct

from fedkafka.nameservice.resolver import ControllerResolver
from fedkafka.nameservice.server import NameServiceServer
from nameservice.test_limits import CountingController, _closed_by_peer

HOSTILE_CLIENT_ID = ("\u20ac" * 10_900).encode()  # 32700 bytes: a legal Kafka client.id


def _first_request(client_id: bytes) -> bytes:
    header = struct.pack(">hhih", 18, 3, 1, len(client_id)) + client_id  # ApiVersions v3 request header
    return struct.pack(">i", len(header)) + header


def test_a_connection_with_a_long_multibyte_client_id_is_closed():
    async def scenario() -> tuple[bool, dict]:
        async with CountingController(delay_s=0) as controller:
            server = NameServiceServer(ControllerResolver(controller.url, "token"), header_timeout=60)
            _host, port = await server.start("127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_first_request(HOSTILE_CLIENT_ID))
            closed = await _closed_by_peer(reader)
            writer.close()
            await server.close()
        return closed, dict(server.unrelayed)

    closed, unrelayed = asyncio.run(scenario())
    assert closed and sum(unrelayed.values()) == 1, (closed, unrelayed)
