"""A reader inside an unclean gap (docs/DESIGN.md §9.2) is moved past it only when nothing of the tail is left at or
after its position: an OFFSET_OUT_OF_RANGE is read with the tail's log bounds (below the log start is not past the
end), and a tail the chain knows holds records (a later segment of the same physical partition) is waited for, as
records below a seal are, not skipped when its cluster blips or its high watermark lags after a restart."""

from __future__ import annotations

import uuid

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import (
    GAP,
    Physical,
    Restarting,
    fetch_answer,
    fetch_request,
    gap_ctx,
    list_answers,
    partitions,
    skipped_to,
)
from consume.test_s34_rvfetch_review import BACK_VIEW, _kafka_out_of_range
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import Context, Plan, UpstreamError
from fedkafka.view.model import Cluster, ClusterState, LogicalTopic, PartitionChain, Segment, View


def _answered(answer, values: dict | None = None):
    """The Fetch's answer to the client, ListOffsets rounds answered from `values` ((cluster, partition, ts) ->
    (offset, ts)); None: the client's answer came with no round to answer."""
    while isinstance(answer, Plan):
        assert values is not None, "asked the tail's log bounds"
        answer = answer.finish(list_answers(answer.calls, values))
    return answer


def _after_out_of_range(context: Context, position: int, values: dict | None):
    plan = fetch.handle(context, None, fetch_request(("log", 0, position)))
    (call,) = plan.calls
    assert call.target.cluster == "c1"
    return partitions(_answered(plan.finish([_kafka_out_of_range("t", 0)]), values))[("log", 0)]


def test_an_out_of_range_inside_the_gap_is_read_with_the_tail_s_log_start_and_end():
    """FAILED: c1's segment sealed at 30, the gap up to 30 + GAP. c1 answers OFFSET_OUT_OF_RANGE at 31, as Kafka does
    below its log start and past its log end alike: the proxy asks which (ListOffsets EARLIEST, LATEST). The old code
    skipped the gap for every one of these."""
    cases = [  # (log start, high watermark) -> the client's answer
        ((33, 37), "out of range"),  # DeleteRecords / retention moved the log start into the tail: the client resets
        ((0, 31), "skip"),  # past the log end: the tail ended below the position
        ((0, 20), "skip"),
        ((0, 37), "fetch again"),  # readable now (the log grew between the two answers): no records, no error
    ]
    for (start, end), want in cases:
        values = {("c1", 0, -2): (start, -1), ("c1", 0, -1): (end, -1)}
        p = _after_out_of_range(gap_ctx(Physical()), 31, values)
        if want == "skip":
            assert p.error_code == ErrorCode.none and skipped_to(p) == 30 + GAP, (start, end)
        elif want == "out of range":
            assert (p.error_code, p.records) == (ErrorCode.offset_out_of_range, b""), (start, end)
        else:
            assert (p.error_code, p.records) == (ErrorCode.none, b""), (start, end)


def test_an_out_of_range_inside_the_gap_whose_log_bounds_cannot_be_read_is_retried_not_skipped():
    """c1 answers the Fetch but not the ListOffsets (an error, or it became unreachable): which side of its log the
    position is on is not known, so the reader is not moved; NOT_LEADER_OR_FOLLOWER, and it fetches again."""
    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 31)))
    bounds = plan.finish([_kafka_out_of_range("t", 0)])
    assert isinstance(bounds, Plan)
    p = partitions(bounds.finish([UpstreamError("c1", "lost")] * len(bounds.calls)))[("log", 0)]
    assert (p.error_code, p.records) == (ErrorCode.not_leader_or_follower, b"")


def test_a_known_tail_below_its_log_start_or_past_its_log_end_is_skipped_while_records_before_it_are_left():
    """BACK: the chain knows c1's tail holds 30..39 (the move back to c1 began at 40). Its log start moved to 40 or
    past (DeleteRecords through the later segment): nothing of the tail is left, the reader at 31 skips the gap.
    An OFFSET_OUT_OF_RANGE at 35 with the high watermark at 33 is not a lag: Kafka's broker answers a fetch past
    the high watermark but within its log end with no records (LocalLog.read), OFFSET_OUT_OF_RANGE only past the log
    end, and a leader elected cleanly holds every replicated record. The log lost the tail (an unclean election):
    with c1's records 0..32 left before it (the logical log start, 0, below the position) the reader skips the gap,
    as a hole inside the logical log (docs/DESIGN.md §5.5, §9.2). It was answered OFFSET_OUT_OF_RANGE (review
    s34-rvconsume2 finding 1): the reset went back to 0, re-read 0..32 and sat at 33 on empty answers; before that,
    NOT_LEADER_OR_FOLLOWER at every Fetch, for good (review s34-rvf23 finding 3). With c1's partition emptied (the
    topic created again by hand: log start = log end = 0) nothing is left before the position: OFFSET_OUT_OF_RANGE,
    and earliest answers past it (c2's base). A high watermark that lags after a restart comes with an empty answer,
    not this, and is waited for
    (`test_a_known_tail_whose_restarted_cluster_s_high_watermark_still_lags_is_waited_for`)."""
    back = Context(view=BACK_VIEW, me=BACK_VIEW.proxies[0], advertised={}, physical=Physical(), producer_ids=None)
    p = _after_out_of_range(back, 31, {("c1", 0, -2): (40, -1), ("c1", 0, -1): (45, -1)})
    assert p.error_code == ErrorCode.none and skipped_to(p) == 30 + GAP
    p = _after_out_of_range(back, 35, {("c1", 0, -2): (0, -1), ("c1", 0, -1): (33, -1)})
    assert p.error_code == ErrorCode.none and skipped_to(p) == 30 + GAP
    p = _after_out_of_range(back, 35, {("c1", 0, -2): (0, -1), ("c1", 0, -1): (0, -1)})
    assert (p.error_code, p.records) == (ErrorCode.offset_out_of_range, b"")


