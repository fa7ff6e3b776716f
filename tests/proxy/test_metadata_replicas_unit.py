"""Metadata's replicas and ISR of a logical partition stand for its physical partition's: as many replicas as the
physical replication factor of the active segment's partition (the leader proxy first, then other listed proxies),
as many of them in sync as the physical ISR holds. It used to list the leader alone, so `kafka-topics --describe`
and AdminClient.describeTopics read replication factor 1 for every topic, and `--under-replicated-partitions`
never showed one."""

from __future__ import annotations

import asyncio
import uuid

from kio.schema.api_versions.v3.response import ApiVersionsResponse
from kio.schema.metadata.v12.request import MetadataRequest

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.physical import ClusterInfo, PhysicalClusters
from fedkafka.proxy.handlers import metadata
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View
from proxy.test_admin_handlers import req
from proxy.test_handlers import FakePhysical, ctx

PROXIES = tuple(ProxyInfo(n, f"p{n}", 9092, ProxyRole.BOTH) for n in (1, 2, 3, 4, 5))
# (physical topic, partition) -> (replicas, in sync) on cluster c1; ("old", 0) is a sealed segment's partition
REPLICATION = {("phys", 0): (3, 3), ("phys", 1): (3, 2), ("old", 0): (1, 1)}


class Replicated(FakePhysical):
    def __init__(self, replication=REPLICATION, version: int = 0):
        super().__init__()
        self.replications = dict(replication)
        self.replication_version = version

    def replication(self, cluster, topic, partition):
        return self.replications.get((topic, partition)) if cluster == "c1" else None


def _view(proxies=PROXIES) -> View:
    chains = (PartitionChain((Segment("c1", "phys", 0, 0, None, 0),)),
              PartitionChain((Segment("c1", "phys", 1, 0, None, 0),)),
              PartitionChain((Segment("c1", "old", 0, 0, 50, 0), Segment("c2", "phys", 0, 10, None, 50))),
              PartitionChain((Segment("c2", "phys", 1, 0, 40, 0), Segment("c1", "phys", 2, 0, None, 40))))
    return View(version=4, clusters={"c1": Cluster("c1", "h1:1"), "c2": Cluster("c2", "h2:2")},
                topics={"t": LogicalTopic("t", "0" * 31 + "1", chains)}, proxies=proxies)


def _partitions(c) -> list[tuple[int, list[int], list[int], list[int]]]:
    resp = metadata.handle(c, None, req(3, 12, {"topics": [{"topic_id": None, "name": "t"}],
                                                "allow_auto_topic_creation": False,
                                                "include_topic_authorized_operations": False}))
    return [(p.leader_id, list(p.replica_nodes), list(p.isr_nodes), list(p.offline_replicas))
            for p in resp.topics[0].partitions]


def test_replicas_count_the_physical_replication_factor_and_the_isr_the_physical_isr():
    """Partition 0: RF 3, all in sync; partition 1: RF 3, one out of sync (under-replicated, as the physical
    partition is); partition 2's active segment is on c2, whose partitions are not known yet: the leader alone, as
    before; partition 3's active segment is c1/phys/2 (the sealed c2 one is not asked). Old code: one replica each."""
    answer = _partitions(ctx(_view(), me=PROXIES[0], physical=Replicated({**REPLICATION, ("phys", 2): (2, 2)})))
    (l0, r0, i0, o0), (l1, r1, i1, _), (l2, r2, i2, _), (l3, r3, i3, _) = answer
    assert len(r0) == 3 and len(set(r0)) == 3 and r0[0] == l0 and set(r0) <= {p.node_id for p in PROXIES}
    assert i0 == r0 and o0 == []
    assert len(r1) == 3 and r1[0] == l1 and i1 == r1[:2]
    assert r2 == i2 == [l2]
    assert len(r3) == 2 and r3[0] == l3 and i3 == r3


def test_replicas_are_the_same_from_every_proxy_and_whatever_the_views_order():
    """Rendezvous order over the listed proxies: a client asking again, or asking another proxy of the pool, reads
    the same replicas in the same order (no churn), and the leader's successor when it leaves is its second replica."""
    first = _partitions(ctx(_view(), me=PROXIES[0], physical=Replicated()))
    again = _partitions(ctx(_view(tuple(reversed(PROXIES))), me=PROXIES[3], physical=Replicated()))
    assert first == again
    leader, replicas = first[0][0], first[0][1]
    without_leader = tuple(p for p in PROXIES if p.node_id != leader)
    me = without_leader[0]
    after = _partitions(ctx(_view(without_leader), me=me, physical=Replicated()))
    assert after[0][0] == replicas[1] and after[0][1][:2] == replicas[1:]


