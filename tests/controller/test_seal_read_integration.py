"""The seal read against a real Kafka broker: the high watermark (AdminClient) and the log end (ListOffsets
with the debugging replica id, on a plain socket) of a partition with records."""

from __future__ import annotations

from confluent_kafka import Producer

from fedkafka.controller.kafka_admin import KafkaAdmin
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
