"""Consume handlers as pure functions: `handle` builds upstream calls, `finish` turns hand-made physical
answers into logical ones. No sockets, no brokers."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import struct
import uuid

import crc32c
import pytest
from kio.schema.errors import ErrorCode

from consume.support import CountingAuthorizer
from consume.test_consumer_protocol_unit import encoded
from fedkafka.protocol import consumer_protocol as cp
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import TooManyElements, request_type, response_type
from fedkafka.protocol.consumer_protocol import _schema
from fedkafka.proxy.handlers import (
    delete_records,
    describe_producers,
    fetch,
    find_coordinator,
    groups,
    list_offsets,
    offset_for_leader_epoch,
)
from fedkafka.proxy.plan import UNANSWERED, Broker, Context, Plan, UpstreamError
from fedkafka.view.model import (
    Cluster,
    ClusterState,
    LogicalTopic,
    PartitionChain,
    ProxyInfo,
    ProxyRole,
    Segment,
    View,
)

CHAIN = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 5, 45, 30),
                                 Segment("c3", "t", 1, 3, None, 70)), leader_epoch=2)
IDENTITY = PartitionChain(segments=(Segment("c1", "t", 1, 0, None, 0),))
VIEW = View(version=3, clusters={c: Cluster(c, f"{c}:9092") for c in ("c1", "c2", "c3")},
            topics={"log": LogicalTopic("log", uuid.uuid4().hex, (CHAIN, IDENTITY))}, coordination_cluster="c1",
            proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.CPROXY), ProxyInfo(2, "p2", 9092, ProxyRole.CPROXY),
                     ProxyInfo(3, "p3", 9092, ProxyRole.PPROXY)))


class Physical:
    replication_version = 0

    def __init__(self, down=()):
        self.down = set(down)
        self.refreshed: list[str] = []

    def replication(self, cluster, topic, partition):
        return None  # no physical partition's replicas known: Metadata lists each leader alone

    def leader(self, cluster, topic, partition):
        return 7

    def reachable(self, cluster):
        return cluster not in self.down

    def topic_id(self, cluster, topic):
        return uuid.UUID(int=1)  # every physical topic there

    def topics_known(self, cluster):
        return True  # every cluster's metadata read: a topic_id of None is a topic missing there

    def request_refresh(self, cluster):
        self.refreshed.append(cluster)


def ctx(physical=None, me=VIEW.proxies[0]) -> Context:
    return Context(view=VIEW, me=me, advertised={}, physical=physical or Physical(), producer_ids=None)


def batch(base_offset: int, count: int) -> bytes:
    body = struct.pack(">hiqqqhii", 0, count - 1, 0, 0, -1, -1, -1, count) + b"r" * 8
    return struct.pack(">qiibI", base_offset, 9 + len(body), 0, 2, crc32c.crc32c(body)) + body


def fetch_request(*parts: tuple[str, int, int], max_bytes: int = 1 << 20):
    return build(request_type(1, 12), {
        "replica_id": -1, "max_wait": datetime.timedelta(milliseconds=500), "min_bytes": 1, "max_bytes": max_bytes,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": t, "partitions": [{"partition": p, "current_leader_epoch": -1, "fetch_offset": o,
                                                 "last_fetched_epoch": -1, "log_start_offset": -1,
                                                 "partition_max_bytes": 1 << 20}]} for t, p, o in parts]})


def fetch_answer(topic: str, partition: int, records: bytes, hw: int, log_start: int = 0):
    return build(response_type(1, 12), {"responses": [{"topic": topic, "partitions": [
        {"partition_index": partition, "error_code": ErrorCode.none, "high_watermark": hw,
         "last_stable_offset": hw, "log_start_offset": log_start, "aborted_transactions": None,
         "preferred_read_replica": -1, "records": records}]}]})


def partitions(response) -> dict:
    return {(t.topic, p.partition_index): p for t in response.responses for p in t.partitions}


def test_fetch_in_a_moved_segment_reads_physical_and_answers_logical():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 40)))
    (call,) = plan.calls
    assert call.target == Broker("c2", 7) and call.dedicated
    up = call.request.topics[0].partitions[0]
    assert (call.request.topics[0].topic, up.partition, up.fetch_offset, up.current_leader_epoch) == ("t", 0, 15, -1)
    out = partitions(plan.finish([fetch_answer("t", 0, batch(15, 10) + batch(25, 20) + batch(45, 3), hw=48)]))
    p = out[("log", 0)]
    assert p.error_code == ErrorCode.none and p.high_watermark == 70 and p.log_start_offset == 0
    from fedkafka.protocol.records import iter_batches
    assert [h.base_offset for h in iter_batches(p.records)] == [40, 50]  # the batch past the seal is gone


def test_fetch_at_a_seal_moves_to_the_next_segment():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 30)))
    assert plan.calls[0].target == Broker("c2", 7) and plan.calls[0].request.topics[0].partitions[0].fetch_offset == 5


def test_fetch_over_two_clusters_finishes_early_and_leaves_the_slow_one_unanswered():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 75), ("log", 1, 0)))
    assert len(plan.calls) == 2 and plan.return_early is not None
    data = fetch_answer("t", 1, batch(0, 3), hw=3)
    assert plan.return_early(data)
    assert not plan.return_early(fetch_answer("t", 1, b"", hw=3))
    results = [UNANSWERED if c.target.cluster == "c3" else data for c in plan.calls]
    out = partitions(plan.finish(results))
    assert out[("log", 1)].records and out[("log", 0)].error_code == ErrorCode.none
    assert out[("log", 0)].records == b"" and out[("log", 0)].high_watermark == -1


def test_fetch_respects_max_bytes_across_clusters_but_always_returns_one_batch():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 75), ("log", 1, 0), max_bytes=10))
    answers = {"c3": fetch_answer("t", 1, batch(8, 2), hw=28), "c1": fetch_answer("t", 1, batch(0, 3), hw=3)}
    out = partitions(plan.finish([answers[c.target.cluster] for c in plan.calls]))
    assert sum(1 for p in out.values() if p.records) == 1


def test_fetch_unreachable_cluster_is_retriable_for_its_partitions_only():
    phys = Physical(down={"c3"})
    plan = fetch.handle(ctx(phys), None, fetch_request(("log", 0, 75), ("log", 1, 0)))
    assert [c.target.cluster for c in plan.calls] == ["c1"]
    out = partitions(plan.finish([UpstreamError("c1", "lost")]))
    assert out[("log", 0)].error_code == ErrorCode.not_leader_or_follower
    assert out[("log", 1)].error_code == ErrorCode.not_leader_or_follower
    assert "c3" in phys.refreshed and "c1" in phys.refreshed


def list_request(*parts: tuple[int, int]):
    return build(request_type(2, 7), {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": "log", "partitions": [{"partition_index": p, "current_leader_epoch": -1, "timestamp": ts}
                                       for p, ts in parts]}]})


def list_answers(calls, values: dict) -> list:
    """values[(cluster, partition, timestamp)] = (offset, timestamp); a log end (-1) not given is answered with an
    error (EARLIEST asks the sealed segments' ends too: not known, they change nothing)."""
    out = []
    for call in calls:
        out.append(build(response_type(2, 7), {"topics": [{"name": t.name, "partitions": [
            _list_answer(values.get((call.target.cluster, p.partition_index, p.timestamp)), p)
            for p in t.partitions]} for t in call.request.topics]}))
    return out


def _list_answer(value: tuple[int, int] | None, p) -> dict:
    if value is None and p.timestamp == -1:
        return {"partition_index": p.partition_index, "error_code": ErrorCode.unknown_server_error, "offset": -1,
                "timestamp": -1}
    assert value is not None, f"no answer given for partition {p.partition_index} at {p.timestamp}"
    return {"partition_index": p.partition_index, "error_code": ErrorCode.none, "offset": value[0],
            "timestamp": value[1]}


def test_list_offsets_earliest_skips_an_expired_segment_and_latest_reads_the_active_one():
    plan = list_offsets.handle(ctx(), None, list_request((0, -2)))
    values = {("c1", 0, -2): (30, -1), ("c2", 0, -2): (0, -1), ("c3", 1, -2): (0, -1)}
    (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
    assert p.offset == 30 and p.leader_epoch == 2
    plan = list_offsets.handle(ctx(), None, list_request((0, -1), (1, -1)))
    values = {("c3", 1, -1): (28, -1), ("c1", 1, -1): (12, -1)}
    got = {p.partition_index: p.offset for p in plan.finish(list_answers(plan.calls, values)).topics[0].partitions}
    assert got == {0: 95, 1: 12}


def test_list_offsets_by_timestamp_clamps_to_the_segment_start():
    plan = list_offsets.handle(ctx(), None, list_request((0, 1500)))
    values = {("c1", 0, 1500): (31, 9000), ("c2", 0, 1500): (0, 1500), ("c3", 1, 1500): (0, 1500)}
    (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
    assert (p.offset, p.timestamp) == (30, 1500)


def test_list_offsets_by_timestamp_waits_for_an_older_segment_whose_cluster_does_not_answer():
    """c1 (segment 0, logical 0..29) in a leader election: its records may be the first as late as asked, so a
    later segment's offset would make an offsetsForTimes reader skip them. It used to be answered (35)."""
    values = {("c2", 0, 1500): (10, 1600), ("c3", 1, 1500): (3, 1700), ("c2", 0, -3): (40, 1650),
              ("c3", 1, -3): (20, 1800)}
    for ts in (1500, -3):  # MAX_TIMESTAMP: the latest record may be c1's too
        phys = Physical(down={"c1"})
        plan = list_offsets.handle(ctx(phys), None, list_request((0, ts)))
        (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
        assert (p.error_code, p.offset) == (ErrorCode.not_leader_or_follower, -1) and "c1" in phys.refreshed
    # a segment that answers an error after the first match does not matter
    plan = list_offsets.handle(ctx(Physical(down={"c3"})), None, list_request((0, 1500)))
    (p,) = plan.finish(list_answers(plan.calls, {("c1", 0, 1500): (12, 1501), ("c2", 0, 1500): (10, 1600)})
                       ).topics[0].partitions
    assert (p.error_code, p.offset, p.timestamp) == (ErrorCode.none, 12, 1501)
    # an error of the broker itself is answered as it is
    plan = list_offsets.handle(ctx(), None, list_request((0, 1500)))
    (call_c1,) = [c for c in plan.calls if c.target.cluster == "c1"]
    answers = list_answers([c for c in plan.calls if c is not call_c1], values)
    answers.insert(plan.calls.index(call_c1), build(response_type(2, 7), {"topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "error_code": ErrorCode.offset_not_available, "offset": -1, "timestamp": -1}]}]}))
    (p,) = plan.finish(answers).topics[0].partitions
    assert p.error_code == ErrorCode.offset_not_available


def test_offset_for_leader_epoch_answers_the_logical_log_end():
    req = build(request_type(23, 4), {"replica_id": -1, "topics": [{"topic": "log", "partitions": [
        {"partition": 0, "current_leader_epoch": 2, "leader_epoch": 1},
        {"partition": 1, "current_leader_epoch": 1, "leader_epoch": 0}]}]})
    plan = offset_for_leader_epoch.handle(ctx(), None, req)
    (call,) = plan.calls
    assert call.target.cluster == "c3"
    out = {p.partition: p for p in plan.finish(list_answers([call], {("c3", 1, -1): (28, -1)})).topics[0].partitions}
    assert (out[0].leader_epoch, out[0].end_offset) == (1, 95)
    assert out[1].error_code == ErrorCode.unknown_leader_epoch


def test_find_coordinator_answers_a_consume_proxy_stable_per_group():
    req = build(request_type(10, 4), {"key_type": 0, "coordinator_keys": [f"g{i}" for i in range(20)]})
    answers = find_coordinator.handle(ctx(), None, req).coordinators
    assert {a.node_id for a in answers} == {1, 2}  # never the produce-only proxy 3
    again = find_coordinator.handle(ctx(me=VIEW.proxies[1]), None, req).coordinators
    assert [a.node_id for a in answers] == [a.node_id for a in again]
    txn = find_coordinator.handle(ctx(), None, build(request_type(10, 4), {"key_type": 1, "coordinator_keys": ["tx"]}))
    assert txn.coordinators[0].error_code == ErrorCode.invalid_request  # Java prints our message (not an ACL one)
    assert "transactions are not available" in txn.coordinators[0].error_message


def test_a_produce_only_proxy_refuses_a_group_lookup_for_good_and_says_why():
    """A pproxy serves FindCoordinator (for transactional producers) but coordinates no group: a consumer pointed at a
    produce pool gets a non-retriable refusal naming the role (Java's consumer fails, as when the key was not
    advertised; librdkafka's reports the message), never a coordinator or a retriable code to wait on."""
    for version, keys in ((4, {"key_type": 0, "coordinator_keys": ["g"]}), (2, {"key_type": 0, "key": "g"})):
        answer = find_coordinator.handle(ctx(me=VIEW.proxies[2]), None, build(request_type(10, version), keys))
        answer = answer.coordinators[0] if version >= 4 else answer
        assert (answer.error_code, answer.node_id) == (ErrorCode.invalid_request, -1)
        assert "serves producers only" in answer.error_message


def test_offset_commit_goes_to_the_shadow_topic_and_refuses_partitions_beyond_p():
    req = build(request_type(8, 8), {"group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m",
                                     "group_instance_id": None, "topics": [{"name": "log", "partitions": [
                                         {"partition_index": 1, "committed_offset": 5, "committed_leader_epoch": -1,
                                          "committed_metadata": None},
                                         {"partition_index": 8, "committed_offset": 5, "committed_leader_epoch": -1,
                                          "committed_metadata": None}]}]})
    lookup = groups.handle(ctx(), None, req)
    assert lookup.barrier
    found = build(response_type(10, 4), {"coordinators": [{"key": "g", "node_id": 4, "host": "h", "port": 1,
                                                            "error_code": ErrorCode.none}]})
    forward = lookup.finish([found])
    assert isinstance(forward, Plan)
    (call,) = forward.calls
    assert call.target == Broker("c1", 4)
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in call.request.topics] == [
        ("__fedkafka-shadow-log", [1])]
    answer = build(response_type(8, 8), {"topics": [{"name": "__fedkafka-shadow-log", "partitions": [
        {"partition_index": 1, "error_code": ErrorCode.none}]}]})
    out = forward.finish([answer])
    assert sorted((t.name, p.partition_index, p.error_code) for t in out.topics for p in t.partitions) == [
        ("log", 1, ErrorCode.none), ("log", 8, ErrorCode.unknown_topic_or_partition)]
    lost = forward.finish([UpstreamError("c1", "gone")])
    assert sorted((p.partition_index, p.error_code) for t in lost.topics for p in t.partitions) == [
        (1, ErrorCode.coordinator_not_available), (8, ErrorCode.unknown_topic_or_partition)]


def test_offset_fetch_hides_non_shadow_topics_and_join_group_gets_its_own_connection():
    req = build(request_type(9, 7), {"group_id": "g", "topics": None, "require_stable": False})
    found = build(response_type(10, 4), {"coordinators": [{"key": "g", "node_id": 4, "host": "h", "port": 1,
                                                            "error_code": ErrorCode.none}]})
    forward = groups.handle(ctx(), None, req).finish([found])
    answer = build(response_type(9, 7), {"error_code": ErrorCode.none, "topics": [
        {"name": "__fedkafka-shadow-log", "partitions": [{"partition_index": 0, "committed_offset": 42,
                                                          "committed_leader_epoch": 2, "metadata": "",
                                                          "error_code": ErrorCode.none}]},
        {"name": "someone-elses", "partitions": []}]})
    out = forward.finish([answer])
    assert [(t.name, t.partitions[0].committed_offset) for t in out.topics] == [("log", 42)]
    join = build(request_type(11, 9), {"group_id": "g", "session_timeout": datetime.timedelta(seconds=10),
                                       "rebalance_timeout": datetime.timedelta(seconds=60), "member_id": "",
                                       "group_instance_id": None, "protocol_type": "consumer", "protocols": [],
                                       "reason": None})
    (call,) = groups.handle(ctx(), None, join).finish([found]).calls
    assert call.dedicated and call.timeout_s >= 60


def test_describe_groups_of_nothing_is_answered_without_upstream_calls():
    out = groups.handle(ctx(), None, build(request_type(15, 5), {"groups": [], "include_authorized_operations": False}))
    assert not isinstance(out, Plan) and out.groups == ()


def test_list_groups_asks_every_broker_of_the_coordination_cluster():
    plan = groups.handle(ctx(), None, build(request_type(16, 5), {"states_filter": [], "types_filter": []}))
    (meta,) = plan.calls
    assert meta.target.cluster == "c1"
    brokers = build(response_type(3, 12), {"brokers": [{"node_id": n, "host": "h", "port": 1} for n in (5, 6)]})
    fan = plan.finish([brokers])
    assert [c.target for c in fan.calls] == [Broker("c1", 5), Broker("c1", 6)]
    listed = [build(response_type(16, 5), {"groups": [{"group_id": g, "protocol_type": "consumer"}]})
              for g in ("b", "d")]  # both coordinated by proxy 1 (FindCoordinator's rendezvous over proxies 1, 2)
    assert [g.group_id for g in fan.finish(listed).groups] == ["b", "d"]
    assert fan.finish([listed[0], UpstreamError("c1", "x")]).error_code == ErrorCode.coordinator_not_available


def test_fetch_v4_whose_answers_have_no_log_start_offset_is_translated():
    """Fetch v4's partition answers have no log_start_offset (v5 added it); the fuzz harness found the cproxy
    failing with AttributeError on every Fetch v4 that returned data."""
    request = build(request_type(1, 4), {
        "replica_id": -1, "max_wait": datetime.timedelta(milliseconds=500), "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": 0, "topics": [{"topic": "log", "partitions": [
            {"partition": 1, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}]})
    plan = fetch.handle(ctx(), None, request)
    answer = build(response_type(1, 4), {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 1, "error_code": ErrorCode.none, "high_watermark": 3, "last_stable_offset": 3,
         "aborted_transactions": None, "records": batch(0, 3)}]}]})
    out = partitions(plan.finish([answer]))
    assert out[("log", 1)].error_code == ErrorCode.none and out[("log", 1)].high_watermark == 3
    assert out[("log", 1)].records


# -- a failed-over partition: c1 died with its segment active; the controller knew its log end at 30 -------------
GAP = 1 << 40
FAILED = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, None, 30 + GAP)),
                        leader_epoch=1)
FAILED_VIEW = View(version=4, clusters={c: Cluster(c, f"{c}:9092") for c in ("c1", "c2")},
                   topics={"log": LogicalTopic("log", uuid.uuid4().hex, (FAILED,))}, coordination_cluster="c2",
                   proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.BOTH),))


