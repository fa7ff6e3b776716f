"""The seal read against a real Kafka broker: the high watermark (AdminClient) and the log end (ListOffsets
with the debugging replica id, on a plain socket) of a partition with records."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.moves import Mover
from fedkafka.kafka.cluster import LocalKafkaCluster, free_port
from tests.proxy.support import create_topic


def test_log_end_and_high_watermark_of_a_real_partition(make_clusters):
    (s,) = make_clusters("s")
    create_topic(s.bootstrap, "sealed", 2)
    producer = Producer({"bootstrap.servers": s.bootstrap, "acks": "all"})
    for i in range(5):
        producer.produce("sealed", value=b"v%d" % i, partition=1)
    assert producer.flush(30) == 0
    admin = KafkaAdmin(timeout=5)
    parts = [("sealed", 0), ("sealed", 1), ("missing", 0)]
    assert admin.log_offsets("s", s.bootstrap, parts) == {("sealed", 0): (0, 0), ("sealed", 1): (0, 5)}
    assert admin.log_end_offsets("s", s.bootstrap, parts) == {("sealed", 0): 0, ("sealed", 1): 5}


class _Node(LocalKafkaCluster):
    """One node of a three-node test cluster: node 1 is broker and controller, 2 and 3 are brokers of its
    quorum. Test-only, until multi-broker local clusters land in fedkafka/kafka/cluster.py."""

    node_id: int = 1
    quorum: str = ""

    def config(self) -> dict[str, str]:
        cfg = super().config()
        cfg.update({"node.id": str(self.node_id), "controller.quorum.bootstrap.servers": self.quorum,
                    "offsets.topic.replication.factor": "3", "default.replication.factor": "3",
                    "broker.session.timeout.ms": "60000", "broker.heartbeat.interval.ms": "2000",
                    "replica.lag.time.max.ms": "60000"})
        if self.node_id != 1:
            cfg.update({"process.roles": "broker", "listeners": f"PLAINTEXT://{self.host}:{self.port}"})
        return cfg

    def format_storage(self, dist) -> None:
        if self.node_id == 1:
            return super().format_storage(dist)
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        props = self._write_files()
        subprocess.run(dist.java_command("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c",
                                         str(props), "--no-initial-controllers", heap="256m"),
                       capture_output=True, check=True)


@pytest.fixture
def three_brokers(tmp_path):
    nodes = []
    controller_port = free_port()
    for node_id in (1, 2, 3):
        node = _Node("trio", tmp_path / f"n{node_id}", heap="384m")
        node.node_id, node.controller_port = node_id, controller_port if node_id == 1 else 0
        node.quorum = f"127.0.0.1:{controller_port}"
        nodes.append(node)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready(180)
        yield nodes
    finally:
        for node in nodes:
            if node.running:
                os.kill(node.pid, signal.SIGCONT)
            node.stop(timeout=10)


def test_the_log_end_is_read_above_a_stalled_high_watermark(three_brokers):
    """On a real three-broker cluster: followers stopped, the leader appends an acks=1 write, the high
    watermark stays below it. The AdminClient's LATEST is that high watermark; `log_end_offsets` (ListOffsets
    with the debugging replica id) is the leader's log end, which is what the seal wait compares with."""
    bootstrap = three_brokers[0].bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("stall", 1, 3)])["stall"].result(60)
    deadline = time.monotonic() + 60
    while (leader_id := admin.list_topics("stall", timeout=10).topics["stall"].partitions[0].leader) < 0:
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.2)
    followers = [n for n in three_brokers if n.node_id != leader_id]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(3):
        producer.produce("stall", value=b"replicated %d" % i, partition=0)
    assert producer.flush(60) == 0
    kafka = KafkaAdmin(timeout=5)
    assert kafka.log_offsets("trio", bootstrap, [("stall", 0)]) == {("stall", 0): (0, 3)}
    assert kafka.log_end_offsets("trio", bootstrap, [("stall", 0)]) == {("stall", 0): 3}
    for f in followers:
        os.kill(f.pid, signal.SIGSTOP)  # still in the ISR for a minute, fetching nothing
    try:
        leader_only = Producer({"bootstrap.servers": bootstrap, "acks": 1})
        for i in range(2):
            leader_only.produce("stall", value=b"leader only %d" % i, partition=0)
        assert leader_only.flush(30) == 0
        assert kafka.log_offsets("trio", bootstrap, [("stall", 0)]) == {("stall", 0): (0, 3)}  # the HW
        assert kafka.log_end_offsets("trio", bootstrap, [("stall", 0)]) == {("stall", 0): 5}
        # the seal read waits for the followers (resumed a moment later) rather than seal at 3
        threading.Timer(1.0, lambda: [os.kill(f.pid, signal.SIGCONT) for f in followers]).start()
        mover = Mover(SimpleNamespace(settings=SimpleNamespace(lease_ms=10_000), kafka=kafka), seal_timeout=60)
        wanted = {"trio": {("stall", 0)}}
        assert mover.read_settled_ends(wanted, {"trio": bootstrap}, {("trio", "stall", 0)}) == {
            ("trio", "stall", 0): 5}
    finally:
        for f in followers:
            os.kill(f.pid, signal.SIGCONT)
