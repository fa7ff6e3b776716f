"""Review rv27: DeleteRecords across an unclean gap (commits ee7951d, bdd0e89) against a partition that moves back
to the physical partition of its gap's tail (A -> B -> A, docs/DESIGN.md §4.13 point 5) while the request is out.

A proxy acks a new view without waiting for its reads or DeleteRecords (it drains produce only, `plan.as_now`), so
a DeleteRecords planned with one view may see its later rounds answered after the partition moved on. Before the
fix an older segment was emptied up to its seal; now one followed by an unclean gap is emptied to its partition's
high watermark (-1, `delete_records.emptied_to`), which, with the chain of the view it was planned with, also takes
the records a newer segment of that physical partition was written since.

Driven with the `Brokers` model of tests/consume/test_delete_records_and_epoch_edges_unit.py (no broker).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from kio.schema.errors import ErrorCode
from proxy.test_admin_handlers import records_req

from consume.test_delete_records_and_epoch_edges_unit import Brokers, run
from consume.test_handlers_unit import FAILED_VIEW, GAP, Physical, gap_ctx, list_request
from fedkafka.proxy.handlers import delete_records, list_offsets
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment, View

TAIL_END = 37  # c1 came back holding physical 30..36 of its failed segment (read inside the gap, logical 30..36)
C2_SEAL = 10  # c2's segment (physical 4..9, logical 30 + GAP .. 35 + GAP) sealed when the partition moved back
MOVED_BACK_END = 45  # c1/t/0 after the move back: the new segment's records, physical 37..44


def _moved_back_view() -> View:
    """FAILED_VIEW after the partition moved back to c1: a new active segment on c1/t/0 from its log end (37)."""
    chain = PartitionChain(segments=(
        Segment("c1", "t", 0, 0, 30, 0),
        Segment("c2", "t", 0, 4, C2_SEAL, 30 + GAP),
        Segment("c1", "t", 0, TAIL_END, None, 30 + GAP + (C2_SEAL - 4)),
    ), leader_epoch=2)
    topic = FAILED_VIEW.topics["log"]
    return View(version=FAILED_VIEW.version + 2, clusters=FAILED_VIEW.clusters,
                topics={"log": LogicalTopic("log", topic.topic_id, (chain,))},
                coordination_cluster=FAILED_VIEW.coordination_cluster, proxies=FAILED_VIEW.proxies)


@dataclass
class _Live:
    """The proxy's state now (`plan.LiveState`)."""

    view: View

    def lease_valid(self) -> bool:
        return True


class _Back(Physical):
    def topic_id(self, cluster, topic):
        return uuid.UUID(int=1)


def test_delete_records_past_a_gap_keeps_the_records_of_a_segment_moved_back_onto_the_tails_partition():
    """The FAILED chain (c1 sealed at 30, unclean gap, c2 active from physical 4), c1 back with its tail 30..36.
    A client deletes the records before logical 32 + GAP (in c2's segment). While c2 answers the first round, the
    partition moves back to c1 (a new active segment on c1/t/0 from its log end 37; the proxy applies that view)
    and producers write physical 37..44 there. Expected: the second round empties c1's old segment and its tail
    (physical < 37) and nothing of the new segment, whose records are all above the offset the client deleted
    before. Found: c1/t/0 is deleted to its high watermark, 45: the 8 records just acked are gone."""
    brokers = Brokers({("c1", "t", 0): [0, TAIL_END], ("c2", "t", 0): [0, C2_SEAL]})
    ctx = gap_ctx(_Back())

    def answer(call):
        if call.target.cluster == "c2":  # while c2 answers the target's round, the move back publishes
            ctx.live = _Live(_moved_back_view())
            brokers.logs[("c1", "t", 0)][1] = MOVED_BACK_END
        return brokers.delete(call)

    resp = run(delete_records.handle(ctx, None, records_req({0: 32 + GAP}, topic="log")), answer)
    (p,) = resp.topics[0].partitions
    assert p.error_code == ErrorCode.none, p
    assert brokers.logs[("c1", "t", 0)][0] <= TAIL_END, (
        f"c1/t/0 deleted to {brokers.logs[('c1', 't', 0)][0]}: records of the segment moved back there "
        f"(physical {TAIL_END}..{MOVED_BACK_END - 1}, above the deleted offset 32 + GAP) are lost")


def test_delete_records_below_an_emptied_gap_tail_answers_the_log_start_earliest_answers():
    """c1 came back with its tail 30..36, which a DeleteRecords before 40 emptied (c1/t/0's log start is its high
    watermark, 37; EARLIEST answers c2's first record, 30 + GAP). A client then deletes the records before 20 (below
    the log start: nothing more to delete). Expected, as Kafka answers a deletion below the log start (and as the
    handler documents, "the partition's logical log start, what ListOffsets EARLIEST answers"): low watermark
    30 + GAP. Found: 37, a logical offset inside the gap holding no record and answered by no other API."""
    brokers = Brokers({("c1", "t", 0): [TAIL_END, TAIL_END], ("c2", "t", 0): [0, C2_SEAL]})
    earliest = run(list_offsets.handle(gap_ctx(_Back()), None, list_request((0, -2))), brokers.list_offsets)
    assert earliest.topics[0].partitions[0].offset == 30 + GAP
    resp = run(delete_records.handle(gap_ctx(_Back()), None, records_req({0: 20}, topic="log")), brokers.answer)
    (p,) = resp.topics[0].partitions
    assert (p.error_code, p.low_watermark) == (ErrorCode.none, 30 + GAP)
