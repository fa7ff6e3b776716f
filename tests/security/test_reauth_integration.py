"""KIP-368 through a real proxy process (--connections-max-reauth-ms) on a SASL_PLAINTEXT listener: raw Kafka
frames show an expired session's next request closing the connection, and librdkafka (which re-authenticates
on its own when a broker gives a session lifetime) keeps producing and consuming over re-authentications."""

from __future__ import annotations

import dataclasses
import re
import socket
import struct
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v1.request import MetadataRequest
from kio.schema.metadata.v1.response import MetadataResponse
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_authenticate.v2.response import SaslAuthenticateResponse
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse
from proxy.support import ProxyProcess, create_topic, free_port, split_view

from fedkafka.protocol import codec
from fedkafka.security import scram
from fedkafka.view.model import ProxyRole, View

pytestmark = [pytest.mark.integration]

PASSWORD = "Reauth-" + uuid.uuid4().hex


def _credentials() -> tuple:
    return tuple(scram.make_credential("alice", m, PASSWORD, iterations=4096)
                 for m in ("SCRAM-SHA-256", "SCRAM-SHA-512"))


def _sasl_proxy(tmp_path, view: View, max_reauth_ms: int, role: ProxyRole = ProxyRole.PPROXY):
    port = free_port()
    proxy = ProxyProcess(tmp_path, dataclasses.replace(view, credentials=_credentials()), role=role,
                         extra=("--listener", f"SASL_PLAINTEXT://127.0.0.1:{port}",
                                "--connections-max-reauth-ms", str(max_reauth_ms)))
    return proxy, port