def gap_ctx(physical) -> Context:
    return Context(view=FAILED_VIEW, me=FAILED_VIEW.proxies[0], advertised={}, physical=physical, producer_ids=None)


def skipped_to(p) -> int:
    """Where a client's position lands after this answer: the last batch's last offset + 1."""
    from fedkafka.protocol.records import check_batches
    heads = check_batches(p.records)  # well-formed, CRCs valid: clients check them
    assert all(h.record_count == 0 for h in heads)
    assert all(a.base_offset + a.last_offset_delta + 1 == b.base_offset for a, b in itertools.pairwise(heads))
    return heads[-1].base_offset + heads[-1].last_offset_delta + 1


def test_fetch_inside_the_gap_of_a_dead_cluster_moves_the_reader_to_the_gap_end():
    plan = fetch.handle(gap_ctx(Physical(down={"c1"})), None, fetch_request(("log", 0, 35)))
    (p,) = plan.responses[0].partitions  # answered at once: nothing to ask
    assert p.error_code == ErrorCode.none and p.high_watermark == 30 + GAP
    assert partitions_first_offset(p) == 35 and skipped_to(p) == 30 + GAP


def partitions_first_offset(p) -> int:
    from fedkafka.protocol.records import iter_batches
    return next(iter_batches(p.records)).base_offset


