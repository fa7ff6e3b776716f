"""An OffsetFetch is never answered a coordinator error that asks the client to look the coordinator up again
(NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE), whoever gave it: the coordination cluster's coordinator (it moved
between the proxy's lookup and its call), the lookup (failed, or answered with an error), or a coordinator not
reached. Each is COORDINATOR_LOAD_IN_PROGRESS, which clients retry on this proxy, whose next attempt looks the
coordinator up again (docs/DESIGN.md §4.9 F2, §5.6). Pure handler plans driven by hand, no brokers.

librdkafka (rd_kafka_handle_OffsetFetch: default rd_kafka_err_action) takes both codes as REFRESH alone for its
assignment's OffsetFetch, and rd_kafka_assignment_apply_offsets does nothing more for them: the partitions were never
fetched until the group's next rebalance (librdkafka issue #5586; the same stall past the fence:
tests/workflows/test_offset_fetch_past_the_fence.py). The old code passed them on as they came."""

from __future__ import annotations

import dataclasses

import pytest
from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import COORDINATOR, ctx
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import Plan, UpstreamError
from fedkafka.view.model import shadow_topic

LOAD = ErrorCode.coordinator_load_in_progress
LOOKUP_ERRORS = (ErrorCode.not_coordinator, ErrorCode.coordinator_not_available)
FETCHES = {
    1: build(request_type(9, 1), {"group_id": "g", "topics": [{"name": "log", "partition_indexes": [0, 1]}]}),
    7: build(request_type(9, 7), {"group_id": "g", "topics": [{"name": "log", "partition_indexes": [0, 1]}],
                                  "require_stable": True}),
    8: build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": [
        {"name": "log", "partition_indexes": [0, 1]}]}], "require_stable": True}),
}


def _coordinator_answer(version: int, code: ErrorCode):
    """The coordinator's OffsetFetch answer of partitions 0 and 1 of the shadow topic, `code` where Kafka puts it."""
    partitions = [{"partition_index": p, "committed_offset": -1, "committed_leader_epoch": -1, "metadata": None,
                   "error_code": code if version < 2 else ErrorCode.none} for p in (0, 1)]
    topics = [{"name": shadow_topic("log"), "partitions": partitions}]
    if version >= 8:
        return build(response_type(9, version), {"groups": [{"group_id": "g", "topics": topics, "error_code": code}]})
    return build(response_type(9, version), {"topics": topics, **({"error_code": code} if version >= 2 else {})})


def _codes(answer) -> set:
    """Every error code of an OffsetFetch answer: its groups', its top level's and its partitions'."""
    entries = answer.groups if type(answer).__version__ >= 8 else [answer]
    codes = {e.error_code for e in entries if hasattr(e, "error_code")}  # v1 has partition codes only
    return codes | {p.error_code for e in entries for t in e.topics for p in t.partitions}


def _lookup(version: int) -> Plan:
    plan = groups.handle(ctx(), None, FETCHES[version])
    assert isinstance(plan, Plan) and plan.barrier and plan.calls  # the FindCoordinator round
    return plan


@pytest.mark.parametrize("version", sorted(FETCHES))
@pytest.mark.parametrize("code", LOOKUP_ERRORS, ids=lambda c: c.name)
def test_the_coordinators_own_lookup_error_is_answered_load_in_progress(version, code):
    sent = _lookup(version).finish([COORDINATOR])
    assert isinstance(sent, Plan) and sent.calls
    answer = sent.finish([_coordinator_answer(version, code)])
    assert _codes(answer) - {ErrorCode.none} == {LOAD}, _codes(answer)


@pytest.mark.parametrize("version", sorted(FETCHES))
def test_a_lookup_that_failed_or_a_coordinator_not_reached_is_answered_load_in_progress(version):
    failed = _lookup(version).finish([UpstreamError("c1", "cannot reach cluster c1")])
    assert _codes(failed) == {LOAD}, _codes(failed)
    refused = build(response_type(10, 4), {"coordinators": [
        {"key": "g", "node_id": -1, "host": "", "port": -1, "error_code": ErrorCode.coordinator_not_available}]})
    assert _codes(_lookup(version).finish([refused])) == {LOAD}
    sent = _lookup(version).finish([COORDINATOR])
    assert _codes(sent.finish([UpstreamError("c1", "cannot reach cluster c1")])) == {LOAD}


def test_other_answers_pass_as_they_came():
    sent = _lookup(8).finish([COORDINATOR])
    answer = sent.finish([_coordinator_answer(8, ErrorCode.none)])
    assert [(p.partition_index, p.error_code) for p in answer.groups[0].topics[0].partitions] == [
        (0, ErrorCode.none), (1, ErrorCode.none)]
    answer = _lookup(8).finish([COORDINATOR]).finish([_coordinator_answer(8, ErrorCode.group_id_not_found)])
    assert _codes(answer) == {ErrorCode.group_id_not_found, ErrorCode.none}


def test_a_commit_keeps_the_coordinator_error_it_gets():
    """A commit is sent again by the client at its next commit (librdkafka REFRESH, the Java consumer looks up and
    retries), and counts in its view's drain: its answers are left as they are."""
    commit = build(request_type(8, 8), {
        "group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m", "group_instance_id": None,
        "topics": [{"name": "log", "partitions": [{"partition_index": 0, "committed_offset": 5,
                                                   "committed_leader_epoch": -1, "committed_metadata": None}]}]})
    sent = groups.handle(ctx(), None, commit).finish([COORDINATOR])
    answer = sent.finish([UpstreamError("c1", "cannot reach cluster c1")])
    assert [p.error_code for t in answer.topics for p in t.partitions] == [ErrorCode.coordinator_not_available]


def test_of_several_groups_only_those_answered_a_lookup_error_are_renewed_partitions_and_all():
    """A v8 answer joined from several coordinators (or the proxy's own `failure` for some groups): a group answered
    NOT_COORDINATOR, with the code on each partition too as `failure` puts it, is renewed throughout; a group
    answered without one is passed on as it came, the same object (its partitions are not walked)."""
    fetch = build(request_type(9, 8), {"groups": [{"group_id": g, "topics": [
        {"name": "log", "partition_indexes": [0, 1]}]} for g in ("moved", "here")], "require_stable": True})
    refused = groups.failure(fetch, ErrorCode.not_coordinator).groups[0]
    answered = dataclasses.replace(_coordinator_answer(8, ErrorCode.none).groups[0], group_id="here")
    answer = groups._retried_here(dataclasses.replace(groups.failure(fetch, ErrorCode.none),
                                                      groups=(refused, answered)))
    moved, here = answer.groups
    assert moved.error_code == LOAD and {p.error_code for t in moved.topics for p in t.partitions} == {LOAD}
    assert here is answered
