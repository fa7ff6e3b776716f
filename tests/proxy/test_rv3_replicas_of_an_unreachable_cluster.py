"""Review rv3 (merge 6721bab): Metadata's replicas and ISR of a logical partition stand for its active physical
partition's, learned by `PhysicalClusters.learn` on a successful refresh. A refresh that fails marks the cluster
unreachable (`mark_unreachable`) but keeps `ClusterInfo.replication` and does not move `replication_version`: a
physical cluster that went away (all its brokers down, or cut off from this proxy) keeps reading "3 replicas, 3 in
sync" through the proxy for as long as it is gone, from the answer cache too, so `kafka-topics --describe
--under-replicated-partitions` shows nothing. docs/DESIGN.md says a physical partition not read lists the leader
alone; what an unreachable cluster had is no longer read."""

from __future__ import annotations

import asyncio

from proxy.test_metadata_replicas_unit import _cluster_metadata, _metadata_answer, _one_topic_proxy


def test_an_unreachable_cluster_s_partitions_no_longer_read_fully_in_sync():
    async def scenario():
        d, physical, frame = _one_topic_proxy(_cluster_metadata([1, 2, 3]))

        async def replicas_and_isr() -> tuple[int, int]:
            answer = await _metadata_answer(d, frame)
            p = answer.topics[0].partitions[0]
            return len(p.replica_nodes), len(p.isr_nodes)

        assert await replicas_and_isr() == (3, 3)
        physical.mark_unreachable("c1", "b:1: connection refused")  # the refresh failed: no broker answers
        replicas, in_sync = await replicas_and_isr()
        assert in_sync < replicas or replicas == 1, (replicas, in_sync)  # fails today: (3, 3), the stale picture

    asyncio.run(scenario())
