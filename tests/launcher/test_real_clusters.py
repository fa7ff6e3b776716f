"""Real single-node KRaft clusters, real clients: the foundation everything else is tested on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, Producer

from fedkafka.demo import ensure_topic
from fedkafka.kafka.cluster import pid_alive
from fedkafka.kafka.dist import KafkaDistError, ensure_kafka
from fedkafka.kafka.tools import popen_tool, run_tool

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, n: int) -> list[tuple[int, int, bytes]]:
    acked: list[tuple[int, int, bytes]] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, key=f"k{i % 37}".encode(), value=str(i).encode(),
                         on_delivery=lambda err, m: acked.append((m.partition(), m.offset(), m.key())) if not err
                         else None)
    assert producer.flush(30) == 0
    return acked


def _consume(bootstrap: str, topic: str, n: int, group: str) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + 60
    while len(out) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            out.append(msg)
    consumer.close()
    return out


def test_two_clusters_are_independent_and_keep_per_partition_order(kafka_clusters, unique_name):
    c1, c2 = kafka_clusters[:2]
    assert c1.bootstrap != c2.bootstrap and c1.cluster_id != c2.cluster_id
    for cluster in (c1, c2):
        ensure_topic(cluster.bootstrap, unique_name, partitions=3)
        acked = _produce(cluster.bootstrap, unique_name, 1000)
        assert len(acked) == 1000
        msgs = _consume(cluster.bootstrap, unique_name, 1000, group=f"g-{unique_name}")
        assert len(msgs) == 1000
        assert {m.key() for m in msgs} == {f"k{i}".encode() for i in range(37)}
        per_partition = defaultdict(list)
        for m in msgs:
            per_partition[m.partition()].append(m.offset())
        for offsets in per_partition.values():
            assert offsets == sorted(offsets) == list(range(offsets[0], offsets[0] + len(offsets)))
        # every key sits on exactly one partition, and its values come back in produce order
        values_by_key = defaultdict(list)
        for m in msgs:
            values_by_key[m.key()].append(int(m.value()))
        assert all(v == sorted(v) for v in values_by_key.values())
    # the topic on c1 and the topic on c2 are different logs: each has exactly 1000 records
    from confluent_kafka import TopicPartition
    for cluster in (c1, c2):
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "wm"})
        total = sum(consumer.get_watermark_offsets(TopicPartition(unique_name, p), timeout=10)[1] for p in range(3))
        consumer.close()
        assert total == 1000


def test_brokers_write_their_log(kafka_clusters):
    """The broker's slf4j 1.7 found no slf4j 2 provider and logged nothing, so every ClusterError's log tail
    was empty; the pom now brings slf4j-api 2."""
    log = kafka_clusters[0].log_file.read_text(errors="replace")
    assert "Kafka Server started" in log, log[-2000:]


def test_java_perf_producer_and_console_consumer(kafka_clusters, unique_name):
    cluster = kafka_clusters[0]
    ensure_topic(cluster.bootstrap, unique_name, partitions=2)
    out = run_tool("kafka-producer-perf-test", "--topic", unique_name, "--num-records", "2000",
                   "--record-size", "100", "--throughput", "-1", "--producer-props",
                   f"bootstrap.servers={cluster.bootstrap}", "acks=all", timeout=120).stdout
    assert re.search(r"2000 records sent", out), out
    consumer = run_tool("kafka-console-consumer", "--bootstrap-server", cluster.bootstrap, "--topic", unique_name,
                        "--from-beginning", "--max-messages", "2000", "--timeout-ms", "30000", timeout=120)
    assert len(consumer.stdout.splitlines()) == 2000


def test_java_console_producer_then_confluent_consumer(kafka_clusters, unique_name):
    cluster = kafka_clusters[1]
    ensure_topic(cluster.bootstrap, unique_name, partitions=1)
    lines = [f"line-{i}" for i in range(50)]
    proc = popen_tool("kafka-console-producer", "--bootstrap-server", cluster.bootstrap, "--topic", unique_name,
                      stdin=subprocess.PIPE)
    proc.communicate("\n".join(lines) + "\n", timeout=120)
    assert proc.returncode == 0
    msgs = _consume(cluster.bootstrap, unique_name, 50, group=f"g-{unique_name}")
    assert [m.value().decode() for m in msgs] == lines


def test_unreleased_kafka_version_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKAFKA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    with pytest.raises(KafkaDistError, match=r"4\.99\.7 could not be resolved from Maven Central"):
        ensure_kafka("4.99.7")
    assert not list(tmp_path.glob("kafka-4.99.7/libs*")), "a failed download must leave nothing that looks complete"


def _cli(state_dir, *args, check=True):
    env = {**os.environ, "FEDKAFKA_STATE_DIR": str(state_dir)}
    proc = subprocess.run([sys.executable, "-m", "fedkafka.cli", *args], env=env, capture_output=True, text=True,
                          timeout=240)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_up_status_kill9_down_leaves_no_jvm(tmp_path):
    ensure_kafka()
    _cli(tmp_path, "local", "up", "--clusters", "2", "--clusters-only")
    _cli(tmp_path, "local", "up", "--clusters", "2", "--clusters-only")  # again: nothing to start
    status = json.loads(_cli(tmp_path, "local", "status", "--json").stdout)
    assert all(c["start_seconds"] > 0 for c in status["clusters"]), "a second up must keep the start times"
    assert [c["id"] for c in status["clusters"]] == ["c1", "c2"]
    assert all(c["running"] and re.fullmatch(r"127\.0\.0\.1:\d+", c["bootstrap"]) for c in status["clusters"])
    pids = [c["pid"] for c in status["clusters"]]
    # a crash: kill -9 one broker; status must say so
    os.kill(pids[0], 9)
    deadline = time.monotonic() + 10
    while pid_alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = json.loads(_cli(tmp_path, "local", "status", "--json").stdout)
    assert [c["running"] for c in status["clusters"]] == [False, True]
    # `up` again restarts the dead one on the same port with its data
    _cli(tmp_path, "local", "up", "--clusters", "2", "--clusters-only")
    again = json.loads(_cli(tmp_path, "local", "status", "--json").stdout)
    assert [c["bootstrap"] for c in again["clusters"]] == [c["bootstrap"] for c in status["clusters"]]
    assert all(c["running"] for c in again["clusters"])
    new_pids = [c["pid"] for c in again["clusters"]]
    _cli(tmp_path, "local", "down")
    assert not any(pid_alive(p) for p in pids + new_pids)
    leftover = subprocess.run(["pgrep", "-f", f"log4j2.configurationFile={tmp_path}"], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout
