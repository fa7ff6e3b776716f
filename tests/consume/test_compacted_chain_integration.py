"""A compacted logical partition that went c1 -> c2 -> c1, read through a real proxy after c1's log cleaner ran.

    logical p0: c1/p0 phys [0, 30)  -> logical 0..29   (keys k0..k29; the cleaner removes 10..29)
                c2/p0 phys [0, 10)  -> logical 30..39
                c1/p0 phys [30, ..) -> logical 40..60  (keys k10..k29 written again, then a roller; active)

From logical 10 the broker answers only the last segment's batches: the proxy used to drop them all and answer
no records and no error, so the consumer fetched 10 forever (docs/DESIGN.md §5.5).
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from proxy.support import ProxyProcess, create_topic

from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

from .support import consumer, wait_for, with_coordination

pytestmark = pytest.mark.integration

# every append after 100 ms rolls the log segment: the cleaner never cleans the active one
COMPACTED = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
             "min.compaction.lag.ms": "0"}


def produce(bootstrap: str, topic: str, pairs: list[tuple[str, str]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for key, value in pairs:
        producer.produce(topic, key=key.encode(), value=value.encode(), partition=0)
    assert producer.flush(30) == 0


def leader(admin: AdminClient, topic: str) -> int:
    t = admin.list_topics(topic, timeout=10).topics.get(topic)
    p = t.partitions.get(0) if t is not None else None
    return -1 if p is None else p.leader


def first_offset_from(bootstrap: str, topic: str, offset: int) -> int:
    """The offset of the first record the broker has at or after `offset`, -1 when none comes."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, offset)])
    msg = c.poll(5)
    c.close()
    return -1 if msg is None or msg.error() else msg.offset()


def test_a_reader_crosses_a_hole_the_cleaner_made_before_a_seal(kafka_clusters, unique_name, tmp_path):
    c1, c2, _ = kafka_clusters
    physical = f"compacted-{unique_name}"
    admin = AdminClient({"bootstrap.servers": c1.bootstrap})
    for fut in admin.create_topics([NewTopic(physical, 1, 1, config=COMPACTED)]).values():
        fut.result(30)
    wait_for(lambda: leader(admin, physical) >= 0, 30, "a leader for the compacted topic")
    create_topic(c2.bootstrap, physical, 1)
    produce(c1.bootstrap, physical, [(f"k{i}", f"old-{i}") for i in range(10)])
    # a batch of its own: the cleaner removes it whole (a batch it only thins keeps its offsets, read past as usual)
    produce(c1.bootstrap, physical, [(f"k{i}", f"old-{i}") for i in range(10, 30)])
    produce(c2.bootstrap, physical, [(f"b{i}", f"b-{i}") for i in range(10)])
    time.sleep(0.3)
    produce(c1.bootstrap, physical, [(f"k{i}", f"new-{i}") for i in range(10, 30)])
    time.sleep(0.3)
    produce(c1.bootstrap, physical, [("roll", "roll")])  # rolls a log segment: 30..49 become cleanable
    wait_for(lambda: first_offset_from(c1.bootstrap, physical, 10) == 30, 90, "the cleaner to remove 10..29")
    chain = PartitionChain(segments=(Segment("c1", physical, 0, 0, 30, 0), Segment("c2", physical, 0, 0, 10, 30),
                                     Segment("c1", physical, 0, 30, None, 40)), leader_epoch=2)
    view = View(version=1, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, (chain,))})
    with ProxyProcess(tmp_path, with_coordination(view, "c1", c1.bootstrap), role=ProxyRole.CPROXY) as proxy:
        c = consumer(proxy.bootstrap)
        c.assign([TopicPartition(unique_name, 0, 0)])
        got: list = []
        wait_for(lambda: got.extend(m for m in c.consume(100, 0.5) if not m.error()) or len(got) >= 41, 60,
                 "41 records")
        c.close()
        assert proxy.alive(), proxy.output()[-3000:]
    assert [(m.offset(), m.value().decode()) for m in got] == (
        [(i, f"old-{i}") for i in range(10)] + [(30 + i, f"b-{i}") for i in range(10)]
        + [(40 + i - 10, f"new-{i}") for i in range(10, 30)] + [(60, "roll")])
