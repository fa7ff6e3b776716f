"""DeleteRecords in logical offsets, mapped over segment chains.

Deleting a logical partition's records before logical offset L deletes, on the physical brokers, the records of
the segment holding L before L's physical offset, and every older segment whole (up to its seal). The segment
holding L goes first: its broker judges the offset (past its high watermark: OFFSET_OUT_OF_RANGE, and nothing
is deleted anywhere), and only then are the older segments emptied. A sealed segment emptied this way is
skipped by ListOffsets EARLIEST and Fetch as if retention had removed it (`view.offsets.earliest_offset`).
L = -1 means the high watermark, as in Kafka. The answer's low watermark is logical. A partition of a topic the
principal may not DELETE is TOPIC_AUTHORIZATION_FAILED, judged before whether it exists (docs/DESIGN.md §11).
Past its fence the proxy maps no offset with its view (it may be moves behind: L would land in a partition a later
move reused, deleting records it never meant): NOT_LEADER_OR_FOLLOWER, nothing sent upstream (docs/DESIGN.md §4.9).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32Timedelta

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema, response_schema
from fedkafka.proxy.plan import Broker, Call, Context, Plan, UpstreamError, authorized, past_fence
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
    target: Segment
    physical_offset: int  # -1: the target's high watermark
    older: tuple[Segment, ...]


def plan_deletion(topic: str, partition: int, chain: PartitionChain, offset: int) -> _Deletion:
    """Pure: which physical deletions a logical DeleteRecords offset means (offset >= -1)."""
    segments = chain.segments
    if offset == HIGH_WATERMARK:
        return _Deletion(topic, partition, chain.active, HIGH_WATERMARK, segments[:-1])
    if offset <= segments[0].logical_base:  # nothing of the chain lies below: a no-op the broker answers
        return _Deletion(topic, partition, segments[0], segments[0].phys_start, ())
    i = max(j for j, s in enumerate(segments) if s.logical_base <= offset)
    seg = segments[i]
    end = seg.logical_end
    physical = seg.to_physical(offset) if end is None or offset < end else seg.sealed_phys_end()
    return _Deletion(topic, partition, seg, physical, segments[:i])


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
        for d in done:
            failed = [results[_key(s)][0] for s in d.older if results[_key(s)][0] != ErrorCode.none]
            if failed:
                answers[(d.topic, d.partition)] = _error(failed[0])
        return respond()

    def after_targets(results: dict[PhysKey, tuple[ErrorCode, int]]):
        done = []
        for d in deletions:
            code, low = results[_key(d.target)]
            if code != ErrorCode.none:
                answers[(d.topic, d.partition)] = _error(code)
                continue
            answers[(d.topic, d.partition)] = {"error_code": ErrorCode.none,
                                               "low_watermark": d.target.to_logical(max(low, d.target.phys_start))}
            done.append(d)
        older: dict[PhysKey, int] = {}
        for d in done:
            for s in d.older:
                older[_key(s)] = max(older.get(_key(s), 0), s.sealed_phys_end())
        if not older:
            return respond()
        return _delete(ctx, older, lambda results: after_older(results, done))

    if not deletions:
        return respond()
    return _delete(ctx, {_key(d.target): d.physical_offset for d in deletions}, after_targets)


def _delete(ctx: Context, offsets: dict[PhysKey, int], then):
    """One DeleteRecords per (cluster, leader); `then` gets (error, physical low watermark) per partition."""
    results: dict[PhysKey, tuple[ErrorCode, int]] = {}
    groups: dict[tuple[str, int], list[PhysKey]] = {}
    for key in offsets:
        cluster, topic, partition = key
        leader = ctx.physical.leader(cluster, topic, partition)
        if leader is None or not ctx.physical.reachable(cluster):
            ctx.physical.request_refresh(cluster)
            results[key] = (ErrorCode.not_leader_or_follower, -1)
        else:
            groups.setdefault((cluster, leader), []).append(key)
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


def _key(segment: Segment) -> PhysKey:
    return segment.cluster, segment.topic, segment.partition


def _error(code: ErrorCode) -> dict:
    return {"error_code": code, "low_watermark": -1}
