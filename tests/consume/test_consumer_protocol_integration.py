"""The KIP-848 consumer group protocol through a real proxy: a Java consumer with group.protocol=consumer reads
a logical topic (an identity segment and a moved one) in a group, commits logical offsets, and
`kafka-consumer-groups --describe` shows the group with logical names, offsets and lag. Classic groups are
still described (the admin client asks ConsumerGroupDescribe first, then falls back)."""

from __future__ import annotations

import re
import uuid

import pytest
from confluent_kafka import TopicPartition
from proxy.support import ProxyProcess

from fedkafka.kafka.tools import run_tool
from fedkafka.view.model import ProxyRole

from .support import consumer, identity_and_moved_view, produce_values

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(kafka_clusters, unique_name, tmp_path):
    """p0 identity on c1; p1 moved: c2 from physical 3 at logical 300."""
    view = identity_and_moved_view(kafka_clusters[0], kafka_clusters[1], unique_name, 3, 300, 1)
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        yield proxy, unique_name
        assert proxy.alive(), proxy.output()[-3000:]


def _described(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int, int]]:
    out = run_tool("kafka-consumer-groups", "--bootstrap-server", bootstrap, "--describe", "--group", group,
                   timeout=180, check=False)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = {}
    for line in out.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group and cols[1] == topic:
            rows[int(cols[2])] = (int(cols[3]), int(cols[4]), int(cols[5]))
    return rows


def test_java_consumer_with_the_consumer_group_protocol(federation):
    proxy, topic = federation
    produce_values(proxy.bootstrap, topic, [f"v{i}" for i in range(20)], partition=0)
    produce_values(proxy.bootstrap, topic, [f"w{i}" for i in range(20)], partition=1)
    group = f"kip848-{uuid.uuid4().hex[:6]}"
    out = run_tool("kafka-console-consumer", "--bootstrap-server", proxy.bootstrap, "--topic", topic,
                   "--group", group, "--from-beginning", "--max-messages", "40", "--timeout-ms", "90000",
                   "--command-property", "group.protocol=consumer", "--property", "print.offset=true",
                   "--property", "print.partition=true", check=False, timeout=240)
    said = out.stdout + out.stderr
    seen = re.findall(r"Partition:(\d+)\s+Offset:(\d+)", out.stdout)
    assert len(seen) == 40, said[-3000:]
    assert sorted(int(o) for p, o in seen if p == "1") == list(range(300, 320))  # logical offsets

    produce_values(proxy.bootstrap, topic, [f"x{i}" for i in range(5)], partition=1)
    assert _described(proxy.bootstrap, group, topic) == {0: (20, 20, 0), 1: (320, 325, 5)}

    classic = f"classic-{uuid.uuid4().hex[:6]}"
    c = consumer(proxy.bootstrap, classic)
    c.commit(offsets=[TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 310)], asynchronous=False)
    c.close()
    assert _described(proxy.bootstrap, classic, topic) == {0: (7, 20, 13), 1: (310, 325, 15)}
