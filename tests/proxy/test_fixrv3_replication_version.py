"""`PhysicalClusters.replication_version` (Metadata's answer cache key) moves when counts an answer read changed, when
an unreachable cluster's counts are dropped, and when the view adds or removes a cluster; not for a repeated failed
refresh of a cluster already dropped, nor for a partition no answer read (docs/DESIGN.md, "Replicas and ISR")."""

from __future__ import annotations

from fedkafka.proxy.core.physical import ClusterInfo, PhysicalClusters
from proxy.test_metadata_replicas_unit import _cluster_metadata, _versions


def _physical() -> PhysicalClusters:
    physical = PhysicalClusters()
    physical.clusters["c1"] = ClusterInfo("c1", "b:1")
    physical.learn("c1", _versions(), _cluster_metadata([1, 2, 3]))
    return physical


def test_a_change_no_answer_read_keeps_the_version_and_a_read_one_moves_it():
    physical = _physical()
    version = physical.replication_version
    physical.learn("c1", _versions(), _cluster_metadata([1, 2]))  # nothing read yet: no cached answer to drop
    assert physical.replication_version == version
    assert physical.replication("c1", "phys", 0) == (3, 2)  # an answer reads it
    physical.learn("c1", _versions(), _cluster_metadata([1]))
    assert physical.replication_version == version + 1 and physical.replication("c1", "phys", 0) == (3, 1)


def test_an_unreachable_cluster_drops_its_counts_once_and_learns_them_again():
    physical = _physical()
    assert physical.replication("c1", "phys", 0) == (3, 3)
    version = physical.replication_version
    physical.mark_unreachable("c1", "refused")
    assert physical.replication("c1", "phys", 0) is None and physical.replication_version == version + 1
    physical.mark_unreachable("c1", "refused again")  # the next failed refresh: nothing more to drop
    assert physical.replication_version == version + 1
    physical.learn("c1", _versions(), _cluster_metadata([1, 2, 3]))  # back
    assert physical.replication("c1", "phys", 0) == (3, 3) and physical.replication_version == version + 2


def test_a_cluster_added_or_removed_moves_the_version():
    physical = _physical()
    version = physical.replication_version
    physical.set_clusters({"c1": "b:1"})
    assert physical.replication_version == version  # the same clusters
    physical.set_clusters({"c1": "b:1", "c2": "b:2"})
    assert physical.replication_version == version + 1
    physical.set_clusters({"c2": "b:2"})
    assert physical.replication_version == version + 2
