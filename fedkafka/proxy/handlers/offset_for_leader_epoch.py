"""OffsetForLeaderEpoch in logical space: consumers' truncation detection across segment boundaries.

A fedkafka log never truncates acked data (segments are sealed at an agreed end and later ones only
append), so every epoch up to the logical leader epoch ends at the logical log end
(`view.offsets.end_offset_for_epoch`); the proxy only asks the active segment's broker for its log end.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema, response_schema
from fedkafka.proxy.plan import Broker, Call, Context, Plan, UpstreamError, as_now, authorized, readable_chain
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import PartitionChain
from fedkafka.view.offsets import end_offset_for_epoch, latest_offset

API_KEYS = {23: (2, 4)}
ROLE = "consume"
AUTHORIZES = True

_LIST_OFFSETS_VERSION = 7


def handle(ctx: Context, header, request):
    version = type(request).__version__
    answers: dict[tuple[str, int], dict] = {}
    wanted: dict[tuple[str, int], tuple[PartitionChain, Any]] = {}  # logical partition -> (chain, its request)
    by_node: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for t in request.topics:
        may_describe = authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, t.topic)
        for p in t.partitions:
            key = (t.topic, p.partition)
            chain = _chain(ctx, t.topic, p) if may_describe else _error(ErrorCode.topic_authorization_failed)
            if isinstance(chain, dict):
                answers[key] = chain
                continue
            seg = chain.active
            node = ctx.physical.leader(seg.cluster, seg.topic, seg.partition)
            if node is None or not ctx.physical.reachable(seg.cluster):
                ctx.physical.request_refresh(seg.cluster)
                answers[key] = _error(ErrorCode.not_leader_or_follower)
                continue
            wanted[key] = (chain, p)
            by_node.setdefault((seg.cluster, node), []).append(key)
    order = [(t.topic, [p.partition for p in t.partitions]) for t in request.topics]
    nodes = list(by_node.items())
    calls = [Call(Broker(cluster, node), _log_end_request(ctx, keys)) for (cluster, node), keys in nodes]

    def finish(results: list):
        now = as_now(ctx) if results else None  # the view or fence changed while the calls were out
        for ((cluster, _), keys), result in zip(nodes, results, strict=True):
            got = {} if isinstance(result, UpstreamError) else {
                (t.name, p.partition_index): p for t in result.topics for p in t.partitions}
            for key in keys:
                chain, asked = wanted[key]
                seg = chain.active
                p = got.get((seg.topic, seg.partition))
                if p is None or p.error_code != ErrorCode.none:
                    ctx.physical.request_refresh(cluster)
                    answers[key] = _error(ErrorCode.not_leader_or_follower)
                    continue
                live = chain if now is None else _still_wanted(now, key, chain, asked)
                if isinstance(live, dict):
                    answers[key] = live
                    continue
                epoch, end = end_offset_for_epoch(live, asked.leader_epoch, latest_offset(live, p.offset))
                answers[key] = {"error_code": ErrorCode.none, "leader_epoch": epoch, "end_offset": end}
        return build(response_schema(23, version), {"topics": [
            {"topic": name, "partitions": [{"partition": p, **answers[(name, p)]} for p in parts]}
            for name, parts in order]})

    return Plan(calls, finish) if calls else finish([])


def _chain(ctx: Context, topic: str, p) -> PartitionChain | dict:
    """The chain whose active segment answers for a logical partition, or the error answer for it."""
    chain = readable_chain(ctx, topic, p.partition, p.current_leader_epoch)
    return chain if isinstance(chain, PartitionChain) else _error(chain)


def _still_wanted(now: Context, key: tuple[str, int], routed: PartitionChain, p) -> PartitionChain | dict:
    """The chain as it is now, for a log end that arrived after the view or fence changed, when the proxy would ask
    the same physical partition for it now; else the answer it gives now without asking, or a retriable
    NOT_LEADER_OR_FOLLOWER (the old chain may read a later segment's log end of a reused partition as its own, too
    low: a consumer past it would see a truncation that did not happen, docs/DESIGN.md §4.9)."""
    live = _chain(now, key[0], p)
    if isinstance(live, dict):
        return live
    a, b = live.active, routed.active
    if (a.cluster, a.topic, a.partition) != (b.cluster, b.topic, b.partition):
        return _error(ErrorCode.not_leader_or_follower)
    return live


def _log_end_request(ctx: Context, keys: list[tuple[str, int]]):
    by_topic: dict[str, list[dict]] = {}
    for topic, partition in keys:
        seg = ctx.view.topics[topic].partitions[partition].active  # the caller checked it exists
        by_topic.setdefault(seg.topic, []).append({"partition_index": seg.partition, "current_leader_epoch": -1,
                                                   "timestamp": -1})
    return build(request_schema(2, _LIST_OFFSETS_VERSION), {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": n, "partitions": ps} for n, ps in by_topic.items()]})


def _error(code: ErrorCode) -> dict:
    return {"error_code": code, "leader_epoch": -1, "end_offset": -1}
