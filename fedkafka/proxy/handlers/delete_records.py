"""DeleteRecords in logical offsets, mapped over segment chains.

Deleting a logical partition's records before logical offset L deletes, on the physical brokers, the records of the
segment holding L before L's physical offset (L inside an unclean gap: in the tail of the segment before it, read
there, all of it when L is past its end; never past where the tail is known to end: `_bound_to_tails`), and every
older segment whole (up to its readable end: the seal, or all of the tail its cluster came back with). The segment
holding L goes first: its broker judges the offset (past its high watermark: OFFSET_OUT_OF_RANGE, and nothing is
deleted anywhere), and only then are the older segments emptied. A sealed segment emptied this way is skipped by
ListOffsets EARLIEST and Fetch as if retention had removed it (`view.offsets.earliest_offset`); one lost for good
(`plan.lost_for_good`) is skipped here too, as reads skip it. A tail's end is in the chain only once a later segment
reuses its partition (A -> B -> A: that segment's start); else it is the partition's high watermark, read first and
used only if the proxy's view, once it is read, still shows no move that could have written there (`_tail_end`).
Never -1: a move back the chain planned with does not know of may have written the partition since, above the offset
asked (docs/DESIGN.md §5.8).
L = -1 means the high watermark, as in Kafka. The answer's low watermark is the partition's logical log start, as
Kafka answers its log start: L, or above when L was below it (a target found empty, or lost for good, passes the
deletion on to the next segment, whose broker answers its log start; so does a tail in an unclean gap that L, at
exactly its end, emptied: `_emptied_tails`). A partition of a topic the
principal may not DELETE is TOPIC_AUTHORIZATION_FAILED, judged before whether it exists (docs/DESIGN.md §11).
Past its fence the proxy maps no offset with its view (it may be moves behind: L would land in a partition a later
move reused, deleting records it never meant): NOT_LEADER_OR_FOLLOWER, nothing sent upstream (docs/DESIGN.md §4.9).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32Timedelta

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema, response_schema
from fedkafka.proxy.physical_offsets import LATEST, ask_physical, seg_key
from fedkafka.proxy.plan import (
    Broker,
    Call,
    Context,
    Plan,
    UpstreamError,
    as_now,
    authorized,
    by_leader,
    lost_for_good,
    past_fence,
)
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import PartitionChain, Segment

DELETE_RECORDS = 21
API_KEYS = {DELETE_RECORDS: (0, 2)}
ROLE = "any"
AUTHORIZES = True
UPSTREAM_VERSION = 2
HIGH_WATERMARK = -1
UPSTREAM_TIMEOUT = i32Timedelta.parse(timedelta(seconds=30))

PhysKey = tuple[str, str, int]  # cluster, physical topic, physical partition


@dataclass(slots=True)
class _Deletion:
    """One logical partition's deletion: where L falls, and the older segments to empty after it."""

    topic: str
    partition: int
    chain: PartitionChain
    target: Segment
    physical_offset: int  # -1: the target's high watermark
    older: tuple[Segment, ...]
    tail_end: int | None = None  # the target followed by an unclean gap: where its tail was read to end (`_tail_end`)


def plan_deletion(topic: str, partition: int, chain: PartitionChain, offset: int) -> _Deletion:
    """Pure: which physical deletions a logical DeleteRecords offset means (offset >= -1). An offset inside an unclean
    gap falls in the tail of the segment before it (`PartitionChain.readable_end`), as a Fetch there reads it; where
    the chain does not know that tail's end, `_bound_to_tails` bounds the offset before it is sent."""
    segments = chain.segments
    if offset == HIGH_WATERMARK:
        return _Deletion(topic, partition, chain, chain.active, HIGH_WATERMARK, segments[:-1])
    if offset <= segments[0].logical_base:  # nothing of the chain lies below: a no-op the broker answers
        return _Deletion(topic, partition, chain, segments[0], segments[0].phys_start, ())
    i = max(j for j, s in enumerate(segments) if s.logical_base <= offset)  # `covering(offset)`
    seg = segments[i]
    limit = chain.readable_end(seg)
    physical = seg.to_physical(offset) if limit is None else min(seg.to_physical(offset), limit)
    return _Deletion(topic, partition, chain, seg, physical, segments[:i])


