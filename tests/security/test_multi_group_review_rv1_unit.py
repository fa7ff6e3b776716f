"""Review rv1 of the per-group authorization of group APIs (c4f72b1), against Kafka 4.x's KafkaApis:
handleDeleteGroupsRequest takes `groupsNames.asScala.distinct` (a group named twice is answered once, denied or not)
and adds the unauthorized groups' results after the coordinator's (`response.setResults(results)`, then
`unauthorizedGroups.foreach(response.results.add ...)`); and DESIGN §11: "A request's denials are counted one by
one (fedkafka_proxy_refusals_total{reason="auth"})", whichever group API refused. Pure handler calls, no brokers."""

from __future__ import annotations

import dataclasses

from consume.test_consumer_groups_unit import Header
from consume.test_consumer_groups_unit import ctx as kip848_ctx
from consume.test_handlers_unit import ctx as consume_ctx
from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import consumer_groups, find_coordinator, groups
from fedkafka.proxy.plan import Plan
from fedkafka.security.acl import Operation
from security.test_multi_group_authorization_unit import (
    CG_DESCRIBE,
    DELETE,
    GAF,
    _allowed,
    _cg_described,
    _described,
    _fetch_request,
    _found,
)

OFFSET_COMMIT = 8


def test_delete_groups_answers_a_denied_group_named_twice_once():
    """Kafka answers DeleteGroups per distinct group; the proxy answered the denied h once per naming."""
    c = _allowed(consume_ctx(), Operation.DELETE, "g")
    alone = groups.handle(c, None, build(request_type(DELETE, 2), {"groups_names": ["h", "h"]}))
    assert not isinstance(alone, Plan)
    assert [(r.group_id, r.error_code) for r in alone.results] == [("h", GAF)]
    mixed = groups.handle(c, None, build(request_type(DELETE, 2), {"groups_names": ["g", "h", "h"]}))
    answer = mixed.finish([_found(("g", 4))]).finish([build(response_type(DELETE, 2), {"results": [
        {"group_id": "g", "error_code": ErrorCode.none}]})])
    assert sorted((r.group_id, r.error_code) for r in answer.results) == [("g", ErrorCode.none), ("h", GAF)]


def test_delete_groups_answers_the_denied_groups_after_the_coordinators_results():
    """Kafka 4.x handleDeleteGroupsRequest sets the coordinator's results, then adds the unauthorized groups (the
    docs and `_with_refused` say "the refused first, as KafkaApis adds them before the coordinator's results": true
    of DescribeGroups and ConsumerGroupDescribe, not of DeleteGroups). Order only: clients key results by group id."""
    c = _allowed(consume_ctx(), Operation.DELETE, "g")
    forward = groups.handle(c, None, build(request_type(DELETE, 2), {"groups_names": ["g", "h"]})).finish(
        [_found(("g", 4))])
    answer = forward.finish([build(response_type(DELETE, 2), {"results": [
        {"group_id": "g", "error_code": ErrorCode.none}]})])
    assert [(r.group_id, r.error_code) for r in answer.results] == [("g", ErrorCode.none), ("h", GAF)]


def _counting(c):
    refusals: list[tuple] = []
    return dataclasses.replace(c, on_refusal=lambda *a: refusals.append(a[:3]), on_refusals=None), refusals


def test_a_denied_single_group_request_is_counted_as_an_auth_refusal():
    """OffsetFetch v8 naming a denied group is counted (reason auth); the same fetch as v7, or an OffsetCommit, of
    that group was answered GROUP_AUTHORIZATION_FAILED without being counted or logged."""
    c, refusals = _counting(_allowed(consume_ctx(), Operation.READ, "other"))
    v8 = groups.handle(c, None, _fetch_request("h"))
    assert [g.error_code for g in v8.groups] == [GAF] and refusals == [("auth", "h", -1)]
    refusals.clear()
    v7 = groups.handle(c, None, build(request_type(9, 7), {
        "group_id": "h", "topics": [{"name": "log", "partition_indexes": [0]}], "require_stable": False}))
    assert v7.error_code == GAF
    assert refusals == [("auth", "h", -1)]
    refusals.clear()
    commit = groups.handle(c, None, build(request_type(OFFSET_COMMIT, 8), {
        "group_id": "h", "generation_id_or_member_epoch": -1, "member_id": "", "group_instance_id": None,
        "topics": [{"name": "log", "partitions": [{"partition_index": 0, "committed_offset": 1,
                                                   "committed_leader_epoch": -1, "committed_metadata": ""}]}]}))
    assert not isinstance(commit, Plan)
    assert refusals == [("auth", "h", -1)]


