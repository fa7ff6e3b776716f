"""DeleteRecords across unclean gaps, segments lost for good and below the log start, and OffsetForLeaderEpoch of
the undefined epoch, answered as Kafka 4.x answers them (low watermark = the partition's logical log start, the one
ListOffsets EARLIEST answers; epoch -1: (-1, -1)).

Handlers are driven as pure functions over a view built here; the physical brokers are modelled by `Brokers`, which
answers DeleteRecords and ListOffsets as a Kafka broker does for a partition with a log start and a high watermark.
"""

from __future__ import annotations

import uuid

from kio.schema.errors import ErrorCode
from proxy.test_admin_handlers import chain_view, records_req
from proxy.test_handlers import ctx as admin_ctx

from consume.test_handlers_unit import GAP, Physical, Restarting, gap_ctx, list_request
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import delete_records, list_offsets, offset_for_leader_epoch
from fedkafka.proxy.plan import Plan

C1_TAIL_END = 37  # c1 came back holding physical 30..36: records past the last end the controller knew (30)


class Brokers:
    """Physical partitions as {(cluster, topic, partition): [log start, high watermark]}, answering as Kafka does:
    DeleteRecords to -1 deletes to the high watermark, past it is OFFSET_OUT_OF_RANGE, below the log start a no-op;
    ListOffsets EARLIEST is the log start, LATEST the high watermark."""

    def __init__(self, logs: dict[tuple[str, str, int], list[int]]):
        self.logs = logs

    def delete(self, call):
        if call.request.__api_key__ == 2:  # a DeleteRecords past an unclean gap reads the tail's high watermark
            return self.list_offsets(call)
        partitions = []
        for t in call.request.topics:
            for p in t.partitions:
                log = self.logs[(call.target.cluster, t.name, p.partition_index)]
                offset = log[1] if p.offset == -1 else p.offset
                if offset > log[1] or offset < 0:
                    partitions.append((t.name, p.partition_index, ErrorCode.offset_out_of_range, -1))
                    continue
                log[0] = max(log[0], offset)
                partitions.append((t.name, p.partition_index, ErrorCode.none, log[0]))
        return build(response_type(21, 2), {"topics": [
            {"name": name, "partitions": [{"partition_index": i, "error_code": code, "low_watermark": low}
                                          for n, i, code, low in partitions if n == name]}
            for name in dict.fromkeys(n for n, *_ in partitions)]})

    def answer(self, call):
        """The answer to a DeleteRecords or a ListOffsets call."""
        return (self.delete if isinstance(call.request, request_type(21, 2)) else self.list_offsets)(call)

    def list_offsets(self, call):
        return build(response_type(2, 7), {"topics": [{"name": t.name, "partitions": [
            {"partition_index": p.partition_index, "error_code": ErrorCode.none, "timestamp": -1,
             "offset": self.logs[(call.target.cluster, t.name, p.partition_index)][0 if p.timestamp == -2 else 1]}
            for p in t.partitions]} for t in call.request.topics]})


def run(answer_plan, answer_call):
    while isinstance(answer_plan, Plan):
        answer_plan = answer_plan.finish([answer_call(c) for c in answer_plan.calls])
    return answer_plan


def failed_over_brokers() -> Brokers:
    """FAILED (tests/consume/test_handlers_unit.py): c1's segment sealed at 30 and followed by the unclean gap, c1
    back with its tail 30..36 (read inside the gap, logical 30..36); c2's active segment from physical 4, log end 10
    (logical 30 + GAP .. 36 + GAP)."""
    return Brokers({("c1", "t", 0): [0, C1_TAIL_END], ("c2", "t", 0): [0, 10]})


def test_delete_records_inside_the_tail_of_an_unclean_gap_deletes_up_to_the_offset():
    """DeleteRecords before logical 33, inside the tail c1 came back with (logical 30..36 = physical 30..36 on c1):
    as Kafka, the records before 33 are deleted and the answer's low watermark is 33."""
    brokers = failed_over_brokers()
    resp = run(delete_records.handle(gap_ctx(Physical()), None, records_req({0: 33}, topic="log")), brokers.answer)
    (p,) = resp.topics[0].partitions
    assert (p.error_code, p.low_watermark) == (ErrorCode.none, 33)
    assert brokers.logs[("c1", "t", 0)][0] == 33  # records 30..32 of the tail are gone


def test_delete_records_past_an_unclean_gap_leaves_nothing_of_the_tail_readable():
    """DeleteRecords before logical 32 + GAP (in c2's active segment) with c1 back holding its tail in the gap:
    every record before 32 + GAP is deleted, so ListOffsets EARLIEST answers 32 + GAP, the low watermark the
    DeleteRecords answered, and a reader reset to earliest reads none of c1's tail."""
    brokers = failed_over_brokers()
    resp = run(delete_records.handle(gap_ctx(Physical()), None, records_req({0: 32 + GAP}, topic="log")),
               brokers.delete)
    (p,) = resp.topics[0].partitions
    assert (p.error_code, p.low_watermark) == (ErrorCode.none, 32 + GAP)
    earliest = run(list_offsets.handle(gap_ctx(Physical()), None, list_request((0, -2))), brokers.list_offsets)
    (p,) = earliest.topics[0].partitions
    assert (p.error_code, p.offset) == (ErrorCode.none, 32 + GAP)


