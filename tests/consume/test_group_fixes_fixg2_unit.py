"""The fixes of review rvgrp 4-6 beyond the reviewer's tests: what a KIP-848 heartbeat owning partitions of a deleted
topic sends the coordinator (and that a topic of the view whose shadow id is not known yet is still retried), and the
authorized operations DescribeGroups / ConsumerGroupDescribe answer. Pure handler calls, no brokers."""

from __future__ import annotations

import dataclasses
import uuid

from kio.schema.errors import ErrorCode

from consume.test_consumer_groups_unit import LOGICAL_ID, SHADOW_ID, Header, Physical, coordinator_found, heartbeat
from consume.test_consumer_groups_unit import ctx as kip848_ctx
from consume.test_handlers_unit import COORDINATOR
from consume.test_handlers_unit import ctx as consume_ctx
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import consumer_groups, groups
from fedkafka.proxy.plan import Context, Plan, authorized_operations
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session

GONE = uuid.UUID(int=0xDE1)
NOT_ANSWERED = -2147483648
GROUP_OPERATIONS = (Operation.READ, Operation.DESCRIBE, Operation.DELETE, Operation.DESCRIBE_CONFIGS,
                    Operation.ALTER_CONFIGS)


def _bits(*operations: Operation) -> int:
    return sum(1 << op for op in operations)


def _acl(rtype, name, op, permission=Permission.ALLOW, principal="User:ops") -> AclBinding:
    return AclBinding(rtype, name, PatternType.LITERAL, principal, "*", op, permission)


def _as(c: Context, *bindings, super_users=frozenset()) -> Context:
    return dataclasses.replace(c, authorizer=Authorizer(bindings, super_users), session=Session(principal="User:ops"))


# -- ConsumerGroupHeartbeat: owned partitions ----------------------------------------------------------

def test_owned_partitions_of_a_deleted_topic_are_left_out_and_the_others_sent_with_shadow_ids():
    request = heartbeat(member_epoch=4, topic_partitions=[{"topic_id": GONE, "partitions": [0, 1]},
                                                          {"topic_id": LOGICAL_ID, "partitions": [1]}])
    (call,) = coordinator_found(consumer_groups.handle(kip848_ctx(), Header(), request)).calls
    assert [(tp.topic_id, tp.partitions) for tp in call.request.topic_partitions] == [(SHADOW_ID, (1,))]


def test_a_member_owning_only_a_deleted_topic_tells_the_coordinator_it_owns_nothing():
    """An empty list, not None: None means "unchanged since the last heartbeat" to the coordinator, which would then
    keep waiting for the revocation (CurrentAssignmentBuilder.ownsRevokedPartitions answers true for null)."""
    request = heartbeat(member_epoch=4, topic_partitions=[{"topic_id": GONE, "partitions": [0]}])
    (call,) = coordinator_found(consumer_groups.handle(kip848_ctx(), Header(), request)).calls
    assert call.request.topic_partitions == ()


def test_owned_partitions_of_a_topic_whose_shadow_id_is_not_known_yet_are_retried_not_left_out():
    """A topic of the view whose shadow topic this proxy has not seen yet: left out, the coordinator would count the
    member's partitions of it revoked and could give them to another member while this one still consumes them."""
    physical = Physical(known=False)
    request = heartbeat(member_epoch=4, subscribed_topic_names=None, topic_partitions=[
        {"topic_id": LOGICAL_ID, "partitions": [0]}])
    reply = consumer_groups.handle(kip848_ctx(physical), Header(), request)
    assert not isinstance(reply, Plan)
    assert reply.error_code == ErrorCode.coordinator_load_in_progress and physical.refreshed == ["c1"]
    assert "log" in reply.error_message


# -- authorized operations -----------------------------------------------------------------------------

def test_authorized_operations_follow_kafka_s_implied_operations_deny_and_super_users():
    c = consume_ctx()
    assert authorized_operations(c, ResourceType.GROUP, "g") == _bits(*GROUP_OPERATIONS)  # no authorizer: all
    read = _as(c, _acl(ResourceType.GROUP, "g", Operation.READ))
    assert authorized_operations(read, ResourceType.GROUP, "g") == _bits(Operation.READ, Operation.DESCRIBE)
    alter = _as(c, _acl(ResourceType.GROUP, "g", Operation.ALTER_CONFIGS))
    assert authorized_operations(alter, ResourceType.GROUP, "g") == _bits(Operation.ALTER_CONFIGS,
                                                                          Operation.DESCRIBE_CONFIGS)
    everything_but_delete = _as(c, _acl(ResourceType.GROUP, "g", Operation.ALL),
                                _acl(ResourceType.GROUP, "g", Operation.DELETE, Permission.DENY))
    assert authorized_operations(everything_but_delete, ResourceType.GROUP, "g") == _bits(
        Operation.READ, Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS)
    assert authorized_operations(_as(c, super_users=frozenset({"User:ops"})), ResourceType.GROUP, "g") == _bits(
        *GROUP_OPERATIONS)
    assert authorized_operations(read, ResourceType.GROUP, "other") == 0


