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
    """Each entry of the request is answered on its own, as Kafka's broker does (`ReplicaManager.
    lastOffsetForLeaderEpoch`): a partition named twice gets two answers, each for its own epochs."""
    version = type(request).__version__
    entries = [(t.topic, p) for t in request.topics for p in t.partitions]
    answers: list[dict] = [{} for _ in entries]
    wanted: dict[int, PartitionChain] = {}  # entry -> the chain its active segment answers for
    by_node: dict[tuple[str, int], list[int]] = {}
    may_describe = {t.topic: authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, t.topic) for t in request.topics}
    for i, (topic, p) in enumerate(entries):
        chain = _chain(ctx, topic, p) if may_describe[topic] else _error(ErrorCode.topic_authorization_failed)
        if isinstance(chain, dict):
            answers[i] = chain
            continue
        seg = chain.active
        node = ctx.physical.leader(seg.cluster, seg.topic, seg.partition)
        if node is None or not ctx.physical.reachable(seg.cluster):
            ctx.physical.request_refresh(seg.cluster)
            answers[i] = _error(ErrorCode.not_leader_or_follower)
            continue
        wanted[i] = chain
        by_node.setdefault((seg.cluster, node), []).append(i)
    nodes = list(by_node.items())
    calls = [Call(Broker(cluster, node), _log_end_request([wanted[i] for i in ids])) for (cluster, node), ids in nodes]

    def finish(results: list):
        now = as_now(ctx) if results else None  # the view or fence changed while the calls were out
        for ((cluster, _), ids), result in zip(nodes, results, strict=True):
            got = {} if isinstance(result, UpstreamError) else {
                (t.name, p.partition_index): p for t in result.topics for p in t.partitions}
            for i in ids:
                answers[i] = _answer(ctx, now, cluster, got, entries[i], wanted[i])
        answered = iter(answers)
        return build(response_schema(23, version), {"topics": [
            {"topic": t.topic, "partitions": [{"partition": p.partition, **next(answered)} for p in t.partitions]}
            for t in request.topics]})

    return Plan(calls, finish) if calls else finish([])


def _answer(ctx: Context, now: Context | None, cluster: str, got: dict, entry: tuple[str, Any],
            chain: PartitionChain) -> dict:
    """One entry's answer from its active segment's log end (`got`, by physical partition)."""
    topic, asked = entry
    seg = chain.active
    p = got.get((seg.topic, seg.partition))
    if p is None or p.error_code != ErrorCode.none:
        ctx.physical.request_refresh(cluster)
        return _error(ErrorCode.not_leader_or_follower)
    live = chain if now is None else _still_wanted(now, (topic, asked.partition), chain, asked)
    if isinstance(live, dict):
        return live
    epoch, end = end_offset_for_epoch(live, asked.leader_epoch, latest_offset(live, p.offset))
    return {"error_code": ErrorCode.none, "leader_epoch": epoch, "end_offset": end}


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


def _log_end_request(chains: list[PartitionChain]):
    """ListOffsets LATEST for the chains' active segments, each physical partition once: Kafka's broker answers
    INVALID_REQUEST for a partition named twice (`ListOffsetsRequest.duplicatePartitions`)."""
    by_topic: dict[str, dict[int, dict]] = {}
    for chain in chains:
        seg = chain.active
        by_topic.setdefault(seg.topic, {})[seg.partition] = {"partition_index": seg.partition,
                                                             "current_leader_epoch": -1, "timestamp": -1}
    return build(request_schema(2, _LIST_OFFSETS_VERSION), {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": n, "partitions": list(ps.values())} for n, ps in by_topic.items()]})


def _error(code: ErrorCode) -> dict:
    return {"error_code": code, "leader_epoch": -1, "end_offset": -1}
