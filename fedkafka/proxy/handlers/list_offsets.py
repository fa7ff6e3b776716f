"""ListOffsets in logical space (earliest, latest, by timestamp, max timestamp) over segment chains.

The physical brokers are asked physical questions (log start of every segment's partition, log end of the
active one, offset for a timestamp in each segment's partition) and `view.offsets` turns the answers into
logical offsets. One physical partition may hold several segments of a chain (A -> B -> A), so a
question is asked once per (physical partition, timestamp), in rounds when one partition needs two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.physical_offsets import PhysKey, ask_physical, log_start_asks, logical_log_start, seg_key
from fedkafka.proxy.plan import (
    Broker,
    Context,
    as_now,
    authorized,
    lost_for_good,
    readable_chain,
    topic_missing,
)
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import PartitionChain, Segment
from fedkafka.view.offsets import latest_offset, offset_for_timestamp

API_KEYS = {2: (1, 8)}
ROLE = "consume"
AUTHORIZES = True

LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL = -1, -2, -3, -4

_INT64 = range(-(1 << 63), 1 << 63)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Question:
    """The physical answers one logical partition needs: (segment partition, timestamp) pairs."""

    topic: str
    partition: int
    chain: PartitionChain
    timestamp: int
    asked: Any  # the client's partition request, asked again if the view changed before the answers (`_still_asked`)
    asks: list[tuple[PhysKey, int]] = field(default_factory=list)


def handle(ctx: Context, header, request):
    version = type(request).__version__
    answers: dict[tuple[str, int], dict] = {}
    questions: list[_Question] = []
    duplicated = _duplicated(request)
    for t in request.topics:
        may_describe = authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, t.name)
        for p in t.partitions:
            if not may_describe:
                q: _Question | dict = _error(ErrorCode.topic_authorization_failed)
            elif (t.name, p.partition_index) in duplicated:
                q = _error(ErrorCode.invalid_request)
            else:
                q = _question(ctx, t.name, p)
            if isinstance(q, dict):
                answers[(t.name, p.partition_index)] = q
            else:
                questions.append(q)
    order = [(t.name, [p.partition_index for p in t.partitions]) for t in request.topics]

    def respond(physical: dict[tuple[PhysKey, int], tuple[int, int] | ErrorCode],
                brokers: dict[tuple[PhysKey, int], Broker]):
        now = as_now(ctx) if questions else None  # the view or fence changed while the calls were out
        for q in questions:
            live = q if now is None else _still_asked(now, q)
            answers[(q.topic, q.partition)] = live if isinstance(live, dict) else \
                _fitting(live, _answer(ctx, live, physical), brokers)
        return build(response_schema(2, version), {"topics": [
            {"name": name, "partitions": [{"partition_index": p, **answers[(name, p)]} for p in parts]}
            for name, parts in order]})

    asks = {a for q in questions for a in q.asks}
    return ask_physical(ctx, asks, getattr(request, "isolation_level", 0), respond) if asks else respond({}, {})


def _duplicated(request) -> set[tuple[str, int]]:
    """The partitions the request names more than once: Kafka's broker answers every entry of each with
    INVALID_REQUEST (`ListOffsetsRequest.duplicatePartitions`) and asks nothing for them. Asked, n timestamps of one
    partition would take n rounds, each its own upstream call (`ask_physical`)."""
    seen: set[tuple[str, int]] = set()
    duplicated: set[tuple[str, int]] = set()
    for t in request.topics:
        for p in t.partitions:
            key = (t.name, p.partition_index)
            (duplicated if key in seen else seen).add(key)
    return duplicated


def _question(ctx: Context, topic: str, p) -> _Question | dict:
    chain = readable_chain(ctx, topic, p.partition_index, getattr(p, "current_leader_epoch", -1))
    if not isinstance(chain, PartitionChain):
        return _error(chain)
    ts = EARLIEST if p.timestamp == EARLIEST_LOCAL else p.timestamp
    if ts < MAX_TIMESTAMP:
        return _error(ErrorCode.invalid_request)  # tiered-storage specs: no such thing here
    q = _Question(topic, p.partition_index, chain, ts, p)
    if ts == LATEST:
        q.asks.append((seg_key(chain.active), LATEST))
    elif ts == EARLIEST:  # and the sealed segments' log ends: one at or below its segment's start lost its data
        q.asks.extend(log_start_asks(chain.segments))
    else:
        q.asks.extend((seg_key(s), ts) for s in chain.segments)
    return q


def _still_asked(now: Context, q: _Question) -> _Question | dict:
    """The question the proxy asks now for a partition whose answers arrive after its view or fence changed, when it
    is the same physical questions: the answers are then translated with the chain as it is now. Otherwise the
    answer the proxy gives now without asking (a refusal), or a retriable NOT_LEADER_OR_FOLLOWER, and the client
    asks again: the old chain may map a physical offset of a later segment of the same partition to a wrong
    logical one (A -> B -> A, docs/DESIGN.md §4.9)."""
    live = _question(now, q.topic, q.asked)
    if isinstance(live, dict) or live.asks == q.asks:
        return live
    return _error(ErrorCode.not_leader_or_follower)


def _answer(ctx: Context, q: _Question, physical: dict) -> dict:
    chain, epoch = q.chain, q.chain.leader_epoch
    got = [physical.get(a) for a in q.asks]
    if q.timestamp == LATEST:
        if not isinstance(got[0], tuple):
            return _error(got[0] or ErrorCode.not_leader_or_follower)
        return {"error_code": ErrorCode.none, "timestamp": -1, "offset": latest_offset(chain, got[0][0]),
                "leader_epoch": epoch}
    if q.timestamp == EARLIEST:  # where Fetch answers OFFSET_OUT_OF_RANGE below (fetch._after_out_of_range)
        return {"error_code": ErrorCode.none, "timestamp": -1, "offset": logical_log_start(ctx, chain, physical),
                "leader_epoch": epoch}
    # a segment that could not be asked may hold the answer: only the segments before it can give one
    blocked = _first_unanswered(ctx, chain, got)
    if q.timestamp == MAX_TIMESTAMP:
        return _max_timestamp(chain, got) if blocked is None else _unanswered(got[blocked])
    offsets = [g[0] if isinstance(g, tuple) and (blocked is None or i < blocked) else None for i, g in enumerate(got)]
    logical = offset_for_timestamp(chain, offsets)
    if logical is None:
        if blocked is not None:
            return _unanswered(got[blocked])
        return {"error_code": ErrorCode.none, "timestamp": -1, "offset": -1, "leader_epoch": -1}
    seg = chain.covering(logical)  # inside a gap: the tail of the segment before it
    phys = seg.to_physical(logical) if seg else -1
    # the broker's timestamp belongs to its own offset; when clamped to the segment start we only know
    # the record there is at least as late as asked
    ts = next((g[1] for s, g in zip(chain.segments, got, strict=True)
               if s == seg and isinstance(g, tuple) and g[0] == phys), q.timestamp)
    return {"error_code": ErrorCode.none, "timestamp": ts, "offset": logical, "leader_epoch": epoch}


def _fitting(q: _Question, answer: dict, brokers: dict[tuple[PhysKey, int], Broker]) -> dict:
    """The answer, unless its offset, moved into the logical space, leaves an int64 (a broken or hostile broker's
    offset near 2^63: Kafka's stay far below): then UNKNOWN_SERVER_ERROR (a client logs it and asks again) with one
    warning line naming the brokers asked, the request's other partitions answered as usual. It used to fail the
    whole answer's encoding, a traceback per request and the client's connection closed."""
    if answer["offset"] in _INT64:
        return answer
    asked = sorted({f"{b.cluster}'s broker {b.node_id}" for a in q.asks if (b := brokers.get(a)) is not None})
    log.warning("%s answered %s/%d with an offset that does not fit in logical offsets (%d): answered "
                "UNKNOWN_SERVER_ERROR", ", ".join(asked) or "a broker", q.topic, q.partition, answer["offset"])
    return _error(ErrorCode.unknown_server_error)


def _first_unanswered(ctx: Context, chain: PartitionChain, got: list) -> int | None:
    """The index of the first segment whose cluster answered an error (or could not be asked), unless it is left out
    (`_left_out`). Its records are there, not yet readable: a later segment's answer would skip them,
    so the question is answered with its (retriable) error and asked again (docs/DESIGN.md §5.5)."""
    return next((i for i, (s, g) in enumerate(zip(chain.segments, got, strict=True))
                 if not isinstance(g, tuple) and not _left_out(ctx, chain, s)), None)


def _unanswered(code: ErrorCode | None) -> dict:
    return _error(code or ErrorCode.not_leader_or_follower)


def _left_out(ctx: Context, chain: PartitionChain, seg: Segment) -> bool:
    """A segment a timestamp question is answered without though it could not be asked (docs/DESIGN.md §9.2): one lost
    for good (`lost_for_good`: Fetch and earliest skip it too), or one on a cluster A that is dead or answers without
    the physical topic, once this chain failed over from A (an unclean gap follows a segment of it there) and the
    operator gave A up for it: a failover marked A given up (`Cluster.gave_up`) or A is gone from the view, or a gap
    following this segment or a later one of A (S and A's older segments). A decommissioned A (read_only, then
    draining) gave nothing up: its segments after its last gap were moved off cleanly, and Fetch waits for them
    through a blip; counted as given up, a timestamp question answered a later segment's record past theirs. Never
    while the chain's active segment is on A: the partition moved back there, A is as alive as any cluster and its
    blips are waited for. Leaving out every segment of A answered 'no record that late' (offset -1, no error) for the
    active segment's records during such a blip: Java's offsetsForTimes answered null, a by-duration reset went to
    the log end."""
    if lost_for_good(ctx, chain, seg):
        return True
    if chain.active.cluster == seg.cluster or (ctx.physical.reachable(seg.cluster) and not topic_missing(ctx, seg)):
        return False
    gaps = [i for i, s in enumerate(chain.segments) if s.cluster == seg.cluster and chain.gap_after(s) is not None]
    cluster = ctx.view.clusters.get(seg.cluster)
    # a decommission gives nothing up, its read_only step included: it moves A's segments off cleanly, and Fetch
    # waits for them. Only a failover's mark does (or a view from before the mark: read_only, DESIGN §9.2)
    given_up = cluster is None or cluster.gave_up
    return bool(gaps) and (given_up or chain.segments.index(seg) <= gaps[-1])


def _max_timestamp(chain: PartitionChain, got: list) -> dict:
    best: tuple[int, int] | None = None  # (timestamp, logical offset)
    for seg, g in zip(chain.segments, got, strict=True):
        end = chain.readable_end(seg)  # past the seal only for a failed-over segment's tail (docs/DESIGN.md §9)
        if not isinstance(g, tuple) or g[0] < seg.phys_start or (end is not None and g[0] >= end):
            continue
        if best is None or g[1] > best[0]:
            best = (g[1], seg.to_logical(g[0]))
    if best is None:
        return {"error_code": ErrorCode.none, "timestamp": -1, "offset": -1, "leader_epoch": -1}
    return {"error_code": ErrorCode.none, "timestamp": best[0], "offset": best[1], "leader_epoch": chain.leader_epoch}



def _error(code: ErrorCode) -> dict:
    return {"error_code": code, "timestamp": -1, "offset": -1, "leader_epoch": -1}
