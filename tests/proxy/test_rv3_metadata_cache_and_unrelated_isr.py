"""Review rv3 (merge 6721bab): Metadata's answer cache keys on `PhysicalClusters.replication_version`, which
`learn` bumps when ANY partition of the cluster's own Metadata changed its replica or ISR count: every physical
topic of the cluster (other tenants', `__consumer_offsets`), not only those an active segment uses. During a
broker failure ISRs shrink and grow on many partitions across refreshes (one is asked on every broker error, as
often as every ~50 ms plus a round trip, `PhysicalClusters.run`), so every cached answer (an all-topics one of up
to ~600,000 partitions: seconds of the event loop) is recomputed over and over exactly while clients flood
Metadata, for changes that change no answer. Before the merge only a new view dropped them."""

from __future__ import annotations

import asyncio
import uuid

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.proxy.handlers import metadata
from proxy.test_metadata_replicas_unit import _one_topic_proxy, _versions


def _cluster_metadata(other_isr: list[int]):
    """c1's Metadata: `phys` (the federation's physical topic, fully in sync) and `other` (no view names it)."""
    def topic(name: str, n: int, isr: list[int]) -> dict:
        return {"error_code": 0, "name": name, "topic_id": uuid.UUID(int=n), "is_internal": False,
                "partitions": [{"error_code": 0, "partition_index": 0, "leader_id": 1, "leader_epoch": 0,
                                "replica_nodes": [1, 2, 3], "isr_nodes": isr, "offline_replicas": []}]}
    return build(codec.response_type(3, 12), {
        "brokers": [{"node_id": n, "host": "b", "port": n} for n in (1, 2, 3)], "cluster_id": "x", "controller_id": 1,
        "topics": [topic("phys", 9, [1, 2, 3]), topic("other", 10, other_isr)]})


def test_a_cached_answer_outlives_an_isr_change_of_a_physical_topic_no_segment_uses(monkeypatch):
    handled = []
    real = metadata.handle
    monkeypatch.setattr(metadata, "handle", lambda *a: handled.append(1) or real(*a))

    async def scenario():
        d, physical, frame = _one_topic_proxy(_cluster_metadata([1, 2, 3]), other_proxies=0)
        first = await (await d.start(frame, 0))
        physical.learn("c1", _versions(), _cluster_metadata([1]))  # another tenant's topic lost two followers
        again = await (await d.start(frame, 0))
        assert again == first  # the same answer, byte for byte
        assert len(handled) == 1, f"the handler ran {len(handled)} times: the cached answer was dropped"

    asyncio.run(scenario())
