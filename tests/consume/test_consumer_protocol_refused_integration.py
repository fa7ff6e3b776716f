"""A Java consumer with group.protocol=consumer (KIP-848) is told plainly that fedkafka serves the classic group
protocol only, and stops; it never waits silently for data that does not come."""

from __future__ import annotations

import time
import uuid

import pytest
from proxy.support import ProxyProcess, create_topic

from fedkafka.kafka.tools import run_tool
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

from .support import produce_values, with_coordination

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(kafka_clusters, unique_name, tmp_path):
    c1 = kafka_clusters[0]
    create_topic(c1.bootstrap, unique_name, 2)
    chains = tuple(PartitionChain(segments=(Segment("c1", unique_name, p, 0, None, 0),)) for p in range(2))
    view = View(version=1, clusters={"c1": Cluster("c1", c1.bootstrap)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, chains)})
    with ProxyProcess(tmp_path, with_coordination(view, "c1", c1.bootstrap), role=ProxyRole.BOTH) as p:
        yield p, unique_name
        assert p.alive(), p.output()[-3000:]


def test_java_consumer_with_the_consumer_group_protocol_gets_an_explicit_error(proxy):
    p, topic = proxy
    produce_values(p.bootstrap, topic, [f"v{i}" for i in range(10)])
    started = time.monotonic()
    out = run_tool("kafka-console-consumer", "--bootstrap-server", p.bootstrap, "--topic", topic,
                   "--group", f"kip848-{uuid.uuid4().hex[:6]}", "--from-beginning", "--max-messages", "10",
                   "--timeout-ms", "120000", "--consumer-property", "group.protocol=consumer",
                   check=False, timeout=240)
    said = out.stdout + out.stderr
    assert out.returncode != 0, said[-3000:]
    assert "group.protocol=classic" in said, said[-3000:]  # what to do about it
    assert time.monotonic() - started < 110, said[-3000:]  # the error, not the consumer's own timeout
