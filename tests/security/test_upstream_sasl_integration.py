"""Security on the proxy -> broker and controller -> broker hops: two real Kafka clusters whose client listener
requires SASL_SSL with SCRAM-SHA-512 (the brokers re-authenticate every 10 s, KIP-368), a controller and a proxy
given the brokers' credentials in an --upstream-config file, and clients on the proxy's own SASL_SSL listener.
Records produced with confluent-kafka arrive through a consumer group; a proxy with a wrong upstream password
answers produce with retriable errors and logs one line per cluster; no password shows in logs, `ps` or any
file written. A password rotated on the brokers and in the file is used by the proxy's new upstream connections
after a SIGHUP, without a restart."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType
from confluent_kafka.admin import ResourceType as RdResourceType
from proxy.support import ProxyProcess, create_topic, read_partition, split_view

from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.kafka.cluster import SaslSslListener, start_clusters, stop_clusters
from fedkafka.security.upstream import load_upstream_config

from .federation import (
    ANONYMOUS_CLIENTS,
    _distinct_free_ports,
    _start,
    _wait_for_proxy_in_view,
    assert_broker_refuses,
    write_upstream_config,
)
from .pki import make_pki

pytestmark = [pytest.mark.integration]

UPSTREAM_USER = "fedkafka"
UPSTREAM_PASSWORD = "Upstream-" + secrets.token_hex(12)  # appears nowhere else: a search for it finds only leaks
WRONG_PASSWORD = "Wrong-" + secrets.token_hex(12)
CLIENT_PASSWORD = "Alice-" + secrets.token_hex(12)
TOPIC = "secured"
REAUTH_MS = 10_000


class Fed:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.clusters: list = []

    def logs(self) -> dict[str, str]:
        return {name: (self.tmp / f"{name}.log").read_text(errors="replace") for name in self.procs}

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        import sys

        return subprocess.run([sys.executable, "-m", "fedkafka.cli", *args, "--controller", self.controller_url,
                               "--token-file", str(self.token_file)], input=stdin, capture_output=True, text=True,
                              timeout=120)

    def client_conf(self, **extra) -> dict:
        return {"bootstrap.servers": f"127.0.0.1:{self.proxy_port}", "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": CLIENT_PASSWORD,
                "ssl.ca.location": str(self.pki.ca)} | extra

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop_clusters(self.clusters, timeout=10)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("upstream-sasl")
    fed = Fed(tmp)
    fed.pki = make_pki(tmp / "pki")
    fed.upstream = write_upstream_config(tmp / "upstream.json", fed.pki.ca, UPSTREAM_USER, UPSTREAM_PASSWORD)
    fed.token_file = tmp / "controller.token"
    fed.token_file.write_text(secrets.token_hex(16))
    fed.token_file.chmod(0o600)
    cport, fed.proxy_port = _distinct_free_ports(2)
    fed.controller_url = f"http://127.0.0.1:{cport}"
    try:
        fed.clusters = start_clusters(
            ["u1", "u2"], tmp / "kafka", extra_config={"connections.max.reauth.ms": str(REAUTH_MS)},
            sasl_ssl=SaslSslListener(fed.pki.server_cert, fed.pki.server_key, {UPSTREAM_USER: UPSTREAM_PASSWORD}))
        _start(fed, "controller", ["controller", "--db", f"sqlite:///{tmp / 'controller.db'}", "--listen",
                                   f"127.0.0.1:{cport}", "--token-file", str(fed.token_file), "--scan-interval",
                                   "2", "--upstream-config", str(fed.upstream)], cport)
        for c in fed.clusters:
            res = fed.cli("cluster", "add", c.name, "--bootstrap", c.bootstrap)
            assert res.returncode == 0, res.stderr
        res = fed.cli("topic", "create", TOPIC, "--partitions", "4")  # the controller creates it over SASL_SSL
        assert res.returncode == 0, res.stderr + fed.logs()["controller"][-3000:]
        res = fed.cli("user", "create", "alice", stdin=CLIENT_PASSWORD + "\n")
        assert res.returncode == 0, res.stderr
        _start(fed, "proxy", ["proxy", "--role", "both", "--listener", f"SASL_SSL://127.0.0.1:{fed.proxy_port}",
                              "--ssl-cert", str(fed.pki.server_cert), "--ssl-key", str(fed.pki.server_key),
                              "--controller", fed.controller_url, "--token-file", str(fed.token_file),
                              "--upstream-config", str(fed.upstream)], fed.proxy_port)
        _wait_for_proxy_in_view(fed)
    except BaseException:
        fed.stop()
        raise
    yield fed
    alive = {name: proc.poll() is None for name, proc in fed.procs.items()}
    logs = fed.logs()
    fed.stop()
    assert all(alive.values()), (alive, {k: v[-2000:] for k, v in logs.items()})


def _produce(conf: dict, topic: str, values: list[bytes], timeout_ms: int = 60000) -> list:
    producer = Producer(conf | {"acks": "all", "message.timeout.ms": timeout_ms})
    errors: list = []
    for i, value in enumerate(values):
        producer.produce(topic, key=b"k%d" % i, value=value, on_delivery=lambda err, _m: errors.append(err))
    producer.flush(timeout_ms / 1000 + 10)
    return errors


def _consume(conf: dict, topic: str, want: set[bytes], group: str, timeout: float = 60.0) -> set[bytes]:
    consumer = Consumer(conf | {"group.id": group, "auto.offset.reset": "earliest"})
    got: set[bytes] = set()
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while not want <= got and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got.add(msg.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def test_records_go_through_sasl_ssl_brokers_and_arrive_in_a_group_across_reauthentications(fed):
    first = [f"first-{i}".encode() for i in range(200)]
    assert _produce(fed.client_conf(), TOPIC, first) == [None] * len(first)
    assert _consume(fed.client_conf(), TOPIC, set(first), "g-secured") == set(first)
    time.sleep(REAUTH_MS / 1000 + 2)  # every SASL session the proxy opened has ended at the brokers by now
    second = [f"second-{i}".encode() for i in range(200)]
    assert _produce(fed.client_conf(), TOPIC, second) == [None] * len(second)
    assert _consume(fed.client_conf(), TOPIC, set(second), "g-secured") == set(second)  # from its commit on
    log = fed.logs()["proxy"]
    assert "SASL authentication" not in log and "connection closed by broker" not in log, log[-3000:]


def test_an_anonymous_client_cannot_use_a_broker(fed):
    # what the proxies' credentials are for: the brokers serve no one without them
    wrong_password = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                      "sasl.username": UPSTREAM_USER, "sasl.password": WRONG_PASSWORD}
    for conf in (*ANONYMOUS_CLIENTS, wrong_password):
        assert_broker_refuses(fed.clusters[0].bootstrap, fed.pki.ca, conf)


def test_the_controller_reads_log_ends_with_its_own_sasl_ssl_socket(fed):
    # the moves' seal read talks ListOffsets to each leader itself, not through confluent-kafka
    admin = KafkaAdmin(10.0, load_upstream_config(fed.upstream))
    cluster = fed.clusters[0]
    physical = f"phys-{uuid.uuid4().hex[:6]}"
    create_topic(cluster.internal_bootstrap, physical, 1)  # the launcher's PLAINTEXT inter-broker listener
    ends = admin.log_end_offsets(cluster.name, cluster.bootstrap, [(physical, 0)])
    assert ends == {(physical, 0): 0}


def test_the_controller_deletes_a_physical_topic_by_its_id_with_its_own_sasl_ssl_socket(fed):
    # pending deletions learn topic ids (Metadata) and delete by id (DeleteTopics v6) on fedkafka's own connections
    admin = KafkaAdmin(10.0, load_upstream_config(fed.upstream))
    cluster = fed.clusters[0]
    physical = f"phys-{uuid.uuid4().hex[:6]}"
    create_topic(cluster.internal_bootstrap, physical, 1)
    deadline = time.monotonic() + 60
    while not (ids := _listed_ids(admin, cluster, physical)) and time.monotonic() < deadline:
        time.sleep(0.2)  # the broker asked lists a topic created a moment ago once its metadata caught up
    assert list(ids) == [physical]
    assert admin.delete_topic_by_id(cluster.name, cluster.bootstrap, physical, ids[physical]) is True
    assert admin.delete_topic_by_id(cluster.name, cluster.bootstrap, physical, ids[physical]) is False


def _listed_ids(admin: KafkaAdmin, cluster, physical: str) -> dict[str, str]:
    from fedkafka.controller.kafka_admin import KafkaUnavailable

    try:
        return admin.topic_ids(cluster.name, cluster.bootstrap, [physical])
    except KafkaUnavailable:  # not listed yet
        return {}


def test_acl_writes_on_a_proxy_without_authorization_are_security_disabled(fed):
    admin = AdminClient(fed.client_conf())
    binding = AclBinding(RdResourceType.TOPIC, TOPIC, ResourcePatternType.LITERAL, "User:alice", "*",
                         AclOperation.WRITE, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as failed:
        admin.create_acls([binding], request_timeout=20)[binding].result(30)
    assert failed.value.args[0].code() == KafkaError.SECURITY_DISABLED


def test_a_wrong_upstream_password_fails_produce_retriably_and_logs_one_line_without_the_password(fed, tmp_path):
    physical = f"bad-{uuid.uuid4().hex[:6]}"
    for c in fed.clusters:
        create_topic(c.internal_bootstrap, physical, 1)
    view = split_view({c.name: c.bootstrap for c in fed.clusters}, "wrong", [
        (c.name, physical, 0) for c in fed.clusters])
    bad = write_upstream_config(tmp_path / "bad-upstream.json", fed.pki.ca, UPSTREAM_USER, WRONG_PASSWORD)
    with ProxyProcess(tmp_path, view, extra=("--upstream-config", str(bad))) as proxy:
        errors = _produce({"bootstrap.servers": proxy.bootstrap, "enable.idempotence": False}, "wrong",
                          [b"x"] * 3, timeout_ms=8000)
        assert len(errors) == 3 and all(e is not None for e in errors)
        assert {e.code() for e in errors} <= {KafkaError._MSG_TIMED_OUT, KafkaError.NOT_LEADER_FOR_PARTITION,
                                              KafkaError.LEADER_NOT_AVAILABLE}, [e.str() for e in errors]
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        log = proxy.output()
    failures = [line for line in log.splitlines() if "invalid credentials" in line]
    for c in fed.clusters:  # one line per cluster however often the proxy retried
        lines = [line for line in failures if f"cluster {c.name} " in line]
        assert len(lines) == 1, failures
        assert "SASL authentication as SASL_SSL SCRAM-SHA-512 user 'fedkafka' failed" in lines[0]
    assert WRONG_PASSWORD not in log and WRONG_PASSWORD not in ps and UPSTREAM_PASSWORD not in ps


def test_no_upstream_password_in_logs_ps_or_files_written(fed):
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    assert "--upstream-config" in ps and UPSTREAM_PASSWORD not in ps
    for name, text in fed.logs().items():
        assert UPSTREAM_PASSWORD not in text, name
    secret = UPSTREAM_PASSWORD.encode()
    holders = [p for p in fed.tmp.rglob("*") if p.is_file() and p != fed.upstream and secret in p.read_bytes()]
    assert holders == []


def _set_scram_password(bootstrap: str, user: str, password: str) -> None:
    """What an operator does with kafka-configs --alter --add-config 'SCRAM-SHA-512=[password=...]'."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                          password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(30)