def test_fetch_below_the_last_known_end_of_a_dead_cluster_waits_for_it():
    plan = fetch.handle(gap_ctx(Physical(down={"c1"})), None, fetch_request(("log", 0, 20)))
    (p,) = plan.responses[0].partitions
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records  # acked records: never skipped


class Recreated(Physical):
    """c1 answers again; its physical topic exists (created again, empty: by an operator, or by the controller's scan
    before it refused to re-create a topic that held data), with none of its records."""

    def topic_id(self, cluster, topic):
        return uuid.UUID(int=1)


def test_a_reader_reset_to_earliest_after_a_lost_disk_reaches_the_live_segment():
    """c1 came back without its data (a lost disk, docs/DESIGN.md §9.3): a reader below the seal is told
    OFFSET_OUT_OF_RANGE and resets; from earliest (auto.offset.reset=earliest, any new reader) it must land past the
    dead segment, not at its base, where the empty partition answers no records and no error, for good (rev3)."""
    from fedkafka.protocol.records import iter_batches
    assert FAILED_VIEW.topics["log"].partitions[0].segments[0].phys_end == 30
    plan = fetch.handle(gap_ctx(Recreated()), None, fetch_request(("log", 0, 20)))
    oor = build(response_type(1, 12), {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 0, "error_code": ErrorCode.offset_out_of_range, "high_watermark": 0,
         "last_stable_offset": 0, "log_start_offset": 0, "aborted_transactions": None,
         "preferred_read_replica": -1, "records": b""}]}]})
    bounds = plan.finish([oor])  # a sealed segment: its bounds are asked (nothing of c1's left, nothing before it)
    lost = {("c1", 0, -2): (0, -1), ("c1", 0, -1): (0, -1)}
    assert partitions(bounds.finish(list_answers(bounds.calls, lost)))[("log", 0)].error_code == \
        ErrorCode.offset_out_of_range
    # ListOffsets earliest: c1's partition starts and ends at 0; c2's segment starts at physical 4
    plan = list_offsets.handle(gap_ctx(Recreated()), None, list_request((0, -2)))
    values = {("c1", 0, -2): (0, -1), ("c1", 0, -1): (0, -1), ("c2", 0, -2): (4, -1)}
    (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
    position = p.offset
    for _ in range(3):  # the reader fetches from there
        plan = fetch.handle(gap_ctx(Recreated()), None, fetch_request(("log", 0, position)))
        if not hasattr(plan, "calls"):
            got = plan.responses[0].partitions[0]
        else:
            (call,) = plan.calls
            answer = fetch_answer("t", 0, b"", hw=0 if call.target.cluster == "c1" else 10)
            got = partitions(plan.finish([answer]))[("log", 0)]
        heads = list(iter_batches(got.records)) if got.records else []
        if heads:
            position = heads[-1].base_offset + heads[-1].last_offset_delta + 1
    assert position >= 30 + GAP, f"stuck at {position}: no records, no error, high watermark 30, forever"
    # c1 back with its data (log end 30): earliest is still its first record
    plan = list_offsets.handle(gap_ctx(Recreated()), None, list_request((0, -2)))
    values = {("c1", 0, -2): (0, -1), ("c1", 0, -1): (30, -1), ("c2", 0, -2): (4, -1)}
    assert plan.finish(list_answers(plan.calls, values)).topics[0].partitions[0].offset == 0


def test_fetch_inside_the_gap_reads_the_tail_the_cluster_came_back_with_then_skips():
    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 30)))
    (call,) = plan.calls
    assert call.target == Broker("c1", 7) and call.request.topics[0].partitions[0].fetch_offset == 30
    out = partitions(plan.finish([fetch_answer("t", 0, batch(30, 5) + batch(35, 2), hw=37)]))
    p = out[("log", 0)]
    from fedkafka.protocol.records import iter_batches
    assert [h.base_offset for h in iter_batches(p.records)] == [30, 35] and p.high_watermark == 37
    # at the tail's end the broker has nothing more: the answer moves the reader over the rest of the gap
    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 37)))
    p = partitions(plan.finish([fetch_answer("t", 0, b"", hw=37)]))[("log", 0)]
    assert partitions_first_offset(p) == 37 and skipped_to(p) == 30 + GAP
    # a broker that answers OFFSET_OUT_OF_RANGE there (its log is shorter) does the same
    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 40)))
    oor = build(response_type(1, 12), {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 0, "error_code": ErrorCode.offset_out_of_range, "high_watermark": 37,
         "last_stable_offset": 37, "log_start_offset": 0, "aborted_transactions": None,
         "preferred_read_replica": -1, "records": b""}]}]})
    bounds = plan.finish([oor])  # below the log start or past the log end? The proxy asks c1 (docs/DESIGN.md §9.2)
    # its log start, high watermark and log end (LATEST asked as the debugging replica, -2)
    assert sorted((c.target.cluster, c.request.replica_id, asked.timestamp) for c in bounds.calls
                  for t in c.request.topics for asked in t.partitions) == [
        ("c1", -2, -1), ("c1", -1, -2), ("c1", -1, -1)]
    answer = bounds.finish(list_answers(bounds.calls, {("c1", 0, -2): (0, -1), ("c1", 0, -1): (37, -1)}))
    assert skipped_to(partitions(answer)[("log", 0)]) == 30 + GAP  # past the log end: the tail ended
    # the next segment is read as usual
    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 30 + GAP)))
    assert plan.calls[0].target == Broker("c2", 7) and plan.calls[0].request.topics[0].partitions[0].fetch_offset == 4


