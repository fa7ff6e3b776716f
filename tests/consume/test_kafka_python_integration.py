"""kafka-python (the README lists it) through a real proxy: its producer, and a consumer group that reads every
record once in logical offsets (an identity segment and a moved one) and resumes from its commits."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from proxy.support import ProxyProcess

from fedkafka.view.model import ProxyRole

from .support import identity_and_moved_view

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(kafka_clusters, unique_name, tmp_path):
    """p0 identity on c1; p1 moved: c2 from physical 4 (4 older records belong to nobody) at logical 500."""
    view = identity_and_moved_view(kafka_clusters[0], kafka_clusters[1], unique_name, 4, 500, 2)
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        yield proxy, unique_name
        assert proxy.alive(), proxy.output()[-3000:]


def _consume(bootstrap: str, topic: str, group: str, want: int) -> list[tuple[int, int, bytes]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + 90
    try:
        while len(got) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                got.extend((r.partition, r.offset, r.value) for r in records)
            consumer.commit()
    finally:
        consumer.close()
    return got


def test_kafka_python_producer_and_consumer_group(federation):
    proxy, topic = federation
    producer = KafkaProducer(bootstrap_servers=proxy.bootstrap, acks="all")
    acked = [producer.send(topic, value=b"v%d" % i, partition=i % 2).get(timeout=60) for i in range(40)]
    producer.close()
    assert sorted(m.offset for m in acked if m.partition == 1) == list(range(500, 520))  # logical offsets
    assert sorted(m.offset for m in acked if m.partition == 0) == list(range(20))

    group = f"kp-{uuid.uuid4().hex[:6]}"
    first = _consume(proxy.bootstrap, topic, group, 40)
    assert sorted(first) == sorted((m.partition, m.offset, b"v%d" % i) for i, m in enumerate(acked))

    producer = KafkaProducer(bootstrap_servers=proxy.bootstrap, acks="all")
    for i in range(40, 50):
        producer.send(topic, value=b"v%d" % i, partition=i % 2).get(timeout=60)
    producer.close()
    resumed = _consume(proxy.bootstrap, topic, group, 10)  # from the group's commits: only the new ones
    assert sorted(v for _, _, v in resumed) == sorted(b"v%d" % i for i in range(40, 50))
    checker = KafkaConsumer(bootstrap_servers=proxy.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert [checker.committed(TopicPartition(topic, p)) for p in (0, 1)] == [25, 525]
    finally:
        checker.close()
