"""An OffsetCommit's partitions beyond a topic's partition count P (and a topic the view does not have) are
UNKNOWN_TOPIC_OR_PARTITION whatever the coordinator's condition. Pure handler calls, no brokers.

Kafka 4.x's KafkaApis.handleOffsetCommitRequest sorts a commit's topics before it asks the coordinator: no READ on
the topic is TOPIC_AUTHORIZATION_FAILED, a topic its metadata lacks or a partition it does not have
UNKNOWN_TOPIC_OR_PARTITION; only the rest goes to the coordinator (not at all when none is left), so only those can
get its condition (GroupCoordinatorService.commitOffsets answers COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, ... for
the partitions it was given, and the builder's errors are merged in). The proxy answered its own conditions (past
the fence, a frozen view, no coordination cluster) and those met on the way (the fence running out during the
lookup, the coordinator lost) for every readable partition, those beyond P too. Clients retry a commit's
UNKNOWN_TOPIC_OR_PARTITION as well (the Java consumer, librdkafka): the order gives Kafka's own code, and no `lease`
refusal logged for a commit of partitions beyond P only."""

from __future__ import annotations

import dataclasses
import time

from kio.schema.errors import ErrorCode
from security.test_s35_rvsecurity_review import _may_read_group_only

from consume.test_group_offsets_past_the_fence_unit import _commit, _fenced
from consume.test_handlers_unit import COORDINATOR, VIEW, Physical, ctx
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_type
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import Plan, UpstreamError
from fedkafka.proxy.state import ProxyState

UNKNOWN = ErrorCode.unknown_topic_or_partition


def _outcomes(answer) -> list[tuple[str, int, ErrorCode]]:
    return sorted((t.name, p.partition_index, p.error_code) for t in answer.topics for p in t.partitions)


def _expected(condition: ErrorCode) -> list[tuple[str, int, ErrorCode]]:
    """`_commit`'s partitions 0 and 1 of topic log (P = 2) answered `condition`, its partition 7 UNKNOWN."""
    return [("log", 0, condition), ("log", 1, condition), ("log", 7, UNKNOWN)]


def test_past_the_fence_partitions_beyond_p_are_unknown_and_the_others_not_coordinator():
    for version in (2, 8, 9):
        answer = groups.handle(_fenced([]), None, _commit(version))
        assert not isinstance(answer, Plan)
        assert _outcomes(answer) == _expected(ErrorCode.not_coordinator), version  # main: 7 NOT_COORDINATOR


def test_under_a_frozen_view_or_without_a_coordination_cluster_partitions_beyond_p_are_unknown():
    frozen = dataclasses.replace(ctx(), view=dataclasses.replace(VIEW, commits_frozen=True))
    nowhere = dataclasses.replace(ctx(), view=dataclasses.replace(VIEW, coordination_cluster=None))
    for c, condition in ((frozen, ErrorCode.coordinator_load_in_progress),
                         (nowhere, ErrorCode.coordinator_not_available)):
        answer = groups.handle(c, None, _commit(8))
        assert not isinstance(answer, Plan)
        assert _outcomes(answer) == _expected(condition)


def test_a_topic_the_view_does_not_have_is_unknown_past_the_fence_too():
    request = _commit(8)
    request = dataclasses.replace(request, topics=(*request.topics, dataclasses.replace(request.topics[0],
                                                                                       name="nope")))
    answer = groups.handle(_fenced([]), None, request)
    assert _outcomes(answer) == sorted([*_expected(ErrorCode.not_coordinator), ("nope", 0, UNKNOWN),
                                        ("nope", 1, UNKNOWN), ("nope", 7, UNKNOWN)])


def test_a_commit_of_partitions_beyond_p_only_asks_no_coordinator_and_refuses_no_lease():
    """As Kafka, whose coordinator is not asked when no partition is left: nothing to refuse past the fence."""
    refusals: list[tuple] = []
    beyond = _commit(8)
    beyond = dataclasses.replace(beyond, topics=(dataclasses.replace(beyond.topics[0], partitions=(
        beyond.topics[0].partitions[2],)),))
    answer = groups.handle(_fenced(refusals), None, beyond)
    assert not isinstance(answer, Plan)
    assert _outcomes(answer) == [("log", 7, UNKNOWN)]
    assert refusals == []  # main: a lease refusal of group g


def test_conditions_met_on_the_way_leave_partitions_beyond_p_unknown():
    """The coordinator lookup failing, the coordinator lost, the fence running out while the coordinator was looked
    up or before the call was written (the core's refusal): each answers the partitions sent, not those beyond P."""
    lookup = groups.handle(ctx(), None, _commit(8))
    assert _outcomes(lookup.finish([UpstreamError("c1", "gone")])) == _expected(ErrorCode.coordinator_not_available)
    lost = build(response_type(10, 4), {"coordinators": [{"key": "g", "node_id": -1, "host": "", "port": -1,
                                                           "error_code": ErrorCode.coordinator_load_in_progress}]})
    assert _outcomes(lookup.finish([lost])) == _expected(ErrorCode.coordinator_load_in_progress)
    forward = lookup.finish([COORDINATOR])
    assert _outcomes(forward.finish([UpstreamError("c1", "gone")])) == _expected(
        ErrorCode.coordinator_not_available)

    state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() + 3600)
    dispatcher = Dispatcher(state=state, physical=Physical(), producer_ids=None, pool=None)  # type: ignore[arg-type]
    lookup = groups.handle(dispatcher.context(None, advertised={}), None, _commit(8))
    state.lease_deadline = time.monotonic() - 1  # the fence runs out while the coordinator is looked up
    assert _outcomes(lookup.finish([COORDINATOR])) == _expected(ErrorCode.not_coordinator)


def test_within_the_fence_the_coordinator_is_sent_the_partitions_below_p_only():
    forward = groups.handle(ctx(), None, _commit(8)).finish([COORDINATOR])
    (call,) = forward.calls
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in call.request.topics] == [
        ("__fedkafka-shadow-log", [0, 1])]
    answered = build(response_type(8, 8), {"topics": [
        {"name": "__fedkafka-shadow-log", "partitions": [{"partition_index": p, "error_code": ErrorCode.none}
                                                         for p in (0, 1)]}]})
    assert _outcomes(forward.finish([answered])) == _expected(ErrorCode.none)


def test_a_commit_without_read_on_the_topic_is_topic_authorization_failed_beyond_p_too():
    """KafkaApis checks READ on the topic before its partitions: a denied topic's every partition is TAF."""
    fenced = dataclasses.replace(_may_read_group_only(), lease_valid=False)
    answer = groups.handle(fenced, None, _commit(8))
    assert _outcomes(answer) == [("log", p, ErrorCode.topic_authorization_failed) for p in (0, 1, 7)]