def emptied_to(chain: PartitionChain, seg: Segment) -> int | None:
    """The physical offset an older segment's partition is emptied to, when `chain` knows it: its readable end, the
    seal or, for one followed by an unclean gap, the end of the tail its cluster came back with, which the chain
    knows only when a later segment of it shares the partition (A -> B -> A: its start, the partition's log end
    when it was placed there). Else None: the tail's end is read (`_tail_end`). Never the high watermark (-1): a
    move back there the chain does not know of may have written the partition since (docs/DESIGN.md §5.8)."""
    end = chain.readable_end(seg)
    gap = chain.gap_after(seg)
    if end is None or (gap is not None and end == seg.to_physical(gap[1])):
        return None
    return end


def _empty_older(ctx: Context, done: list[_Deletion], then):
    """Empties the older segments of the deletions whose target took them, each to `emptied_to`; the partitions of
    tails whose end the chain does not know have their high watermark read first (`_tail_end`). `then` gets
    (error, physical low watermark) per older segment's partition."""
    older: dict[PhysKey, int] = {}
    tails: list[tuple[_Deletion, Segment]] = []
    for d in done:
        for s in d.older:
            end = emptied_to(d.chain, s)
            if end is None:
                tails.append((d, s))
            else:
                older[seg_key(s)] = max(older.get(seg_key(s), 0), end)
    if not tails:
        return _delete(ctx, older, then)

    def empty(marks: dict[PhysKey, int | ErrorCode]):
        now = as_now(ctx) or ctx  # the view and fence as they are once the high watermarks were read
        refused: dict[PhysKey, tuple[ErrorCode, int]] = {}
        for d, s in tails:
            end = _tail_end(ctx, now, d, s, marks[seg_key(s)])
            if isinstance(end, ErrorCode):
                refused[seg_key(s)] = (end, -1)
            else:
                older[seg_key(s)] = max(older.get(seg_key(s), 0), end)
        sent = {key: offset for key, offset in older.items() if key not in refused}
        return _delete(ctx, sent, lambda results: then({**refused, **results}))

    return _high_watermarks(ctx, {seg_key(s) for _, s in tails}, empty)


def _tail_end(ctx: Context, now: Context, d: _Deletion, seg: Segment, mark: int | ErrorCode) -> int | ErrorCode:
    """Where the partition of `seg`, followed by an unclean gap in the chain `d` was planned with, is emptied to,
    judged with the view and fence `now` (after its high watermark `mark` was read): the start of a later segment of
    the chain on that partition, if the view now has one; else `mark` (at most the gap's end), if the view now shows
    the partition unfrozen within the fence: then no move had put a later segment there when `mark` was read
    (docs/DESIGN.md §5.8), so every record below it is `seg`'s or its tail's. Otherwise NOT_LEADER_OR_FOLLOWER:
    nothing is deleted there and the client asks again, under the newer view."""
    if past_fence(now, d.topic, d.partition):
        return ErrorCode.not_leader_or_follower
    live = now.view.chain(d.topic, d.partition)
    planned, current = ctx.view.topics.get(d.topic), now.view.topics.get(d.topic)
    same_topic = planned is not None and current is not None and planned.topic_id == current.topic_id
    if live is None or not same_topic or seg not in live.segments:  # deleted (and created again), or drained
        return ErrorCode.not_leader_or_follower
    known = emptied_to(live, seg)
    if known is not None:
        return known
    if live.frozen:
        return ErrorCode.not_leader_or_follower
    if isinstance(mark, ErrorCode):
        return mark
    end = live.readable_end(seg)  # the gap's end: a sealed segment's is never None
    return mark if end is None else min(mark, end)


