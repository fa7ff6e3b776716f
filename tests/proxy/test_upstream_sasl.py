"""The proxy's upstream connections against a broker that requires SASL (a small asyncio stand-in speaking Kafka
frames through kio): the login comes before any other request, a refused login fails the connection as a broker
that is down (one log line, no password), and a connection whose session (KIP-368) is near its end is replaced
and closed once the requests on it are answered."""

from __future__ import annotations

import asyncio
import datetime
import logging
import struct

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from kio.static.primitive import i64Timedelta

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.proxy.core import upstream
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.security.upstream import UpstreamConfig, UpstreamSecurity

PASSWORD = "pw-upstream-unit"


class SaslBroker:
    """Answers SaslHandshake (PLAIN), SaslAuthenticate (checks the password) and ApiVersions; records the order."""

    def __init__(self, lifetime_ms: int = 0, hold_api_versions: bool = False):
        self.lifetime_ms, self.hold = lifetime_ms, hold_api_versions
        self.seen: list[list[int]] = []  # api keys per connection
        self.events: list[str] = []  # connections accepted and ApiVersions answered, in order
        self.release = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        keys: list[int] = []
        self.seen.append(keys)
        self.events.append("connected")
        try:
            while True:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                header, request = codec.decode_request(await reader.readexactly(size))
                keys.append(request.__api_key__)
                answer, close = self._answer(request)
                if request.__api_key__ == 18 and self.hold:
                    await self.release.wait()
                writer.write(codec.encode_response(answer, header.correlation_id))
                await writer.drain()
                if request.__api_key__ == 18:
                    self.events.append("answered")
                if close:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    def _answer(self, request):
        key, version = request.__api_key__, request.__version__
        if key == 17:
            body = {"error_code": ErrorCode.none, "mechanisms": ["PLAIN"]}
            return build(codec.response_schema(17, version), body), False
        if key == 36:
            ok = request.auth_bytes == f"\0fedkafka\0{PASSWORD}".encode()
            return build(codec.response_schema(36, version), {
                "error_code": ErrorCode.none if ok else ErrorCode.sasl_authentication_failed,
                "error_message": None if ok else "Authentication failed: Invalid username or password",
                "auth_bytes": b"", "session_lifetime": i64Timedelta(datetime.timedelta(
                    milliseconds=self.lifetime_ms))}), not ok
        return build(codec.response_schema(key, version), {"error_code": ErrorCode.none, "api_keys": [],
                                                           "throttle_time": datetime.timedelta(0)}), False


def _config(password: str = PASSWORD) -> UpstreamConfig:
    return UpstreamConfig(UpstreamSecurity("SASL_PLAINTEXT", mechanism="PLAIN", username="fedkafka",
                                           password=password))


async def _with_broker(broker: SaslBroker, test) -> None:
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    try:
        await test(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def test_a_connection_logs_in_before_its_first_request():
    broker = SaslBroker()

    async def test(port):
        pool = UpstreamPool(upstream=_config())
        conn = await pool.get("127.0.0.1", port, 0, "c1")
        await conn.send(ApiVersionsRequest(client_software_name="t", client_software_version="1"))
        assert broker.seen == [[17, 36, 18]]
        pool.close()
    asyncio.run(_with_broker(broker, test))


def test_a_refused_login_is_a_lost_connection_logged_once_without_the_password(caplog):
    broker = SaslBroker()
    upstream._last_auth_failure.clear()

    async def test(port):
        pool = UpstreamPool(upstream=_config("wrong-password"))
        for _ in range(3):
            with pytest.raises(ConnectionError, match="SASL PLAIN authentication refused"):
                await pool.get("127.0.0.1", port, 0, "c1")
        assert [k for keys in broker.seen for k in keys] == [17, 36] * 3  # nothing else was sent
        pool.close()
    with caplog.at_level(logging.ERROR, "fedkafka.proxy.core.upstream"):
        asyncio.run(_with_broker(broker, test))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "cluster c1" in lines[0] and "PLAIN user 'fedkafka' failed" in lines[0], lines
    assert "wrong-password" not in lines[0]


def test_a_connection_near_its_session_end_is_replaced_once_its_requests_are_answered():
    """The slot's next request goes out on the new connection only after the old one's are answered: a broker
    orders nothing across connections, so an earlier batch still out could be appended after a later one."""
    broker = SaslBroker(lifetime_ms=3_600_000, hold_api_versions=True)

    async def test(port):
        pool = UpstreamPool(upstream=_config())
        old = await pool.get("127.0.0.1", port, 0, "c1")
        assert old.use_until is not None  # 80% of the hour the broker gave
        pending = old.send(ApiVersionsRequest(client_software_name="t", client_software_version="1"))
        old.use_until = 0.0  # the session is near its end
        replacing = asyncio.ensure_future(pool.get("127.0.0.1", port, 0, "c1"))
        while not old.retired:
            await asyncio.sleep(0.01)
        assert not old.closed and not replacing.done()  # its request is still out
        broker.release.set()
        new = await replacing
        assert pending.done() and new is not old and old.closed and not new.closed
        assert broker.events == ["connected", "answered", "connected"], broker.events
        pool.close()
    asyncio.run(_with_broker(broker, test))


def test_a_login_that_times_out_closes_its_socket(monkeypatch):
    """A broker that stalls in SASL: each attempt's socket is closed, not left open until the broker gives up."""
    monkeypatch.setattr(upstream, "CONNECT_TIMEOUT_S", 0.2)
    closed_by_proxy = asyncio.Event()

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)  # the SaslHandshake arrives; it is never answered
        await reader.read()  # b"" once the proxy closed its side
        closed_by_proxy.set()
        writer.close()

    async def test():
        server = await asyncio.start_server(stalls, "127.0.0.1", 0)
        pool = UpstreamPool(upstream=_config())
        try:
            with pytest.raises(TimeoutError):
                await pool.get("127.0.0.1", server.sockets[0].getsockname()[1], 0, "c1")
            await asyncio.wait_for(closed_by_proxy.wait(), 30)
        finally:
            pool.close()
            server.close()
    asyncio.run(test())
