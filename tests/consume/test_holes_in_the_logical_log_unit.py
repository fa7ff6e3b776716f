"""Holes inside a logical partition (docs/DESIGN.md §9.2, "Below a log start"): a segment whose physical log start
moved past records (retention or DeleteRecords on its cluster) while an earlier segment still holds records is read
as Kafka reads a compacted range, skipped forward to the first offset left, never answered OFFSET_OUT_OF_RANGE (the
client's reset would go back to the earlier records and meet the hole again, for good). Only a position below the
logical log start (ListOffsets EARLIEST's answer, read by the same code) is answered OFFSET_OUT_OF_RANGE, and the
reset lands where Fetch reads."""

from __future__ import annotations

import uuid

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import GAP, Physical, batch, fetch_answer, fetch_request, list_answers, list_request
from consume.test_handlers_unit import partitions as answered_partitions
from consume.test_s34_rvf23_review import HOLE_VIEW, read_batches
from consume.test_s34_rvfetch_review import _kafka_out_of_range
from fedkafka.proxy.handlers import fetch, list_offsets
from fedkafka.proxy.plan import Context, Plan
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

EARLIEST, LATEST = -2, -1

# c3 held the partition first (logical and physical 0..9), it moved cleanly to c1, active since (physical 0 on =
# logical 10 on).
MOVED = PartitionChain(segments=(Segment("c3", "t", 0, 0, 10, 0), Segment("c1", "t", 0, 0, None, 10)), leader_epoch=1)
MOVED_VIEW = View(version=3, clusters={c: Cluster(c, f"{c}:9092") for c in ("c1", "c3")},
                  topics={"log": LogicalTopic("log", uuid.uuid4().hex, (MOVED,))}, coordination_cluster="c1",
                  proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.BOTH),))


class Brokers:
    """Each cluster's partition as Kafka's broker answers it, given its (log start, high watermark): a Fetch below
    the log start or past the end OFFSET_OUT_OF_RANGE, else its records; ListOffsets EARLIEST / LATEST those."""

    def __init__(self, logs: dict[str, tuple[int, int]]):
        self.logs = logs

    def answer(self, call):
        cluster = call.target.cluster
        start, end = self.logs[cluster]
        if call.request.__api_key__ == 2:
            return list_answers([call], {(cluster, 0, EARLIEST): (start, -1), (cluster, 0, LATEST): (end, -1)})[0]
        (asked,) = call.request.topics[0].partitions
        position = asked.fetch_offset
        if not start <= position <= end:
            return _kafka_out_of_range("t", 0)
        records = batch(position, end - position) if position < end else b""
        return fetch_answer("t", 0, records, hw=end, log_start=start)

    def run(self, answer):
        while isinstance(answer, Plan):
            answer = answer.finish([self.answer(c) for c in answer.calls])
        return answer


def _context(view: View) -> Context:
    return Context(view=view, me=view.proxies[0], advertised={}, physical=Physical(), producer_ids=None)


def _fetch(view: View, brokers: Brokers, position: int):
    return answered_partitions(brokers.run(fetch.handle(_context(view), None, fetch_request(("log", 0, position)))))[
        ("log", 0)]


def _earliest(view: View, brokers: Brokers) -> int:
    (p,) = brokers.run(list_offsets.handle(_context(view), None, list_request((0, EARLIEST)))).topics[0].partitions
    assert p.error_code == ErrorCode.none
    return p.offset


def _consume(view: View, brokers: Brokers, position: int, fetches: int = 10) -> tuple[list[int], list[int]]:
    """A consumer with auto.offset.reset=earliest from `position`: the offsets of the records it reads (in order,
    once per time read) and the positions it was answered OFFSET_OUT_OF_RANGE at (it then resets to EARLIEST)."""
    read: list[int] = []
    out_of_range: list[int] = []
    for _ in range(fetches):
        p = _fetch(view, brokers, position)
        if p.error_code == ErrorCode.offset_out_of_range:
            out_of_range.append(position)
            position = _earliest(view, brokers)
            continue
        assert p.error_code == ErrorCode.none, p.error_code
        position = read_batches(p.records, read, position)
    return read, out_of_range


