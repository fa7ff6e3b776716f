"""DescribeProducers on logical topic-partitions (`kafka-transactions describe-producers`, docs/DESIGN.md §5.8).

A logical partition's producers are read from its active segment: the proxy asks that segment's physical
leader and answers under the logical topic name and partition. A physical producer id that this proxy
obtained for a client's logical id (docs/DESIGN.md §5.3) is answered as the logical id and epoch the client
knows; any other id (written through another proxy, or by a client of the physical cluster itself) is
answered as the physical id, since this proxy cannot map it. Producers that wrote only to sealed segments
are not listed: their state lives on the sealed segments' brokers and no longer guards any write. Past its fence
the proxy does not answer from its view (its active segment may be moves old: wrong producers, wrong logical
transaction start offsets): NOT_LEADER_OR_FOLLOWER, nothing sent upstream (docs/DESIGN.md §4.9).
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema, response_schema
from fedkafka.proxy.plan import Broker, Call, Context, Plan, UpstreamError, authorized, by_leader, past_fence
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import Segment

DESCRIBE_PRODUCERS = 61
API_KEYS = {DESCRIBE_PRODUCERS: (0, 0)}
ROLE = "any"
AUTHORIZES = True
UPSTREAM_TIMEOUT_S = 10.0

PhysKey = tuple[str, str, int]  # cluster, physical topic, physical partition


def handle(ctx: Context, header, request):
    answers: dict[tuple[str, int], dict] = {}
    asks: dict[tuple[str, int], Segment] = {}
    for t in request.topics:
        may_read = authorized(ctx, Operation.READ, ResourceType.TOPIC, t.name)
        for p in t.partition_indexes:
            chain = ctx.view.chain(t.name, p) if may_read else None
            if not may_read:
                answers[(t.name, p)] = _error(ErrorCode.topic_authorization_failed)
            elif chain is None:
                answers[(t.name, p)] = _error(ErrorCode.unknown_topic_or_partition)
            elif past_fence(ctx, t.name, p):
                answers[(t.name, p)] = _error(ErrorCode.not_leader_or_follower)
            else:
                asks[(t.name, p)] = chain.active
    order = [(t.name, list(t.partition_indexes)) for t in request.topics]

    def respond(physical: dict[PhysKey, dict]):
        for (topic, p), seg in asks.items():
            answers[(topic, p)] = _translate(ctx, seg, physical[_key(seg)])
        return build(response_schema(DESCRIBE_PRODUCERS, 0), {"topics": [
            {"name": name, "partitions": [{"partition_index": p, **answers[(name, p)]} for p in parts]}
            for name, parts in order]})

    if not asks:
        return respond({})
    return _ask(ctx, {_key(s) for s in asks.values()}, respond)


def _ask(ctx: Context, keys: set[PhysKey], then):
    """One DescribeProducers per (cluster, leader); `then` gets each physical partition's answer as a dict.
    An unreachable cluster or a lost connection answers NOT_LEADER_OR_FOLLOWER, which admin clients retry."""
    groups, leaderless = by_leader(ctx, sorted(keys), lambda key: key)
    results: dict[PhysKey, dict] = {
        key: _error(ErrorCode.not_leader_or_follower, f"cluster {key[0]} is not reachable") for key in leaderless}
    req_t = request_schema(DESCRIBE_PRODUCERS, 0)
    calls, slots = [], []
    for (cluster, leader), group in groups.items():
        by_topic: dict[str, list[int]] = {}
        for _c, topic, partition in group:
            by_topic.setdefault(topic, []).append(partition)
        req = build(req_t, {"topics": [{"name": t, "partition_indexes": ps} for t, ps in by_topic.items()]})
        calls.append(Call(Broker(cluster, leader), req, timeout_s=UPSTREAM_TIMEOUT_S))
        slots.append(group)
    if not calls:
        return then(results)

    def finish(replies: list):
        for group, reply in zip(slots, replies, strict=True):
            cluster = group[0][0]
            if isinstance(reply, UpstreamError):
                ctx.physical.request_refresh(cluster)
                for key in group:
                    results[key] = _error(ErrorCode.not_leader_or_follower, reply.reason)
                continue
            for t in reply.topics:
                for p in t.partitions:
                    if p.error_code == ErrorCode.not_leader_or_follower:
                        ctx.physical.request_refresh(cluster)
                    results[(cluster, t.name, p.partition_index)] = {
                        "error_code": p.error_code, "error_message": p.error_message,
                        "active_producers": p.active_producers}
        for key in keys:  # a broker that skipped a partition
            results.setdefault(key, _error(ErrorCode.unknown_server_error, "the broker did not answer it"))
        return then(results)

    return Plan(calls, finish)


def _translate(ctx: Context, seg: Segment, answer: dict) -> dict:
    """A physical partition's answer in the client's terms: logical producer ids and logical offsets."""
    if answer["error_code"] != ErrorCode.none:
        return {**answer, "active_producers": ()}
    producers = []
    for state in answer["active_producers"]:
        logical = ctx.producer_ids.logical_of(seg.cluster, state.producer_id)
        producer_id, epoch = logical if logical is not None else (state.producer_id, state.producer_epoch)
        start = state.current_txn_start_offset
        producers.append({"producer_id": producer_id, "producer_epoch": epoch,
                          "last_sequence": state.last_sequence, "last_timestamp": state.last_timestamp,
                          "coordinator_epoch": state.coordinator_epoch,
                          "current_txn_start_offset": seg.to_logical(start) if start >= 0 else -1})
    return {"error_code": ErrorCode.none, "error_message": None, "active_producers": producers}


def _key(segment: Segment) -> PhysKey:
    return segment.cluster, segment.topic, segment.partition


def _error(code: ErrorCode, message: str | None = None) -> dict:
    return {"error_code": code, "error_message": message, "active_producers": ()}
