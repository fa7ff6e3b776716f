"""SASL_SSL with SCRAM-SHA-512 through the name service, with real clients, against a secured federation of real
processes whose brokers also require SASL_SSL; a wrong password; each listener hands out its own protocol's
addresses; the brokers refuse an anonymous client; no password leaks anywhere."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer

from fedkafka.kafka.tools import run_tool

from .federation import (
    ANONYMOUS_CLIENTS,
    PASSWORD,
    PASSWORDS,
    UPSTREAM_PASSWORD,
    UPSTREAM_USER,
    USER,
    assert_broker_refuses,
    start_secured_federation,
)

# One Kafka node (SASL_SSL), a controller, a proxy and a name service for 24 scenarios: about 4 minutes on an idle
# 2-core machine, 11 on a loaded one, so it has its own target (make test-security) rather than joining make test.
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("FEDKAFKA_SECURITY_E2E") != "1",
                                 reason="heavy: runs with FEDKAFKA_SECURITY_E2E=1 (make test-security)")]
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


def _java_client_properties(fed, path) -> str:
    path.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
                    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{USER}" password="{PASSWORD}";\n'
                    f"ssl.truststore.type=PEM\nssl.truststore.location={fed.pki.ca}\n")
    path.chmod(0o600)
    return str(path)


def test_java_console_tools_and_consumer_groups_over_sasl_ssl_through_the_name_service(fed, tmp_path):
    bootstrap = f"127.0.0.1:{fed.nameservice['SASL_SSL']}"
    props = _java_client_properties(fed, tmp_path / "client.properties")
    try:
        values = [f"java-{i}" for i in range(50)]
        produced = run_tool("kafka-console-producer", "--bootstrap-server", bootstrap, "--topic", TOPIC,
                            "--producer.config", props, input="\n".join(values) + "\n", timeout=180)
        assert produced.returncode == 0, produced.stderr[-3000:]
        consumed = run_tool("kafka-console-consumer", "--bootstrap-server", bootstrap, "--topic", TOPIC,
                            "--group", "sec-java", "--from-beginning", "--consumer.config", props,
                            "--timeout-ms", "90000", timeout=240)
        assert set(values) <= set(consumed.stdout.split()), consumed.stderr[-3000:]
        described = run_tool("kafka-consumer-groups", "--bootstrap-server", bootstrap, "--describe", "--group",
                             "sec-java", "--command-config", props, timeout=180)
        assert described.returncode == 0 and "sec-java" in described.stdout, described.stderr[-3000:]
    finally:
        (tmp_path / "client.properties").unlink()


def test_the_brokers_serve_the_federations_user_and_refuse_an_anonymous_client(fed):
    # the hop proxy -> broker is secured too: a client that goes round the proxies without logging in gets nothing
    bootstrap = fed.cluster.bootstrap
    service = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "ssl.ca.location": str(fed.pki.ca),
               "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": UPSTREAM_USER, "sasl.password": UPSTREAM_PASSWORD}
    assert AdminClient(service).list_topics(timeout=30).brokers  # the same address answers the federation's user
    for conf in ANONYMOUS_CLIENTS:
        assert_broker_refuses(bootstrap, fed.pki.ca, conf)


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
    conf = fed.client_conf("nameservice", password="not-" + uuid.uuid4().hex,
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


# -- ACLs (the proxy runs with --authorization; see federation.py for who may do what) ---------------------------
def _delivery_errors(conf: dict, n: int = 3) -> list:
    producer = Producer(conf | {"enable.idempotence": False, "message.timeout.ms": 20000, "retries": 0})
    errors = []
    for i in range(n):
        producer.produce(TOPIC, value=f"x{i}".encode(), on_delivery=lambda err, _m: errors.append(err))
    producer.flush(30)
    return errors


def test_produce_without_an_acl_is_topic_authorization_failed(fed):
    errors = _delivery_errors(fed.client_conf(user="mallory"))
    assert errors and all(e is not None and e.code() == RdKafkaError.TOPIC_AUTHORIZATION_FAILED for e in errors)
    assert _delivery_errors(fed.client_conf(user="bob"))[0].code() == RdKafkaError.TOPIC_AUTHORIZATION_FAILED


def test_describe_without_an_acl_hides_the_topic_and_answers_topic_authorization_failed(fed):
    admin = AdminClient(fed.client_conf(user="mallory"))
    assert TOPIC not in admin.list_topics(timeout=30).topics
    named = admin.list_topics(TOPIC, timeout=30).topics[TOPIC]
    assert named.error is not None and named.error.code() == RdKafkaError.TOPIC_AUTHORIZATION_FAILED
    assert TOPIC in AdminClient(fed.client_conf(user="bob")).list_topics(timeout=30).topics


def test_fetch_without_read_is_topic_authorization_failed(fed):
    consumer = Consumer(fed.client_conf(user="bob") | {"group.id": "bob-fetch", "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    try:
        codes = set()
        for _ in range(30):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is not None:
                codes.add(msg.error().code())
                break
            assert msg is None or msg.error() is not None, "bob read a record without READ on the topic"
        assert codes == {RdKafkaError.TOPIC_AUTHORIZATION_FAILED}
    finally:
        consumer.close()


def test_commit_without_an_acl_on_the_group_or_the_topic(fed):
    # bob may use bob-* groups but not read the topic: the commit itself answers TOPIC_AUTHORIZATION_FAILED
    consumer = Consumer(fed.client_conf(user="bob") | {"group.id": "bob-commit", "enable.auto.commit": False})
    try:
        result = consumer.commit(offsets=[TopicPartition(TOPIC, 0, 1)], asynchronous=False)
        assert result[0].error.code() == RdKafkaError.TOPIC_AUTHORIZATION_FAILED
    except KafkaException as e:
        assert e.args[0].code() == RdKafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        consumer.close()
    # mallory may not describe the group: FindCoordinator already says GROUP_AUTHORIZATION_FAILED, which
    # librdkafka reports as a consumer error while the commit waits for a coordinator (as against Kafka)
    consumer = Consumer(fed.client_conf(user="mallory") | {"group.id": "any-group", "enable.auto.commit": False})
    try:
        with pytest.raises(KafkaException):
            consumer.commit(offsets=[TopicPartition(TOPIC, 0, 1)], asynchronous=False)
        codes = set()
        for _ in range(20):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                codes.add(msg.error().code())
            if RdKafkaError.GROUP_AUTHORIZATION_FAILED in codes:
                break
        assert RdKafkaError.GROUP_AUTHORIZATION_FAILED in codes, codes
    finally:
        consumer.close()


def test_the_client_certificate_names_the_principal_on_the_ssl_listener(fed):
    with_cert = fed.client_conf("proxy", "SSL") | {"ssl.certificate.location": str(fed.pki.client_cert),
                                                   "ssl.key.location": str(fed.pki.client_key)}
    assert _delivery_errors(with_cert) == [None, None, None]
    anonymous = _delivery_errors(fed.client_conf("proxy", "SSL"))
    assert anonymous[0].code() == RdKafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_super_user_may_do_anything_and_kafka_acls_lists_the_acls(fed, tmp_path):
    assert _delivery_errors(fed.client_conf(user="admin")) == [None, None, None]
    props = tmp_path / "admin.properties"
    props.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
                     "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                     f'username="admin" password="{PASSWORDS["admin"]}";\n'
                     f"ssl.truststore.type=PEM\nssl.truststore.location={fed.pki.ca}\n")
    props.chmod(0o600)
    listed = run_tool("kafka-acls", "--bootstrap-server", f"127.0.0.1:{fed.nameservice['SASL_SSL']}",
                      "--command-config", str(props), "--list", "--topic", TOPIC, timeout=180)
    props.unlink()  # holds a password: never left for the leak check below
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "User:alice" in listed.stdout and "User:bob" in listed.stdout and "DESCRIBE" in listed.stdout


# -- OAUTHBEARER ------------------------------------------------------------------------------------------------
def _oauth_conf(fed, token_fn) -> dict:
    conf = fed.client_conf("nameservice", "SASL_SSL")
    for key in ("sasl.username", "sasl.password"):
        conf.pop(key)
    return conf | {"sasl.mechanism": "OAUTHBEARER", "oauth_cb": token_fn}


def test_oauthbearer_produces_with_a_jwt_through_the_name_service(fed):
    def token(_config):
        return fed.issuer.token("alice"), time.time() + 300

    assert _delivery_errors(_oauth_conf(fed, token)) == [None, None, None]


def test_an_expired_jwt_gets_kafkas_error_and_one_log_line_without_the_token(fed):
    expired = fed.issuer.token("alice", lifetime_s=-120)
    before = fed.logs()["proxy"].count("authentication failed")
    errors = []
    producer = Producer(_oauth_conf(fed, lambda _c: (expired, time.time() + 300)) | {
        "error_cb": errors.append})
    for _ in range(40):
        producer.poll(0.5)
        if errors:
            break
    del producer
    assert any(e.code() == RdKafkaError._AUTHENTICATION and "expired" in e.str() for e in errors), \
        [e.str() for e in errors]
    lines = [line for line in fed.logs()["proxy"].splitlines() if "authentication failed" in line][before:]
    assert lines and all("OAUTHBEARER" in line and "expired" in line and expired not in line for line in lines)
    assert all(expired not in text for text in fed.logs().values())


def test_no_password_in_ps_logs_database_or_view(fed):
    assert fed.cli("user", "list").returncode == 0
    ps = subprocess.run(["ps", "auxww"], capture_output=True, text=True).stdout
    assert "--upstream-config" in ps
    view = fed.cli("view", "show", "--json")
    assert view.returncode == 0 and '"credentials"' in view.stdout
    # the upstream password may be in one file: the upstream config, readable by its owner only
    assert fed.upstream_config.stat().st_mode & 0o077 == 0
    for password in (*PASSWORDS.values(), UPSTREAM_PASSWORD):
        assert password not in ps and password not in view.stdout
        for name, text in fed.logs().items():
            assert password not in text, name
        for path in fed.tmp.rglob("*"):
            if path.is_file() and path != fed.upstream_config and path.stat().st_size < 50_000_000:
                assert password.encode() not in path.read_bytes(), path
