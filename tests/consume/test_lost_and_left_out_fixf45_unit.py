"""What a read counts as gone (docs/DESIGN.md §9.2, §9.3), fixes of review s34-rvfetch findings 4 and 5.

A cluster the proxy has just started tracking (it started, or `PUT /v1/clusters` changed the cluster's bootstrap) names
no physical topic until its first metadata refresh answers: nothing counts as missing there until then (Fetch below a
seal, inside a gap, ListOffsets earliest), while a topic a refresh found missing is still given up as before. And a
timestamp question leaves a failed-over cluster's segments out only once the operator gave it up for them, never while
the partition's active segment is back on it."""

from __future__ import annotations

import uuid

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import (
    GAP,
    Missing,
    Physical,
    fetch_request,
    list_answers,
    list_request,
    partitions,
    skipped_to,
)
from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.handlers import fetch, list_offsets
from fedkafka.proxy.plan import Context, Plan
from fedkafka.view.model import Cluster, ClusterState, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

ME = ProxyInfo(1, "p1", 9092, ProxyRole.BOTH)


def _view(chain: PartitionChain, states: dict[str, ClusterState]) -> View:
    return View(version=7, clusters={c: Cluster(c, f"{c}:9092", state) for c, state in states.items()},
                topics={"log": LogicalTopic("log", uuid.uuid4().hex, (chain,))}, coordination_cluster="c2",
                proxies=(ME,))


def _context(view: View, physical) -> Context:
    return Context(view=view, me=ME, advertised={}, physical=physical, producer_ids=None)


def _metadata(*topics: str):
    """A cluster's Metadata v12 answer: broker 1 leads partition 0 of each of `topics`."""
    return build(codec.response_type(3, 12), {
        "brokers": [{"node_id": 1, "host": "b", "port": 1}], "cluster_id": "x", "controller_id": 1,
        "topics": [{"error_code": 0, "name": name, "topic_id": uuid.UUID(int=i + 1), "is_internal": False,
                    "partitions": [{"error_code": 0, "partition_index": 0, "leader_id": 1, "leader_epoch": 0,
                                    "replica_nodes": [1], "isr_nodes": [1], "offline_replicas": []}]}
                   for i, name in enumerate(topics)]})


def _versions():
    return build(codec.response_type(18, 3), {"error_code": 0, "api_keys": [
        {"api_key": 1, "min_version": 4, "max_version": 12}, {"api_key": 2, "min_version": 1, "max_version": 8}]})


def _tracked(view: View, refreshed: dict[str, tuple[str, ...]]) -> PhysicalClusters:
    """The proxy's physical clusters for `view`: each of `refreshed` answered a refresh naming those topics, the
    others are just tracked (their first refresh not answered yet)."""
    physical = PhysicalClusters()
    physical.set_clusters({c.id: c.bootstrap for c in view.clusters.values()})
    for cluster, topics in refreshed.items():
        physical.learn(cluster, _versions(), _metadata(*topics))
    return physical


def _fetch_answer(context: Context, offset: int):
    answer = fetch.handle(context, None, fetch_request(("log", 0, offset)))
    return partitions(answer.finish([]) if isinstance(answer, Plan) else answer)[("log", 0)]


# c1 failed over (READ_ONLY, its segment sealed at 30, the tail in the gap), c2 active from 30 + GAP
FAILED = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, None, 30 + GAP)),
                        leader_epoch=1)
FAILED_OVER = _view(FAILED, {"c1": ClusterState.READ_ONLY, "c2": ClusterState.ACTIVE})
# c1 being decommissioned (DRAINING), its segment moved cleanly to c2 at 30
DRAINED = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, None, 30)),
                         leader_epoch=1)
DRAINING = _view(DRAINED, {"c1": ClusterState.DRAINING, "c2": ClusterState.ACTIVE})


def test_a_reader_inside_the_gap_waits_for_a_cluster_whose_metadata_was_not_read_yet():
    """c1 failed over and came back; the proxy tracks it anew (its bootstrap changed) and has not read its metadata
    yet: no leader, no topic known. A reader of the gap at 35 used to be moved over the gap (30 + GAP), past a tail
    c1 may hold, as if c1 had answered without the topic. It is waited for, and a refresh of c1 asked."""
    physical = _tracked(FAILED_OVER, {"c2": ("t",)})
    p = _fetch_answer(_context(FAILED_OVER, physical), 35)
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records
    assert "c1" in physical._wanted  # its refresh asked: the wait ends with it


def test_earliest_does_not_skip_a_sealed_segment_before_its_cluster_s_first_refresh():
    """DRAINING c1 holds logical 0..29; the proxy tracks it anew. EARLIEST used to skip it as lost for good (30): a
    reset to earliest passed records 0..29, on c1 all along. Not answered, it counts as readable: 0."""
    physical = _tracked(DRAINING, {"c2": ("t",)})
    plan = list_offsets.handle(_context(DRAINING, physical), None, list_request((0, -2)))
    (p,) = plan.finish(list_answers(plan.calls, {("c2", 0, -2): (4, -1)})).topics[0].partitions
    assert (p.error_code, p.offset) == (ErrorCode.none, 0)


