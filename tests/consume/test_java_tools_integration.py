"""The Java console consumer in a group and `kafka-consumer-groups --describe` through a real proxy:
committed offsets and lag are logical (the topic's partition 1 is a moved, non-identity segment)."""

from __future__ import annotations

import re
import uuid

import pytest
from confluent_kafka import Producer, TopicPartition
from proxy.support import ProxyProcess, create_topic

from fedkafka.kafka.tools import run_tool
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

from .support import consumer, with_coordination

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(kafka_clusters, unique_name, tmp_path):
    """Logical p0 identity on c1; p1 moved: c2/p0 from physical 7 (7 older records belong to nobody),
    logical base 1000."""
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 1)
    create_topic(c2.bootstrap, physical, 1)
    producer = Producer({"bootstrap.servers": c2.bootstrap})
    for i in range(7):
        producer.produce(physical, value=f"junk{i}".encode(), partition=0)
    assert producer.flush(30) == 0
    chains = (PartitionChain(segments=(Segment("c1", physical, 0, 0, None, 0),)),
              PartitionChain(segments=(Segment("c2", physical, 0, 7, None, 1000),), leader_epoch=1))
    view = View(version=1, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, chains)})
    view = with_coordination(view, "c1", c1.bootstrap)
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        yield proxy, unique_name
        assert proxy.alive(), proxy.output()[-3000:]


def test_console_consumer_group_and_describe_lag(federation):
    proxy, topic = federation
    producer = Producer({"bootstrap.servers": proxy.bootstrap, "acks": "all"})
    for i in range(50):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    group = f"java-{uuid.uuid4().hex[:6]}"
    out = run_tool("kafka-console-consumer", "--bootstrap-server", proxy.bootstrap, "--topic", topic,
                   "--group", group, "--from-beginning", "--max-messages", "50", "--timeout-ms", "60000",
                   "--property", "print.offset=true", "--property", "print.partition=true", timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = sorted(re.findall(r"Partition:(\d+)\s+Offset:(\d+)\s+(v\d+)", out.stdout))
    assert len(seen) == 50, out.stdout[-2000:]
    offsets_p1 = sorted(int(o) for p, o, _ in seen if p == "1")
    assert offsets_p1 == list(range(1000, 1025))  # logical offsets of the moved segment

    for i in range(50, 80):  # 15 more per partition: lag 15 each
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    described = run_tool("kafka-consumer-groups", "--bootstrap-server", proxy.bootstrap, "--describe",
                         "--group", group, timeout=120)
    assert described.returncode == 0, described.stderr[-3000:]
    rows = {}
    for line in described.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group and cols[1] == topic:
            rows[int(cols[2])] = (int(cols[3]), int(cols[4]), int(cols[5]))
    assert rows == {0: (25, 40, 15), 1: (1025, 1040, 15)}, described.stdout

    listed = run_tool("kafka-consumer-groups", "--bootstrap-server", proxy.bootstrap, "--list", timeout=120)
    assert group in listed.stdout.split(), listed.stdout + listed.stderr[-2000:]

    c = consumer(proxy.bootstrap, group)  # the same committed offsets through the client API
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=20)
    c.close()
    assert [tp.offset for tp in committed] == [25, 1025]
