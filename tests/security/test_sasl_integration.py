"""SASL_SSL with SCRAM-SHA-512 through the name service, with real clients, against a secured federation of real
processes; a wrong password; each listener hands out its own protocol's addresses; no password leaks anywhere."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import subprocess
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer

from .federation import PASSWORD, USER, start_secured_federation

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOPIC = "secured"


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    fed = start_secured_federation(tmp_path_factory.mktemp("secured"), TOPIC)
    yield fed
    alive = {name: proc.poll() is None for name, proc in fed.procs.items()}
    logs = fed.logs()
    fed.stop()
    assert all(alive.values()), (alive, {k: v[-2000:] for k, v in logs.items()})


def _produce(conf: dict, n: int, prefix: str) -> None:
    producer = Producer(conf | {"enable.idempotence": True})
    errors = []
    for i in range(n):
        producer.produce(TOPIC, key=f"{prefix}-{i}".encode(), value=f"{prefix}-{i}".encode(),
                         on_delivery=lambda err, _m: err and errors.append(err))
    assert producer.flush(60) == 0 and not errors, errors


def _consume_group(conf: dict, group: str, prefix: str, n: int) -> set[str]:
    consumer = Consumer(conf | {"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([TOPIC])
    seen: set[str] = set()
    try:
        for _ in range(120):
            for msg in consumer.consume(200, 1.0):
                if msg.error() is None and msg.value().decode().startswith(prefix):
                    seen.add(msg.value().decode())
            if len(seen) >= n:
                break
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return seen


def test_confluent_kafka_produces_and_consumes_in_a_group_over_sasl_ssl_through_the_name_service(fed):
    conf = fed.client_conf("nameservice", "SASL_SSL", "SCRAM-SHA-512")
    _produce(conf, 300, "ck")
    assert len(_consume_group(conf, "sec-ck", "ck", 300)) == 300


def test_aiokafka_produces_and_consumes_in_a_group_over_sasl_ssl_through_the_name_service(fed):
    async def run() -> set[str]:
        common = dict(bootstrap_servers=f"127.0.0.1:{fed.nameservice['SASL_SSL']}", security_protocol="SASL_SSL",
                      sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=USER, sasl_plain_password=PASSWORD,
                      ssl_context=create_ssl_context(cafile=str(fed.pki.ca)))
        producer = AIOKafkaProducer(**common)
        await producer.start()
        try:
            for i in range(100):
                await producer.send_and_wait(TOPIC, f"aio-{i}".encode(), key=f"aio-{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(TOPIC, group_id="sec-aio", auto_offset_reset="earliest",
                                    enable_auto_commit=False, **common)
        await consumer.start()
        seen: set[str] = set()
        try:
            async with asyncio.timeout(120):
                while len(seen) < 100:
                    batch = await consumer.getmany(timeout_ms=1000)
                    seen |= {m.value.decode() for msgs in batch.values() for m in msgs
                             if m.value.decode().startswith("aio-")}
            await consumer.commit()
        finally:
            await consumer.stop()
        return seen

    assert len(asyncio.run(run())) == 100


def test_kafka_python_with_plain_and_scram_sha_256_on_the_proxys_sasl_plaintext_listener(fed):
    common = dict(bootstrap_servers=f"127.0.0.1:{fed.proxy['SASL_PLAINTEXT']}", security_protocol="SASL_PLAINTEXT",
                  sasl_plain_username=USER, sasl_plain_password=PASSWORD)
    producer = KafkaProducer(sasl_mechanism="PLAIN", **common)
    for i in range(20):
        producer.send(TOPIC, f"kp-{i}".encode()).get(30)
    producer.close()
    consumer = KafkaConsumer(TOPIC, group_id="sec-kp", auto_offset_reset="earliest", consumer_timeout_ms=20000,
                             sasl_mechanism="SCRAM-SHA-256", **common)
    seen = {m.value.decode() for m in consumer if m.value.decode().startswith("kp-")}
    consumer.close()
    assert len(seen) == 20


def test_a_wrong_password_gets_kafkas_error_and_one_log_line_without_the_password(fed, caplog):
    wrong = "Wrong-" + uuid.uuid4().hex
    before = fed.logs()["proxy"].count("authentication failed")

    async def attempt():
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{fed.proxy['SASL_SSL']}",
                                    security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                    sasl_plain_username=USER, sasl_plain_password=wrong,
                                    ssl_context=create_ssl_context(cafile=str(fed.pki.ca)))
        try:
            await producer.start()
        finally:
            await producer.stop()

    with caplog.at_level(logging.ERROR, "aiokafka"), pytest.raises(KafkaError):
        asyncio.run(attempt())
    # aiokafka raises "unable to bootstrap" and logs the broker's answer: Kafka's own error and text
    assert ("SaslAuthenticationFailed: Authentication failed during authentication due to invalid credentials "
            "with SASL mechanism SCRAM-SHA-512") in caplog.text
    lines = [line for line in fed.logs()["proxy"].splitlines() if "authentication failed" in line][before:]
    assert len(lines) == 1, lines
    assert "alice" in lines[0] and "SCRAM-SHA-512" in lines[0] and wrong not in lines[0]


def test_librdkafka_reports_the_authentication_failure(fed):
    errors = []
    conf = fed.client_conf("nameservice", password="not-" + PASSWORD,
                           error_cb=lambda e: errors.append(e))
    producer = Producer(conf)  # error_cb is served by poll()
    for _ in range(40):
        producer.poll(0.5)
        if errors:
            break
    assert any(e.code() == RdKafkaError._AUTHENTICATION and "invalid credentials" in e.str()
               for e in errors), [e.str() for e in errors]


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_metadata_lists_the_listener_of_the_clients_own_protocol(fed, protocol):
    admin = AdminClient(fed.client_conf("proxy", protocol, "SCRAM-SHA-256"))
    md = admin.list_topics(timeout=30)
    assert TOPIC in md.topics
    assert {(b.host, b.port) for b in md.brokers.values()} == {("127.0.0.1", fed.proxy[protocol])}


def test_the_name_service_relays_each_protocol_to_the_same_protocol(fed):
    for protocol in ("PLAINTEXT", "SASL_SSL"):
        md = AdminClient(fed.client_conf("nameservice", protocol)).list_topics(timeout=30)
        assert {b.port for b in md.brokers.values()} == {fed.proxy[protocol]}, protocol


def _frame(api_key: int, version: int, body: bytes = b"") -> bytes:
    header = struct.pack(">hhih", api_key, version, 1, 4) + b"test"
    return struct.pack(">i", len(header) + len(body)) + header + body


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_request_before_authentication_closes_the_connection(fed, protocol):
    raw = socket.create_connection(("127.0.0.1", fed.proxy[protocol]), timeout=10)
    if protocol == "SASL_SSL":
        raw = ssl.create_default_context(cafile=str(fed.pki.ca)).wrap_socket(raw, server_hostname="127.0.0.1")
    with raw:
        raw.sendall(_frame(3, 1, struct.pack(">i", -1)))  # Metadata v1, all topics
        assert raw.recv(100) == b""  # closed without an answer, as a Kafka broker does


def test_a_tls_client_that_does_not_trust_the_proxy_is_refused(fed):
    conf = fed.client_conf("proxy", "SSL") | {"ssl.ca.location": str(fed.pki.other_ca)}
    with pytest.raises(KafkaException):
        AdminClient(conf).list_topics(timeout=5)


def test_no_password_in_ps_logs_database_or_view(fed):
    assert fed.cli("user", "list").returncode == 0
    ps = subprocess.run(["ps", "auxww"], capture_output=True, text=True).stdout
    assert PASSWORD not in ps
    for name, text in fed.logs().items():
        assert PASSWORD not in text, name
    for path in fed.tmp.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert PASSWORD.encode() not in path.read_bytes(), path
    view = fed.cli("view", "show", "--json")
    assert view.returncode == 0 and PASSWORD not in view.stdout and '"credentials"' in view.stdout
