"""DeleteRecords with its offset L inside the unclean gap that follows the segment holding it (the TARGET, not an
older segment) deletes on the target's partition only as far as the tail is known to reach (`delete_records._tail_end`,
docs/DESIGN.md §5.8), never to L's physical offset when the chain planned with does not know where the tail ends: a
move back to that physical partition (A -> B -> A, reusing it from its log end, §4.13 point 5) the chain does not
know of may have written there, above the tail, records that sit at logical offsets above L.

FAILED (tests/consume/test_handlers_unit.py): c1's segment sealed at 30, the unclean gap, c2 active from physical 4;
c1 came back holding its tail, physical 30..36. The move back to c1/t/0 places its segment at physical 37 (logical
36 + GAP); L = 40 (physical 40 on c1) is in the gap, past the tail. Driven with the `Brokers` model of
tests/consume/test_delete_records_and_epoch_edges_unit.py (no broker).
"""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode
from proxy.test_admin_handlers import records_req

from consume.test_delete_records_and_epoch_edges_unit import Brokers, run
from consume.test_delete_records_tail_end_unit import (
    C2_END,
    FROZEN_VIEW,
    MOVED_BACK_END,
    MOVED_BACK_VIEW,
    TAIL_END,
    _Back,
    _Live,
)
from consume.test_handlers_unit import GAP, Restarting, gap_ctx
from fedkafka.proxy.handlers import delete_records

IN_THE_GAP = 40  # logical 40 = physical 40 on c1: past the tail (30..36), inside the moved-back segment's records


def test_a_proxy_behind_the_publish_of_a_move_back_keeps_the_new_segment_s_records_below_the_gap_offset():
    """The proxy serves the view a move back to c1 froze the partition in (it acked it; the move published and
    producers wrote physical 37..44 on c1/t/0, logical 36 + GAP .., which this proxy does not know yet). A deletion
    before logical 40, in the gap after c1's segment, must not reach physical 40 on c1: records 37..39 are the new
    segment's, acked, far above L. Nothing is deleted on c1; NOT_LEADER_OR_FOLLOWER (retriable)."""
    brokers = Brokers({("c1", "t", 0): [0, MOVED_BACK_END], ("c2", "t", 0): [0, C2_END]})
    ctx = dataclasses.replace(gap_ctx(_Back()), view=FROZEN_VIEW)
    resp = run(delete_records.handle(ctx, None, records_req({0: IN_THE_GAP}, topic="log")), brokers.answer)
    assert brokers.logs[("c1", "t", 0)][0] <= TAIL_END, "the moved-back segment's acked records were deleted"
    assert brokers.logs[("c1", "t", 0)][0] == 0
    assert resp.topics[0].partitions[0].error_code == ErrorCode.not_leader_or_follower


def test_a_move_back_published_while_the_deletion_is_in_flight_keeps_the_new_segment_s_records():
    """Planned under FAILED_VIEW (unfrozen, no later segment on c1/t/0); before the first call to c1 is answered, or
    before the DeleteRecords reaches c1, the partition moves back there (from its log end, 37) and producers write
    physical 37..44. The deletion before logical 40 stops at the tail's end: the tail goes, every record of the new
    segment stays, and the low watermark is the log start EARLIEST answers under the published view: c2's first
    record, 30 + GAP (c1's tail is empty)."""
    for moves_at in ("first call to c1", "DeleteRecords to c1"):
        brokers, ctx = Brokers({("c1", "t", 0): [0, TAIL_END], ("c2", "t", 0): [0, C2_END]}), gap_ctx(_Back())

        def answer(call, moves_at=moves_at, brokers=brokers, ctx=ctx):
            deleting = call.request.__api_key__ == 21
            if call.target.cluster == "c1" and ctx.live is None and (deleting or moves_at == "first call to c1"):
                ctx.live = _Live(MOVED_BACK_VIEW)
                brokers.logs[("c1", "t", 0)][1] = MOVED_BACK_END
            return brokers.answer(call)

        resp = run(delete_records.handle(ctx, None, records_req({0: IN_THE_GAP}, topic="log")), answer)
        assert brokers.logs[("c1", "t", 0)][0] == TAIL_END, moves_at  # the tail is gone, physical 37..44 are not
        assert brokers.logs[("c2", "t", 0)][0] <= 4  # nothing of c2's segment (from physical 4) is deleted
        (p,) = resp.topics[0].partitions
        assert (p.error_code, p.low_watermark) == (ErrorCode.none, 30 + GAP), moves_at


def test_a_target_lost_for_good_passes_a_gap_offset_on_to_the_next_segment():
    """c1 came back without its physical topic (lost for good, never created again): a deletion before logical 40,
    in the gap after its segment, has nothing there to delete and nothing to wait for. It passes on to c2's segment,
    whose broker answers its log start, 30 + GAP, as it did before the tail's end was read first."""
    brokers = Brokers({("c2", "t", 0): [0, C2_END]})
    resp = run(delete_records.handle(gap_ctx(Restarting(knows_topic=False)), None,
                                     records_req({0: IN_THE_GAP}, topic="log")), brokers.answer)
    (p,) = resp.topics[0].partitions
    assert (p.error_code, p.low_watermark) == (ErrorCode.none, 30 + GAP)
    assert brokers.logs[("c2", "t", 0)][0] <= 4