class Restarting(Physical):
    """c1 answers again but names no leader for its partitions yet (its leader election follows the restart)."""

    def __init__(self, knows_topic: bool = True):
        super().__init__()
        self.knows_topic = knows_topic

    def leader(self, cluster, topic, partition):
        return None if cluster == "c1" else 7

    def topic_id(self, cluster, topic):
        return uuid.UUID(int=1) if self.knows_topic or cluster != "c1" else None


def test_fetch_inside_the_gap_waits_for_the_leader_of_a_cluster_that_came_back():
    physical = Restarting()
    plan = fetch.handle(gap_ctx(physical), None, fetch_request(("log", 0, 30)))
    (p,) = plan.responses[0].partitions
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records  # the tail is read once it has one
    assert physical.refreshed == ["c1"]
    # back without the physical topic (a lost disk): nothing to wait for, the reader skips the gap
    plan = fetch.handle(gap_ctx(Restarting(knows_topic=False)), None, fetch_request(("log", 0, 30)))
    assert skipped_to(plan.responses[0].partitions[0]) == 30 + GAP


def test_an_upstream_error_inside_the_gap_is_retried_not_skipped():
    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 31)))
    p = partitions(plan.finish([UpstreamError("c1", "lost")]))[("log", 0)]
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records


def test_list_offsets_and_epochs_of_a_failed_over_partition():
    values = {("c2", 0, -1): (10, -1), ("c2", 0, 1500): (4, 1500)}
    for ts, offset in ((-1, 36 + GAP), (1500, 30 + GAP)):  # the dead cluster's segment is left out, no error
        plan = list_offsets.handle(gap_ctx(Physical(down={"c1"})), None, list_request((0, ts)))
        (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
        assert (p.error_code, p.offset) == (ErrorCode.none, offset)
    # a timestamp inside the tail c1 came back with is an offset inside the gap
    plan = list_offsets.handle(gap_ctx(Physical()), None, list_request((0, 1500)))
    values = {("c1", 0, 1500): (33, 1501), ("c2", 0, 1500): (4, 1502)}
    (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
    assert (p.offset, p.timestamp) == (33, 1501)
    # OffsetForLeaderEpoch: no truncation for any epoch, so a position inside the gap stays valid
    req = build(request_type(23, 4), {"replica_id": -1, "topics": [{"topic": "log", "partitions": [
        {"partition": 0, "current_leader_epoch": 1, "leader_epoch": 0}]}]})
    plan = offset_for_leader_epoch.handle(gap_ctx(Physical(down={"c1"})), None, req)
    (p,) = plan.finish(list_answers(plan.calls, {("c2", 0, -1): (10, -1)})).topics[0].partitions
    assert (p.leader_epoch, p.end_offset) == (0, 36 + GAP)


def test_list_offsets_by_timestamp_waits_for_a_failed_over_cluster_that_came_back_without_a_leader():
    """As Fetch (docs/DESIGN.md §9.2): a dead cluster's segment is left out, one that answers but names no leader
    yet is waited for, one back without the physical topic is left out. So are the dead cluster's older segments."""
    values = {("c2", 0, 1500): (4, 1502), ("c2", 0, -3): (6, 1504)}
    for physical, ts, want in ((Restarting(), 1500, (ErrorCode.not_leader_or_follower, -1)),
                               (Restarting(), -3, (ErrorCode.not_leader_or_follower, -1)),
                               (Restarting(knows_topic=False), 1500, (ErrorCode.none, 30 + GAP)),
                               (Physical(down={"c1"}), -3, (ErrorCode.none, 32 + GAP))):
        plan = list_offsets.handle(gap_ctx(physical), None, list_request((0, ts)))
        (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
        assert (p.error_code, p.offset) == want, (physical, ts)
    # c1 -> c2 -> c1, then c1 died: its older segment is left out with the failed-over one, c2's is waited for
    back = PartitionChain(segments=(Segment("c1", "t", 0, 0, 10, 0), Segment("c2", "t", 0, 0, 10, 10),
                                    Segment("c1", "t", 0, 10, 30, 20), Segment("c3", "t", 0, 4, None, 40 + GAP)),
                          leader_epoch=3)
    view = dataclasses.replace(FAILED_VIEW, clusters={c: Cluster(c, f"{c}:9092") for c in ("c1", "c2", "c3")},
                               topics={"log": LogicalTopic("log", uuid.uuid4().hex, (back,))})
    values = {("c2", 0, 1500): (-1, -1), ("c3", 0, 1500): (4, 1502)}
    for down, want in (({"c1"}, (ErrorCode.none, 40 + GAP)), ({"c2"}, (ErrorCode.not_leader_or_follower, -1))):
        physical = Physical(down=down)
        got = {**values, ("c1", 0, 1500): (-1, -1)}
        plan = list_offsets.handle(Context(view=view, me=view.proxies[0], advertised={}, physical=physical,
                                           producer_ids=None), None, list_request((0, 1500)))
        (p,) = plan.finish(list_answers(plan.calls, got)).topics[0].partitions
        assert (p.error_code, p.offset) == want, down


def test_offset_commit_is_refused_retriably_while_a_coordination_move_copies_the_offsets():
    frozen = dataclasses.replace(VIEW, commits_frozen=True)
    req = build(request_type(8, 8), {"group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m",
                                     "group_instance_id": None, "topics": [{"name": "log", "partitions": [
                                         {"partition_index": 1, "committed_offset": 5, "committed_leader_epoch": -1,
                                          "committed_metadata": None}]}]})
    out = groups.handle(Context(view=frozen, me=frozen.proxies[0], advertised={}, physical=Physical(),
                                producer_ids=None), None, req)
    assert [(t.name, p.error_code) for t in out.topics for p in t.partitions] == [
        ("log", ErrorCode.coordinator_load_in_progress)]  # nothing sent to the old coordinator
    assert isinstance(groups.handle(ctx(), None, req), Plan)  # unfrozen: forwarded as before


def _frozen_ctx() -> Context:
    frozen = dataclasses.replace(VIEW, commits_frozen=True)
    return Context(view=frozen, me=frozen.proxies[0], advertised={}, physical=Physical(), producer_ids=None)


def test_group_deletions_are_refused_retriably_while_a_coordination_move_copies_the_offsets():
    """docs/DESIGN.md §10.1 step 2: a DeleteGroups or OffsetDelete applied on the old coordinator after the copy read
    the group's offsets would be undone by the switch. Each is answered where the Java AdminClient reads the error
    (per group; OffsetDelete's top level) with the code it retries on the same coordinator, nothing sent."""
    delete = build(request_type(42, 2), {"groups_names": ["g", "h"]})
    out = groups.handle(_frozen_ctx(), None, delete)
    assert [(r.group_id, r.error_code) for r in out.results] == [
        ("g", ErrorCode.coordinator_load_in_progress), ("h", ErrorCode.coordinator_load_in_progress)]
    offsets = build(request_type(47, 0), {"group_id": "g", "topics": [
        {"name": "log", "partitions": [{"partition_index": 1}]}]})
    out = groups.handle(_frozen_ctx(), None, offsets)
    assert (out.error_code, out.topics) == (ErrorCode.coordinator_load_in_progress, ())
    assert isinstance(groups.handle(ctx(), None, delete), Plan)  # unfrozen: forwarded as before
    assert isinstance(groups.handle(ctx(), None, offsets), Plan)


def test_membership_and_reads_still_reach_the_coordinator_while_a_coordination_move_copies_the_offsets():
    """The freeze fences only what changes committed offsets (docs/DESIGN.md §10.1): members keep their session
    (Heartbeat, LeaveGroup) and clients read offsets during the copy; membership is not copied, groups rejoin on B."""
    requests = [build(request_type(12, 4), {"group_id": "g", "generation_id": 1, "member_id": "m",
                                            "group_instance_id": None}),
                build(request_type(13, 5), {"group_id": "g", "members": [{"member_id": "m", "group_instance_id": None,
                                                                          "reason": None}]}),
                build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": None}], "require_stable": False})]
    for request in requests:
        assert isinstance(groups.handle(_frozen_ctx(), None, request), Plan), type(request).__name__


def test_fetch_translates_the_last_stable_offset_apart_from_the_high_watermark():
    """An open transaction keeps the last stable offset below the high watermark: each is translated from its own
    physical value (the handler translates once when they are equal); unknown (-1) stays -1. Active segment c3:
    physical 3 is logical 70."""
    for physical_lso, logical_lso in ((8, 75), (10, 77), (-1, -1), (3, 70)):
        plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 75)))
        answer = build(response_type(1, 12), {"responses": [{"topic": "t", "partitions": [
            {"partition_index": 1, "error_code": ErrorCode.none, "high_watermark": 10,
             "last_stable_offset": physical_lso, "log_start_offset": 0, "aborted_transactions": None,
             "preferred_read_replica": -1, "records": batch(8, 2)}]}]})
        p = partitions(plan.finish([answer]))[("log", 0)]
        assert (p.partition_index, p.high_watermark, p.last_stable_offset) == (0, 77, logical_lso), physical_lso


def test_fetch_answers_each_partition_with_its_own_index_errors_and_data_alike():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 1, 0), ("log", 0, 75), ("nope", 3, 0)))
    out = plan.finish([fetch_answer("t", 1, batch(0, 3), hw=3) if c.target.cluster == "c1"
                       else fetch_answer("t", 1, b"", hw=3) for c in plan.calls])
    got = [(t.topic, p.partition_index, p.error_code) for t in out.responses for p in t.partitions]
    assert got == [("log", 1, ErrorCode.none), ("log", 0, ErrorCode.none),
                   ("nope", 3, ErrorCode.unknown_topic_or_partition)]


