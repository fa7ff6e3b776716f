"""Review of the consumer-group path (branch rvgrp): each test shows a difference from what Kafka 4.x answers, or an
acknowledged group operation that a coordination move undoes. Pure handler calls, no brokers."""

from __future__ import annotations

import dataclasses
import uuid

from kio.schema.errors import ErrorCode

from consume.test_consumer_groups_unit import LOGICAL_ID, Header, heartbeat
from consume.test_consumer_groups_unit import ctx as kip848_ctx
from consume.test_handlers_unit import COORDINATOR, VIEW
from consume.test_handlers_unit import ctx as consume_ctx
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import consumer_groups, groups
from fedkafka.proxy.plan import Context, Plan
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session


def _acl(rtype, name, op, principal="User:ops") -> AclBinding:
    return AclBinding(rtype, name, PatternType.LITERAL, principal, "*", op, Permission.ALLOW)


def _as(c: Context, *bindings, principal="User:ops") -> Context:
    return dataclasses.replace(c, authorizer=Authorizer(bindings), session=Session(principal=principal))


def test_list_groups_with_describe_on_the_cluster_lists_every_group_as_kafka_does():
    """KafkaApis.handleListGroupsRequest: with DESCRIBE on the CLUSTER all groups are returned (kept for backward
    compatibility: monitoring principals are commonly granted just that); only without it are the groups filtered
    by DESCRIBE on each group."""
    lone = dataclasses.replace(VIEW, proxies=(VIEW.proxies[0], VIEW.proxies[2]))  # proxy 1 coordinates every group
    c = _as(dataclasses.replace(consume_ctx(), view=lone), _acl(ResourceType.CLUSTER, "kafka-cluster",
                                                                Operation.DESCRIBE))
    plan = groups.handle(c, None, build(request_type(16, 5), {"states_filter": [], "types_filter": []}))
    brokers = build(response_type(3, 12), {"brokers": [{"node_id": 5, "host": "h", "port": 1}]})
    fan = plan.finish([brokers])
    listed = build(response_type(16, 5), {"groups": [{"group_id": g, "protocol_type": "consumer"}
                                                      for g in ("orders", "billing")]})
    assert [g.group_id for g in fan.finish([listed]).groups] == ["orders", "billing"]


def test_offset_fetch_naming_a_group_twice_answers_each_entry_its_own_refused_topics():
    """OffsetFetch v8+ naming group g twice (KafkaApis fetches each entry on its own): the first asks topic "log"
    (may not describe), the second "pay" (may). The second entry must not be answered "log" refused, nor the
    first "pay": each entry answers exactly the topics it asked."""
    c = _as(consume_ctx(), _acl(ResourceType.GROUP, "g", Operation.DESCRIBE),
            _acl(ResourceType.TOPIC, "pay", Operation.DESCRIBE))
    request = build(request_type(9, 8), {"groups": [
        {"group_id": "g", "topics": [{"name": "log", "partition_indexes": [0]}]},
        {"group_id": "g", "topics": [{"name": "pay", "partition_indexes": [0]}]}], "require_stable": False})
    forward = groups.handle(c, None, request).finish([COORDINATOR])
    pay = {"name": "__fedkafka-shadow-pay", "partitions": [{"partition_index": 0, "committed_offset": 7,
                                                             "committed_leader_epoch": -1, "metadata": "",
                                                             "error_code": ErrorCode.none}]}
    answer = build(response_type(9, 8), {"groups": [{"group_id": "g", "topics": [], "error_code": ErrorCode.none},
                                                    {"group_id": "g", "topics": [pay], "error_code": ErrorCode.none}]})
    out = forward.finish([answer])
    assert [sorted(t.name for t in g.topics) for g in out.groups] == [["log"], ["pay"]]


def _frozen() -> Context:
    frozen = dataclasses.replace(VIEW, commits_frozen=True)
    return Context(view=frozen, me=frozen.proxies[0], advertised={}, physical=consume_ctx().physical,
                   producer_ids=None)


def test_offset_delete_is_not_sent_to_the_old_coordinator_while_a_move_copies_the_offsets():
    """docs/DESIGN.md §10.1: once the move has read A's offsets, whatever reaches A is not on B. An OffsetDelete
    acknowledged then is undone by the switch: the group resumes at the deleted offsets (not auto.offset.reset)."""
    request = build(request_type(47, 0), {"group_id": "g", "topics": [
        {"name": "log", "partitions": [{"partition_index": 0}]}]})
    out = groups.handle(_frozen(), None, request)
    assert not isinstance(out, Plan), "OffsetDelete forwarded to the old coordinator during the freeze"