def test_a_reader_from_the_beginning_skips_a_hole_below_a_later_segment_s_log_start_and_reads_every_record_once():
    """FAILED before: HOLE (c3 0..9, c1's segment logical 10..39 and its tail 40..46, c2 from 40 + GAP); retention
    on c1 moved its log start to 33 (logical 43). A reader from 0 reads c3's 0..9, then at 10 (c1's physical 0,
    below its log start, outside the gap) c1 answers OFFSET_OUT_OF_RANGE: the proxy asks the bounds and, c3's
    records being left before it, moves the reader to 43 (empty batches), as over a compacted range. It reads the
    tail's 43..46 and c2's records, each once, and is never answered OFFSET_OUT_OF_RANGE. The old code answered
    OFFSET_OUT_OF_RANGE at 10: the reset went back to 0, for good."""
    brokers = Brokers({"c3": (0, 10), "c1": (33, 37), "c2": (4, 9)})
    read, out_of_range = _consume(HOLE_VIEW, brokers, 0)
    assert (read, out_of_range) == ([*range(10), *range(43, 47), *range(40 + GAP, 45 + GAP)], [])
    assert _earliest(HOLE_VIEW, brokers) == 0  # the logical log starts at c3's records: 10..42 is a hole inside it


def test_a_gap_tail_emptied_whole_with_records_before_it_is_skipped():
    """HOLE, c1's log emptied to its high watermark (37, 37): a reader at 41 (in the gap) or at 10 (below the seal,
    c3's records before it) moves to the gap's end, then reads c2's records."""
    brokers = Brokers({"c3": (0, 10), "c1": (37, 37), "c2": (4, 9)})
    for position in (10, 41):
        read, out_of_range = _consume(HOLE_VIEW, brokers, position, fetches=3)
        assert (read, out_of_range) == ([*range(40 + GAP, 45 + GAP)], []), position


def test_below_the_logical_log_start_a_later_segment_answers_out_of_range_and_the_reset_lands_where_fetch_reads():
    """HOLE with c3's records gone too (its log 10..10): nothing is left below c1's log start (logical 43), which is
    then the logical log start. A reader at 10 or 41 is below it: OFFSET_OUT_OF_RANGE, as Kafka answers below a log
    start (a consumer with auto.offset.reset=none is told), and ListOffsets EARLIEST answers 43, where the reset
    reader reads the tail's records, then c2's, no record twice, no second OFFSET_OUT_OF_RANGE."""
    brokers = Brokers({"c3": (10, 10), "c1": (33, 37), "c2": (4, 9)})
    assert _earliest(HOLE_VIEW, brokers) == 43
    for position in (10, 41):
        read, out_of_range = _consume(HOLE_VIEW, brokers, position, fetches=4)
        assert (read, out_of_range) == ([*range(43, 47), *range(40 + GAP, 45 + GAP)], [position]), position


def test_a_hole_below_the_active_segment_s_log_start_is_skipped_when_an_older_segment_holds_records():
    """FAILED before: MOVED (c3 0..9, then c1 active from logical 10); retention on c1 (which holds far more of the
    partition) moved its log start to 5 (logical 15). A reader from 0 reads 0..9, skips 10..14 (gone) and reads
    15..19. The old code answered OFFSET_OUT_OF_RANGE at 10, and the reset went back to 0, for good."""
    brokers = Brokers({"c3": (0, 10), "c1": (5, 10)})
    assert _consume(MOVED_VIEW, brokers, 0) == ([*range(10), *range(15, 20)], [])
    brokers = Brokers({"c3": (10, 10), "c1": (5, 10)})  # nothing older left: 15 is the log start, 12 below it
    assert _consume(MOVED_VIEW, brokers, 12) == ([*range(15, 20)], [12])


def test_a_position_past_the_active_log_end_is_answered_out_of_range():
    """MOVED: a reader past the logical log end (20; c1's high watermark 10) is answered OFFSET_OUT_OF_RANGE, as
    Kafka answers past the log end, after the bounds round that tells it from a hole."""
    p = _fetch(MOVED_VIEW, Brokers({"c3": (0, 10), "c1": (0, 10)}), 25)
    assert (p.error_code, p.records) == (ErrorCode.offset_out_of_range, b"")


def test_the_bounds_round_is_bounded_as_the_fetch_s_own_calls():
    """The ListOffsets round after an OFFSET_OUT_OF_RANGE carries the Fetch's bound (its max_wait plus the margin)
    and counts as a client's wait, not the core's 40 s default: the client's request has long timed out by then."""
    plan = fetch.handle(_context(HOLE_VIEW), None, fetch_request(("log", 0, 41)))  # in the gap
    (fetch_call,) = plan.calls
    bounds = plan.finish([_kafka_out_of_range("t", 0)])
    assert isinstance(bounds, Plan) and bounds.calls
    assert {(c.timeout_s, c.client_timeout) for c in bounds.calls} == {(fetch_call.timeout_s, True)}
    assert fetch_call.timeout_s is not None and fetch_call.timeout_s < 40