def _passed_on(ctx: Context, d: _Deletion, code: ErrorCode, low: int) -> _Deletion | None:
    """The deletion moved to the next segment's start when its target holds nothing (its log start at or past its
    readable end: L was below the partition's log start) or is lost for good (`plan.lost_for_good`, skipped by
    reads and EARLIEST): the next segment's broker answers the log start, as EARLIEST finds it. L inside an unclean
    gap past the tail its cluster came back with (OFFSET_OUT_OF_RANGE there) is below the partition's high
    watermark: the target is then emptied with the older segments, and the deletion moves on too. Else None."""
    end = d.chain.readable_end(d.target)
    nxt = d.chain.next_segment(d.target)
    if end is None or nxt is None:  # the active segment answers for itself
        return None
    if code == ErrorCode.offset_out_of_range and d.physical_offset >= d.target.sealed_phys_end():
        return _Deletion(d.topic, d.partition, d.chain, nxt, nxt.phys_start, (*d.older, d.target))
    if code == ErrorCode.none and low < end:
        return None
    if code != ErrorCode.none and not lost_for_good(ctx, d.chain, d.target):
        return None
    return _to_next(d)


def handle(ctx: Context, header, request):
    version = type(request).__version__
    answers: dict[tuple[str, int], dict] = {}
    deletions: list[_Deletion] = []
    for t in request.topics:
        may_delete = authorized(ctx, Operation.DELETE, ResourceType.TOPIC, t.name)
        for p in t.partitions:
            chain = ctx.view.chain(t.name, p.partition_index)
            if not may_delete:
                ctx.refused("auth", t.name, p.partition_index, "no DELETE on the topic")
                answers[(t.name, p.partition_index)] = _error(ErrorCode.topic_authorization_failed)
            elif chain is None:
                answers[(t.name, p.partition_index)] = _error(ErrorCode.unknown_topic_or_partition)
            elif p.offset < HIGH_WATERMARK:
                answers[(t.name, p.partition_index)] = _error(ErrorCode.offset_out_of_range)
            elif past_fence(ctx, t.name, p.partition_index):  # its view may be moves behind (docs/DESIGN.md §4.9)
                answers[(t.name, p.partition_index)] = _error(ErrorCode.not_leader_or_follower)
            else:
                deletions.append(plan_deletion(t.name, p.partition_index, chain, p.offset))
    order = [(t.name, [p.partition_index for p in t.partitions]) for t in request.topics]

    def respond():
        return build(response_schema(DELETE_RECORDS, version), {"topics": [
            {"name": name, "partitions": [{"partition_index": p, **answers[(name, p)]} for p in parts]}
            for name, parts in order]})

    def after_older(results: dict[PhysKey, tuple[ErrorCode, int]], done: list[_Deletion]):
        for d in done:  # a segment lost for good has nothing left to delete: no reason to refuse
            failed = [code for s in d.older
                      if (code := results[seg_key(s)][0]) != ErrorCode.none and not lost_for_good(ctx, d.chain, s)]
            if failed:
                answers[(d.topic, d.partition)] = _error(failed[0])
        return respond()

    def after_targets(done: list[_Deletion]):
        return _empty_older(ctx, done, lambda results: after_older(results, done))

    def judge(bounded: list[_Deletion]):
        return _judge_targets(ctx, bounded, answers, [], after_targets) if bounded else respond()

    return _bound_to_tails(ctx, deletions, answers, judge)


def _in_a_tail_not_known(d: _Deletion) -> bool:
    """L falls past the seal of its target, in the unclean gap after it, and the chain does not know where the tail
    ends there (`emptied_to`): L's physical offset may lie in a later segment on the partition (A -> B -> A)."""
    return (d.chain.gap_after(d.target) is not None and emptied_to(d.chain, d.target) is None
            and d.physical_offset > d.target.sealed_phys_end())


