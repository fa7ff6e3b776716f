"""Review s34-rvf23 of b64b7fc (s34-fixf23): an OFFSET_OUT_OF_RANGE inside an unclean gap read with the tail's log
bounds (`fetch._settle_out_of_range`, `_after_out_of_range`) and a tail the chain knows waited for (`_tail_known`).
Each test was a strict xfail showing a defect on the code it was written against (a consumer that misses records,
reads some again and again, or is stuck), fixed by s34-fixrvf23."""

from __future__ import annotations

import uuid

from kio.schema.errors import ErrorCode

from consume.test_gap_tail_bounds_unit import AGAIN_VIEW
from consume.test_handlers_unit import (
    GAP,
    Physical,
    batch,
    fetch_answer,
    fetch_request,
    gap_ctx,
    list_answers,
    list_request,
    partitions,
    skipped_to,
)
from consume.test_s34_rvfetch_review import _kafka_out_of_range
from fedkafka.protocol import records as rec
from fedkafka.proxy.handlers import fetch, list_offsets
from fedkafka.proxy.plan import Context, Plan
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

EARLIEST, LATEST = -2, -1


def _bounded(answer, values: dict):
    """The answer once every ListOffsets round is answered from `values` ((cluster, partition, ts) -> (offset, ts))."""
    while isinstance(answer, Plan):
        answer = answer.finish(list_answers(answer.calls, values))
    return answer


def read_batches(records: bytes | None, read: list[int], position: int) -> int:
    """A consumer reading a Fetch answer's `records`: every record's offset appended to `read` (once per time read),
    the next position (past the last batch, an empty one included) returned."""
    for head in rec.iter_batches(records or b""):
        if head.record_count:
            read.extend(range(head.base_offset, head.base_offset + head.last_offset_delta + 1))
        position = head.base_offset + head.last_offset_delta + 1
    return position


def _out_of_range_in_gap(context: Context, position: int, values: dict):
    """The client's answer for a Fetch at `position` (in c1's gap) that c1 answers OFFSET_OUT_OF_RANGE, its log
    bounds (the extra ListOffsets round) answered from `values`."""
    plan = fetch.handle(context, None, fetch_request(("log", 0, position)))
    (call,) = plan.calls
    assert call.target.cluster == "c1"
    return partitions(_bounded(plan.finish([_kafka_out_of_range("t", 0)]), values))[("log", 0)]


def test_a_reader_in_a_gap_whose_tail_was_emptied_whole_skips_the_gap_not_reset():
    """FAILED: c1's segment sealed at 30, the gap up to 30 + GAP, c1 came back with a tail 30..36 (high watermark 37).
    DeleteRecords through the proxy past the tail empties it to its high watermark (docs/DESIGN.md §5.5: "all of the
    tail when past its end"), or retention deleted it: c1's log start is 37, its high watermark 37. A group that had
    committed 31 fetches there: c1 answers OFFSET_OUT_OF_RANGE (below its log start), the proxy asks the bounds, and
    nothing of the tail is left at or after 31: docs/DESIGN.md §9.2 says "the gap is skipped only when nothing of the
    tail is left at or after the position (the log start at or past the tail's end ...)", and before b64b7fc it was
    skipped. The proxy answers OFFSET_OUT_OF_RANGE: with auto.offset.reset=latest the consumer jumps to the logical log
    end, past every record of c2's segment (30 + GAP on) it never read; with none, the consumer fails."""
    emptied = {("c1", 0, EARLIEST): (37, -1), ("c1", 0, LATEST): (37, -1)}
    p = _out_of_range_in_gap(gap_ctx(Physical()), 31, emptied)
    assert p.error_code == ErrorCode.none and p.records and skipped_to(p) == 30 + GAP, (
        f"the reader at 31 of an emptied tail is answered error {p.error_code!r}, not moved to the gap's end")


# c3 held the partition first (logical and physical 0..9), it moved cleanly to c1 (physical 0..29 = logical 10..39),
# c1 died (sealed at 30, logical 40), the gap up to 40 + GAP, c2 took the writes (physical 4 on). c1 came back with a
# tail 30..36 (logical 40..46); retention on c1 (retention.bytes: c1 holds far more of the partition than c3) or
# DeleteRecords on c1 itself moved c1's log start to 33 (logical 43): c1's part of the segment is gone, c3's is not.
HOLE = PartitionChain(segments=(Segment("c3", "t", 0, 0, 10, 0), Segment("c1", "t", 0, 0, 30, 10),
                                Segment("c2", "t", 0, 4, None, 40 + GAP)), leader_epoch=2)
HOLE_VIEW = View(version=7, clusters={c: Cluster(c, f"{c}:9092") for c in ("c1", "c2", "c3")},
                 topics={"log": LogicalTopic("log", uuid.uuid4().hex, (HOLE,))}, coordination_cluster="c2",
                 proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.BOTH),))
HOLE_LOGS = {"c3": (0, 10), "c1": (33, 37), "c2": (4, 9)}  # cluster -> physical (log start, high watermark)


