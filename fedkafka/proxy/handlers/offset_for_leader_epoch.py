"""OffsetForLeaderEpoch in logical space: consumers' truncation detection across segment boundaries.

A fedkafka log never truncates acked data (segments are sealed at an agreed end and later ones only
append), so every epoch up to the logical leader epoch ends at the logical log end
(`view.offsets.end_offset_for_epoch`); the proxy only asks the active segment's broker for its log end.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema, response_schema
from fedkafka.proxy.plan import Broker, Call, Context, Plan, UpstreamError, authorized, past_fence
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
    wanted: dict[tuple[str, int], tuple[PartitionChain, int]] = {}  # logical partition -> (chain, epoch asked)
    by_node: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for t in request.topics:
        may_describe = authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, t.topic)
        for p in t.partitions:
            key = (t.topic, p.partition)
            chain = ctx.view.chain(t.topic, p.partition)
            if not may_describe:
                answers[key] = _error(ErrorCode.topic_authorization_failed)
                continue
            if past_fence(ctx, t.topic, p.partition):  # its view may be moves behind (docs/DESIGN.md §4.9)
                answers[key] = _error(ErrorCode.not_leader_or_follower)
                continue
            if chain is None:
                answers[key] = _error(ErrorCode.unknown_topic_or_partition)
                continue
            if p.current_leader_epoch >= 0 and p.current_leader_epoch != chain.leader_epoch:
                answers[key] = _error(ErrorCode.fenced_leader_epoch if p.current_leader_epoch < chain.leader_epoch
                                      else ErrorCode.unknown_leader_epoch)
                continue
            seg = chain.active
            node = ctx.physical.leader(seg.cluster, seg.topic, seg.partition)
            if node is None or not ctx.physical.reachable(seg.cluster):
                ctx.physical.request_refresh(seg.cluster)
                answers[key] = _error(ErrorCode.not_leader_or_follower)
                continue
            wanted[key] = (chain, p.leader_epoch)
            by_node.setdefault((seg.cluster, node), []).append(key)
    order = [(t.topic, [p.partition for p in t.partitions]) for t in request.topics]
    nodes = list(by_node.items())
    calls = [Call(Broker(cluster, node), _log_end_request(ctx, keys)) for (cluster, node), keys in nodes]

    def finish(results: list):
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
                epoch, end = end_offset_for_epoch(chain, asked, latest_offset(chain, p.offset))
                answers[key] = {"error_code": ErrorCode.none, "leader_epoch": epoch, "end_offset": end}
        return build(response_schema(23, version), {"topics": [
            {"topic": name, "partitions": [{"partition": p, **answers[(name, p)]} for p in parts]}
            for name, parts in order]})

    return Plan(calls, finish) if calls else finish([])


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