def test_delete_groups_is_not_sent_to_the_old_coordinator_while_a_move_copies_the_offsets():
    """The same for DeleteGroups (kafka-consumer-groups --delete): acknowledged on A after the copy, the group and its
    offsets come back on B at the switch."""
    out = groups.handle(_frozen(), None, build(request_type(42, 2), {"groups_names": ["g"]}))
    assert not isinstance(out, Plan), "DeleteGroups forwarded to the old coordinator during the freeze"


def test_a_heartbeat_owning_partitions_of_a_deleted_topic_still_reaches_the_coordinator():
    """A KIP-848 member owns a partition of topic X; X is deleted (its id leaves the view). The Java consumer resends
    all fields, owned partitions included, after any error answer (AbstractHeartbeatRequestManager.onErrorResponse
    -> resetHeartbeatState), and keeps owning X until the coordinator assigns anew. Kafka's coordinator accepts
    owned partitions of a topic it no longer has. The proxy answers COORDINATOR_LOAD_IN_PROGRESS without asking
    anyone, and a refresh of the coordination cluster cannot bring back a topic the view no longer has: every
    retry gets the same answer, the member never gets its new assignment and is fenced at the coordinator while
    still consuming its old partitions."""
    gone = uuid.UUID(int=0xDE1)
    request = heartbeat(member_epoch=4, topic_partitions=[{"topic_id": LOGICAL_ID, "partitions": [0]},
                                                          {"topic_id": gone, "partitions": [0]}])
    for _attempt in range(3):
        reply = consumer_groups.handle(kip848_ctx(), Header(), request)
        assert isinstance(reply, Plan), f"answered {ErrorCode(reply.error_code).name}: {reply.error_message}"


ALL_GROUP_OPERATIONS = sum(1 << op for op in (Operation.READ, Operation.DELETE, Operation.DESCRIBE,
                                              Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS))


def test_describe_groups_reports_the_client_s_own_authorized_operations():
    """DescribeGroups with include_authorized_operations: Kafka answers the operations the *asking* principal may
    do on the group (KafkaApis: authHelper.authorizedOperations(request, GROUP)). The proxy passes on what the
    coordination cluster computed for the proxy's own upstream principal: a client that may only DESCRIBE g is told
    it may READ, DELETE and ALTER_CONFIGS it too."""
    c = _as(consume_ctx(), _acl(ResourceType.GROUP, "g", Operation.DESCRIBE))
    request = build(request_type(15, 5), {"groups": ["g"], "include_authorized_operations": True})
    forward = groups.handle(c, None, request).finish([COORDINATOR])
    answer = build(response_type(15, 5), {"groups": [
        {"error_code": ErrorCode.none, "group_id": "g", "group_state": "Empty", "protocol_type": "consumer",
         "protocol_data": "", "members": [], "authorized_operations": ALL_GROUP_OPERATIONS}]})
    (group,) = forward.finish([answer]).groups
    assert group.authorized_operations == 1 << Operation.DESCRIBE


def test_consumer_group_describe_reports_the_client_s_own_authorized_operations():
    """The same for KIP-848's ConsumerGroupDescribe (kafka-consumer-groups --describe, AdminClient with
    includeAuthorizedOperations): the coordination cluster's answer for the proxy's principal is passed on."""
    c = _as(kip848_ctx(), _acl(ResourceType.GROUP, "g", Operation.DESCRIBE))
    request = build(request_type(69, 1), {"group_ids": ["g"], "include_authorized_operations": True})
    forward = consumer_groups.handle(c, Header(), request).finish([COORDINATOR])
    answer = build(response_type(69, 1), {"groups": [{
        "error_code": ErrorCode.none, "error_message": None, "group_id": "g", "group_state": "Empty",
        "group_epoch": 3, "assignment_epoch": 3, "assignor_name": "uniform",
        "authorized_operations": ALL_GROUP_OPERATIONS, "members": []}]})
    (group,) = forward.finish([answer]).groups
    assert group.authorized_operations == 1 << Operation.DESCRIBE