# -- a compacted partition that went c1 -> c2 -> c1: its first and last segments share c1's physical partition ------
BACK = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 5, 45, 30),
                                Segment("c1", "t", 0, 30, None, 70)), leader_epoch=2)
BACK_VIEW = dataclasses.replace(VIEW, topics={"log": LogicalTopic("log", uuid.uuid4().hex, (BACK,))})


def test_fetch_at_a_compacted_hole_before_a_seal_moves_the_reader_to_the_seal():
    """The cleaner removed physical 10..29 (their keys were written again in the last segment): from 10 the broker
    answers the last segment's batches only. The reader used to get no records and no error, and fetched 10 again,
    forever."""
    back = Context(view=BACK_VIEW, me=BACK_VIEW.proxies[0], advertised={}, physical=Physical(), producer_ids=None)
    plan = fetch.handle(back, None, fetch_request(("log", 0, 8)))
    (call,) = plan.calls
    assert call.target == Broker("c1", 7) and call.request.topics[0].partitions[0].fetch_offset == 8
    p = partitions(plan.finish([fetch_answer("t", 0, batch(8, 2) + batch(30, 5), hw=35)]))[("log", 0)]
    from fedkafka.protocol.records import iter_batches
    assert [h.base_offset for h in iter_batches(p.records)] == [8] and p.high_watermark == 30  # the records left
    plan = fetch.handle(back, None, fetch_request(("log", 0, 10)))
    p = partitions(plan.finish([fetch_answer("t", 0, batch(30, 5), hw=35)]))[("log", 0)]
    assert p.error_code == ErrorCode.none and p.high_watermark == 30
    assert partitions_first_offset(p) == 10 and skipped_to(p) == 30
    plan = fetch.handle(back, None, fetch_request(("log", 0, 30)))  # from the seal on: the next segment, on c2
    assert plan.calls[0].target == Broker("c2", 7) and plan.calls[0].request.topics[0].partitions[0].fetch_offset == 5
    # no batch at all proves nothing (read_committed holds the answer at the last stable offset): no skip
    plan = fetch.handle(back, None, fetch_request(("log", 0, 10)))
    p = partitions(plan.finish([fetch_answer("t", 0, b"", hw=35)]))[("log", 0)]
    assert p.error_code == ErrorCode.none and not p.records and p.high_watermark == 30


def test_past_its_fence_a_proxy_serves_no_read_from_its_view():
    """docs/DESIGN.md §4.9: past its fence the controller no longer waits for this proxy's acks, so its view may
    be moves behind (a position above a seal read from a partition a later move reused: wrong records). Fetch,
    ListOffsets and OffsetForLeaderEpoch are refused retriably, as produce is, and nothing goes upstream. The
    old code served all three from the stale view."""
    refusals: list[tuple] = []
    fenced = dataclasses.replace(ctx(), lease_valid=False, on_refusal=lambda *a: refusals.append(a[:3]))
    answer = fetch.handle(fenced, None, fetch_request(("log", 0, 40), ("log", 1, 3)))
    assert not isinstance(answer, Plan), "read upstream through a view the controller no longer waits for"
    out = partitions(answer)
    assert {k: p.error_code for k, p in out.items()} == {("log", 0): ErrorCode.not_leader_or_follower,
                                                         ("log", 1): ErrorCode.not_leader_or_follower}
    answer = list_offsets.handle(fenced, None, list_request((0, -1), (1, -2)))
    assert not isinstance(answer, Plan)
    assert [p.error_code for p in answer.topics[0].partitions] == [ErrorCode.not_leader_or_follower] * 2
    req = build(request_type(23, 4), {"replica_id": -1, "topics": [{"topic": "log", "partitions": [
        {"partition": 0, "current_leader_epoch": -1, "leader_epoch": 1}]}]})
    answer = offset_for_leader_epoch.handle(fenced, None, req)
    assert not isinstance(answer, Plan)
    assert [p.error_code for p in answer.topics[0].partitions] == [ErrorCode.not_leader_or_follower]
    assert refusals == [("lease", "log", 0), ("lease", "log", 1)] * 2 + [("lease", "log", 0)]


def test_past_its_fence_a_proxy_deletes_no_records_through_its_view():
    """DeleteRecords maps a logical offset to a segment as the reads do: through a view moves behind, L of a
    partition moved A->B->A lands in A's partition at seal + (L - B's base), records of the return segment the
    client never meant to delete. Refused retriably, nothing upstream; the old code deleted through the stale
    chain (ROLE "any", no fence check)."""
    refusals: list[tuple] = []
    fenced = dataclasses.replace(ctx(), lease_valid=False, on_refusal=lambda *a: refusals.append(a[:3]))
    req = build(request_type(21, 2), {"topics": [{"name": "log", "partitions": [
        {"partition_index": 0, "offset": 40}, {"partition_index": 1, "offset": -1}]}],
        "timeout": datetime.timedelta(seconds=30)})
    answer = delete_records.handle(fenced, None, req)
    assert not isinstance(answer, Plan), "deleted upstream through a view the controller no longer waits for"
    assert [(p.partition_index, p.error_code, p.low_watermark) for p in answer.topics[0].partitions] == [
        (0, ErrorCode.not_leader_or_follower, -1), (1, ErrorCode.not_leader_or_follower, -1)]
    assert refusals == [("lease", "log", 0), ("lease", "log", 1)]
    within = delete_records.handle(dataclasses.replace(ctx(), lease_valid=True), None, req)
    assert isinstance(within, Plan) and within.calls  # within its fence the same request goes upstream


def test_past_its_fence_a_proxy_describes_no_producers_from_its_view():
    """DescribeProducers reads the view's active segment and answers its transaction start offsets as logical
    ones: moves behind, both may be wrong. Refused retriably like the reads; the old code answered them."""
    refusals: list[tuple] = []
    fenced = dataclasses.replace(ctx(), lease_valid=False, on_refusal=lambda *a: refusals.append(a[:3]))
    req = build(request_type(61, 0), {"topics": [{"name": "log", "partition_indexes": [0, 1]}]})
    answer = describe_producers.handle(fenced, None, req)
    assert not isinstance(answer, Plan)
    assert [p.error_code for p in answer.topics[0].partitions] == [ErrorCode.not_leader_or_follower] * 2
    assert refusals == [("lease", "log", 0), ("lease", "log", 1)]
    assert isinstance(describe_producers.handle(dataclasses.replace(ctx(), lease_valid=True), None, req), Plan)


def test_within_its_fence_a_proxy_serves_reads():
    plan = fetch.handle(dataclasses.replace(ctx(), lease_valid=True), None, fetch_request(("log", 1, 3)))
    assert [c.target.cluster for c in plan.calls] == ["c1"]


