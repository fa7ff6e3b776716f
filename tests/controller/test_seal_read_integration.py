"""The seal read against a real Kafka broker: the high watermark (AdminClient) and the log end (ListOffsets
with the debugging replica id, on a plain socket) of a partition with records."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from proxy.support import create_topic
from three_brokers import started_three_brokers

from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.moves import Mover

pytestmark = pytest.mark.integration  # real brokers


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


@pytest.fixture
def three_brokers(tmp_path):
    with started_three_brokers(tmp_path) as nodes:
        yield nodes


def _leader(admin: AdminClient, topic: str) -> int:
    meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    partition = meta.partitions.get(0) if meta is not None else None  # a topic created a moment ago: maybe none
    return -1 if partition is None else partition.leader


def test_the_log_end_is_read_above_a_stalled_high_watermark(three_brokers):
    """On a real three-broker cluster: followers stopped, the leader appends an acks=1 write, the high
    watermark stays below it. The AdminClient's LATEST is that high watermark; `log_end_offsets` (ListOffsets
    with the debugging replica id) is the leader's log end, which is what the seal wait compares with."""
    bootstrap = three_brokers[0].bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("stall", 1, 3)])["stall"].result(60)
    deadline = time.monotonic() + 60
    while (leader_id := _leader(admin, "stall")) < 0:
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.2)
    followers = [n for n in three_brokers if n.node_id != leader_id]
    bootstrap = next(n for n in three_brokers if n.node_id == leader_id).bootstrap  # the others stop
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
        mover = Mover(SimpleNamespace(settings=SimpleNamespace(lease_ms=10_000), kafka=kafka,
                                        wait_stopping=threading.Event().wait), seal_timeout=60)
        wanted = {"trio": {("stall", 0)}}
        assert mover.read_settled_ends(wanted, {"trio": bootstrap}, {("trio", "stall", 0)}) == {
            ("trio", "stall", 0): 5}
    finally:
        for f in followers:
            os.kill(f.pid, signal.SIGCONT)