def test_describe_groups_passes_one_coordinators_answer_on_in_its_order_after_the_denied_groups():
    """Kafka's DescribeGroups answer is the denied groups, then the coordinator's in the order it answers them (by
    __consumer_offsets partition), here [k, g] for [h, g, k]: with one coordinator (the usual case) the proxy passes
    that on as it came, which is Kafka's answer; only several coordinators' answers are merged, in request order
    (DESIGN §11 said "in request order" of both)."""
    c = _allowed(consume_ctx(), Operation.DESCRIBE, "g", "k")
    request = build(request_type(15, 5), {"groups": ["h", "g", "k"], "include_authorized_operations": False})
    forward = groups.handle(c, None, request).finish([_found(("g", 4), ("k", 4))])
    answer = forward.finish([_described("k", "g")])
    assert [g.group_id for g in answer.groups] == ["h", "k", "g"]


def test_consumer_group_describe_passes_one_coordinators_answer_on_in_its_order_after_the_denied_groups():
    """As DescribeGroups (KafkaApis.handleConsumerGroupDescribe adds the denied groups, then the coordinator's
    results): with one coordinator its answer passes as it came ([k, g] for [h, g, k]); the module docstring said
    "the others in request order"."""
    c = _allowed(kip848_ctx(), Operation.DESCRIBE, "g", "k")
    request = build(request_type(CG_DESCRIBE, 1), {"group_ids": ["h", "g", "k"],
                                                   "include_authorized_operations": False})
    forward = consumer_groups.handle(c, Header(), request).finish([_found(("g", 4), ("k", 4))])
    assert [g.group_id for g in forward.finish([_cg_described("k", "g")]).groups] == ["h", "k", "g"]


def test_a_commit_to_a_topic_the_principal_may_not_read_is_counted_as_an_auth_refusal():
    """OffsetFetch and OffsetDelete count each topic they refuse (reason auth); OffsetCommit answered the partitions
    of a topic without READ TOPIC_AUTHORIZATION_FAILED uncounted. `log` is granted DESCRIBE only, which is no READ."""
    c, refusals = _counting(_allowed(consume_ctx(), Operation.READ, "g"))
    commit = groups.handle(c, None, build(request_type(OFFSET_COMMIT, 8), {
        "group_id": "g", "generation_id_or_member_epoch": -1, "member_id": "", "group_instance_id": None,
        "topics": [{"name": "log", "partitions": [{"partition_index": 0, "committed_offset": 1,
                                                   "committed_leader_epoch": -1, "committed_metadata": ""}]}]}))
    assert not isinstance(commit, Plan)
    assert [(t.name, [p.error_code for p in t.partitions]) for t in commit.topics] == [
        ("log", [ErrorCode.topic_authorization_failed])]
    assert refusals == [("auth", "log", -1)]


def test_a_coordinator_lookup_of_a_denied_group_is_counted_as_an_auth_refusal():
    """FindCoordinator answers a group the principal may not describe GROUP_AUTHORIZATION_FAILED; it was not counted,
    while every other group API's denial is. Each denied key counted once, however often the request names it."""
    c, refusals = _counting(_allowed(consume_ctx(), Operation.DESCRIBE, "g"))
    answer = find_coordinator.handle(c, None, build(request_type(10, 4), {
        "key_type": 0, "coordinator_keys": ["g", "h", "h"]}))
    assert [(a.key, a.error_code) for a in answer.coordinators] == [
        ("g", ErrorCode.none), ("h", GAF), ("h", GAF)]
    assert refusals == [("auth", "h", -1)]