def test_offset_commit_splits_its_partitions_in_one_pass(monkeypatch):
    """A commit of 400 partitions, half beyond P: none is compared with another (the split was one `p not in ok`
    list scan per partition, ~n^2/2 comparisons: 20,000 partitions blocked the loop for 50 s)."""
    n = 200
    parts = [{"partition_index": i, "committed_offset": i, "committed_leader_epoch": -1, "committed_metadata": None}
             for i in (1, 8) for _ in range(n)]
    req = build(request_type(8, 8), {"group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m",
                                     "group_instance_id": None, "topics": [{"name": "log", "partitions": parts}]})
    compared = []
    partition_t = type(req.topics[0].partitions[0])
    equal = partition_t.__eq__
    monkeypatch.setattr(partition_t, "__eq__", lambda a, b: compared.append(1) or equal(a, b))
    found = build(response_type(10, 4), {"coordinators": [{"key": "g", "node_id": 4, "host": "h", "port": 1,
                                                            "error_code": ErrorCode.none}]})
    (call,) = groups.handle(ctx(), None, req).finish([found]).calls
    assert len(compared) <= 2 * n  # linear (none, in fact)
    assert [p.partition_index for p in call.request.topics[0].partitions] == [1] * n


def subscription_of(n: int) -> bytes:
    """ConsumerProtocolSubscription v0 naming topic "a" `n` times (3 bytes a name)."""
    return struct.pack(">hi", 0, n) + b"\x00\x01a" * n + struct.pack(">i", -1)


def join_group(*subscriptions: bytes):
    return build(request_type(11, 9), {
        "group_id": "g", "session_timeout": datetime.timedelta(seconds=10),
        "rebalance_timeout": datetime.timedelta(seconds=60), "member_id": "", "group_instance_id": None,
        "protocol_type": "consumer", "reason": None,
        "protocols": [{"name": f"p{i}", "metadata": s} for i, s in enumerate(subscriptions)]})


COORDINATOR = build(response_type(10, 4), {"coordinators": [{"key": "g", "node_id": 4, "host": "h", "port": 1,
                                                             "error_code": ErrorCode.none}]})


def test_join_group_subscriptions_count_against_the_request_element_limit():
    """Each protocol's subscription of a JoinGroup holds at most --max-request-elements topic names: past it the
    request is refused (a DecodeError: the core closes the connection, as for any request past the limit) before
    kio decodes it. A 16 MiB JoinGroup named ~5 million topics, renamed outside any budget."""
    (call,) = groups.handle(ctx(), None, join_group(subscription_of(100_000))).finish([COORDINATOR]).calls
    assert call.request.protocols[0].metadata.count(b"__fedkafka-shadow-a") == 100_000
    with pytest.raises(TooManyElements, match=r"JoinGroup subscriptions of group 'g'.*more than 100000 array"):
        groups.handle(ctx(), None, join_group(subscription_of(100_001)))
    small = dataclasses.replace(ctx(), max_request_elements=1000)
    with pytest.raises(TooManyElements, match="--max-request-elements"):  # the second protocol's names
        groups.handle(small, None, join_group(subscription_of(1000), subscription_of(1001)))


def test_each_protocol_of_a_join_group_has_its_own_element_budget():
    """Review (h-late): one budget for all of a JoinGroup's protocols refused, forever, a Java consumer (range and
    cooperative-sticky: its subscription twice) owning more than half the limit's partitions, whose Fetch of all
    of them is accepted. Each protocol's subscription now has the limit, as each member's in the answer."""
    small = dataclasses.replace(ctx(), max_request_elements=1000)
    (call,) = groups.handle(small, None, join_group(subscription_of(1000), subscription_of(1000))).finish(
        [COORDINATOR]).calls
    assert [p.metadata.count(b"__fedkafka-shadow-a") for p in call.request.protocols] == [1000, 1000]
    owning = java_subscription(60_000)  # topics + 60,000 owned partitions of "orders": ~60,005 elements
    (call,) = groups.handle(ctx(), None, join_group(owning, owning)).finish([COORDINATOR]).calls
    assert [p.metadata.count(b"__fedkafka-shadow-orders") for p in call.request.protocols] == [2, 2]


def test_a_group_request_s_entries_together_hold_at_most_four_times_the_limit():
    """Each entry has the limit, but not the frame: a 16 MiB JoinGroup of 53 subscriptions at the limit held the
    loop ~7 s. All entries together may cross ENTRIES_BUDGET_FACTOR (4) times the limit: a Java consumer's two
    subscriptions and any group Kafka can store pass, a frame of many entries at the limit is refused."""
    small = dataclasses.replace(ctx(), max_request_elements=1000)
    (call,) = groups.handle(small, None, join_group(*[subscription_of(999)] * 4)).finish([COORDINATOR]).calls
    assert len(call.request.protocols) == 4
    with pytest.raises(TooManyElements, match="JoinGroup subscriptions of group 'g'"):
        groups.handle(small, None, join_group(*[subscription_of(999)] * 5))
    (call,) = groups.handle(small, None, sync_group(*[assignment_of(499)] * 8)).finish([COORDINATOR]).calls
    assert len(call.request.assignments) == 8  # 8 x 500 elements: 4 000
    with pytest.raises(TooManyElements, match="SyncGroup assignments of group 'g'"):
        groups.handle(small, None, sync_group(*[assignment_of(499)] * 9))


def java_subscription(partitions: int) -> bytes:
    """A Java consumer's ConsumerProtocolSubscription v3: subscribed to "orders", owning `partitions` of it."""
    module = __import__(_schema("subscription", 3).__module__, fromlist=["x"])
    return encoded("subscription", 3, topics=("orders",), user_data=None, generation_id=5, rack_id=None,
                   owned_partitions=(module.TopicPartition(topic="orders", partitions=tuple(range(partitions))),))


def sync_group(*assignments: bytes):
    return build(request_type(14, 5), {"group_id": "g", "generation_id": 1, "member_id": "m",
                                       "group_instance_id": None, "protocol_type": "consumer",
                                       "protocol_name": "range", "assignments": [
                                           {"member_id": f"m{i}", "assignment": a}
                                           for i, a in enumerate(assignments)]})


def assignment_of(partitions: int, first: int = 0) -> bytes:
    """ConsumerProtocolAssignment v0: topic "a", `partitions` of it (1 + `partitions` elements)."""
    return struct.pack(">hi", 0, 1) + b"\x00\x01a" + struct.pack(">i", partitions) + \
        b"".join(struct.pack(">i", first + p) for p in range(partitions)) + struct.pack(">i", -1)


def test_sync_group_assignments_count_against_the_request_element_limit():
    """Each member's assignment has its own budget, as in the coordinator's answer to that member: a leader's
    SyncGroup for 20 members x 5,001 partitions (100,020 in the group) was refused on one budget for all."""
    small = dataclasses.replace(ctx(), max_request_elements=1000)
    with pytest.raises(TooManyElements, match=r"SyncGroup assignments of group 'g'.*more than 1000 array"):
        groups.handle(small, None, sync_group(assignment_of(10), assignment_of(1000)))  # 1001 elements
    (call,) = groups.handle(small, None, sync_group(assignment_of(999), assignment_of(999))).finish(
        [COORDINATOR]).calls
    assert all(b"__fedkafka-shadow-a" in a.assignment for a in call.request.assignments)
    (call,) = groups.handle(ctx(), None, sync_group(*(assignment_of(5001, i * 5001) for i in range(20)))).finish(
        [COORDINATOR]).calls
    assert sum(a.assignment.count(b"__fedkafka-shadow-a") for a in call.request.assignments) == 20


def shadow_subscription_of(n: int) -> bytes:
    """`subscription_of(n)` as the coordinator holds it: topic "a" `n` times by its shadow name."""
    return struct.pack(">hi", 0, n) + (struct.pack(">h", 19) + b"__fedkafka-shadow-a") * n + struct.pack(">i", -1)


def join_answer(*members: bytes):
    """The coordinator's JoinGroup v9 answer to the leader m0: each member's subscription."""
    return build(response_type(11, 9), {
        "error_code": ErrorCode.none, "generation_id": 1, "protocol_type": "consumer", "protocol_name": "range",
        "leader": "m0", "skip_assignment": False, "member_id": "m0", "members": [
            {"member_id": f"m{i}", "group_instance_id": None, "metadata": m} for i, m in enumerate(members)]})


