"""The Kafka admin handlers check ACLs as Kafka does, per entity, before any call to the controller or a broker:
CreateTopics, DeleteTopics, CreatePartitions, AlterConfigs, DeleteRecords, ElectLeaders, the reassignment APIs and
the KIP-848 consumer group APIs."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from consume.test_consumer_groups_unit import SHADOW_ID, Header, coordinator_found, heartbeat
from consume.test_consumer_groups_unit import ctx as groups_ctx
from kio.schema.errors import ErrorCode
from proxy.test_admin_handlers import TIMEOUT, chain_view, created, records_req, req
from proxy.test_handlers import ctx as admin_ctx

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import (
    MODULES,
    acl_admin,
    alter_configs,
    cluster_ops,
    consumer_groups,
    delete_records,
    topic_admin,
)
from fedkafka.proxy.plan import ControllerAnswer, Plan, UpstreamError
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session

T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
WHO = "User:mallory"


def acl(rtype, name, op, permission=Permission.ALLOW) -> AclBinding:
    return AclBinding(rtype, name, PatternType.LITERAL, WHO, "*", op, permission)


def with_acls(c, *bindings):
    return dataclasses.replace(c, authorizer=Authorizer(bindings), session=Session(principal=WHO))


def controller_paths(reply) -> list[str]:
    return [call.request.path for call in reply.calls] if isinstance(reply, Plan) else []


def test_every_handler_module_checks_acls_itself():
    # the deny-by-default net (super users only) is for modules added later, not for any served now
    assert [m.__name__ for m in MODULES if not getattr(m, "AUTHORIZES", False)] == []


# -- CreateTopics / DeleteTopics / CreatePartitions -------------------------------------------------------------
def _create(*names):
    return req(19, 7, {"topics": [{"name": n, "num_partitions": 1, "replication_factor": -1, "assignments": [],
                                   "configs": [{"name": "retention.ms", "value": "9"}]} for n in names],
                       "timeout": TIMEOUT, "validate_only": False})


def test_create_topics_needs_create_on_the_topic_or_the_cluster():
    denied = topic_admin.handle(with_acls(admin_ctx()), None, _create("a"))
    assert not isinstance(denied, Plan)
    assert [(t.name, t.error_code) for t in denied.topics] == [("a", ErrorCode.topic_authorization_failed)]
    plan = topic_admin.handle(with_acls(admin_ctx(), acl(T, "a", Operation.CREATE)), None, _create("a", "b"))
    assert controller_paths(plan) == ["/v1/admin/topics"] and plan.calls[0].request.body["name"] == "a"
    answer = plan.finish([created("a", 1, {"retention.ms": "9"})])
    by_name = {t.name: t for t in answer.topics}
    assert by_name["b"].error_code == ErrorCode.topic_authorization_failed
    # created, but without DESCRIBE_CONFIGS the configs stay hidden, as Kafka answers
    assert by_name["a"].error_code == ErrorCode.none and by_name["a"].configs == ()
    assert by_name["a"].topic_config_error_code == ErrorCode.topic_authorization_failed
    on_cluster = topic_admin.handle(with_acls(admin_ctx(), acl(C, "kafka-cluster", Operation.CREATE),
                                              acl(T, "a", Operation.ALTER_CONFIGS)), None, _create("a", "b"))
    assert len(on_cluster.calls) == 2
    shown = on_cluster.finish([created("a", 1, {"retention.ms": "9"}), created("b", 1)]).topics[0]
    assert [(c.name, c.value) for c in shown.configs] == [("retention.ms", "9")]


def test_delete_topics_needs_delete_and_hides_the_name_of_an_id_it_may_not_describe():
    c = admin_ctx()
    known = uuid.UUID(hex=c.view.topics["t"].topic_id)
    by_id = req(20, 6, {"topics": [{"name": None, "topic_id": known}], "timeout": TIMEOUT})
    by_name = req(20, 6, {"topics": [{"name": "t", "topic_id": uuid.UUID(int=0)}], "timeout": TIMEOUT})
    hidden = topic_admin.handle(with_acls(c), None, by_id)
    assert not isinstance(hidden, Plan)
    assert [(r.name, r.error_code) for r in hidden.responses] == [(None, ErrorCode.topic_authorization_failed)]
    described = topic_admin.handle(with_acls(c, acl(T, "t", Operation.DESCRIBE)), None, by_id)
    assert [(r.name, r.error_code) for r in described.responses] == [("t", ErrorCode.topic_authorization_failed)]
    named = topic_admin.handle(with_acls(c), None, by_name)
    assert [(r.name, r.error_code) for r in named.responses] == [("t", ErrorCode.topic_authorization_failed)]
    for allowed in (acl(T, "t", Operation.DELETE), acl(C, "kafka-cluster", Operation.DELETE)):
        assert controller_paths(topic_admin.handle(with_acls(c, allowed), None, by_id)) == [
            f"/v1/admin/topics/t?topic_id={known.hex}"]  # by id: the controller deletes only the topic of that id
    deny = acl(T, "t", Operation.DELETE, Permission.DENY)
    assert not isinstance(topic_admin.handle(with_acls(c, acl(T, "t", Operation.ALL), deny), None, by_name), Plan)


def test_create_partitions_needs_alter_on_the_topic():
    request = req(37, 3, {"topics": [{"name": "t", "count": 5, "assignments": None},
                                     {"name": "u", "count": 5, "assignments": None}],
                          "timeout": TIMEOUT, "validate_only": False})
    plan = topic_admin.handle(with_acls(admin_ctx(), acl(T, "t", Operation.ALTER),
                                        acl(C, "kafka-cluster", Operation.ALTER)), None, request)
    assert controller_paths(plan) == ["/v1/admin/topics/t/partitions"]  # ALTER on the cluster is not enough
    answer = plan.finish([created("t", 5)])
    assert [(r.name, r.error_code) for r in answer.results] == [
        ("t", ErrorCode.none), ("u", ErrorCode.topic_authorization_failed)]


# -- AlterConfigs / IncrementalAlterConfigs ------------------------------------------------------------------
@pytest.mark.parametrize("key,version", [(33, 2), (44, 1)])
def test_alter_configs_needs_alter_configs_on_the_topic_the_cluster_or_the_group(key, version):
    config = {"name": "retention.ms", "value": "5"} | ({"config_operation": 0} if key == 44 else {})
    request = req(key, version, {"resources": [{"resource_type": rt, "resource_name": name, "configs": [config]}
                                               for rt, name in ((2, "t"), (4, "1"), (32, "g"), (2, "u"))],
                                 "validate_only": False})
    denied = alter_configs.handle(with_acls(admin_ctx(), acl(T, "t", Operation.DESCRIBE_CONFIGS)), None, request)
    assert not isinstance(denied, Plan)
    assert [r.error_code for r in denied.responses] == [
        ErrorCode.topic_authorization_failed, ErrorCode.cluster_authorization_failed,
        ErrorCode.group_authorization_failed, ErrorCode.topic_authorization_failed]
    plan = alter_configs.handle(with_acls(admin_ctx(), acl(T, "t", Operation.ALTER_CONFIGS),
                                          acl(C, "kafka-cluster", Operation.ALTER_CONFIGS)), None, request)
    assert controller_paths(plan) == ["/v1/admin/topics/t/config"]
    answer = plan.finish([created("t", 3)])
    assert [r.error_code for r in answer.responses] == [
        ErrorCode.none, ErrorCode.invalid_request,  # allowed, but broker configs belong to the physical clusters
        ErrorCode.group_authorization_failed, ErrorCode.topic_authorization_failed]


# -- DeleteRecords ----------------------------------------------------------------------------------------------
def test_delete_records_needs_delete_on_the_topic_before_anything_reaches_a_broker():
    c = admin_ctx(chain_view())
    denied = delete_records.handle(with_acls(c, acl(T, "t", Operation.READ)), None, records_req({0: 70, 1: 5}))
    assert not isinstance(denied, Plan)
    assert {p.error_code for p in denied.topics[0].partitions} == {ErrorCode.topic_authorization_failed}
    # an unknown topic is judged on the ACL first, so a denied principal does not learn it is missing
    unknown = delete_records.handle(with_acls(c), None, records_req({0: 1}, topic="nope"))
    assert unknown.topics[0].partitions[0].error_code == ErrorCode.topic_authorization_failed
    allowed = delete_records.handle(with_acls(c, acl(T, "t", Operation.DELETE)), None, records_req({1: 5}))
    assert isinstance(allowed, Plan) and len(allowed.calls) == 1


# -- cluster operations -----------------------------------------------------------------------------------------
def test_elect_leaders_and_reassignments_need_alter_and_listing_needs_describe_on_the_cluster():
    elect = req(43, 2, {"election_type": 0, "timeout": TIMEOUT, "topic_partitions": [{"topic": "t",
                                                                                      "partitions": [0, 1]}]})
    alter = req(45, 0, {"timeout": TIMEOUT, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "replicas": [1]}]}]})
    listing = req(46, 0, {"timeout": TIMEOUT, "topics": None})
    nobody = with_acls(admin_ctx(), acl(T, "t", Operation.ALL))
    answer = cluster_ops.handle(nobody, None, elect)
    assert answer.error_code == ErrorCode.cluster_authorization_failed
    assert {p.error_code for p in answer.replica_election_results[0].partition_result} == {
        ErrorCode.cluster_authorization_failed}
    refused = cluster_ops.handle(nobody, None, alter)
    assert refused.error_code == refused.responses[0].partitions[0].error_code == ErrorCode.cluster_authorization_failed
    assert cluster_ops.handle(nobody, None, listing).error_code == ErrorCode.cluster_authorization_failed
    describer = with_acls(admin_ctx(), acl(C, "kafka-cluster", Operation.DESCRIBE))
    assert cluster_ops.handle(describer, None, listing).error_code == ErrorCode.none
    assert cluster_ops.handle(describer, None, elect).error_code == ErrorCode.cluster_authorization_failed
    alterer = with_acls(admin_ctx(), acl(C, "kafka-cluster", Operation.ALTER))
    assert {p.error_code for p in cluster_ops.handle(alterer, None, elect).replica_election_results[0]
            .partition_result} == {ErrorCode.election_not_needed}
    assert cluster_ops.handle(alterer, None, alter).error_code == ErrorCode.invalid_request


# -- KIP-848 consumer groups ------------------------------------------------------------------------------------
def test_a_heartbeat_needs_read_on_the_group_and_describe_on_each_subscribed_topic():
    no_group = consumer_groups.handle(with_acls(groups_ctx(), acl(T, "log", Operation.READ)), Header(), heartbeat())
    assert not isinstance(no_group, Plan) and no_group.error_code == ErrorCode.group_authorization_failed
    no_topic = consumer_groups.handle(with_acls(groups_ctx(), acl(G, "g", Operation.READ)), Header(), heartbeat())
    assert not isinstance(no_topic, Plan) and no_topic.error_code == ErrorCode.topic_authorization_failed
    both = with_acls(groups_ctx(), acl(G, "g", Operation.READ), acl(T, "log", Operation.DESCRIBE))
    assert isinstance(consumer_groups.handle(both, Header(), heartbeat()), Plan)
    # a heartbeat that keeps its subscription names no topic: only the group is checked, as in Kafka
    keep = heartbeat(subscribed_topic_names=None, topic_partitions=None)
    assert isinstance(consumer_groups.handle(with_acls(groups_ctx(), acl(G, "g", Operation.READ)), Header(), keep),
                      Plan)


def _described(group: str, topic_name: str):
    shadow = [{"topic_id": SHADOW_ID, "topic_name": topic_name, "partitions": [0]}]
    return build(response_type(69, 1), {"groups": [{
        "error_code": ErrorCode.none, "error_message": None, "group_id": group, "group_state": "Stable",
        "group_epoch": 1, "assignment_epoch": 1, "assignor_name": "uniform", "authorized_operations": 0,
        "members": [{"member_id": "m", "instance_id": None, "rack_id": None, "member_epoch": 1, "client_id": "app",
                     "client_host": "/1", "subscribed_topic_names": [topic_name], "subscribed_topic_regex": None,
                     "assignment": {"topic_partitions": shadow}, "target_assignment": {"topic_partitions": shadow},
                     "member_type": 1}]}]})


def test_consumer_group_describe_checks_each_group_and_hides_groups_assigned_undescribable_topics():
    request = build(request_type(69, 1), {"group_ids": ["g", "h"], "include_authorized_operations": False})
    assert {g.error_code for g in consumer_groups.handle(with_acls(groups_ctx()), Header(), request).groups} == {
        ErrorCode.group_authorization_failed}
    c = with_acls(groups_ctx(), acl(G, "g", Operation.DESCRIBE))
    lookup = consumer_groups.handle(c, Header(), request)
    assert lookup.calls[0].request.coordinator_keys == ("g",)  # h never reaches the coordination cluster
    forward = coordinator_found(lookup)
    assert forward.calls[0].request.group_ids == ("g",)
    answer = forward.finish([_described("g", "__fedkafka-shadow-log")])
    assert [(g.group_id, g.error_code, len(g.members)) for g in answer.groups] == [
        ("h", ErrorCode.group_authorization_failed, 0), ("g", ErrorCode.topic_authorization_failed, 0)]
    may_see = with_acls(groups_ctx(), acl(G, "g", Operation.DESCRIBE), acl(T, "log", Operation.DESCRIBE))
    seen = coordinator_found(consumer_groups.handle(may_see, Header(), request)).finish(
        [_described("g", "__fedkafka-shadow-log")])
    assert [(g.group_id, g.error_code, len(g.members)) for g in seen.groups] == [
        ("h", ErrorCode.group_authorization_failed, 0), ("g", ErrorCode.none, 1)]


def test_authorization_off_changes_nothing():
    # no authorizer (authorization off): every admin call goes out
    assert len(topic_admin.handle(admin_ctx(), None, _create("a", "b")).calls) == 2
    assert isinstance(delete_records.handle(admin_ctx(chain_view()), None, records_req({1: 5})), Plan)


# -- CreateAcls / DeleteAcls through the controller ----------------------------------------------------------------
def _creations(*creations):
    return req(30, 3, {"creations": [{"resource_type": rt, "resource_name": name, "resource_pattern_type": 3,
                                      "principal": "User:bob", "host": "*", "operation": op, "permission_type": 3}
                                     for rt, name, op in creations]})


def _filter(**kw):
    f = {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1, "principal_filter": None,
         "host_filter": None, "operation": 1, "permission_type": 1} | kw
    return req(31, 3, {"filters": [f]})


OPS = with_acls(admin_ctx(), acl(C, "kafka-cluster", Operation.ALTER))


def test_create_acls_needs_alter_on_the_cluster_and_sends_nothing_otherwise():
    request = _creations((2, "t", 3), (3, "g", 3))
    denied = acl_admin.handle(with_acls(admin_ctx(), acl(C, "kafka-cluster", Operation.DESCRIBE)), None, request)
    assert not isinstance(denied, Plan)
    assert [r.error_code for r in denied.results] == [ErrorCode.cluster_authorization_failed] * 2
    removal = acl_admin.handle(with_acls(admin_ctx()), None, _filter())
    assert [r.error_code for r in removal.filter_results] == [ErrorCode.cluster_authorization_failed]


def test_acls_are_not_written_through_a_proxy_that_does_not_enforce_them():
    # without --authorization every client is anonymous and allowed: it must not grant itself rights elsewhere
    answer = acl_admin.handle(admin_ctx(), None, _creations((2, "t", 3)))
    assert answer.results[0].error_code == ErrorCode.security_disabled
    assert acl_admin.handle(admin_ctx(), None, _filter()).filter_results[0].error_code == ErrorCode.security_disabled


def test_create_acls_posts_the_valid_bindings_and_refuses_the_others_as_kafka_does():
    request = _creations((2, "t", 3), (4, "other", 7), (6, "token", 3), (3, "g", 1), (3, "g", 3))
    plan = acl_admin.handle(OPS, None, request)
    (call,) = plan.calls
    assert (call.request.method, call.request.path) == ("POST", "/v1/acls")
    assert call.request.body == {"acls": [
        {"resource_type": "TOPIC", "name": "t", "pattern_type": "LITERAL", "principal": "User:bob", "host": "*",
         "operation": "READ", "permission": "ALLOW"},
        {"resource_type": "GROUP", "name": "g", "pattern_type": "LITERAL", "principal": "User:bob", "host": "*",
         "operation": "READ", "permission": "ALLOW"}]}
    answer = plan.finish([ControllerAnswer(200, {"created": [], "view_version": 7})])
    assert [r.error_code for r in answer.results] == [ErrorCode.none, ErrorCode.invalid_request,
                                                      ErrorCode.invalid_request, ErrorCode.invalid_request,
                                                      ErrorCode.none]
    assert "kafka-cluster" in answer.results[1].error_message
    down = plan.finish([UpstreamError("controller", "controller unreachable: connection refused")])
    assert down.results[0].error_code == ErrorCode.request_timed_out  # retriable: nothing was written


def test_delete_acls_sends_one_filter_per_call_and_lists_what_each_deleted():
    request = req(31, 3, {"filters": [
        {"resource_type_filter": 2, "resource_name_filter": "ANY", "pattern_type_filter": 2, "principal_filter":
         "User:bob", "host_filter": None, "operation": 1, "permission_type": 3},
        {"resource_type_filter": 9, "resource_name_filter": None, "pattern_type_filter": 1, "principal_filter": None,
         "host_filter": None, "operation": 1, "permission_type": 1},
        {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1, "principal_filter": None,
         "host_filter": None, "operation": 1, "permission_type": 1}]})
    plan = acl_admin.handle(OPS, None, request)
    assert [(c.request.path, c.request.body) for c in plan.calls] == [
        ("/v1/acls/delete", {"resource_type": "TOPIC", "pattern_type": "MATCH", "permission": "ALLOW", "name": "ANY",
                             "principal": "User:bob"}),
        ("/v1/acls/delete", {})]  # every field ANY: deletes every binding, as Kafka's all-ANY filter does
    gone = {"resource_type": "TOPIC", "name": "ANY", "pattern_type": "LITERAL", "principal": "User:bob",
            "host": "*", "operation": "READ", "permission": "ALLOW"}
    answer = plan.finish([ControllerAnswer(200, {"deleted": [gone], "view_version": 8}),
                          ControllerAnswer(503, {"detail": "standing by"})])
    first, bad, failed = answer.filter_results
    assert first.error_code == ErrorCode.none
    assert [(m.resource_type, m.resource_name, m.principal, m.operation) for m in first.matching_acls] == [
        (2, "ANY", "User:bob", 3)]
    assert bad.error_code == ErrorCode.invalid_request and bad.matching_acls == ()
    assert failed.error_code == ErrorCode.request_timed_out


def test_a_denied_group_keeps_its_error_when_the_coordinator_cannot_be_found():
    request = build(request_type(69, 1), {"group_ids": ["g", "h"], "include_authorized_operations": False})
    lookup = consumer_groups.handle(with_acls(groups_ctx(), acl(G, "g", Operation.DESCRIBE)), Header(), request)
    answer = lookup.finish([UpstreamError("c1", "connection refused")])
    assert [(g.group_id, g.error_code) for g in answer.groups] == [
        ("h", ErrorCode.group_authorization_failed), ("g", ErrorCode.coordinator_not_available)]