def _bound_to_tails(ctx: Context, deletions: list[_Deletion], answers: dict[tuple[str, int], dict], then):
    """Deletions whose L falls in a tail the chain does not know the end of (`_in_a_tail_not_known`) have their
    target's high watermark read first, and go no further than the end `_tail_end` allows, judged with the view as
    it is once read; where it allows none, nothing is deleted and the partition is answered its error
    (NOT_LEADER_OR_FOLLOWER: asked again under the newer view). As for an older segment's tail (docs/DESIGN.md
    §5.8): a move back the chain does not know of may have written the partition above the tail, records at logical
    offsets above L. A target whose high watermark cannot be read because it is lost for good is sent as planned:
    the controller never creates its topic again, so no move back writes there (its deletion fails and passes on,
    `_passed_on`). `then` gets the deletions left, in order."""
    unknown = {i for i, d in enumerate(deletions) if _in_a_tail_not_known(d)}
    if not unknown:
        return then(deletions)

    def bound(marks: dict[PhysKey, int | ErrorCode]):
        now = as_now(ctx) or ctx  # the view and fence as they are once the high watermarks were read
        left = []
        for i, d in enumerate(deletions):
            end = _target_tail_end(ctx, now, d, marks[seg_key(d.target)]) if i in unknown else None
            if isinstance(end, ErrorCode):
                answers[(d.topic, d.partition)] = _error(end)
            elif end is None:
                left.append(d)
            else:
                left.append(dataclasses.replace(d, physical_offset=min(d.physical_offset, end), tail_end=end))
        return then(left)

    return _high_watermarks(ctx, {seg_key(deletions[i].target) for i in unknown}, bound)


def _target_tail_end(ctx: Context, now: Context, d: _Deletion, mark: int | ErrorCode) -> int | ErrorCode | None:
    """`_tail_end` for the target of `d`; None (sent as planned) when its high watermark could not be read because it
    is lost for good."""
    if isinstance(mark, ErrorCode) and lost_for_good(ctx, d.chain, d.target):
        return None
    return _tail_end(ctx, now, d, d.target, mark)


def _judge_targets(ctx: Context, deletions: list[_Deletion], answers: dict[tuple[str, int], dict],
                   done: list[_Deletion], then):
    """Deletes at each deletion's target, whose broker judges the offset; a target holding nothing or lost for good
    passes its deletion on to the next segment (`_passed_on`, `_emptied_tails`), one round more. The low watermark
    answered is the partition's logical log start, what ListOffsets EARLIEST answers. `then(done)` gets the
    deletions whose target took them; the others are answered with their error."""

    def judged(results: dict[PhysKey, tuple[ErrorCode, int]]):
        passed, taken = [], []
        for d in deletions:
            code, low = results[seg_key(d.target)]
            moved = _passed_on(ctx, d, code, low)
            if moved is not None:
                passed.append(moved)
            elif code != ErrorCode.none:
                answers[(d.topic, d.partition)] = _error(code)
            else:
                taken.append((d, low))

        def settle(emptied: set[int]):
            for i, (d, low) in enumerate(taken):
                if i in emptied:
                    passed.append(_to_next(d))
                    continue
                answers[(d.topic, d.partition)] = {"error_code": ErrorCode.none,
                                                   "low_watermark": d.target.to_logical(max(low, d.target.phys_start))}
                done.append(d)
            return _judge_targets(ctx, passed, answers, done, then) if passed else then(done)

        return _emptied_tails(ctx, taken, settle)

    return _delete(ctx, {seg_key(d.target): d.physical_offset for d in deletions}, judged)


