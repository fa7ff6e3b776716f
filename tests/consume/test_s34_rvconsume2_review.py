"""Review s34-rvconsume2 of the consume path after s34-fixrvf1 (07bc61e: fetch fairness owed per (broker, partition,
offset)) and s34-fixrvf23 (351249e: a hole inside the logical log skipped forward; OFFSET_OUT_OF_RANGE only below the
logical log start, `physical_offsets.logical_log_start` read by Fetch and ListOffsets EARLIEST alike). Each of the
reviewer's three tests was a strict xfail showing a defect on the code it was written against (fixed by
s34-fixrvconsume2); the two after them guard the fixes' other side."""

from __future__ import annotations

import uuid

from kio.schema.errors import ErrorCode

from consume.test_gap_tail_bounds_unit import AGAIN_VIEW
from consume.test_handlers_unit import GAP, list_answers
from consume.test_holes_in_the_logical_log_unit import MOVED_VIEW, Brokers, _consume, _earliest, _fetch
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

# c3 held the partition first (logical and physical 0..9), it moved cleanly to c1 (physical 0..29 = logical 10..39,
# sealed at 30), then cleanly to c2 (active, physical 0 on = logical 40 on).
CUT = PartitionChain(segments=(Segment("c3", "t", 0, 0, 10, 0), Segment("c1", "t", 0, 0, 30, 10),
                               Segment("c2", "t", 0, 0, None, 40)), leader_epoch=2)
CUT_VIEW = View(version=5, clusters={c: Cluster(c, f"{c}:9092") for c in ("c1", "c2", "c3")},
                topics={"log": LogicalTopic("log", uuid.uuid4().hex, (CUT,))}, coordination_cluster="c2",
                proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.BOTH),))


def test_a_hole_skip_does_not_land_a_reader_on_a_sealed_segment_s_empty_log_for_good():
    """CUT: c1's log was cut at 20 (an unclean election inside c1 after the move off it, docs/DESIGN.md §9.3) and
    retention then emptied it (log start 20 = high watermark 20); c3 keeps 0..9, c2 holds 40..44. ListOffsets
    EARLIEST skips c1's segment (its log start reached its log end: nothing left in it). A reader from 0 reads
    0..9, is answered OFFSET_OUT_OF_RANGE by c1 at 10 (physical 0, below 20); the bounds round finds c3's records
    before the position and skips the hole to c1's log start, logical 30 (`_past_the_hole`: "a sealed segment's
    empty log is not skipped past"). There c1 answers no records and high watermark 20 (Kafka answers an empty read
    at its log end, never OFFSET_OUT_OF_RANGE), the proxy answers no records and the seal (40) as high watermark, and
    the reader stays at 30 for every later Fetch: c2's records 40..44 are never read, and its lag never falls.
    Before 351249e the same reader was answered OFFSET_OUT_OF_RANGE at 10 and reset to 0 (a loop); the fix turned
    the loop into a stall, where EARLIEST (the same function's other reader) moves past the segment. A fix has to
    keep waiting through a high watermark that lags after a restart (Kafka clamps it to the log start: log start =
    high watermark < log end, the records there): the answers here cannot tell the two, the log end can (e.g.
    ListOffsets LATEST asked as the debugging replica, -2, answers the log end offset). Fixed: the bounds round asks
    the sealed segment's log end so (`physical_offsets.LOG_END`), and EARLIEST reads the same log end."""
    brokers = Brokers({"c3": (0, 10), "c1": (20, 20), "c2": (0, 5)})
    read, out_of_range = _consume(CUT_VIEW, brokers, 0, fetches=8)
    assert read == [*range(10), *range(40, 45)], (
        f"read {read} (OFFSET_OUT_OF_RANGE at {out_of_range}): the reader stalls at c1's empty log, "
        f"c2's 40..44 never read")


def test_a_reader_past_a_later_sealed_segment_s_lost_log_is_not_sent_back_to_earlier_records_in_a_loop():
    """AGAIN (c1 0..29, gap, c2 logical B1..B1+5, c1 again at physical 40..49 = logical B2..B2+9, second gap, c3 from
    B3): c1's data was lost and its physical topic created again by hand (docs/DESIGN.md §9.3, "With the topic
    created again by hand"): c1's partition is empty (log start 0, high watermark 0). §9.3 says such a reader "gets
    OFFSET_OUT_OF_RANGE and resets as its auto.offset.reset says; earliest skips S (its partition's log end is at
    or below S's start), so the reset lands past it". ListOffsets EARLIEST skips both c1 segments, but c2's records
    are left before the second one: it answers B1. A group at B2 (c1's physical 40, past its log end 0) is answered
    OFFSET_OUT_OF_RANGE (the bounds round: position past the log end, not in a gap), resets to B1, reads c2's six
    records, reaches B2 again: OFFSET_OUT_OF_RANGE again, for good. c3's records are never read and c2's are
    delivered again at every turn (a busy loop: each OFFSET_OUT_OF_RANGE ends the Fetch's wait). This contradicts
    351249e's own rule, "OFFSET_OUT_OF_RANGE only below the partition's logical log start"; Kafka never answers it
    between the log start and the log end. It was the same before 351249e (the broker's OFFSET_OUT_OF_RANGE passed
    through on a segment after the chain's first). Fixed: past a sealed log's end with the logical log start at or
    below the position, the reader is moved to the segment's end (here the second gap's end, B3)."""
    b1 = 30 + GAP
    b2, b3 = b1 + 6, 46 + 2 * GAP
    brokers = Brokers({"c1": (0, 0), "c2": (4, 10), "c3": (0, 5)})
    assert _earliest(AGAIN_VIEW, brokers) == b1
    read, out_of_range = _consume(AGAIN_VIEW, brokers, b2, fetches=10)
    assert len(out_of_range) <= 1 and read[-5:] == list(range(b3, b3 + 5)), (
        f"from B2: OFFSET_OUT_OF_RANGE at {[o - b1 for o in out_of_range]} (relative to B1), read "
        f"{[o - b1 for o in read]} (relative to B1): c2's records again and again, c3's never")


