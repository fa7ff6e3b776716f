"""ListOffsets asked of physical partitions' leaders: what ListOffsets, DeleteRecords (a gap tail's log end) and Fetch
(the bounds of a log that answered OFFSET_OUT_OF_RANGE) share. Handlers do not import each other (the import
contract); this is the one way they ask, and the one reading of a logical partition's log start (`logical_log_start`):
the offset ListOffsets EARLIEST answers is the one below which Fetch answers OFFSET_OUT_OF_RANGE."""

from __future__ import annotations

from collections.abc import Iterable

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema
from fedkafka.proxy.plan import Broker, Call, Context, Plan, UpstreamError, by_leader, lost_for_good
from fedkafka.view.model import PartitionChain, Segment
from fedkafka.view.offsets import earliest_offset

PhysKey = tuple[str, str, int]  # cluster, topic, partition
LATEST, EARLIEST = -1, -2
# Not a ListOffsets timestamp: LATEST asked as the debugging replica (replica id -2), which Kafka's broker answers with
# the log end offset, not the high watermark (ReplicaManager.fetchOffset: an isolation level only for replica id -1;
# Partition.fetchOffsetForTimestamp: none -> logEndOffset), authorized as a consumer's ask (DESCRIBE on the topic).
# After a restart the high watermark can sit at the log start below records the log holds; the log end tells.
LOG_END = -100
_DEBUGGING_REPLICA_ID = -2
UPSTREAM_VERSION = 7  # the first with MAX_TIMESTAMP; every Kafka 4 broker serves it


def ask_physical(ctx: Context, asks: Iterable[tuple[PhysKey, int]], isolation_level: int, respond,
                 timeout_s: float | None = None, client_timeout: bool = False):
    """A Plan asking every (physical partition, timestamp) once; `respond` gets {ask: (offset, timestamp) |
    ErrorCode} and {ask: the broker asked}. Unreachable clusters answer NOT_LEADER_OR_FOLLOWER (and ask for a
    refresh). `timeout_s`, `client_timeout`: the calls' (`plan.Call`; a Fetch bounds its own round so). A partition
    asked with k timestamps takes k rounds (one call per broker each): with a client's duplicates refused
    (`_duplicated`) and a physical partition read by one logical partition (docs/DESIGN.md §4.13), one round."""
    physical: dict[tuple[PhysKey, int], tuple[int, int] | ErrorCode] = {}
    rounds: list[dict[PhysKey, int]] = []  # a partition asked with k timestamps is in the first k rounds
    depth: dict[PhysKey, int] = {}
    for key, ts in sorted(asks):
        i = depth.get(key, 0)
        depth[key] = i + 1
        if i == len(rounds):
            rounds.append({})
        rounds[i][key] = ts
    calls: list[Call] = []
    call_asks: list[list[tuple[PhysKey, int]]] = []
    brokers: dict[tuple[PhysKey, int], Broker] = {}
    for r in rounds:
        by_node, leaderless = by_leader(ctx, r.items(), lambda ask: ask[0])
        for ask in leaderless:
            physical[ask] = ErrorCode.not_leader_or_follower
        for (cluster, node), node_items in by_node.items():
            broker = Broker(cluster, node)
            for items in _by_replica_id(node_items):
                calls.append(Call(broker, _upstream_request(items, isolation_level), timeout_s=timeout_s,
                                  client_timeout=client_timeout))
                call_asks.append(items)
                brokers.update(dict.fromkeys(items, broker))

    def finish(results: list):
        for items, result in zip(call_asks, results, strict=True):
            if isinstance(result, UpstreamError):
                for item in items:
                    physical[item] = ErrorCode.not_leader_or_follower
                continue
            got = {(t.name, p.partition_index): p for t in result.topics for p in t.partitions}
            for (cluster, topic, partition), ts in items:
                p = got.get((topic, partition))
                if p is None or p.error_code != ErrorCode.none:
                    code = ErrorCode.unknown_server_error if p is None else p.error_code
                    if code in (ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_or_partition):
                        ctx.physical.request_refresh(cluster)
                        code = ErrorCode.not_leader_or_follower
                    physical[((cluster, topic, partition), ts)] = code
                else:
                    physical[((cluster, topic, partition), ts)] = (p.offset, p.timestamp)
        return respond(physical, brokers)

    return Plan(calls, finish) if calls else finish([])


def seg_key(seg: Segment) -> PhysKey:
    return seg.cluster, seg.topic, seg.partition


def log_start_asks(segments: Iterable[Segment]) -> list[tuple[PhysKey, int]]:
    """What `logical_log_start` reads of these segments: each one's log start (EARLIEST), then each sealed one's log
    end (LOG_END: one at or below its segment's start lost its data; a high watermark that lags after a restart
    would count a log whose records are there as lost)."""
    segments = tuple(segments)
    return [(seg_key(s), EARLIEST) for s in segments] + [(seg_key(s), LOG_END) for s in segments if not s.active]


def logical_log_start(ctx: Context, chain: PartitionChain, physical: dict) -> int:
    """The logical partition's log start (ListOffsets EARLIEST) from `ask_physical`'s answers of `log_start_asks`
    (`view.offsets.earliest_offset`): a segment not asked, or whose cluster did not answer, counts as readable from
    its base; one lost for good (`lost_for_good`: no answer from it, ever) as if its log ended at its start."""
    starts: dict[Segment, int | None] = {}
    ends: dict[Segment, int | None] = {}
    for s in chain.segments:
        start, end = physical.get((seg_key(s), EARLIEST)), physical.get((seg_key(s), LOG_END))
        starts[s] = start[0] if isinstance(start, tuple) else None
        ends[s] = end[0] if isinstance(end, tuple) and not s.active else None
        if starts[s] is None and lost_for_good(ctx, chain, s):
            starts[s] = ends[s] = s.phys_start
    return earliest_offset(chain, starts.__getitem__, ends.__getitem__)


def _by_replica_id(items: list[tuple[PhysKey, int]]) -> list[list[tuple[PhysKey, int]]]:
    """A broker's asks of one round as requests: the log ends (LOG_END) in one of their own (another replica id)."""
    log_ends = [item for item in items if item[1] == LOG_END]
    others = [item for item in items if item[1] != LOG_END]
    return [group for group in (others, log_ends) if group]


def _upstream_request(items: list[tuple[PhysKey, int]], isolation_level: int):
    """One ListOffsets request; `items` all LOG_END asks or none (`_by_replica_id`)."""
    log_end = items[0][1] == LOG_END
    by_topic: dict[str, list[dict]] = {}
    for (_, topic, partition), ts in items:
        by_topic.setdefault(topic, []).append({"partition_index": partition, "current_leader_epoch": -1,
                                               "timestamp": LATEST if log_end else ts})
    replica_id = _DEBUGGING_REPLICA_ID if log_end else -1
    return build(request_schema(2, UPSTREAM_VERSION), {"replica_id": replica_id, "isolation_level": isolation_level,
                                                     "topics": [{"name": n, "partitions": ps}
                                                                for n, ps in by_topic.items()]})
