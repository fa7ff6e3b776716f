"""Review rv3 (merge 6721bab): Metadata's replicas and ISR of a logical partition stand for its active physical
partition's, learned by `PhysicalClusters.learn` on a successful refresh. A refresh that fails marks the cluster
unreachable (`mark_unreachable`) but keeps `ClusterInfo.replication` and does not move `replication_version`: a
physical cluster that went away (all its brokers down, or cut off from this proxy) keeps reading "3 replicas, 3 in
sync" through the proxy for as long as it is gone, from the answer cache too, so `kafka-topics --describe
--under-replicated-partitions` shows nothing. docs/DESIGN.md says a physical partition not read lists the leader
alone; what an unreachable cluster had is no longer read."""

from __future__ import annotations

import asyncio
import uuid

from kio.schema.metadata.v12.request import MetadataRequest

from fedkafka.protocol import codec
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.physical import ClusterInfo, PhysicalClusters
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View
from proxy.test_metadata_replicas_unit import _cluster_metadata, _versions


def test_an_unreachable_cluster_s_partitions_no_longer_read_fully_in_sync():
    async def scenario():
        me = ProxyInfo(1, "127.0.0.1", 9092, ProxyRole.BOTH)
        others = tuple(ProxyInfo(n, "127.0.0.1", 9092 + n, ProxyRole.BOTH) for n in (2, 3))
        view = View(version=1, clusters={"c1": Cluster("c1", "b:1")}, proxies=(me, *others), topics={
            "t": LogicalTopic("t", uuid.uuid4().hex, (PartitionChain((Segment("c1", "phys", 0, 0, None, 0),)),))})
        physical = PhysicalClusters()
        physical.clusters["c1"] = ClusterInfo("c1", "b:1")
        physical.learn("c1", _versions(), _cluster_metadata([1, 2, 3]))
        d = Dispatcher(state=ProxyState(view=view, me=me), physical=physical, producer_ids=None, pool=None)
        frame = codec.encode_request(MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                     include_topic_authorized_operations=False), 1)[4:]

        async def replicas_and_isr() -> tuple[int, int]:
            answer = codec.decode_response(codec.response_type(3, 12), (await (await d.start(frame, 0)))[4:])[1]
            p = answer.topics[0].partitions[0]
            return len(p.replica_nodes), len(p.isr_nodes)

        assert await replicas_and_isr() == (3, 3)
        physical.mark_unreachable("c1", "b:1: connection refused")  # the refresh failed: no broker answers
        replicas, in_sync = await replicas_and_isr()
        assert in_sync < replicas or replicas == 1, (replicas, in_sync)  # fails today: (3, 3), the stale picture

    asyncio.run(scenario())
