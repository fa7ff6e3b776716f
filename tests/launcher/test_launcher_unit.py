"""Launcher pieces that need no running broker. The few that start `java -version` (every path into
`ensure_kafka` or `LocalKafkaCluster.start` does, before anything else) are marked `integration`."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from pathlib import Path

import pytest

from fedkafka.kafka.cluster import (
    ClusterError,
    LocalKafkaCluster,
    SaslSslListener,
    cluster_uuid,
    free_port,
    port_in_use,
)
from fedkafka.kafka.dist import KafkaDistError, ensure_kafka
from fedkafka.kafka.tools import UnknownTool, tool_command

needs_java = pytest.mark.integration  # ensure_kafka() checks the Java version first


def test_cluster_id_is_deterministic_and_a_kafka_uuid():
    assert cluster_uuid("c1") == cluster_uuid("c1")
    assert cluster_uuid("c1") != cluster_uuid("c2")
    raw = base64.urlsafe_b64decode(cluster_uuid("c1") + "==")
    assert len(cluster_uuid("c1")) == 22 and len(raw) == 16
    uuid.UUID(bytes=raw)  # a valid 128-bit id, as Kafka's Uuid.fromString expects


def test_cluster_id_never_starts_with_a_dash():
    # md5("s2") and md5("k2") encode to ids starting with "-", which StorageTool reads as a flag
    for name in ["s2", "k2", *(f"c{i}" for i in range(200))]:
        assert not cluster_uuid(name).startswith("-")
    assert cluster_uuid("c1") == base64.urlsafe_b64encode(__import__("hashlib").md5(b"c1").digest()).decode()[:22]


def test_config_is_single_node_kraft_on_loopback(tmp_path):
    c = LocalKafkaCluster(name="cx", data_dir=tmp_path, port=1234, controller_port=1235)
    cfg = c.config()
    assert cfg["process.roles"] == "broker,controller"
    assert cfg["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235"
    assert cfg["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1234"
    assert cfg["offsets.topic.replication.factor"] == "1"
    assert cfg["log.dirs"] == str(tmp_path / "logs")


def test_extra_config_overrides_defaults(tmp_path):
    c = LocalKafkaCluster(name="cx", data_dir=tmp_path, extra_config={"auto.create.topics.enable": "true"})
    assert c.config()["auto.create.topics.enable"] == "true"


def test_a_sasl_ssl_cluster_serves_clients_on_sasl_ssl_and_itself_on_an_internal_listener(tmp_path):
    pem = tmp_path / "server.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n")
    key = tmp_path / "server.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nCCCC\n-----END PRIVATE KEY-----\n")
    c = LocalKafkaCluster(name="cx", data_dir=tmp_path / "cx", port=1234, controller_port=1235,
                          sasl_ssl=SaslSslListener(pem, key, {"admin": "not-in-any-file"}))
    c.brokers[0].internal_port = 1236
    cfg = c.config()
    assert cfg["listeners"] == "SASL_SSL://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235,INTERNAL://127.0.0.1:1236"
    assert cfg["advertised.listeners"] == "SASL_SSL://127.0.0.1:1234,INTERNAL://127.0.0.1:1236"
    assert cfg["inter.broker.listener.name"] == "INTERNAL"
    assert c.internal_bootstrap == "127.0.0.1:1236" and c.bootstrap == "127.0.0.1:1234"
    props = c.brokers[0]._write_files()
    text = props.read_text()
    # the PEM stays one properties line: Java reads "\n" back as the line breaks
    assert "ssl.keystore.key=-----BEGIN PRIVATE KEY-----\\nCCCC\\n-----END PRIVATE KEY-----\n" in text
    assert oct(props.stat().st_mode & 0o777) == "0o600" and "not-in-any-file" not in text


@needs_java
def test_busy_port_is_refused_with_a_clear_message(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert port_in_use(busy)
        c = LocalKafkaCluster(name="busy", data_dir=tmp_path, port=busy)
        with pytest.raises(ClusterError, match=f"port {busy} .* already in use"):
            c.start()
    assert c.pid is None and not c.running


def test_free_port_is_bindable():
    assert not port_in_use(free_port())


@pytest.mark.parametrize("version", ["abc", "4.x", ""])
def test_malformed_kafka_version_is_refused(version):
    with pytest.raises(KafkaDistError, match="is not a Kafka version"):
        ensure_kafka(version)


@needs_java
def test_kafka_3_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDKAFKA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    with pytest.raises(KafkaDistError, match="KRaft"):
        ensure_kafka("3.9.0")


def test_unknown_tool_names_the_known_ones():
    with pytest.raises(UnknownTool, match="kafka-producer-perf-test"):
        tool_command("kafka-nope")


@needs_java
def test_kafka_home_must_be_a_distribution(monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    with pytest.raises(KafkaDistError, match="not an unpacked Apache Kafka distribution"):
        ensure_kafka()


@needs_java
def test_kafka_home_is_used_when_it_holds_the_jars(monkeypatch, tmp_path):
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka_2.13-4.1.0.jar").write_bytes(b"")
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    dist = ensure_kafka()
    assert dist.version == "4.1.0" and dist.libs == libs


def test_one_broker_cluster_keeps_its_single_node_layout(tmp_path):
    c = LocalKafkaCluster(name="cx", data_dir=tmp_path, port=1234, controller_port=1235)
    assert [b.node_id for b in c.brokers] == [1] and c.brokers[0].data_dir == tmp_path
    assert c.bootstrap == "127.0.0.1:1234" and c.heap == "512m"
    cfg = c.config()
    assert cfg["node.id"] == "1" and cfg["controller.quorum.bootstrap.servers"] == "127.0.0.1:1235"
    assert "controller.quorum.voters" not in cfg
    assert cfg["default.replication.factor"] == cfg["min.insync.replicas"] == "1"


def test_three_brokers_are_a_quorum_of_three_with_three_replicas(tmp_path):
    c = LocalKafkaCluster(name="cx", data_dir=tmp_path, broker_count=4)
    c.pick_ports()
    ports = [p for b in c.brokers for p in (b.port, b.controller_port) if p]
    assert len(ports) == len(set(ports)) == 7  # the fourth node is a broker only: no controller port
    voters = ",".join(f"{b.node_id}@127.0.0.1:{b.controller_port}" for b in c.brokers[:3])
    for b in c.brokers:
        cfg = b.config()
        assert cfg["node.id"] == str(b.node_id) and cfg["controller.quorum.voters"] == voters
        assert cfg["log.dirs"] == str(tmp_path / f"node-{b.node_id}" / "logs")
        assert cfg["default.replication.factor"] == cfg["offsets.topic.replication.factor"] == "3"
        assert cfg["transaction.state.log.replication.factor"] == "3"
        assert cfg["min.insync.replicas"] == cfg["transaction.state.log.min.isr"] == "2"
        assert cfg["unclean.leader.election.enable"] == "false"
    assert [b.config()["process.roles"] for b in c.brokers] == ["broker,controller"] * 3 + ["broker"]
    assert "CONTROLLER://" not in c.brokers[3].config()["listeners"]
    assert c.bootstrap == ",".join(f"127.0.0.1:{b.port}" for b in c.brokers)


def test_two_brokers_replicate_twice_and_need_both_in_sync(tmp_path):
    cfg = LocalKafkaCluster(name="cx", data_dir=tmp_path, broker_count=2).config(2)
    assert cfg["default.replication.factor"] == cfg["min.insync.replicas"] == "2"


def test_cluster_state_round_trips_with_every_broker(tmp_path):
    c = LocalKafkaCluster(name="cx", data_dir=tmp_path, broker_count=3, extra_config={"a": "b"})
    c.pick_ports()
    for pid, b in zip((11, 12, 13), c.brokers, strict=True):
        b.pid = pid
    doc = c.to_dict()
    assert [b["node_id"] for b in doc["brokers"]] == [1, 2, 3] and doc["pid"] == 11
    back = LocalKafkaCluster.from_dict(json.loads(json.dumps(doc)))
    assert back.to_dict() == doc and back.broker_count == 3 and back.heap == "384m"


def test_a_state_file_from_single_broker_days_loads_as_one_broker(tmp_path):
    old = {"id": "c1", "bootstrap": "127.0.0.1:4000", "port": 4000, "controller_port": 4001,
           "data_dir": str(tmp_path), "pid": 77, "cluster_id": cluster_uuid("c1"), "heap": "512m",
           "start_seconds": 3.2, "extra_config": {}, "managed_by": None}
    c = LocalKafkaCluster.from_dict(old)
    assert c.broker_count == 1 and (c.port, c.controller_port, c.pid) == (4000, 4001, 77)
    assert c.brokers[0].data_dir == tmp_path and c.bootstrap == "127.0.0.1:4000"
    assert {k: v for k, v in c.to_dict().items() if k != "brokers"} == old


def test_zero_brokers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        LocalKafkaCluster(name="cx", data_dir=tmp_path, broker_count=0)


def _recording_launcher(monkeypatch) -> list[list[str]]:
    """`local`'s service starts recorded instead of run (nothing is started, nothing waited for)."""
    from fedkafka import local

    started: list[list[str]] = []

    def start_service(state, name, args, **info):
        started.append(args)
        return {"pid": None, "args": args, **info}

    monkeypatch.setattr(local, "start_service", start_service)
    monkeypatch.setattr(local, "wait_until", lambda *args, **kwargs: None)
    return started


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_local_up_gives_the_name_service_a_routing_token_of_its_own(tmp_path, monkeypatch):
    """The name service's token may only read the client routing (docs/DESIGN.md §11), not the operator's."""
    import stat

    from fedkafka.local import LocalState, _up_single_controller, up_nameservice

    started = _recording_launcher(monkeypatch)
    state = LocalState(root=tmp_path)
    _up_single_controller(state)
    up_nameservice(state)
    controller, nameservice = started
    operator_file, routing_file = _option(controller, "--token-file"), _option(controller, "--routing-token-file")
    assert _option(nameservice, "--token-file") == routing_file
    tokens = {path: Path(path).read_text().strip() for path in (operator_file, routing_file)}
    assert len(set(tokens.values())) == 2 and all(len(token) >= 16 for token in tokens.values())
    assert stat.S_IMODE(tmp_path.joinpath("routing.token").stat().st_mode) == 0o600


def test_local_up_keeps_the_operator_token_for_a_controller_started_without_a_routing_token(tmp_path, monkeypatch):
    """A federation brought up by an older fedkafka: its running controller knows no routing token."""
    from fedkafka.local import LocalState, up_nameservice

    started = _recording_launcher(monkeypatch)
    state = LocalState(root=tmp_path, services={"controller": {"url": "http://127.0.0.1:1", "pid": 1,
                                                               "token_file": str(tmp_path / "controller.token")}})
    up_nameservice(state)
    assert _option(started[0], "--token-file") == str(tmp_path / "controller.token")
