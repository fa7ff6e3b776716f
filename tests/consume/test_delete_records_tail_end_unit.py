"""DeleteRecords past an unclean gap empties the older segment's tail only as far as the tail is known to reach
(`delete_records._tail_end`, docs/DESIGN.md §5.8), never to the partition's high watermark at the time of the
deletion: a move back to the tail's physical partition (A -> B -> A, which reuses it from its log end, §4.13 point 5)
that the chain planned with does not know of may have written there since.

FAILED (tests/consume/test_handlers_unit.py): c1's segment sealed at 30, the unclean gap, c2 active from physical 4;
c1 came back holding its tail, physical 30..36. Driven with the `Brokers` model of
tests/consume/test_delete_records_and_epoch_edges_unit.py (no broker).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from kio.schema.errors import ErrorCode
from proxy.test_admin_handlers import records_req

from consume.test_delete_records_and_epoch_edges_unit import Brokers, run
from consume.test_handlers_unit import FAILED, FAILED_VIEW, GAP, Physical, gap_ctx
from fedkafka.proxy.handlers import delete_records
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment, View

TAIL_END = 37  # c1/t/0's log end when c1 came back: its tail is physical 30..36
C2_END = 10  # c2's segment: physical 4..9
MOVED_BACK_END = 45  # c1/t/0 once the partition moved back there: the new segment's records are physical 37..44
DELETED_BEFORE = 32 + GAP  # in c2's segment: physical 6


class _Back(Physical):
    """c1 answers again, with its physical topic."""

    def topic_id(self, cluster, topic):
        return uuid.UUID(int=1)


@dataclass
class _Live:
    """The proxy's state now (`plan.LiveState`)."""

    view: View
    valid: bool = True

    def lease_valid(self) -> bool:
        return self.valid


def _with_chain(chain: PartitionChain, version: int) -> View:
    topic = FAILED_VIEW.topics["log"]
    return dataclasses.replace(FAILED_VIEW, version=version,
                               topics={"log": LogicalTopic("log", topic.topic_id, (chain,))})


FROZEN_VIEW = _with_chain(dataclasses.replace(FAILED, frozen=True), FAILED_VIEW.version + 1)
MOVED_BACK_VIEW = _with_chain(PartitionChain(segments=(
    *FAILED.segments[:1],
    Segment("c2", "t", 0, 4, C2_END, 30 + GAP),
    Segment("c1", "t", 0, TAIL_END, None, 30 + GAP + (C2_END - 4)),
), leader_epoch=2), FAILED_VIEW.version + 2)


def _brokers() -> Brokers:
    return Brokers({("c1", "t", 0): [0, TAIL_END], ("c2", "t", 0): [0, C2_END]})


def _is_list_offsets(call) -> bool:
    return call.request.__api_key__ == 2


def test_a_move_back_published_while_the_tail_is_emptied_keeps_the_new_segment_s_records():
    """The tail's high watermark (37) is read under FAILED_VIEW; then, before the deletion reaches c1, the partition
    moves back to c1/t/0 (from its log end, 37) and producers write physical 37..44 there. The deletion of c1/t/0 is
    to the high watermark read, 37: the tail goes, every record of the new segment stays."""
    brokers, ctx = _brokers(), gap_ctx(_Back())

    def answer(call):
        if call.target.cluster == "c1" and not _is_list_offsets(call):  # the deletion of c1/t/0, late
            ctx.live = _Live(MOVED_BACK_VIEW)
            brokers.logs[("c1", "t", 0)][1] = MOVED_BACK_END
        return brokers.delete(call)

    resp = run(delete_records.handle(ctx, None, records_req({0: DELETED_BEFORE}, topic="log")), answer)
    (p,) = resp.topics[0].partitions
    assert (p.error_code, p.low_watermark) == (ErrorCode.none, DELETED_BEFORE)
    assert brokers.logs[("c1", "t", 0)][0] == TAIL_END  # the tail is gone, physical 37..44 are not
    assert brokers.logs[("c2", "t", 0)][0] == 6


def test_a_proxy_behind_the_publish_of_a_move_back_deletes_nothing_past_the_tail():
    """The proxy serves the view a move back to c1 froze the partition in (it acked it; the move then published and
    producers wrote physical 37..44 on c1/t/0, which this proxy does not know yet). Its chain cannot tell the tail's
    end from the new segment's records: c1/t/0 is not touched, and the client is answered NOT_LEADER_OR_FOLLOWER
    (retriable: asked again under the published view, the tail ends at the new segment's start)."""
    brokers = Brokers({("c1", "t", 0): [0, MOVED_BACK_END], ("c2", "t", 0): [0, C2_END]})
    ctx = dataclasses.replace(gap_ctx(_Back()), view=FROZEN_VIEW)
    resp = run(delete_records.handle(ctx, None, records_req({0: DELETED_BEFORE}, topic="log")), brokers.delete)
    (p,) = resp.topics[0].partitions
    assert p.error_code == ErrorCode.not_leader_or_follower
    assert brokers.logs[("c1", "t", 0)][0] == 0
    published = dataclasses.replace(gap_ctx(_Back()), view=MOVED_BACK_VIEW)
    again = run(delete_records.handle(published, None, records_req({0: DELETED_BEFORE}, topic="log")), brokers.delete)
    assert again.topics[0].partitions[0].error_code == ErrorCode.none
    assert brokers.logs[("c1", "t", 0)][0] == TAIL_END


def test_a_partition_frozen_while_its_tail_s_high_watermark_is_read_is_not_emptied_past_its_tail():
    """While c1/t/0's high watermark is read, a move of the partition freezes it (the proxy acks the frozen view) and
    may publish a segment on c1/t/0 before the answer is used: that high watermark is not trusted. Nothing of c1/t/0
    is deleted; NOT_LEADER_OR_FOLLOWER, retriable."""
    brokers, ctx = _brokers(), gap_ctx(_Back())

    def answer(call):
        if _is_list_offsets(call):
            ctx.live = _Live(FROZEN_VIEW)
            brokers.logs[("c1", "t", 0)][1] = MOVED_BACK_END
        return brokers.delete(call)

    resp = run(delete_records.handle(ctx, None, records_req({0: DELETED_BEFORE}, topic="log")), answer)
    assert resp.topics[0].partitions[0].error_code == ErrorCode.not_leader_or_follower
    assert brokers.logs[("c1", "t", 0)][0] == 0


def test_a_fence_that_ran_out_while_the_tail_s_high_watermark_was_read_deletes_nothing_there():
    """Past its fence the controller no longer waits for this proxy's acks (docs/DESIGN.md §4.9, F4): a move back to
    c1/t/0 may have published and been written to while the high watermark was read. Nothing of c1/t/0 is deleted."""
    brokers, ctx = _brokers(), gap_ctx(_Back())

    def answer(call):
        if _is_list_offsets(call):
            ctx.live = _Live(FAILED_VIEW, valid=False)
            brokers.logs[("c1", "t", 0)][1] = MOVED_BACK_END
        return brokers.delete(call)

    resp = run(delete_records.handle(ctx, None, records_req({0: DELETED_BEFORE}, topic="log")), answer)
    assert resp.topics[0].partitions[0].error_code == ErrorCode.not_leader_or_follower
    assert brokers.logs[("c1", "t", 0)][0] == 0
