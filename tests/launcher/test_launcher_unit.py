"""Launcher pieces that need no running broker. The few that start `java -version` (every path into
`ensure_kafka` or `LocalKafkaCluster.start` does, before anything else) are marked `integration`."""

from __future__ import annotations

import base64
import socket
import uuid

import pytest

from fedkafka.kafka.cluster import ClusterError, LocalKafkaCluster, cluster_uuid, free_port, port_in_use
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