def test_offset_for_leader_epoch_of_the_undefined_epoch_is_undefined():
    """OffsetForLeaderEpoch for leader epoch -1 (UNDEFINED_EPOCH) answers (-1, -1), as Kafka's broker does
    (`LeaderEpochFileCache.endOffsetFor`): no epoch, no end offset to compare a position with."""
    req = build(request_type(23, 4), {"replica_id": -1, "topics": [{"topic": "log", "partitions": [
        {"partition": 0, "current_leader_epoch": -1, "leader_epoch": -1}]}]})
    brokers = failed_over_brokers()
    resp = run(offset_for_leader_epoch.handle(gap_ctx(Physical()), None, req), brokers.list_offsets)
    (p,) = resp.topics[0].partitions
    assert (p.error_code, p.leader_epoch, p.end_offset) == (ErrorCode.none, -1, -1)


def test_delete_records_past_a_segment_lost_for_good_deletes_and_answers_the_low_watermark():
    """c1 came back without the physical topic after the partition failed over from it: its segment is lost for
    good (`proxy.plan.lost_for_good`; reads move past it, EARLIEST skips it). DeleteRecords before 32 + GAP deletes
    c2's records before physical 6 and answers low watermark 32 + GAP with no error: nothing of c1's segment is
    left to delete, so it is no reason to refuse, and asked again the answer would be the same, for good."""
    brokers = Brokers({("c2", "t", 0): [0, 10]})
    resp = run(delete_records.handle(gap_ctx(Restarting(knows_topic=False)), None,
                                     records_req({0: 32 + GAP}, topic="log")), brokers.delete)
    (p,) = resp.topics[0].partitions
    assert (p.error_code, p.low_watermark) == (ErrorCode.none, 32 + GAP)
    assert brokers.logs[("c2", "t", 0)][0] == 6


def test_delete_records_below_the_log_start_answers_the_logical_log_start():
    """chain_view's p0: c1/old 0..49 sealed (logical 0..49), c2/phys from physical 10 (logical 50..), log end 40.
    Records before 70 were deleted (c1/old emptied, c2/phys from 30). DeleteRecords before 20 deletes nothing more
    and answers, as Kafka does, the partition's log start: low watermark 70, the offset ListOffsets EARLIEST
    answers, not 50 (records 50..69 are gone)."""
    brokers = Brokers({("c1", "old", 0): [50, 50], ("c2", "phys", 0): [30, 40]})
    resp = run(delete_records.handle(admin_ctx(chain_view()), None, records_req({0: 20})), brokers.delete)
    (p,) = resp.topics[0].partitions
    earliest = run(list_offsets.handle(admin_ctx(chain_view()), None, build(request_type(2, 7), {
        "replica_id": -1, "isolation_level": 0, "topics": [{"name": "t", "partitions": [
            {"partition_index": 0, "current_leader_epoch": -1, "timestamp": -2}]}]})), brokers.list_offsets)
    assert earliest.topics[0].partitions[0].offset == 70
    assert (p.error_code, p.low_watermark) == (ErrorCode.none, 70)



class Back(Physical):
    """c1 answers again with its physical topic, holding the tail of FAILED's first segment."""

    def topic_id(self, cluster, topic):
        return uuid.UUID(int=1)


def test_delete_records_inside_an_unclean_gap_past_its_tail_empties_the_tail():
    """DeleteRecords before logical 40, inside the gap but past the tail c1 came back with (logical 30..36): below the
    partition's high watermark, so not OFFSET_OUT_OF_RANGE, though c1's broker answers that for physical 40. The
    whole tail is deleted, and the low watermark is the log start ListOffsets EARLIEST then answers: c2's first
    record, 30 + GAP (physical 4; nothing of c2's segment deleted)."""
    brokers = failed_over_brokers()
    resp = run(delete_records.handle(gap_ctx(Back()), None, records_req({0: 40}, topic="log")), brokers.delete)
    (p,) = resp.topics[0].partitions
    assert (p.error_code, p.low_watermark) == (ErrorCode.none, 30 + GAP)
    assert brokers.logs[("c1", "t", 0)][0] == C1_TAIL_END  # nothing of the tail is left
    assert brokers.logs[("c2", "t", 0)][0] == 4
    earliest = run(list_offsets.handle(gap_ctx(Back()), None, list_request((0, -2))), brokers.list_offsets)
    assert earliest.topics[0].partitions[0].offset == 30 + GAP
