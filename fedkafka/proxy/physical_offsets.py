"""ListOffsets asked of physical partitions' leaders: what ListOffsets and DeleteRecords (a gap tail's log end) share.
Handlers do not import each other (the import contract); this is the one way both ask."""

from __future__ import annotations

from collections.abc import Iterable

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema
from fedkafka.proxy.plan import Broker, Call, Context, Plan, UpstreamError, by_leader

PhysKey = tuple[str, str, int]  # cluster, topic, partition
LATEST = -1
UPSTREAM_VERSION = 7  # the first with MAX_TIMESTAMP; every Kafka 4 broker serves it


def ask_physical(ctx: Context, asks: Iterable[tuple[PhysKey, int]], isolation_level: int, respond):
    """A Plan asking every (physical partition, timestamp) once; `respond` gets {ask: (offset, timestamp) |
    ErrorCode} and {ask: the broker asked}. Unreachable clusters answer NOT_LEADER_OR_FOLLOWER (and ask for a
    refresh). A partition asked with k timestamps takes k rounds (one call per broker each): with a client's
    duplicates refused (`_duplicated`) and a physical partition read by one logical partition (docs/DESIGN.md
    §4.13), one round."""
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
        for (cluster, node), items in by_node.items():
            broker = Broker(cluster, node)
            calls.append(Call(broker, _upstream_request(items, isolation_level)))
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


def _upstream_request(items: list[tuple[PhysKey, int]], isolation_level: int):
    by_topic: dict[str, list[dict]] = {}
    for (_, topic, partition), ts in items:
        by_topic.setdefault(topic, []).append({"partition_index": partition, "current_leader_epoch": -1,
                                               "timestamp": ts})
    return build(request_schema(2, UPSTREAM_VERSION), {"replica_id": -1, "isolation_level": isolation_level,
                                                     "topics": [{"name": n, "partitions": ps}
                                                                for n, ps in by_topic.items()]})
