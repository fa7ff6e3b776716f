"""DeleteRecords at exactly the end of the tail a failed-over cluster came back with (inside an unclean gap): every
record of the tail is deleted, so the partition's logical log start is the next segment's first record, and that is
the low watermark DeleteRecords answers, as Kafka answers its log start: what ListOffsets EARLIEST answers right
after.

Handlers are driven as pure functions over FAILED_VIEW (tests/consume/test_handlers_unit.py): c1's segment sealed at
30 and followed by the gap, c1 back holding physical 30..36 (its log end 37, logical 30..36 in the gap), c2's active
segment from physical 4 (logical 30 + GAP). The brokers are modelled by `Brokers`
(tests/consume/test_delete_records_and_epoch_edges_unit.py), answering DeleteRecords and ListOffsets as Kafka does.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode
from proxy.test_admin_handlers import records_req

from consume.test_delete_records_and_epoch_edges_unit import C1_TAIL_END, Back, Brokers, failed_over_brokers, run
from consume.test_handlers_unit import GAP, Physical, gap_ctx, list_request
from fedkafka.proxy.handlers import delete_records, list_offsets


def delete_then_earliest(physical, brokers: Brokers, offset: int) -> tuple[tuple[ErrorCode, int], int]:
    """DeleteRecords before logical `offset` of log/0, then ListOffsets EARLIEST: ((error, low watermark), earliest)."""
    deletion = delete_records.handle(gap_ctx(physical), None, records_req({0: offset}, topic="log"))
    resp = run(deletion, brokers.answer)
    (p,) = resp.topics[0].partitions
    earliest = run(list_offsets.handle(gap_ctx(physical), None, list_request((0, -2))), brokers.answer)
    return (p.error_code, p.low_watermark), earliest.topics[0].partitions[0].offset


def test_delete_records_at_the_end_of_a_gap_tail_answers_the_log_start_earliest_answers():
    """Before logical 37, the tail's end: c1's broker deletes 30..36 and answers 37, but nothing is left of the tail
    and EARLIEST answers c2's first record, 30 + GAP; so must DeleteRecords (it answered 37)."""
    for physical in (Physical(), Back()):
        brokers = failed_over_brokers()
        answered, earliest = delete_then_earliest(physical, brokers, C1_TAIL_END)
        assert brokers.logs[("c1", "t", 0)][0] == C1_TAIL_END  # nothing of the tail is left
        assert brokers.logs[("c2", "t", 0)][0] <= 4  # nothing of c2's segment (from physical 4) is deleted
        assert earliest == 30 + GAP
        assert answered == (ErrorCode.none, earliest)


def test_delete_records_inside_a_gap_tail_still_answers_the_offset():
    """Before logical 36, the tail's last record: that record is left, so the low watermark is 36, as EARLIEST
    answers after it."""
    brokers = failed_over_brokers()
    answered, earliest = delete_then_earliest(Physical(), brokers, 36)
    assert answered == (ErrorCode.none, 36) and earliest == 36