def test_fewer_proxies_than_replicas_keep_an_under_replicated_partition_visible():
    """Two proxies for RF 3: two replicas; one replica of three out of sync still shows one out of sync."""
    two = PROXIES[:2]
    (_, r0, i0, _), (_, r1, i1, _), *_ = _partitions(ctx(_view(two), me=two[0], physical=Replicated()))
    assert len(r0) == 2 and i0 == r0
    assert len(r1) == 2 and i1 == r1[:1]


def test_an_isr_of_nothing_still_names_the_leader():
    """Kafka's ISR always holds the leader; the logical leader is a proxy, which serves what it can."""
    (_, r0, i0, _), *_ = _partitions(ctx(_view(), me=PROXIES[0], physical=Replicated({("phys", 0): (3, 0)})))
    assert len(r0) == 3 and i0 == r0[:1]


def test_the_answer_cache_key_changes_with_the_replication_picture():
    request = req(3, 12, {"topics": None, "allow_auto_topic_creation": False,
                          "include_topic_authorized_operations": False})
    before = metadata.cache_key(ctx(_view(), physical=Replicated(version=1)), request)
    assert before == metadata.cache_key(ctx(_view(), physical=Replicated(version=1)), request)
    assert before != metadata.cache_key(ctx(_view(), physical=Replicated(version=2)), request)


def _cluster_metadata(isr: list[int]):
    return build(codec.response_type(3, 12), {
        "brokers": [{"node_id": n, "host": "b", "port": n} for n in (1, 2, 3)], "cluster_id": "x", "controller_id": 1,
        "topics": [{"error_code": 0, "name": "phys", "topic_id": uuid.UUID(int=9), "is_internal": False,
                    "partitions": [{"error_code": 0, "partition_index": 0, "leader_id": 1, "leader_epoch": 0,
                                    "replica_nodes": [1, 2, 3], "isr_nodes": isr, "offline_replicas": []}]}]})


def _versions() -> ApiVersionsResponse:
    return build(codec.response_type(18, 3), {"error_code": 0, "api_keys": [
        {"api_key": 3, "min_version": 0, "max_version": 12}]})


def _one_topic_proxy(cluster_metadata, other_proxies: int = 2) -> tuple[Dispatcher, PhysicalClusters, bytes]:
    """A proxy (proxy 1, with `other_proxies` more in the view) serving logical topic `t` on c1's `phys` 0, c1's
    Metadata learned from `cluster_metadata`: its dispatcher, its physical clusters and an all-topics Metadata v12
    request frame."""
    me = ProxyInfo(1, "127.0.0.1", 9092, ProxyRole.BOTH)
    others = tuple(ProxyInfo(n, "127.0.0.1", 9092 + n, ProxyRole.BOTH) for n in range(2, 2 + other_proxies))
    view = View(version=1, clusters={"c1": Cluster("c1", "b:1")}, proxies=(me, *others), topics={
        "t": LogicalTopic("t", uuid.uuid4().hex, (PartitionChain((Segment("c1", "phys", 0, 0, None, 0),)),))})
    physical = PhysicalClusters()
    physical.clusters["c1"] = ClusterInfo("c1", "b:1")
    physical.learn("c1", _versions(), cluster_metadata)
    d = Dispatcher(state=ProxyState(view=view, me=me), physical=physical, producer_ids=None, pool=None)
    frame = codec.encode_request(MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                 include_topic_authorized_operations=False), 1)[4:]
    return d, physical, frame


async def _metadata_answer(d: Dispatcher, frame: bytes):
    return codec.decode_response(codec.response_type(3, 12), (await (await d.start(frame, 0)))[4:])[1]


def test_a_metadata_refresh_learns_replicas_and_isr_and_counts_only_changes():
    physical = PhysicalClusters()
    physical.clusters["c1"] = ClusterInfo("c1", "b:1")
    physical.learn("c1", _versions(), _cluster_metadata([1, 2, 3]))
    assert physical.replication("c1", "phys", 0) == (3, 3) and physical.replication("c1", "phys", 1) is None
    version = physical.replication_version
    physical.learn("c1", _versions(), _cluster_metadata([1, 2, 3]))
    assert physical.replication_version == version  # nothing changed: cached answers stay
    physical.learn("c1", _versions(), _cluster_metadata([1, 3]))
    assert physical.replication("c1", "phys", 0) == (3, 2) and physical.replication_version != version


def test_a_cached_metadata_answer_is_replaced_when_the_physical_isr_shrinks():
    """The answer cache reused the answer while the view stayed: it must not keep an ISR the cluster has left."""
    async def scenario():
        d, physical, frame = _one_topic_proxy(_cluster_metadata([1, 2, 3]))

        async def isr() -> int:
            answer = await _metadata_answer(d, frame)
            return len(answer.topics[0].partitions[0].isr_nodes)

        assert await isr() == 3 and await isr() == 3
        physical.learn("c1", _versions(), _cluster_metadata([1]))
        assert await isr() == 1

    asyncio.run(scenario())
