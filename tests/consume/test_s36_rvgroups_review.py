"""Review of branch s36-groups (OffsetCommit beyond P answered UNKNOWN_TOPIC_OR_PARTITION before any coordinator
condition). Pure handler calls, no brokers.

Finding 1: an OffsetCommit naming a topic in two entries (the protocol allows it; Kafka 4.x answers each entry:
OffsetCommitRequest.getErrorResponse walks the request's topics, GroupCoordinatorService.commitOffsets answers a
condition with it, the KafkaApis builder merges by name and adds, never replaces) loses the first entry's partitions
when the proxy answers a condition itself: `groups.failure` keys the answer by topic name, so the second entry's
partitions replace the first's. `_commit_split` keeps both entries (its docstring says so), but every condition
(past the fence, a frozen view, no coordination cluster, the lookup failing, the coordinator lost) goes through
`failure(mine, ...)`. A partition missing from an OffsetCommit answer is taken as committed by the Java consumer
(ConsumerCoordinator and CommitRequestManager walk only the answer's partitions) and keeps librdkafka's earlier
per-partition error."""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode

from consume.test_group_offsets_past_the_fence_unit import _commit, _fenced
from consume.test_handlers_unit import VIEW, ctx
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import Plan, UpstreamError


def _twice(version: int):
    """`_commit`'s topic log in two entries: partitions 0 and 7 (beyond P), then partition 1."""
    request = _commit(version)
    (log,) = request.topics
    first = dataclasses.replace(log, partitions=(log.partitions[0], log.partitions[2]))
    second = dataclasses.replace(log, partitions=(log.partitions[1],))
    return dataclasses.replace(request, topics=(first, second))


def _outcomes(answer) -> list[tuple[str, int, ErrorCode]]:
    return sorted((t.name, p.partition_index, p.error_code) for t in answer.topics for p in t.partitions)


def test_a_topic_named_twice_gets_every_partition_answered_under_the_proxys_own_conditions():
    frozen = dataclasses.replace(ctx(), view=dataclasses.replace(VIEW, commits_frozen=True))
    for c, condition in ((_fenced([]), ErrorCode.not_coordinator), (frozen, ErrorCode.coordinator_load_in_progress)):
        answer = groups.handle(c, None, _twice(8))
        assert not isinstance(answer, Plan)
        # branch: [("log", 1, condition), ("log", 7, UNKNOWN)]: partition 0 unanswered
        assert _outcomes(answer) == [("log", 0, condition), ("log", 1, condition),
                                     ("log", 7, ErrorCode.unknown_topic_or_partition)]


def test_a_topic_named_twice_gets_every_partition_answered_when_the_lookup_fails():
    answer = groups.handle(ctx(), None, _twice(8)).finish([UpstreamError("c1", "gone")])
    assert _outcomes(answer) == [("log", 0, ErrorCode.coordinator_not_available),
                                 ("log", 1, ErrorCode.coordinator_not_available),
                                 ("log", 7, ErrorCode.unknown_topic_or_partition)]