def test_a_hole_skip_on_the_active_segment_answers_the_partition_s_high_watermark_not_the_landing():
    """MOVED (c3 0..9, then c1 active from logical 10); retention on c1 moved its log start to 5 (logical 15), c1's
    high watermark is 10 (logical 20). A reader at 10 is answered the hole skip: empty batches 10..14. The answer's
    high watermark is 15, where the reader lands, not 20 (its last stable offset too; that one the bounds
    round, read_uncommitted, does not tell): a Java consumer's currentLag()
    and records-lag read 0, kafka-python's highwater() 15, with five records left, until the next Fetch. The bounds
    round had asked c1's high watermark (ListOffsets LATEST, isolation 0) for this very answer. Low: it lasts one
    Fetch; an unclean gap's skip has no such bound at hand (the next segment is not asked). Fixed: the skip answers
    the segment's logical high watermark the bounds round read (the last stable offset stays the landing, a lower
    bound: Kafka's is never below its log start)."""
    p = _fetch(MOVED_VIEW, Brokers({"c3": (0, 10), "c1": (5, 10)}), 10)
    assert p.error_code == ErrorCode.none and p.records
    assert p.high_watermark == 20, f"the hole skip to 15 answers high watermark {p.high_watermark}"


class LaggingBrokers(Brokers):
    """Brokers whose partitions also have a log end (`log_ends`; the high watermark when not given): ListOffsets
    LATEST asked as the debugging replica (-2) answers it, as Kafka's broker does."""

    def __init__(self, logs: dict[str, tuple[int, int]], log_ends: dict[str, int]):
        super().__init__(logs)
        self.log_ends = log_ends

    def answer(self, call):
        cluster = call.target.cluster
        if call.request.__api_key__ == 2 and call.request.replica_id == -2:
            return list_answers([call], {(cluster, 0, -1): (self.log_ends.get(cluster, self.logs[cluster][1]), -1)})[0]
        return super().answer(call)


def test_a_hole_skip_waits_on_a_sealed_segment_whose_high_watermark_lags_its_log_end_and_earliest_agrees():
    """CUT, c1 just restarted: its log start 20 = high watermark 20 (clamped), its log end 30 (the records 20..29 are
    there, the followers catching up). The reader from 0 reads c3's 0..9, skips the hole to c1's log start (logical
    30) and waits there (no records, no error), not past c1's records; once the high watermark is back it reads
    30..39, then c2's. With c3's records gone too, the logical log start is c1's log start: ListOffsets EARLIEST
    answers 30, where Fetch waits (it skipped c1's segment: its log start at the high watermark read as an emptied
    log, and a reset reader passed c1's records), and a reader at 10 is answered OFFSET_OUT_OF_RANGE and reset
    there."""
    lagging = LaggingBrokers({"c3": (0, 10), "c1": (20, 20), "c2": (0, 5)}, {"c1": 30})
    assert _consume(CUT_VIEW, lagging, 0, fetches=4) == ([*range(10)], [])
    lagging.logs["c1"] = (20, 30)  # the followers caught up
    assert _consume(CUT_VIEW, lagging, 30, fetches=3) == ([*range(30, 45)], [])
    lagging = LaggingBrokers({"c3": (10, 10), "c1": (20, 20), "c2": (0, 5)}, {"c1": 30})
    assert _earliest(CUT_VIEW, lagging) == 30
    assert _consume(CUT_VIEW, lagging, 10, fetches=3) == ([], [10])


def test_a_reader_past_the_first_sealed_segment_s_log_end_moves_to_its_seal_while_records_before_it_are_left():
    """MOVED: c3's log was cut at 5 (an unclean election inside c3 after the move off it). A reader at 7 (past c3's
    log end, below its seal at 10; Kafka answers OFFSET_OUT_OF_RANGE only past its log end, so 5..9 are gone) is
    moved to the seal and reads c1's records; it was answered OFFSET_OUT_OF_RANGE (the chain's first segment passed
    the broker's answer through), the reset to 0 re-read 0..4 and sat at 5 on empty answers. The active segment
    past its log end is still OFFSET_OUT_OF_RANGE, as from Kafka
    (`test_holes_in_the_logical_log_unit.py::test_a_position_past_the_active_log_end_is_answered_out_of_range`)."""
    assert _consume(MOVED_VIEW, Brokers({"c3": (0, 5), "c1": (0, 10)}), 7, fetches=3) == ([*range(10, 20)], [])