class RawClient:
    """Kafka frames over a plain socket, one request at a time."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.correlation_id = 0

    def ask(self, request, response_t):
        self.correlation_id += 1
        try:
            self.sock.sendall(codec.encode_request(request, self.correlation_id, "raw-test"))
        except (BrokenPipeError, ConnectionResetError):
            return None  # closed by the proxy before this request
        size = self._read(4)
        if size is None:
            return None
        frame = self._read(struct.unpack(">i", size)[0])
        return codec.decode_response(response_t, frame)[1]

    def authenticate_plain(self, password: str = PASSWORD) -> SaslAuthenticateResponse:
        assert self.ask(SaslHandshakeRequest(mechanism="PLAIN"), SaslHandshakeResponse).error_code == ErrorCode.none
        return self.ask(SaslAuthenticateRequest(auth_bytes=f"\0alice\0{password}".encode()),
                        SaslAuthenticateResponse)

    def metadata(self) -> MetadataResponse | None:
        return self.ask(MetadataRequest(topics=None), MetadataResponse)

    def _read(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except ConnectionResetError:  # closed by the proxy while our request was on its way: a reset, not EOF
                return None
            if not chunk:
                return None  # closed by the proxy
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def test_an_expired_session_gets_the_connection_closed_on_its_next_request(tmp_path):
    # no Kafka needed: SASL and Metadata are answered by the proxy itself
    proxy, port = _sasl_proxy(tmp_path, View(version=1), max_reauth_ms=2000)
    with proxy:
        client = RawClient(port)
        try:
            answer = client.authenticate_plain()
            assert answer.error_code == ErrorCode.none and answer.session_lifetime.total_seconds() == 2.0
            assert client.metadata() is not None
            time.sleep(1.0)
            assert client.authenticate_plain().error_code == ErrorCode.none  # re-authenticated in time
            time.sleep(1.2)  # past the first session's end, within the second's
            assert client.metadata() is not None
            time.sleep(1.2)
            assert client.metadata() is None  # expired: closed without an answer, as a Kafka broker does
        finally:
            client.close()
        lines = [line for line in proxy.output().splitlines() if "expired" in line]
    assert len(lines) == 1 and "User:alice" in lines[0] and "without re-authentication" in lines[0], lines
    assert PASSWORD not in proxy.output()


def test_a_re_authentication_with_a_wrong_password_closes_the_connection(tmp_path):
    proxy, port = _sasl_proxy(tmp_path, View(version=1), max_reauth_ms=60_000)
    with proxy:
        client = RawClient(port)
        try:
            assert client.authenticate_plain().error_code == ErrorCode.none
            assert client.metadata() is not None
            answer = client.authenticate_plain("guess-123")
            assert answer.error_code == ErrorCode.sasl_authentication_failed
            assert client.metadata() is None  # closed after the answer
        finally:
            client.close()
        output = proxy.output()
    lines = [line for line in output.splitlines() if "authentication failed" in line]
    assert len(lines) == 1 and "re-authentication: PLAIN, user 'alice'" in lines[0], lines
    assert "guess-123" not in output and PASSWORD not in output


def _produce_and_consume(proxy_port: int, topic: str, seconds: float) -> tuple[list[str], list, list[str]]:
    """Produce one record each 20 ms while an assigned consumer reads them; returns (sent, delivery errors,
    consumed values)."""
    conf = {"bootstrap.servers": f"127.0.0.1:{proxy_port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": PASSWORD}
    producer = Producer(conf | {"linger.ms": 5, "enable.idempotence": True})
    consumer = Consumer(conf | {"group.id": f"g-{topic}", "enable.auto.commit": False,
                                "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    sent, errors, consumed = [], [], []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            value = f"v{len(sent)}"
            producer.produce(topic, value.encode(), on_delivery=lambda err, _m: err and errors.append(err))
            sent.append(value)
            producer.poll(0)
            consumed.extend(m.value().decode() for m in consumer.consume(100, 0.02) if not m.error())
        assert producer.flush(30) == 0
        end = time.monotonic() + 30
        while len(consumed) < len(sent) and time.monotonic() < end:
            consumed.extend(m.value().decode() for m in consumer.consume(100, 0.5) if not m.error())
    finally:
        consumer.close()
    return sent, errors, consumed


def test_librdkafka_re_authenticates_and_keeps_producing_and_consuming(make_clusters, tmp_path):
    (cluster,) = make_clusters("reauth")
    topic = f"reauth-{uuid.uuid4().hex[:6]}"
    create_topic(cluster.bootstrap, topic, 1)
    view = split_view({"reauth": cluster.bootstrap}, topic, [("reauth", topic, 0)])
    proxy, port = _sasl_proxy(tmp_path, view, max_reauth_ms=3000, role=ProxyRole.BOTH)
    with proxy:
        sent, errors, consumed = _produce_and_consume(port, topic, seconds=12)
        output = proxy.output()
        assert proxy.alive(), output[-3000:]
    assert not errors and consumed == sent  # no error, no record lost, none twice, in order
    counts = [int(n) for n in re.findall(r"re-authenticated as 'User:alice' .*\((\d+) times on this connection\)",
                                         output)]
    assert counts and max(counts) >= 2, output[-3000:]  # one connection re-authenticated at least twice
    # librdkafka starts over at 90% of the lifetime, 300 ms before the end here: on a loaded machine a request may
    # still come after it, and then the connection closes and the client reconnects without an error. Not asserted
    # away (it is Kafka's behaviour); what must hold is no error, no loss, and re-authentication on a connection.
    assert "authentication failed" not in output
    assert PASSWORD not in output


def test_kafka_python_re_authenticates_on_its_own(tmp_path):
    """kafka-python (3.0.12 here) also implements KIP-368; Metadata alone needs no Kafka behind the proxy."""
    from kafka.admin import KafkaAdminClient

    proxy, port = _sasl_proxy(tmp_path, View(version=1), max_reauth_ms=2000)
    with proxy:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
                                 sasl_plain_password=PASSWORD, request_timeout_ms=20000)
        try:
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                assert admin.list_topics() == []
                time.sleep(0.1)
        finally:
            admin.close()
        output = proxy.output()
    counts = [int(n) for n in re.findall(r"re-authenticated as 'User:alice' .*\((\d+) times on this connection\)",
                                         output)]
    assert counts and max(counts) >= 2, output[-3000:]
    assert "authentication failed" not in output and PASSWORD not in output


def test_aiokafka_without_kip_368_is_disconnected_at_the_end_of_its_session_and_reconnects(tmp_path):
    """aiokafka (0.14 here) never re-authenticates: the request that finds its session ended closes the
    connection (a retriable KafkaConnectionError, raised as is by a direct admin call, as against a Kafka
    broker), and the next call connects and logs in again."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError

    async def list_topics_for(seconds: float) -> tuple[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_PLAINTEXT",
                                    sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
                                    sasl_plain_password=PASSWORD, request_timeout_ms=20000)
        await admin.start()
        answered = closed = 0
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    assert await admin.list_topics() == []
                    answered += 1
                except KafkaConnectionError:
                    closed += 1
                await asyncio.sleep(0.1)
            assert await admin.list_topics() == []  # after the last close: connected and logged in again
        finally:
            await admin.close()
        return answered, closed

    proxy, port = _sasl_proxy(tmp_path, View(version=1), max_reauth_ms=2000)
    with proxy:
        answered, closed = asyncio.run(list_topics_for(7))
        output = proxy.output()
    expired = [line for line in output.splitlines() if "without re-authentication" in line]
    # each close is one expired session (a background request of the client's may find one too)
    assert 1 <= closed <= len(expired) and answered > closed, (answered, closed, output[-3000:])
    assert "re-authenticated" not in output and PASSWORD not in output
