"""OffsetForLeaderEpoch naming one partition more than once, answered as Kafka 4.x answers it: every entry on its
own (`ReplicaManager.lastOffsetForLeaderEpoch` maps each requested partition to its answer, with no check for
duplicates), with the entry's own leader epoch and current leader epoch.

The handler is driven as a pure function over FAILED_VIEW (tests/consume/test_handlers_unit.py); the physical broker
answers ListOffsets as Kafka does, INVALID_REQUEST for every entry of a partition named more than once
(`ListOffsetsRequest.duplicatePartitions`).
"""

from __future__ import annotations

from collections import Counter

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import GAP, Physical, gap_ctx
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import offset_for_leader_epoch
from fedkafka.proxy.plan import Plan

C2_LOG_END = 10  # FAILED's active segment: c2/t/0 from physical 4, logical 30 + GAP


def list_log_ends(call):
    """c2's broker answering ListOffsets LATEST for t/0 (log end 10); a partition named twice is INVALID_REQUEST."""
    named = Counter((t.name, p.partition_index) for t in call.request.topics for p in t.partitions)
    return build(response_type(2, 7), {"topics": [{"name": t.name, "partitions": [
        {"partition_index": p.partition_index, "timestamp": -1,
         **({"error_code": ErrorCode.invalid_request, "offset": -1} if named[(t.name, p.partition_index)] > 1
            else {"error_code": ErrorCode.none, "offset": C2_LOG_END})}
        for p in t.partitions]} for t in call.request.topics]})


def epochs_request(*topics: list[tuple[int, int, int]]):
    """One topic entry "log" for each list of (partition, current leader epoch, leader epoch)."""
    return build(request_type(23, 4), {"replica_id": -1, "topics": [{"topic": "log", "partitions": [
        {"partition": p, "current_leader_epoch": current, "leader_epoch": epoch} for p, current, epoch in parts]}
        for parts in topics]})


def answered(request) -> list[tuple[int, int, int, int]]:
    plan = offset_for_leader_epoch.handle(gap_ctx(Physical(down={"c1"})), None, request)
    resp = plan.finish([list_log_ends(c) for c in plan.calls]) if isinstance(plan, Plan) else plan
    return [(p.partition, p.error_code, p.leader_epoch, p.end_offset) for t in resp.topics for p in t.partitions]


def test_a_partition_named_twice_is_answered_for_each_entry():
    """FAILED's leader epoch is 1. Partition 0 named twice, for epoch 0 and for epoch 5 (from the future): Kafka
    answers epoch 0 with its end (the log end, 36 + GAP) and epoch 5 with (-1, -1), each with no error."""
    assert answered(epochs_request([(0, 1, 0), (0, 1, 5)])) == [
        (0, ErrorCode.none, 0, 36 + GAP), (0, ErrorCode.none, -1, -1)]


def test_a_partition_named_in_two_topic_entries_is_answered_for_each_entry():
    """The same, with the topic named twice: each entry answered with its own current leader epoch, the stale one
    (0, older than the chain's 1) FENCED_LEADER_EPOCH, the other the end of its epoch."""
    assert answered(epochs_request([(0, 0, 1)], [(0, 1, 1)])) == [
        (0, ErrorCode.fenced_leader_epoch, -1, -1), (0, ErrorCode.none, 1, 36 + GAP)]
