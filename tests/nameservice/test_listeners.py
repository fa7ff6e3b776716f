"""The name service hands a client only proxy listeners of the security protocol it came in with."""

from __future__ import annotations

import asyncio
import struct

import httpx

from fedkafka.kafka.cluster import free_port
from fedkafka.nameservice.app import http_app
from fedkafka.nameservice.resolver import PoolAnswer, ProxyAddress, StaticResolver
from fedkafka.nameservice.server import NameServiceServer

SASL_ONLY = ProxyAddress(1, "10.0.0.1", 9094, listeners=(("SASL_SSL", "10.0.0.1", 9094),))
BOTH = ProxyAddress(2, "10.0.0.2", 9092, listeners=(("PLAINTEXT", "10.0.0.2", 9092), ("SASL_SSL", "10.0.0.2", 9094)))


def test_a_pool_answer_for_one_protocol_keeps_only_that_listener():
    answer = PoolAnswer("p", (SASL_ONLY, BOTH))
    plain = answer.for_protocol("PLAINTEXT")
    assert [(p.node_id, p.host, p.port) for p in plain.proxies] == [(2, "10.0.0.2", 9092)]
    assert [(p.node_id, p.port) for p in answer.for_protocol("SASL_SSL").proxies] == [(1, 9094), (2, 9094)]
    assert answer.for_protocol("SSL").proxies == ()
    legacy = ProxyAddress(3, "h", 1)  # a proxy registered before listeners: one PLAINTEXT listener
    assert legacy.endpoint("PLAINTEXT") == ("h", 1) and legacy.endpoint("SASL_SSL") is None


def test_http_answer_filters_by_protocol():
    async def run():
        app = http_app(StaticResolver([SASL_ONLY, BOTH]))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ns") as client:
            ssl_answer = (await client.get("/v1/proxies", params={"protocol": "SASL_SSL"})).json()
            bad = await client.get("/v1/proxies", params={"protocol": "TLS"})
            return ssl_answer, bad.status_code
    answer, bad = asyncio.run(run())
    assert [p["listeners"] for p in answer["proxies"]] == [[["SASL_SSL", "10.0.0.1", 9094]],
                                                          [["SASL_SSL", "10.0.0.2", 9094]]]
    assert bad == 422


def test_a_client_whose_protocol_no_proxy_offers_is_closed_with_a_log_line(caplog):
    protocol = "PLAINTEXT"
    async def run() -> bytes:
        server = NameServiceServer(StaticResolver([SASL_ONLY]))
        port = free_port()
        await server.start("127.0.0.1", port, protocol)
        serving = asyncio.ensure_future(server.serve_forever())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        header = struct.pack(">hhih", 18, 3, 1, 3) + b"cli"
        writer.write(struct.pack(">i", len(header) + 2) + header + b"\0\0")
        data = await asyncio.wait_for(reader.read(100), 10)
        writer.close()
        await server.close()
        serving.cancel()
        return data
    assert asyncio.run(run()) == b""
    assert "has no live proxy with a PLAINTEXT listener" in caplog.text
