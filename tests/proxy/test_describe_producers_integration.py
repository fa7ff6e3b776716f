"""DescribeProducers through a real proxy with Kafka's own `kafka-transactions describe-producers` tool.

A logical partition whose active segment sits on a second cluster, under another physical name, part way
into its physical partition. An idempotent producer writes to it through the proxy and another one straight
to the physical cluster. The tool, asking the proxy about the logical partition, sees both producers: the
proxy's one under the logical producer id the client was given (not the physical id the broker shows),
the other under its physical id, with the broker's last sequences."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from fedkafka.kafka.tools import run_tool
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View
from proxy.support import ProxyProcess, create_topic

pytestmark = [pytest.mark.integration]

LOGICAL_IDS_FROM = 1 << 40  # a proxy without a controller draws its logical ids from [2^40, 2^60)


def _produce_idempotent(bootstrap: str, topic: str, count: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})
    for i in range(count):
        p.produce(topic, value=b"v%d" % i, partition=0)
        p.flush(60)  # one batch per record: the last sequence is count - 1
    assert p.flush(60) == 0


def _describe(bootstrap: str, topic: str, partition: int) -> dict[int, tuple[int, int]]:
    """producer id -> (epoch, last sequence), as the tool prints them."""
    out = run_tool("kafka-transactions", "--bootstrap-server", bootstrap, "describe-producers", "--topic", topic,
                   "--partition", str(partition), check=False, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    return {int(r[0]): (int(r[1]), int(r[3])) for r in rows}


@pytest.mark.timeout(600)
def test_describe_producers_tool_through_the_proxy_maps_its_producer_ids(make_clusters, unique_name, tmp_path):
    d1, d2 = make_clusters("d1", "d2")
    old, phys = f"old-{unique_name}", f"phys-{unique_name}"
    create_topic(d1.bootstrap, old, 1)
    create_topic(d2.bootstrap, phys, 1)
    _produce_idempotent(d2.bootstrap, phys, 3)  # a producer of the physical cluster itself: physical 0..2
    chain = PartitionChain(segments=(Segment("d1", old, 0, 0, 0, 0), Segment("d2", phys, 0, 3, None, 0)),
                           leader_epoch=1)
    view = View(version=1, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (d1, d2)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, (chain,))})
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        _produce_idempotent(proxy.bootstrap, unique_name, 4)
        physical = _describe(d2.bootstrap, phys, 0)
        logical = _describe(proxy.bootstrap, unique_name, 0)
        assert proxy.alive(), proxy.output()[-3000:]
    assert sorted(seq for _epoch, seq in physical.values()) == [2, 3], physical
    direct = next(pid for pid, (_e, seq) in physical.items() if seq == 2)
    through_proxy = next(pid for pid, (_e, seq) in physical.items() if seq == 3)
    assert logical[direct] == physical[direct]  # not this proxy's id: left as the broker knows it
    assert through_proxy not in logical
    (mapped,) = set(logical) - {direct}
    assert mapped >= LOGICAL_IDS_FROM and logical[mapped][1] == 3