def test_a_known_tail_whose_restarted_cluster_s_high_watermark_still_lags_is_waited_for():
    """BACK: c1 just restarted, its followers catching up: its high watermark (30) is still below the tail the chain
    knows (30..39), its log end (40, ListOffsets as the debugging replica) above. The reader at 30 gets no records and
    no error, and reads the tail once it is visible; the old code moved it past the gap (records 30..39 never read by
    it). A tail the chain does not know (FAILED) is still skipped
    there: it may not exist."""
    back = Context(view=BACK_VIEW, me=BACK_VIEW.proxies[0], advertised={}, physical=Physical(), producer_ids=None)
    plan = fetch.handle(back, None, fetch_request(("log", 0, 30)))
    bounds = plan.finish([fetch_answer("t", 0, b"", hw=30)])
    assert isinstance(bounds, Plan), "an empty answer at a known tail's high watermark asks its log end"
    p = partitions(bounds.finish([list_answers([call], {("c1", 0, -2): (0, -1), ("c1", 0, -1): (
        40 if call.request.replica_id == -2 else 30, -1)})[0] for call in bounds.calls]))[("log", 0)]
    assert (p.error_code, p.records) == (ErrorCode.none, b"")  # log end 40: the tail is there, the reader waits
    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 30)))
    p = partitions(plan.finish([fetch_answer("t", 0, b"", hw=30)]))[("log", 0)]
    assert skipped_to(p) == 30 + GAP


# BACK, then c1 failed over again (sealed at 50, its own tail in a second gap): the first gap's tail 30..39 is known
AGAIN = PartitionChain(segments=(Segment("c1", "t", 0, 0, 30, 0), Segment("c2", "t", 0, 4, 10, 30 + GAP),
                                 Segment("c1", "t", 0, 40, 50, 36 + GAP), Segment("c3", "t", 0, 0, None, 46 + 2 * GAP)),
                       leader_epoch=3)
AGAIN_VIEW = View(version=6, clusters={"c1": Cluster("c1", "c1:9092", ClusterState.READ_ONLY),
                                       "c2": Cluster("c2", "c2:9092"), "c3": Cluster("c3", "c3:9092")},
                  topics={"log": LogicalTopic("log", uuid.uuid4().hex, (AGAIN,))}, coordination_cluster="c2",
                  proxies=BACK_VIEW.proxies)


def _again(physical) -> Context:
    return Context(view=AGAIN_VIEW, me=AGAIN_VIEW.proxies[0], advertised={}, physical=physical, producer_ids=None)


def _answered_at_once(context: Context, position: int):
    answer = fetch.handle(context, None, fetch_request(("log", 0, position)))
    assert not isinstance(answer, Plan), "asked a cluster the proxy cannot reach"
    return partitions(answer)[("log", 0)]


def test_a_known_tail_is_waited_for_while_its_cluster_is_down_and_skipped_once_lost_for_good():
    """AGAIN: c1 is down. Its known tail (30..39) is waited for as its records below the seal (40 + GAP) are: acked and
    replicated, they come back with c1 (docs/DESIGN.md §9.3: a cluster that never comes back holds such readers until
    their offsets are reset). Once c1 answers without the physical topic (a lost disk) after the operator gave it up
    (failed over: read_only), they are lost for good and the reader moves on (no stuck consumer). The second gap's
    tail (50 on, which the chain does not know) is skipped while c1 is down, as before."""
    assert AGAIN.readable_end(AGAIN.segments[0]) == 40
    for position in (30, 39, 40 + GAP):
        p = _answered_at_once(_again(Physical(down={"c1"})), position)
        assert (p.error_code, p.records) == (ErrorCode.not_leader_or_follower, b""), position
    assert skipped_to(_answered_at_once(_again(Physical(down={"c1"})), 46 + GAP)) == 46 + 2 * GAP
    lost = Restarting(knows_topic=False)  # c1 answers, without the physical topic
    assert skipped_to(_answered_at_once(_again(lost), 30)) == 30 + GAP
    assert skipped_to(_answered_at_once(_again(lost), 46 + GAP)) == 46 + 2 * GAP