def _described(*entries, operations: int = _bits(*GROUP_OPERATIONS)):
    """A DescribeGroups v5 answer of (group, error code) entries; `operations`: those of a group without an error,
    what the coordinator computed for the proxy's principal."""
    return build(response_type(15, 5), {"groups": [
        {"error_code": code, "group_id": g, "group_state": "Empty", "protocol_type": "consumer", "protocol_data": "",
         "members": [], "authorized_operations": operations if code == ErrorCode.none else NOT_ANSWERED}
        for g, code in entries]})


def test_describe_groups_answers_each_group_s_own_operations_and_none_for_a_group_in_error():
    c = _as(consume_ctx(), _acl(ResourceType.GROUP, "g", Operation.READ),
            _acl(ResourceType.GROUP, "h", Operation.DESCRIBE), _acl(ResourceType.GROUP, "dead", Operation.DESCRIBE))
    request = build(request_type(15, 5), {"groups": ["g", "h", "dead"], "include_authorized_operations": True})
    forward = groups.handle(c, None, request).finish([COORDINATOR])
    answer = _described(("g", ErrorCode.none), ("h", ErrorCode.none), ("dead", ErrorCode.coordinator_not_available))
    out = {g.group_id: g.authorized_operations for g in forward.finish([answer]).groups}
    assert out == {"g": _bits(Operation.READ, Operation.DESCRIBE), "h": _bits(Operation.DESCRIBE),
                   "dead": NOT_ANSWERED}


def test_describe_groups_not_asked_for_operations_answers_what_the_coordinator_answered():
    request = build(request_type(15, 5), {"groups": ["g"], "include_authorized_operations": False})
    forward = groups.handle(consume_ctx(), None, request).finish([COORDINATOR])
    out = forward.finish([_described(("g", ErrorCode.none), operations=NOT_ANSWERED)])
    assert [g.authorized_operations for g in out.groups] == [NOT_ANSWERED]


def test_consumer_group_describe_answers_no_operations_for_denied_or_hidden_groups():
    """A group refused GROUP_AUTHORIZATION_FAILED and one whose members' topics the principal may not describe
    (TOPIC_AUTHORIZATION_FAILED) carry no operations, as Kafka's error rows; the described one carries the
    principal's own."""
    c = _as(kip848_ctx(), _acl(ResourceType.GROUP, "g", Operation.DESCRIBE),
            _acl(ResourceType.GROUP, "h", Operation.DESCRIBE))
    request = build(request_type(69, 1), {"group_ids": ["g", "h", "x"], "include_authorized_operations": True})
    forward = coordinator_found(consumer_groups.handle(c, Header(), request))
    shadow = [{"topic_id": SHADOW_ID, "topic_name": "__fedkafka-shadow-log", "partitions": [0]}]
    member = {"member_id": "m1", "instance_id": None, "rack_id": None, "member_epoch": 3, "client_id": "app",
              "client_host": "/1", "subscribed_topic_names": ["__fedkafka-shadow-log"], "subscribed_topic_regex": None,
              "assignment": {"topic_partitions": shadow}, "target_assignment": {"topic_partitions": shadow},
              "member_type": 1}
    answer = build(response_type(69, 1), {"groups": [{
        "error_code": ErrorCode.none, "error_message": None, "group_id": g, "group_state": "Stable",
        "group_epoch": 3, "assignment_epoch": 3, "assignor_name": "uniform",
        "authorized_operations": _bits(*GROUP_OPERATIONS), "members": members}
        for g, members in (("g", []), ("h", [member]))]})
    out = {g.group_id: (g.error_code, g.authorized_operations) for g in forward.finish([answer]).groups}
    assert out == {"g": (ErrorCode.none, _bits(Operation.DESCRIBE)),
                   "h": (ErrorCode.topic_authorization_failed, NOT_ANSWERED),
                   "x": (ErrorCode.group_authorization_failed, NOT_ANSWERED)}