def test_a_rotated_upstream_password_is_used_by_new_connections_after_sighup_without_a_restart(fed, tmp_path):
    """The procedure of docs/OPERATIONS.md "Rotating the brokers' credentials": the principal's SCRAM password is
    changed on the brokers, then in the file, then the proxy gets SIGHUP. Its open upstream connections keep their
    login until the brokers' re-authentication (KIP-368, REAUTH_MS) makes it replace them: the new ones log in
    with the new password, and produce goes on through the same proxy process."""
    user, first, second = "rotating", "Rot1-" + secrets.token_hex(8), "Rot2-" + secrets.token_hex(8)
    physical = f"rot-{uuid.uuid4().hex[:6]}"
    for c in fed.clusters:
        _set_scram_password(c.internal_bootstrap, user, first)
        create_topic(c.internal_bootstrap, physical, 1)
    view = split_view({c.name: c.bootstrap for c in fed.clusters}, "rotated", [
        (c.name, physical, 0) for c in fed.clusters])
    path = write_upstream_config(tmp_path / "rotating-upstream.json", fed.pki.ca, user, first)
    conf = {"enable.idempotence": False}
    with ProxyProcess(tmp_path, view, extra=("--upstream-config", str(path))) as proxy:
        conf["bootstrap.servers"] = proxy.bootstrap
        before = [f"before-{i}".encode() for i in range(20)]
        assert _produce(conf, "rotated", before) == [None] * len(before)
        for c in fed.clusters:  # the brokers first: a login with the old password is refused from now on
            _set_scram_password(c.internal_bootstrap, user, second)
        write_upstream_config(path, fed.pki.ca, user, second)
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reloaded (SIGHUP)" not in proxy.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(REAUTH_MS / 1000 + 2)  # every session of the first password has ended at the brokers by now
        after = [f"after-{i}".encode() for i in range(20)]
        assert _produce(conf, "rotated", after) == [None] * len(after), proxy.output()[-3000:]
        assert proxy.proc.poll() is None  # the same process: no restart
        log = proxy.output()
    got = {value for c in fed.clusters for value in _values(c.internal_bootstrap, physical)}
    assert got == set(before) | set(after)
    assert f"upstream config {path} reloaded (SIGHUP)" in log and "user 'rotating'" in log, log[-3000:]
    assert "invalid credentials" not in log and "authentication refused" not in log, log[-3000:]
    assert first not in log and second not in log


def _values(bootstrap: str, topic: str) -> list[bytes]:
    return [value for _offset, _key, value in read_partition(bootstrap, topic, 0) if value is not None]
