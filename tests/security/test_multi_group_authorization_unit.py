"""APIs naming several groups are authorized group by group, as Kafka 4.x's KafkaApis does: a denied group is
answered GROUP_AUTHORIZATION_FAILED in its own entry and never reaches the coordinator, the others get the
coordinator's answers. OffsetFetch v8+ answers in request order (handleOffsetFetchRequestFromCoordinator: one future
per group entry, joined in order); DescribeGroups and ConsumerGroupDescribe answer the denied groups first, then the
coordinator's (handleDescribeGroupsRequest, handleConsumerGroupDescribe add the denied entries to the response before
the coordinator's results); DeleteGroups the coordinator's first, then the denied groups (handleDeleteGroupsRequest
sets the coordinator's results, then adds the unauthorized groups). Before, one denied group refused the whole
request. Pure handler calls, no brokers."""

from __future__ import annotations

import dataclasses

from consume.test_consumer_groups_unit import Header
from consume.test_consumer_groups_unit import ctx as kip848_ctx
from consume.test_handlers_unit import ctx as consume_ctx
from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import consumer_groups, groups
from fedkafka.proxy.plan import Context, Plan, UpstreamError
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session

OFFSET_FETCH, DESCRIBE, DELETE, CG_DESCRIBE = 9, 15, 42, 69
GAF = ErrorCode.group_authorization_failed


def _allowed(c: Context, operation: Operation, *group_ids: str) -> Context:
    bindings = [AclBinding(ResourceType.GROUP, g, PatternType.LITERAL, "User:ops", "*", operation, Permission.ALLOW)
                for g in group_ids]
    bindings.append(AclBinding(ResourceType.TOPIC, "log", PatternType.LITERAL, "User:ops", "*", Operation.DESCRIBE,
                               Permission.ALLOW))
    return dataclasses.replace(c, authorizer=Authorizer(bindings), session=Session(principal="User:ops"))


def _found(*placed: tuple[str, int]):
    """A FindCoordinator v4 answer placing each (group, node)."""
    return build(response_type(10, 4), {"coordinators": [
        {"key": g, "node_id": n, "host": "b", "port": 1, "error_code": ErrorCode.none, "error_message": None}
        for g, n in placed]})


def _described(*group_ids: str):
    return build(response_type(DESCRIBE, 5), {"groups": [
        {"group_id": g, "error_code": ErrorCode.none, "group_state": "Empty", "protocol_type": "consumer",
         "members": []} for g in group_ids]})


def test_describe_groups_answers_a_denied_group_alone_and_describes_the_others():
    c = _allowed(consume_ctx(), Operation.DESCRIBE, "g", "k")
    request = build(request_type(DESCRIBE, 5), {"groups": ["g", "h", "k"], "include_authorized_operations": False})
    lookup = groups.handle(c, None, request)
    assert isinstance(lookup, Plan)
    assert lookup.calls[0].request.coordinator_keys == ("g", "k")  # h never reaches the coordination cluster
    forward = lookup.finish([_found(("g", 4), ("k", 4))])
    (call,) = forward.calls
    assert call.request.groups == ("g", "k")
    answer = forward.finish([_described("g", "k")])
    assert [(g.group_id, g.error_code) for g in answer.groups] == [
        ("h", GAF), ("g", ErrorCode.none), ("k", ErrorCode.none)]
    down = forward.finish([UpstreamError("c1", "connection refused")])
    assert [(g.group_id, g.error_code) for g in down.groups] == [
        ("h", GAF), ("g", ErrorCode.coordinator_not_available), ("k", ErrorCode.coordinator_not_available)]


def test_delete_groups_deletes_the_allowed_groups_and_refuses_the_denied_one():
    c = _allowed(consume_ctx(), Operation.DELETE, "g")
    request = build(request_type(DELETE, 2), {"groups_names": ["g", "h"]})
    forward = groups.handle(c, None, request).finish([_found(("g", 4))])
    (call,) = forward.calls
    assert call.request.groups_names == ("g",)
    answer = forward.finish([build(response_type(DELETE, 2), {"results": [
        {"group_id": "g", "error_code": ErrorCode.none}]})])
    assert [(r.group_id, r.error_code) for r in answer.results] == [("g", ErrorCode.none), ("h", GAF)]
    frozen = dataclasses.replace(c, view=dataclasses.replace(c.view, commits_frozen=True))
    moving = groups.handle(frozen, None, request)  # authorization first, as Kafka: h stays refused
    assert not isinstance(moving, Plan)
    assert [(r.group_id, r.error_code) for r in moving.results] == [
        ("g", ErrorCode.coordinator_load_in_progress), ("h", GAF)]


def _fetch_request(*group_ids: str):
    return build(request_type(OFFSET_FETCH, 8), {"groups": [
        {"group_id": g, "topics": [{"name": "log", "partition_indexes": [0]}]} for g in group_ids],
        "require_stable": False})


def _fetched(*entries: tuple[str, int]):
    """An OffsetFetch v8 answer of (group, committed offset of log-0) entries, as the coordinator names topics."""
    return build(response_type(OFFSET_FETCH, 8), {"groups": [
        {"group_id": g, "error_code": ErrorCode.none, "topics": [{"name": "__fedkafka-shadow-log", "partitions": [
            {"partition_index": 0, "committed_offset": offset, "committed_leader_epoch": -1, "metadata": "",
             "error_code": ErrorCode.none}]}]} for g, offset in entries]})