def _emptied_tails(ctx: Context, taken: list[tuple[_Deletion, int]], then):
    """`then` gets the indexes of the deletions in `taken` (each with its target's physical low watermark) whose
    target is followed by an unclean gap and now holds nothing: the tail its cluster came back with is deleted to
    its log end (L at exactly the tail's end: its broker takes it, having no record to refuse). ListOffsets EARLIEST
    skips such a segment (`view.offsets.earliest_offset`), so the deletion passes on to the next segment, whose
    broker answers the log start EARLIEST answers. The tail's end is the one read before the deletion
    (`_bound_to_tails`) or known to the chain (`emptied_to`, as EARLIEST judges it with `readable_end`), else its log
    end, read now; one not known leaves the deletion where it is, as EARLIEST then reads the segment."""
    tails = {i: d for i, (d, _) in enumerate(taken) if d.chain.gap_after(d.target) is not None}
    known = {i: end for i, d in tails.items() if (end := _known_tail_end(d)) is not None}

    def judged(marks: dict[PhysKey, int | ErrorCode]):
        ends = {**{i: marks[seg_key(d.target)] for i, d in tails.items() if i not in known}, **known}
        return then({i for i, end in ends.items() if not isinstance(end, ErrorCode)
                     and (end <= tails[i].target.phys_start or taken[i][1] >= end)})

    unread = {seg_key(d.target) for i, d in tails.items() if i not in known}
    return _high_watermarks(ctx, unread, judged) if unread else judged({})


def _known_tail_end(d: _Deletion) -> int | None:
    """Where the tail of `d`'s target ends, if read before the deletion or known to the chain."""
    return d.tail_end if d.tail_end is not None else emptied_to(d.chain, d.target)


def _to_next(d: _Deletion) -> _Deletion:
    """The deletion moved to the start of the segment after its (sealed) target."""
    nxt = d.chain.next_segment(d.target)
    assert nxt is not None  # a segment followed by an unclean gap, or a sealed one: the chain goes on
    return _Deletion(d.topic, d.partition, d.chain, nxt, nxt.phys_start, d.older)


def _delete(ctx: Context, offsets: dict[PhysKey, int], then):
    """One DeleteRecords per (cluster, leader); `then` gets (error, physical low watermark) per partition."""
    groups, leaderless = by_leader(ctx, offsets, lambda key: key)
    results: dict[PhysKey, tuple[ErrorCode, int]] = dict.fromkeys(leaderless, (ErrorCode.not_leader_or_follower, -1))
    req_t = request_schema(DELETE_RECORDS, UPSTREAM_VERSION)
    calls, slots = [], []
    for (cluster, leader), keys in groups.items():
        by_topic: dict[str, list[dict]] = {}
        for _c, topic, partition in keys:
            by_topic.setdefault(topic, []).append({"partition_index": partition, "offset": offsets[(cluster, topic,
                                                                                                    partition)]})
        req = build(req_t, {"topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
                            "timeout": UPSTREAM_TIMEOUT})
        calls.append(Call(Broker(cluster, leader), req))
        slots.append(keys)
    if not calls:
        return then(results)

    def finish(replies: list):
        for keys, reply in zip(slots, replies, strict=True):
            if isinstance(reply, UpstreamError):
                for key in keys:
                    ctx.physical.request_refresh(key[0])
                    results[key] = (ErrorCode.request_timed_out, -1)
                continue
            cluster = keys[0][0]
            for t in reply.topics:
                for p in t.partitions:
                    if p.error_code == ErrorCode.not_leader_or_follower:
                        ctx.physical.request_refresh(cluster)
                    results[(cluster, t.name, p.partition_index)] = (p.error_code, p.low_watermark)
        for key in offsets:
            results.setdefault(key, (ErrorCode.unknown_server_error, -1))  # a broker that skipped a partition
        return then(results)

    return Plan(calls, finish)


def _high_watermarks(ctx: Context, keys: set[PhysKey], then):
    """The partitions' high watermarks (ListOffsets LATEST, `physical_offsets.ask_physical`): `then` gets the offset or
    the error per partition."""

    def read(physical: dict, _brokers: dict):
        return then({key: found[0] if isinstance(found, tuple) else found for (key, _), found in physical.items()})

    return ask_physical(ctx, {(key, LATEST) for key in keys}, 0, read)



def _error(code: ErrorCode) -> dict:
    return {"error_code": code, "low_watermark": -1}