def _upstream(call):
    """c3, c1 and c2 as Kafka's brokers answer (HOLE_LOGS): a Fetch below the log start or past the end
    OFFSET_OUT_OF_RANGE, else its records; ListOffsets EARLIEST / LATEST the log start / high watermark."""
    cluster = call.target.cluster
    start, end = HOLE_LOGS[cluster]
    if call.request.__api_key__ == 2:
        values = {(cluster, 0, EARLIEST): (start, -1), (cluster, 0, LATEST): (end, -1)}
        return list_answers([call], values)[0]
    (asked,) = call.request.topics[0].partitions
    position = asked.fetch_offset
    if not start <= position <= end:
        return _kafka_out_of_range("t", 0)
    return fetch_answer("t", 0, batch(position, end - position) if position < end else b"", hw=end, log_start=start)


def _consume_from(context: Context, position: int, fetches: int = 8) -> list[int]:
    """A consumer with auto.offset.reset=earliest reading from `position`: the offsets of the records it reads (in
    order, once per time read) over `fetches` Fetches, an OFFSET_OUT_OF_RANGE reset through ListOffsets EARLIEST."""
    read: list[int] = []
    for _ in range(fetches):
        answer = fetch.handle(context, None, fetch_request(("log", 0, position)))
        while isinstance(answer, Plan):
            answer = answer.finish([_upstream(c) for c in answer.calls])
        p = partitions(answer)[("log", 0)]
        if p.error_code == ErrorCode.offset_out_of_range:
            plan = list_offsets.handle(context, None, list_request((0, EARLIEST)))
            while isinstance(plan, Plan):
                plan = plan.finish([_upstream(c) for c in plan.calls])
            (reset,) = plan.topics[0].partitions
            assert reset.error_code == ErrorCode.none
            position = reset.offset
            continue
        assert p.error_code == ErrorCode.none, p.error_code
        position = read_batches(p.records, read, position)
    return read


def test_a_reader_below_the_tail_s_log_start_with_an_older_segment_left_reads_the_tail_not_a_reset_loop():
    """HOLE: a group committed logical 41 (c1's physical 31, in the gap) before c1's log start moved to 33. The
    consumer (auto.offset.reset=earliest) fetches 41: c1 answers OFFSET_OUT_OF_RANGE, the proxy asks c1's bounds
    (33, 37) and answers OFFSET_OUT_OF_RANGE, "as from Kafka" (docs/DESIGN.md §9.2: "earliest answers that log start,
    inside the gap, so no loop"). But the logical partition's earliest is not c1's log start: c3's segment still
    holds 0..9, so ListOffsets EARLIEST answers 0, below 41 (Kafka never answers OFFSET_OUT_OF_RANGE between the log
    start and the log end). The consumer re-reads 0..9, enters c1's segment at logical 10 (physical 0, below c1's
    log start): OFFSET_OUT_OF_RANGE, reset to 0, 0..9 again, forever. Records 43..46 (the tail left) and c2's are
    never read; 0..9 are delivered again at every turn. Before b64b7fc the reader at 41 was moved to 40 + GAP (43..46
    lost, but no loop)."""
    read = _consume_from(Context(view=HOLE_VIEW, me=HOLE_VIEW.proxies[0], advertised={}, physical=Physical(),
                                 producer_ids=None), 41)
    again = sorted({o for o in read if read.count(o) > 1})
    assert {43, 44, 45, 46} <= set(read) and not again, (
        f"the reader at 41 read {read}: the tail's records 43..46 {'read' if 43 in read else 'never read'}, "
        f"records read more than once: {again}")


def test_a_known_tail_whose_log_no_longer_holds_it_is_answered_as_records_below_the_seal_are():
    """AGAIN (c1 -> c2 -> c1 -> c3: the first gap's tail, physical 30..39, is known; c1 is read_only after the second
    failover). c1's data was lost and the operator created the physical topic again by hand (docs/DESIGN.md §9.3,
    "With the topic created again by hand"): c1 answers, its partition empty (log start 0, high watermark 0). A reader
    below c1's seal (20) is answered OFFSET_OUT_OF_RANGE (c1's answer, past its log end) and resets, as §9.3 says. A
    reader in the known tail (35) gets the same OFFSET_OUT_OF_RANGE from c1, the proxy asks the bounds (0, 0) and
    answers NOT_LEADER_OR_FOLLOWER: at every Fetch, for good (c1 answers with the topic: never `lost_for_good`). §9.2
    says the known tail is "waited for exactly as records below E_l are"; these are not. Consequence: the consumer
    never moves (the operator must reset its group by hand), and fetches in a busy loop: the in-gap
    OFFSET_OUT_OF_RANGE ends the Fetch's wait (`_answers_at_once`), so each Fetch costs c1 a Fetch and two
    ListOffsets and the client's other partitions lose their long poll."""
    again = Context(view=AGAIN_VIEW, me=AGAIN_VIEW.proxies[0], advertised={}, physical=Physical(), producer_ids=None)
    empty = {("c1", 0, EARLIEST): (0, -1), ("c1", 0, LATEST): (0, -1)}
    plan = fetch.handle(again, None, fetch_request(("log", 0, 20)))
    below_seal = partitions(_bounded(plan.finish([_kafka_out_of_range("t", 0)]), empty))[("log", 0)]
    assert below_seal.error_code == ErrorCode.offset_out_of_range  # the reader resets (docs/DESIGN.md §9.3)
    p = _out_of_range_in_gap(again, 35, empty)
    assert p.error_code == ErrorCode.offset_out_of_range or (p.records and skipped_to(p) == 30 + GAP), (
        f"the reader of the known tail at 35, whose records c1 no longer has, is answered {p.error_code!r} "
        "(no records): it fetches so for good")