def describe_groups(*group_ids: str):
    return build(request_type(15, 6), {"groups": list(group_ids), "include_authorized_operations": False})


def described_group(group_id: str, *members: tuple[bytes, bytes]) -> dict:
    """A DescribeGroups v6 answer's group: each member's (subscription, assignment)."""
    return {"error_code": ErrorCode.none, "error_message": None, "group_id": group_id, "group_state": "Stable",
            "protocol_type": "consumer", "protocol_data": "range", "authorized_operations": -2147483648,
            "members": [{"member_id": f"m{i}", "group_instance_id": None, "client_id": "c", "client_host": "h",
                         "member_metadata": s, "member_assignment": a} for i, (s, a) in enumerate(members)]}


def counting_renames(monkeypatch) -> list[str]:
    """Each consumer-protocol rename from now on, by kind (their cost is the loop's)."""
    done: list[str] = []
    for kind in ("subscription", "assignment"):
        rename = getattr(cp, f"rename_{kind}")
        monkeypatch.setattr(cp, f"rename_{kind}", lambda *a, _r=rename, _k=kind, **kw: done.append(_k) or _r(*a, **kw))
    return done


def group_max_size_warning(caplog, group: str) -> logging.LogRecord:
    (warning,) = [r for r in caplog.records if r.name.startswith("fedkafka") and r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING
    assert repr(group) in warning.getMessage() and "--max-request-elements" in warning.getMessage()
    return warning


def test_a_coordinator_answer_with_a_member_subscription_past_the_limit_is_refused_as_group_max_size_reached(
        caplog):
    """Each member's subscription came in one JoinGroup, held to the limit: one past it (a member that joined
    around the proxy) is not decoded. The leader is answered GROUP_MAX_SIZE_REACHED, fatal to its client's
    poll, rather than with a closed connection: its client reconnected, joined again as the same member and got
    the same answer again, the group wedged for as long as that member stayed."""
    small = dataclasses.replace(ctx(), max_request_elements=1000)
    forward = groups.handle(small, None, join_group(subscription_of(10))).finish([COORDINATOR])
    out = forward.finish([join_answer(*[shadow_subscription_of(1000)] * 2)])  # each within the limit: renamed
    assert [m.metadata for m in out.members] == [subscription_of(1000)] * 2
    with caplog.at_level(logging.INFO):
        refused = forward.finish([join_answer(shadow_subscription_of(1000), shadow_subscription_of(1001))])
    assert (refused.error_code, refused.generation_id, refused.member_id, refused.members) == (
        ErrorCode.group_max_size_reached, -1, "m0", ())
    group_max_size_warning(caplog, "g")


def test_the_leader_s_join_answer_holds_at_most_four_times_the_limit_of_all_members_subscriptions(
        monkeypatch, caplog):
    """Review (rev2): each member's subscription held to the limit but not all of them together, 53 members
    x 100,000 topic names (13 times what one JoinGroup may carry, each member sending its own) were decoded and
    renamed in the leader's JoinGroup answer: 33.7 s of the worker's loop. All members' subscriptions together
    may hold ENTRIES_BUDGET_FACTOR (4) times the limit, as a request's entries; past it the leader is answered
    GROUP_MAX_SIZE_REACHED (one WARNING naming the group and the flag) and no member past the budget is decoded."""
    small = dataclasses.replace(ctx(), max_request_elements=1000)
    forward = groups.handle(small, None, join_group(subscription_of(10))).finish([COORDINATOR])
    out = forward.finish([join_answer(*[shadow_subscription_of(1000)] * 4)])  # 4 000: all renamed
    assert [m.metadata for m in out.members] == [subscription_of(1000)] * 4
    renames = counting_renames(monkeypatch)
    with caplog.at_level(logging.INFO):
        refused = forward.finish([join_answer(*[shadow_subscription_of(1000)] * 20)])  # 20 000 in all
    assert (refused.error_code, refused.members) == (ErrorCode.group_max_size_reached, ())
    assert len(renames) == 5  # four members within the budget, the fifth past it: the other 15 not looked at
    assert "4000" in group_max_size_warning(caplog, "g").getMessage()


def test_a_described_group_past_four_times_the_limit_is_refused_alone(monkeypatch, caplog):
    """Review (rev2): a DescribeGroups (~30 bytes, repeatable by any principal that may describe the group) of
    a group of 53 members x 100,000 topic names held the loop 29.9 s renaming them. A group's subscriptions and
    assignments together may hold four times the limit, as the leader's JoinGroup answer: a group past it is
    answered GROUP_MAX_SIZE_REACHED with a message (AdminClient fails that group only, no retry), nothing of it
    past the budget is decoded, one WARNING names it and the flag, and the groups before and after it are
    answered in full (review rev6: they are not refused with it)."""
    small = dataclasses.replace(ctx(), max_request_elements=1000)
    names = ("ok", "big", "after")
    forward = groups.handle(small, None, describe_groups(*names)).finish([coordinators_of(*names)])
    member = (shadow_subscription_of(999), struct.pack(">hi", 0, 0) + struct.pack(">i", -1))  # 999 + 0 elements
    renames = counting_renames(monkeypatch)
    with caplog.at_level(logging.INFO):
        out = forward.finish([build(response_type(15, 6), {"throttle_time": 0, "groups": [
            described_group("ok", *[member] * 2), described_group("big", *[member] * 20),
            described_group("after", *[member] * 2)]})])
    ok, big, after = out.groups
    for g in (ok, after):
        assert g.error_code == ErrorCode.none and [m.member_metadata for m in g.members] == [subscription_of(999)] * 2
    assert (big.group_id, big.error_code, big.members) == ("big", ErrorCode.group_max_size_reached, ())
    assert "4000 in all" in big.error_message and "--max-request-elements" in big.error_message
    assert renames.count("subscription") == 2 + 5 + 2  # "big": 4 x 999 within 4 000, the fifth past it, 15 not
    assert "and 1 more" not in group_max_size_warning(caplog, "big").getMessage()


def test_a_group_named_many_times_in_a_describe_groups_is_asked_about_once_and_answered_per_naming():
    """Kafka answers a group named n times n times, each a copy of its members' bytes: the proxy forwarding the
    request as it came made the coordinator build (and the proxy rename) a large group's description once a
    name, up to --max-request-elements names in ~3 bytes each. The coordinator is asked about each group once,
    in the order first named, and the client gets an entry per naming, as Kafka answers (the proxy answered one
    entry a group): the group's one entry (built and renamed once) repeated next to it."""
    forward = groups.handle(ctx(), None, describe_groups("g", "h", "g", "g", "h"))
    assert list(forward.calls[0].request.coordinator_keys) == ["g", "h"]
    (call,) = forward.finish([coordinators_of("g", "h")]).calls
    assert list(call.request.groups) == ["g", "h"]
    out = forward.finish([coordinators_of("g", "h")]).finish([build(response_type(15, 6), {
        "throttle_time": 0, "groups": [described_group(g, described_java_member(3)) for g in ("g", "h")]})])
    assert [(g.group_id, g.error_code) for g in out.groups] == [("g", ErrorCode.none)] * 3 + [("h", ErrorCode.none)] * 2
    assert out.groups[0] is out.groups[1] is out.groups[2] and len(out.groups[0].members) == 1


def test_groups_past_the_answer_budget_are_answered_retriably_and_described_when_asked_again(monkeypatch, caplog):
    """All the groups of one DescribeGroups answer together may hold ANSWER_BUDGET_FACTOR (10) times the limit,
    each group its own four times: a request may name as many groups as the limit, each of them up to that size.
    Once the answer's budget is spent, the group that crossed it and every group after it (not decoded) are
    answered COORDINATOR_LOAD_IN_PROGRESS with a message: AdminClient asks again about those alone, and so each
    answer describes at least its first group in full until all are."""
    small = dataclasses.replace(ctx(), max_request_elements=1000)
    names = [f"g{i}" for i in range(5)]
    member = (shadow_subscription_of(999), struct.pack(">hi", 0, 0) + struct.pack(">i", -1))

    def describe(*asked: str):
        forward = groups.handle(small, None, describe_groups(*asked)).finish([coordinators_of(*asked)])
        return forward.finish([build(response_type(15, 6), {"throttle_time": 0, "groups": [
            described_group(g, *[member] * 4) for g in asked]})])  # 3 996 elements a group

    renames = counting_renames(monkeypatch)
    with caplog.at_level(logging.INFO):
        first = describe(*names)
    assert [g.error_code for g in first.groups] == [ErrorCode.none] * 2 + [ErrorCode.coordinator_load_in_progress] * 3
    assert all("10000 array elements in all" in g.error_message for g in first.groups[2:])
    assert renames.count("subscription") == 4 + 4 + 3  # g2 crosses 10 000 at its third member; g3, g4 untouched
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # nothing is wrong with those groups
    again = [g.group_id for g in first.groups if g.error_code == ErrorCode.coordinator_load_in_progress]
    second = describe(*again)
    assert [(g.group_id, g.error_code) for g in second.groups] == [
        ("g2", ErrorCode.none), ("g3", ErrorCode.none), ("g4", ErrorCode.coordinator_load_in_progress)]
    assert describe("g4").groups[0].members[0].member_metadata == subscription_of(999)


def described_java_member(partitions: int) -> tuple[bytes, bytes]:
    """A Java cooperative-sticky consumer as the coordinator describes it: subscribed to "orders", owning and
    assigned `partitions` of it, by its shadow name (2 x `partitions` + 3 elements)."""
    shadow = "__fedkafka-shadow-orders"
    sub = __import__(_schema("subscription", 3).__module__, fromlist=["x"])
    asg = __import__(_schema("assignment", 3).__module__, fromlist=["x"])
    subscription = encoded("subscription", 3, topics=(shadow,), user_data=None, generation_id=5, rack_id=None,
                           owned_partitions=(sub.TopicPartition(topic=shadow, partitions=tuple(range(partitions))),))
    assignment = encoded("assignment", 3, user_data=None, assigned_partitions=(
        asg.TopicPartition(topic=shadow, partitions=tuple(range(partitions))),))
    return subscription, assignment


def coordinators_of(*group_ids: str):
    return build(response_type(10, 4), {"coordinators": [
        {"key": g, "node_id": 4, "host": "h", "port": 1, "error_code": ErrorCode.none} for g in group_ids]})


def test_many_small_groups_described_in_one_request_are_each_answered():
    """Review (rev6): the Java AdminClient (describeConsumerGroups, kafka-consumer-groups --describe --all-groups,
    lag exporters) sends one DescribeGroups per coordinator naming every group it holds. With one budget for the
    whole answer, 1,100 groups of one cooperative-sticky member each (~403 elements) had 108 refused
    GROUP_MAX_SIZE_REACHED at the default limit: a hard failure of those groups to AdminClient."""
    names = [f"g{i}" for i in range(1100)]
    forward = groups.handle(ctx(), None, describe_groups(*names)).finish([coordinators_of(*names)])
    member = described_java_member(200)
    out = forward.finish([build(response_type(15, 6), {"throttle_time": 0, "groups": [
        described_group(g, member) for g in names]})])
    refused = [g.group_id for g in out.groups if g.error_code != ErrorCode.none]
    assert refused == [], f"{len(refused)} of {len(names)} small groups refused, first {refused[:1]}"
    assert [g.group_id for g in out.groups] == names
    assert all(b"shadow" not in g.members[0].member_assignment for g in out.groups)


def test_find_coordinator_works_out_the_candidates_once_and_each_distinct_key_once(monkeypatch):
    """A FindCoordinator of 300 keys (100 distinct) lists the pool's proxies once and hashes each distinct key
    once, not both per key; every key still gets its answer, in order."""
    listed, hashed = [], []
    in_pool, leader_for = View.proxies_in_pool, View.leader_for
    monkeypatch.setattr(View, "proxies_in_pool", lambda v, *a, **kw: listed.append(1) or in_pool(v, *a, **kw))
    monkeypatch.setattr(View, "leader_for", lambda v, t, p, c: hashed.append(t) or leader_for(v, t, p, c))
    keys = [f"g{i % 100}" for i in range(300)]
    answers = find_coordinator.handle(ctx(), None, build(request_type(10, 4), {"key_type": 0,
                                                                              "coordinator_keys": keys}))
    assert [a.key for a in answers.coordinators] == keys
    assert len(listed) == 1 and len(hashed) == 100


def test_a_group_named_many_times_is_authorized_once():
    """DeleteGroups naming 3 groups 100 times each asks the authorizer (a scan of the view's group ACLs) 3 times."""
    authorizer = CountingAuthorizer()
    names = [f"g{i % 3}" for i in range(300)]
    plan = groups.handle(dataclasses.replace(ctx(), authorizer=authorizer), None,
                         build(request_type(42, 2), {"groups_names": names}))
    assert sorted(authorizer.asked) == ["g0", "g1", "g2"]
    assert list(plan.calls[0].request.coordinator_keys) == ["g0", "g1", "g2"]


def test_offset_commit_naming_a_topic_twice_answers_every_refused_partition():
    def entry(*indexes):
        return {"name": "log", "partitions": [{"partition_index": i, "committed_offset": 5,
                                               "committed_leader_epoch": -1, "committed_metadata": None}
                                              for i in indexes]}

    req = build(request_type(8, 8), {"group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m",
                                     "group_instance_id": None, "topics": [entry(1, 8), entry(9)]})
    forward = groups.handle(ctx(), None, req).finish([COORDINATOR])
    answer = build(response_type(8, 8), {"topics": [{"name": "__fedkafka-shadow-log", "partitions": [
        {"partition_index": 1, "error_code": ErrorCode.none}]}]})
    out = forward.finish([answer])
    assert sorted((p.partition_index, p.error_code) for t in out.topics for p in t.partitions) == [
        (1, ErrorCode.none), (8, ErrorCode.unknown_topic_or_partition), (9, ErrorCode.unknown_topic_or_partition)]


class Missing(Physical):
    """c1 answers again but without the physical topic, which the controller does not create again (it held data,
    docs/DESIGN.md §9.3): the state docs/OPERATIONS.md "A cluster lost a topic's data" leaves after a failover."""

    def leader(self, cluster, topic, partition):
        return None if cluster == "c1" else 7

    def topic_id(self, cluster, topic):
        return None if cluster == "c1" else uuid.UUID(int=2)


def test_earliest_skips_a_sealed_segment_whose_cluster_answers_without_its_topic():
    """Give the data up (failover), reset the groups to earliest: earliest lands past the lost segment, not at its
    base, where no fetch would ever answer (its cluster names no leader for a topic it does not have)."""
    plan = list_offsets.handle(gap_ctx(Missing()), None, list_request((0, -2)))
    (p,) = plan.finish(list_answers(plan.calls, {("c2", 0, -2): (4, -1)})).topics[0].partitions
    assert p.error_code == ErrorCode.none and p.offset == 30 + GAP
    # a dead c1 (it may come back with its records) is still waited for: earliest stays at its segment
    plan = list_offsets.handle(gap_ctx(Physical(down={"c1"})), None, list_request((0, -2)))
    assert plan.finish(list_answers(plan.calls, {("c2", 0, -2): (4, -1)})).topics[0].partitions[0].offset == 0


def test_a_reader_at_the_lost_segment_base_is_moved_past_it():
    """A reader below the seal of a segment lost for good is moved to the next segment (it used to get
    NOT_LEADER_OR_FOLLOWER for ever); one on a cluster still active and not failed over from waits (the operator
    may restore the data: docs/OPERATIONS.md)."""
    plan = fetch.handle(gap_ctx(Missing()), None, fetch_request(("log", 0, 0)))
    (p,) = plan.responses[0].partitions  # answered at once: nothing to ask
    assert p.error_code == ErrorCode.none and partitions_first_offset(p) == 0 and skipped_to(p) == 30 + GAP
    chain = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, None, 30)))
    moved = dataclasses.replace(FAILED_VIEW, topics={"log": LogicalTopic("log", uuid.uuid4().hex, (chain,))})
    context = Context(view=moved, me=moved.proxies[0], advertised={}, physical=Missing(), producer_ids=None)
    (p,) = fetch.handle(context, None, fetch_request(("log", 0, 0))).responses[0].partitions
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records
    given_up = dataclasses.replace(moved, clusters={**moved.clusters, "c1": Cluster("c1", "c1:9092",
                                                                                    ClusterState.READ_ONLY)})
    context = Context(view=given_up, me=moved.proxies[0], advertised={}, physical=Missing(), producer_ids=None)
    (p,) = fetch.handle(context, None, fetch_request(("log", 0, 0))).responses[0].partitions
    assert p.error_code == ErrorCode.none and skipped_to(p) == 30