def test_a_topic_a_refresh_found_missing_is_still_lost_for_good():
    """Once c1's metadata was read without the physical topic (a lost disk, §9.3), what was skipped is skipped
    still: a reader below the seal is moved to the next segment, earliest skips the segment, a reader of a gap
    passes the gap. A bootstrap change forgets what was read: waited for again until the next refresh answers."""
    physical = _tracked(DRAINING, {"c1": ("other",), "c2": ("t",)})
    context = _context(DRAINING, physical)
    assert skipped_to(_fetch_answer(context, 10)) == 30
    plan = list_offsets.handle(context, None, list_request((0, -2)))
    (p,) = plan.finish(list_answers(plan.calls, {("c2", 0, -2): (4, -1)})).topics[0].partitions
    assert (p.error_code, p.offset) == (ErrorCode.none, 30)
    gap = _context(FAILED_OVER, _tracked(FAILED_OVER, {"c1": ("other",), "c2": ("t",)}))
    assert skipped_to(_fetch_answer(gap, 35)) == 30 + GAP
    physical.set_clusters({"c1": "c1-new:9092", "c2": "c2:9092"})
    p = _fetch_answer(context, 10)
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records


# c1 -> c2 (failover: S1 sealed at 30, the gap) -> c1 again (c1 made active, a clean move away at 50) -> c3 active
AGAIN = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, 10, 30 + GAP),
                                 Segment("c1", "t", 0, 40, 50, 36 + GAP), Segment("c3", "t", 0, 0, None, 46 + GAP)),
                       leader_epoch=3)


def test_by_timestamp_waits_for_a_segment_of_a_failed_over_cluster_moved_back_to_and_away_cleanly():
    """c1, active again, holds S2 (logical 36+GAP..45+GAP), moved away from with no gap, and blips. Only c3 is
    known to hold a record at or after T; S2 may hold an earlier one: waited for (NOT_LEADER_OR_FOLLOWER). It used to be
    left out with S1, answering c3's record. Once the operator gave c1 up (read_only in a view without the failover's
    given-up mark; with it, `test_s36_given_up_mark_unit.py`), it is left out as before."""
    values = {("c2", 0, 1500): (-1, -1), ("c3", 0, 1500): (5, 1600)}
    for state, want in ((ClusterState.ACTIVE, (ErrorCode.not_leader_or_follower, -1)),
                        (ClusterState.READ_ONLY, (ErrorCode.none, 51 + GAP))):
        view = _view(AGAIN, {"c1": state, "c2": ClusterState.ACTIVE, "c3": ClusterState.ACTIVE})
        plan = list_offsets.handle(_context(view, Physical(down={"c1"})), None, list_request((0, 1500)))
        (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
        assert (p.error_code, p.offset) == want, state


def test_by_timestamp_waits_for_a_failed_over_segment_while_the_active_segment_is_back_on_its_cluster():
    """The partition moved back onto c1 (its active segment there); c1 blips. c2 holds a record at or after T, but
    S (logical 0..29 and its tail) may hold an earlier one: waited for, as the active segment is. It used to be
    answered from c2 (offset 30 + GAP + 8)."""
    back = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, 10, 30 + GAP),
                                    Segment("c1", "t", 0, 40, None, 36 + GAP)), leader_epoch=2)
    view = _view(back, {"c1": ClusterState.ACTIVE, "c2": ClusterState.ACTIVE})
    plan = list_offsets.handle(_context(view, Physical(down={"c1"})), None, list_request((0, 1500)))
    (p,) = plan.finish(list_answers(plan.calls, {("c2", 0, 1500): (12, 1600)})).topics[0].partitions
    assert (p.error_code, p.offset) == (ErrorCode.not_leader_or_follower, -1)


def test_by_timestamp_leaves_out_a_segment_lost_for_good_as_fetch_and_earliest_skip_it():
    """DRAINING c1 answers without S's physical topic (a refresh read its metadata): S is lost for good, Fetch moves
    its readers past it and earliest skips it. A timestamp question used to wait for it for good (c1 was never
    failed over from): NOT_LEADER_OR_FOLLOWER on every retry. It is answered from c2."""
    values = {("c2", 0, 1500): (6, 1600), ("c2", 0, -3): (9, 1700)}
    for ts, want in ((1500, (ErrorCode.none, 32)), (-3, (ErrorCode.none, 35))):
        plan = list_offsets.handle(_context(DRAINING, Missing()), None, list_request((0, ts)))
        (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
        assert (p.error_code, p.offset) == want, ts
