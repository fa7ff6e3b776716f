"""aiokafka consumer groups through a real proxy (identity + moved segment)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from proxy.support import ProxyProcess, create_topic

from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

from .support import produce_values, with_coordination

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(kafka_clusters, unique_name, tmp_path):
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 2)
    create_topic(c2.bootstrap, physical, 2)
    produce_values(c2.bootstrap, physical, ["junk"] * 4, partition=1)
    chains = (PartitionChain(segments=(Segment("c1", physical, 0, 0, None, 0),)),
              PartitionChain(segments=(Segment("c1", physical, 1, 0, None, 0),)),
              PartitionChain(segments=(Segment("c2", physical, 0, 0, None, 0),)),
              PartitionChain(segments=(Segment("c2", physical, 1, 4, None, 500),), leader_epoch=3))
    view = View(version=1, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, chains)})
    view = with_coordination(view, "c1", c1.bootstrap)
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        yield proxy, unique_name
        assert proxy.alive(), proxy.output()[-3000:]


async def consume_group(bootstrap: str, topic: str, group: str, n: int, members: int = 2) -> list:
    consumers = [AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                  enable_auto_commit=False) for _ in range(members)]
    got: list = []
    for c in consumers:
        await c.start()
    try:
        async def pull(c):
            while len(got) < n:
                batch = await c.getmany(timeout_ms=500)
                for records in batch.values():
                    got.extend((r.partition, r.offset, r.value.decode()) for r in records)
                if batch:
                    await c.commit()
        await asyncio.wait_for(asyncio.gather(*(pull(c) for c in consumers)), 90)
    finally:
        for c in consumers:
            await c.stop()
    return got


def test_aiokafka_group_reads_once_and_resumes_from_commits(federation):
    proxy, topic = federation
    group = f"aio-{uuid.uuid4().hex[:6]}"
    first = produce_values(proxy.bootstrap, topic, [f"a{i}" for i in range(200)])
    assert {p for p, _, _ in first} == {0, 1, 2, 3}
    assert min(o for p, o, _ in first if p == 3) == 500
    assert sorted(asyncio.run(consume_group(proxy.bootstrap, topic, group, 200))) == sorted(first)
    second = produce_values(proxy.bootstrap, topic, [f"b{i}" for i in range(60)])
    assert sorted(asyncio.run(consume_group(proxy.bootstrap, topic, group, 60, members=1))) == sorted(second)

