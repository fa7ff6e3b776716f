"""Committed offsets on fedkafka's own wire code against a real broker (docs/DESIGN.md §10): what a real
confluent-kafka consumer committed reads as the AdminClient reads it; what `commit_offsets` writes a real consumer
finds; a stopped broker is a KafkaUnavailable in a few seconds, not a hang or a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from proxy.support import create_topic

from fedkafka.controller.kafka_admin import KafkaAdmin, KafkaUnavailable

pytestmark = pytest.mark.integration  # a real broker


def consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})


def admin_client_view(bootstrap: str, group: str) -> list[tuple]:
    """What librdkafka's ListConsumerGroupOffsets answers, in the controller's shape."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    parts = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
    return sorted((tp.topic, tp.partition, tp.offset, tp.leader_epoch, tp.metadata or None)
                  for tp in parts.topic_partitions if tp.offset >= 0)


def test_committed_offsets_are_read_and_written_like_kafkas_own_clients(make_clusters):
    (g,) = make_clusters("g")
    create_topic(g.bootstrap, "offs", 3)
    producer = Producer({"bootstrap.servers": g.bootstrap})
    for i in range(6):
        producer.produce("offs", value=b"%d" % i, partition=i % 3)
    assert producer.flush(30) == 0
    real = consumer(g.bootstrap, "real")
    real.commit(offsets=[TopicPartition("offs", 0, 2, metadata="from a consumer", leader_epoch=0),
                         TopicPartition("offs", 2, 1)], asynchronous=False)
    real.close()
    kafka = KafkaAdmin(timeout=5)

    got = kafka.committed_offsets("g", g.bootstrap, ["real", "never-committed"])
    # confluent-kafka commits metadata with its C string's terminating NUL and the broker keeps it; librdkafka
    # reads it back as a C string (without). Ours is the broker's value, byte for byte: a copy keeps it as is.
    assert sorted(got["real"]) == [("offs", 0, 2, 0, "from a consumer\x00"), ("offs", 2, 1, None, None)]
    assert [(t, p, o, e, m and m.rstrip("\x00")) for t, p, o, e, m in sorted(got["real"])] == admin_client_view(
        g.bootstrap, "real")
    assert got["never-committed"] == []

    written = [("offs", 0, 1, 0, "copied"), ("offs", 1, 2, None, None), ("offs", 2, 0, None, None)]
    assert kafka.commit_offsets("g", g.bootstrap, "copy", written) == {}
    reader = consumer(g.bootstrap, "copy")
    try:
        found = reader.committed([TopicPartition("offs", p) for p in range(3)], timeout=30)
    finally:
        reader.close()
    assert [(tp.partition, tp.offset, tp.metadata or None) for tp in found] == [
        (0, 1, "copied"), (1, 2, None), (2, 0, None)]
    assert sorted(kafka.committed_offsets("g", g.bootstrap, ["copy"])["copy"]) == written

    refused = kafka.commit_offsets("g", g.bootstrap, "copy", [("no-such-topic", 0, 1, None, None)])
    assert refused == {("no-such-topic", 0): "UNKNOWN_TOPIC_OR_PARTITION"}


def test_a_stopped_coordination_broker_is_unavailable_quickly(make_clusters):
    """The fault of the bug: the coordinator's broker goes away. librdkafka's coordinator admin calls could
    abort the process here (librdkafka issue #4605); ours raise KafkaUnavailable within their timeouts."""
    (g,) = make_clusters("g")
    create_topic(g.bootstrap, "offs", 1)
    kafka = KafkaAdmin(timeout=2)
    assert kafka.commit_offsets("g", g.bootstrap, "grp", [("offs", 0, 3, None, None)]) == {}
    assert kafka.committed_offsets("g", g.bootstrap, ["grp"]) == {"grp": [("offs", 0, 3, None, None)]}
    g.stop(timeout=10)
    for attempt in (lambda: kafka.committed_offsets("g", g.bootstrap, ["grp"]),
                    lambda: kafka.commit_offsets("g", g.bootstrap, "grp", [("offs", 0, 4, None, None)])):
        started = time.monotonic()
        with pytest.raises(KafkaUnavailable):
            attempt()
        assert time.monotonic() - started < 3 * kafka.timeout


READER = r"""
import sys, time
from fedkafka.controller.kafka_admin import KafkaAdmin, KafkaRefused, KafkaUnavailable
bootstrap, seconds = sys.argv[1], float(sys.argv[2])
kafka = KafkaAdmin(timeout=1.0)
groups = kafka.consumer_groups("g", bootstrap)
deadline, read, unavailable = time.monotonic() + seconds, 0, 0
while time.monotonic() < deadline:
    for group in groups:  # one request after another, a new one right after one timed out
        try:
            kafka.committed_offsets("g", bootstrap, [group])
            read += 1
        except (KafkaUnavailable, KafkaRefused):
            unavailable += 1
print(read, unavailable, flush=True)
"""


def test_reading_offsets_survives_a_broker_stopped_and_restarted_meanwhile(make_clusters):
    """The bug itself: the controller died with SIGABRT (librdkafka issue #4605) when the coordination
    cluster's broker was restarted while it read groups' offsets. The same loop on librdkafka's
    ListConsumerGroupOffsets (the old code's call) aborted with SIGABRT in each of two runs of this scenario
    (a race: likely, not certain); ours goes on, answering KafkaUnavailable meanwhile."""
    (g,) = make_clusters("g")
    create_topic(g.bootstrap, "offs", 3)
    for group in ("g0", "g1", "g2"):
        committer = consumer(g.bootstrap, group)
        committer.commit(offsets=[TopicPartition("offs", p, 1) for p in range(3)], asynchronous=False)
        committer.close()
    reader = subprocess.Popen([sys.executable, "-c", READER, g.bootstrap, "40"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    broker = g.brokers[0]
    try:
        started = time.monotonic()
        while reader.poll() is None and time.monotonic() - started < 40:
            time.sleep(2)
            os.killpg(broker.pid, signal.SIGSTOP)  # requests in flight time out
            time.sleep(4)
            os.killpg(broker.pid, signal.SIGCONT)
            time.sleep(2)
            broker.kill()  # connections drop mid-request
            time.sleep(1)
            broker.start()
            g.wait_ready()
        out, _ = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, f"the reader died: {reader.returncode}"
    read, unavailable = map(int, out.split())
    assert read > 0 and unavailable > 0, out