def test_offset_fetch_of_several_groups_answers_each_in_request_order():
    c = _allowed(consume_ctx(), Operation.DESCRIBE, "g", "k")
    lookup = groups.handle(c, None, _fetch_request("g", "h", "k", "h"))
    assert lookup.calls[0].request.coordinator_keys == ("g", "k")
    forward = lookup.finish([_found(("g", 4), ("k", 5))])
    assert sorted(g.group_id for call in forward.calls for g in call.request.groups) == ["g", "k"]
    answer = forward.finish([_fetched(("g", 7)), _fetched(("k", 9))])
    assert [(g.group_id, g.error_code, [(t.name, [p.committed_offset for p in t.partitions]) for t in g.topics])
            for g in answer.groups] == [
        ("g", ErrorCode.none, [("log", [7])]), ("h", GAF, []), ("k", ErrorCode.none, [("log", [9])]), ("h", GAF, [])]


def test_a_request_whose_groups_are_all_denied_reaches_no_coordinator():
    c = _allowed(consume_ctx(), Operation.READ, "other")
    fetched = groups.handle(c, None, _fetch_request("g", "h"))
    assert not isinstance(fetched, Plan)
    assert [(g.group_id, g.error_code) for g in fetched.groups] == [("g", GAF), ("h", GAF)]
    described = groups.handle(c, None, build(request_type(DESCRIBE, 5), {
        "groups": ["g", "h"], "include_authorized_operations": False}))
    assert not isinstance(described, Plan) and {g.error_code for g in described.groups} == {GAF}


def _cg_described(*group_ids: str):
    return build(response_type(CG_DESCRIBE, 1), {"groups": [{
        "error_code": ErrorCode.none, "error_message": None, "group_id": g, "group_state": "Empty", "group_epoch": 1,
        "assignment_epoch": 1, "assignor_name": "uniform", "authorized_operations": 0, "members": []}
        for g in group_ids]})


def test_consumer_group_describe_answers_the_denied_groups_first_then_the_others_in_request_order():
    """g and m share a coordinator, k has its own: the coordinators' answers joined as they came were [g, m, k]."""
    c = _allowed(kip848_ctx(), Operation.DESCRIBE, "g", "k", "m")
    request = build(request_type(CG_DESCRIBE, 1), {"group_ids": ["g", "h", "k", "m"],
                                                   "include_authorized_operations": False})
    lookup = consumer_groups.handle(c, Header(), request)
    assert lookup.calls[0].request.coordinator_keys == ("g", "k", "m")
    forward = lookup.finish([_found(("g", 4), ("k", 5), ("m", 4))])
    replies = [_cg_described(*call.request.group_ids) for call in forward.calls]
    assert [g.group_id for g in forward.finish(replies).groups] == ["h", "g", "k", "m"]


def test_a_group_named_twice_is_asked_about_once_and_answered_per_naming_denied_or_not():
    """Kafka answers each naming of a group in DescribeGroups and ConsumerGroupDescribe (KafkaApis adds a refused
    entry per denied naming; the coordinators keep the ids in a list). The proxy asks the coordinator about each
    group once and builds (renames) its entry once (docs/DESIGN.md §4.8: a large group named 100,000 times), then
    answers it once per naming, the repeats next to it and the one entry again; it answered each group once.
    ConsumerGroupDescribe forwarded ["g", "g"] as it came when no group was denied."""
    c = _allowed(kip848_ctx(), Operation.DESCRIBE, "g")
    twice = build(request_type(CG_DESCRIBE, 1), {"group_ids": ["g", "g"], "include_authorized_operations": False})
    forward = consumer_groups.handle(c, Header(), twice).finish([_found(("g", 4))])
    (call,) = forward.calls
    assert call.request.group_ids == ("g",)
    answer = forward.finish([_cg_described("g")])
    assert [(g.group_id, g.error_code) for g in answer.groups] == [("g", ErrorCode.none)] * 2
    assert answer.groups[0] is answer.groups[1]  # built once
    mixed = build(request_type(CG_DESCRIBE, 1), {"group_ids": ["g", "x", "g", "x", "x"],
                                                 "include_authorized_operations": False})
    forward = consumer_groups.handle(c, Header(), mixed).finish([_found(("g", 4))])
    (call,) = forward.calls
    assert call.request.group_ids == ("g",)
    answer = forward.finish([_cg_described("g")])
    assert [(g.group_id, g.error_code) for g in answer.groups] == [("x", GAF)] * 3 + [("g", ErrorCode.none)] * 2
    only_denied = build(request_type(CG_DESCRIBE, 1), {"group_ids": ["x", "y", "x"],
                                                       "include_authorized_operations": False})
    refused = consumer_groups.handle(c, Header(), only_denied)
    assert [(g.group_id, g.error_code) for g in refused.groups] == [("x", GAF), ("x", GAF), ("y", GAF)]
    classic = build(request_type(DESCRIBE, 5), {"groups": ["h", "g", "h", "g"], "include_authorized_operations": False})
    forward = groups.handle(c, None, classic).finish([_found(("g", 4))])
    (call,) = forward.calls
    assert call.request.groups == ("g",)
    answer = forward.finish([_described("g")])
    assert [(g.group_id, g.error_code) for g in answer.groups] == [("h", GAF)] * 2 + [("g", ErrorCode.none)] * 2
    assert answer.groups[2] is answer.groups[3]
    down = forward.finish([UpstreamError("c1", "connection refused")])
    assert [(g.group_id, g.error_code) for g in down.groups] == [
        ("h", GAF)] * 2 + [("g", ErrorCode.coordinator_not_available)] * 2
    allowed_only = build(request_type(DESCRIBE, 5), {"groups": ["g", "g", "g"], "include_authorized_operations": False})
    forward = groups.handle(c, None, allowed_only).finish([_found(("g", 4))])
    assert forward.calls[0].request.groups == ("g",)
    assert [g.group_id for g in forward.finish([_described("g")]).groups] == ["g", "g", "g"]
