"""ACLs: Kafka's authorizer rules, and each handler refusing before it builds an upstream call."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from consume.test_handlers_unit import VIEW, fetch_request, list_request
from consume.test_handlers_unit import ctx as consume_ctx
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequestTopic
from proxy.test_handlers import batch, produce_req
from proxy.test_handlers import ctx as produce_ctx

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import (
    acls,
    describe_cluster,
    fetch,
    find_coordinator,
    groups,
    init_producer_id,
    list_offsets,
    metadata,
    produce,
)
from fedkafka.proxy.plan import Plan, UpstreamError
from fedkafka.security.acl import (
    AclBinding,
    AclFilter,
    Authorizer,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from fedkafka.security.session import Session

T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY


def acl(rtype, name, op, principal="User:alice", pattern=LIT, permission=ALLOW, host="*") -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, host, op, permission)


def test_nothing_is_allowed_without_an_acl_but_super_users_may_do_anything():
    az = Authorizer((), frozenset({"User:admin"}))
    assert not az.allowed("User:alice", "1.2.3.4", Operation.READ, T, "t")
    assert az.allowed("User:admin", "1.2.3.4", Operation.DELETE, C, "kafka-cluster")


def test_literal_prefixed_and_wildcard_names():
    az = Authorizer((acl(T, "orders", Operation.READ), acl(T, "pay-", Operation.WRITE, pattern=PRE),
                     acl(G, "*", Operation.READ)))
    assert az.allowed("User:alice", "h", Operation.READ, T, "orders")
    assert not az.allowed("User:alice", "h", Operation.READ, T, "orders2")
    assert az.allowed("User:alice", "h", Operation.WRITE, T, "pay-eu")
    assert not az.allowed("User:alice", "h", Operation.WRITE, T, "pa")
    assert az.allowed("User:alice", "h", Operation.READ, G, "any-group")
    assert not az.allowed("User:bob", "h", Operation.READ, T, "orders")


def test_deny_wins_and_read_implies_describe_but_not_the_reverse():
    az = Authorizer((acl(T, "t", Operation.ALL, "User:*"), acl(T, "t", Operation.WRITE, permission=DENY),
                     acl(T, "u", Operation.READ), acl(T, "v", Operation.DESCRIBE),
                     acl(T, "w", Operation.READ, host="10.0.0.1")))
    assert az.allowed("User:alice", "h", Operation.READ, T, "t")
    assert not az.allowed("User:alice", "h", Operation.WRITE, T, "t")
    assert az.allowed("User:bob", "h", Operation.WRITE, T, "t")
    assert az.allowed("User:alice", "h", Operation.DESCRIBE, T, "u")
    assert not az.allowed("User:alice", "h", Operation.READ, T, "v")
    assert az.allowed("User:alice", "10.0.0.1", Operation.READ, T, "w")
    assert not az.allowed("User:alice", "10.0.0.2", Operation.READ, T, "w")


def test_filters_select_like_describe_acls():
    bindings = [acl(T, "orders", Operation.READ), acl(T, "ord", Operation.WRITE, pattern=PRE),
                acl(G, "g", Operation.READ, "User:bob")]
    by_match = AclFilter(T, "orders", PatternType.MATCH)
    assert [b.name for b in bindings if by_match.matches(b)] == ["orders", "ord"]
    assert [b.name for b in bindings if AclFilter(principal="User:bob").matches(b)] == ["g"]
    assert all(AclFilter().matches(b) for b in bindings)
    assert acl(T, "x", Operation.ANY).problems() and acl(C, "other", Operation.ALTER).problems()
    assert AclBinding.from_list(bindings[1].to_list()) == bindings[1]


# -- the handlers refuse without any upstream call -----------------------------------------------------------
def _with(c, *bindings, principal="User:mallory"):
    return dataclasses.replace(c, authorizer=Authorizer(bindings), session=Session(principal=principal))


def test_produce_without_write_is_topic_authorization_failed_and_sends_nothing():
    reply = produce.handle(_with(produce_ctx(), acl(T, "t", Operation.READ, "User:mallory")), None,
                           produce_req({0: batch(), 1: batch()}))
    assert not isinstance(reply, Plan)
    assert {p.error_code for t in reply.responses for p in t.partition_responses} == {
        ErrorCode.topic_authorization_failed}
    allowed = produce.handle(_with(produce_ctx(), acl(T, "t", Operation.WRITE, "User:mallory")), None,
                             produce_req({0: batch()}))
    assert isinstance(allowed, Plan)


def test_init_producer_id_needs_a_write_right_somewhere():
    req = build(request_type(22, 4), {"transactional_id": None, "transaction_timeout": 60000, "producer_id": -1,
                                      "producer_epoch": -1})
    assert init_producer_id.handle(_with(produce_ctx()), None, req).error_code == \
        ErrorCode.cluster_authorization_failed
    ok = init_producer_id.handle(_with(produce_ctx(), acl(T, "t", Operation.WRITE, "User:mallory")), None, req)
    assert ok.error_code == ErrorCode.none


def test_fetch_and_list_offsets_without_read_or_describe_send_nothing():
    reply = fetch.handle(_with(consume_ctx()), None, fetch_request(("log", 0, 0)))
    assert not isinstance(reply, Plan)
    assert reply.responses[0].partitions[0].error_code == ErrorCode.topic_authorization_failed
    listed = list_offsets.handle(_with(consume_ctx()), None, list_request((0, -1)))
    assert listed.topics[0].partitions[0].error_code == ErrorCode.topic_authorization_failed


def test_metadata_hides_topics_the_principal_may_not_describe():
    all_topics = build(request_type(3, 12), {"topics": None, "allow_auto_topic_creation": False,
                                             "include_topic_authorized_operations": False})
    assert metadata.handle(_with(consume_ctx()), None, all_topics).topics == ()
    seen = metadata.handle(_with(consume_ctx(), acl(T, "lo", Operation.READ, "User:mallory", PRE)), None, all_topics)
    assert [t.name for t in seen.topics] == ["log"]
    named = dataclasses.replace(all_topics, topics=(MetadataRequestTopic(topic_id=uuid.UUID(int=0), name="log"),))
    assert metadata.handle(_with(consume_ctx()), None, named).topics[0].error_code == \
        ErrorCode.topic_authorization_failed
    c = _with(consume_ctx())
    assert metadata.cache_key(c, all_topics) != metadata.cache_key(dataclasses.replace(
        c, session=Session(principal="User:alice")), all_topics)


def _commit(group="g"):
    return build(request_type(8, 8), {"group_id": group, "generation_id_or_member_epoch": 1, "member_id": "m",
                                      "group_instance_id": None, "topics": [{"name": "log", "partitions": [
                                          {"partition_index": 1, "committed_offset": 5, "committed_leader_epoch": -1,
                                           "committed_metadata": None}]}]})


def test_commit_needs_read_on_the_group_and_on_the_topic():
    no_group = groups.handle(_with(consume_ctx()), None, _commit())
    assert not isinstance(no_group, Plan)
    assert no_group.topics[0].partitions[0].error_code == ErrorCode.group_authorization_failed
    no_topic = groups.handle(_with(consume_ctx(), acl(G, "g", Operation.READ, "User:mallory")), None, _commit())
    assert not isinstance(no_topic, Plan)
    assert no_topic.topics[0].partitions[0].error_code == ErrorCode.topic_authorization_failed


def test_find_coordinator_and_describe_groups_need_describe_on_the_group():
    find = build(request_type(10, 4), {"key_type": 0, "coordinator_keys": ["g"]})
    assert find_coordinator.handle(_with(consume_ctx()), None, find).coordinators[0].error_code == \
        ErrorCode.group_authorization_failed
    describe = build(request_type(15, 5), {"groups": ["g"], "include_authorized_operations": False})
    assert groups.handle(_with(consume_ctx()), None, describe).groups[0].error_code == \
        ErrorCode.group_authorization_failed


def test_describe_cluster_is_open_as_in_kafka_and_describe_acls_needs_describe_on_the_cluster():
    req = build(request_type(60, 1), {"include_cluster_authorized_operations": False, "endpoint_type": 1})
    assert describe_cluster.handle(_with(consume_ctx()), None, req).error_code == ErrorCode.none
    view_acls = (acl(C, "kafka-cluster", Operation.DESCRIBE, "User:ops"), acl(T, "log", Operation.READ))
    c = dataclasses.replace(consume_ctx(), view=dataclasses.replace(VIEW, acls=view_acls))
    describe = build(request_type(29, 3), {"resource_type_filter": 1, "resource_name_filter": None,
                                           "pattern_type_filter": 1, "principal_filter": None, "host_filter": None,
                                           "operation": 1, "permission_type": 1})
    assert acls.handle(_with(c), None, describe).error_code == ErrorCode.cluster_authorization_failed
    # authorization off: SECURITY_DISABLED, as a broker without an authorizer, and the view's ACLs stay unlisted
    off = acls.handle(c, None, describe)
    assert (off.error_code, off.resources) == (ErrorCode.security_disabled, ())
    answer = acls.handle(_with(c, *view_acls, principal="User:ops"), None, describe)
    assert answer.error_code == ErrorCode.none
    assert sorted((r.resource_name, a.principal) for r in answer.resources for a in r.acls) == [
        ("kafka-cluster", "User:ops"), ("log", "User:alice")]


@pytest.mark.parametrize("operation", [Operation.ANY, Operation.ALL])
def test_a_filter_with_any_or_all_is_read_literally(operation):
    assert AclFilter(operation=operation).matches(acl(T, "t", Operation.ALL)) is True


# -- OffsetFetch / OffsetDelete: the group right is not enough, each topic is checked as Kafka does ----------
FOUND = {"coordinators": [{"key": "g", "node_id": 4, "host": "h", "port": 1, "error_code": ErrorCode.none}]}


def _forwarded(c, request):
    """The call the handler sends to the group's coordinator once the lookup found it."""
    lookup = groups.handle(c, None, request)
    assert isinstance(lookup, Plan)
    forward = lookup.finish([build(response_type(10, 4), FOUND)])
    assert isinstance(forward, Plan)
    (call,) = forward.calls
    return call.request, forward


def _offset_fetch(version: int, topics: dict[str, list[int]] | None):
    wanted = None if topics is None else [{"name": n, "partition_indexes": ps} for n, ps in topics.items()]
    if version >= 8:
        return build(request_type(9, version), {"groups": [{"group_id": "g", "topics": wanted}],
                                                "require_stable": False})
    return build(request_type(9, version), {"group_id": "g", "topics": wanted, "require_stable": False})


def _fetched(version: int, offsets: dict[str, int], error=ErrorCode.none):
    topics = [{"name": n, "partitions": [{"partition_index": 0, "committed_offset": o, "committed_leader_epoch": -1,
                                          "metadata": "", "error_code": ErrorCode.none}]} for n, o in offsets.items()]
    if version >= 8:
        return build(response_type(9, version), {"groups": [{"group_id": "g", "topics": topics, "error_code": error}]})
    return build(response_type(9, version), {"topics": topics, "error_code": error})


def _answer_topics(response) -> dict[str, list[tuple[int, int, ErrorCode]]]:
    entry = response.groups[0] if type(response).__version__ >= 8 else response
    return {t.name: [(p.partition_index, p.committed_offset, p.error_code) for p in t.partitions]
            for t in entry.topics}


def _request_topics(request) -> list[str]:
    entry = request.groups[0] if type(request).__version__ >= 8 else request
    return [t.name for t in entry.topics]


# group DESCRIBE for mallory, DESCRIBE on the topic "pay", nothing on "log"
FETCHER = (acl(G, "g", Operation.DESCRIBE, "User:mallory"), acl(T, "pay", Operation.DESCRIBE, "User:mallory"))


@pytest.mark.parametrize("version", range(1, 10))
def test_offset_fetch_asks_only_for_topics_the_principal_may_describe(version):
    upstream, forward = _forwarded(_with(consume_ctx(), *FETCHER), _offset_fetch(version, {"log": [0, 1],
                                                                                            "pay": [0]}))
    assert _request_topics(upstream) == ["__fedkafka-shadow-pay"]
    out = forward.finish([_fetched(version, {"__fedkafka-shadow-pay": 7})])
    assert _answer_topics(out) == {"pay": [(0, 7, ErrorCode.none)],
                                   "log": [(0, -1, ErrorCode.topic_authorization_failed),
                                           (1, -1, ErrorCode.topic_authorization_failed)]}


@pytest.mark.parametrize("version", range(2, 10))
def test_offset_fetch_of_all_topics_leaves_out_those_the_principal_may_not_describe(version):
    upstream, forward = _forwarded(_with(consume_ctx(), *FETCHER), _offset_fetch(version, None))
    assert (upstream.groups[0] if version >= 8 else upstream).topics is None
    out = forward.finish([_fetched(version, {"__fedkafka-shadow-log": 3, "__fedkafka-shadow-pay": 7})])
    assert _answer_topics(out) == {"pay": [(0, 7, ErrorCode.none)]}


def test_offset_fetch_answered_with_a_group_error_gets_that_answer_alone():
    _, forward = _forwarded(_with(consume_ctx(), *FETCHER), _offset_fetch(7, {"log": [0]}))
    out = forward.finish([_fetched(7, {}, ErrorCode.coordinator_load_in_progress)])
    assert (out.error_code, out.topics) == (ErrorCode.coordinator_load_in_progress, ())


def test_offset_delete_deletes_only_offsets_of_topics_the_principal_may_read():
    deleter = (acl(G, "g", Operation.DELETE, "User:mallory"), acl(T, "pay", Operation.READ, "User:mallory"),
               acl(T, "log", Operation.DESCRIBE, "User:mallory"))
    request = build(request_type(47, 0), {"group_id": "g", "topics": [
        {"name": n, "partitions": [{"partition_index": 0}, {"partition_index": 2}]} for n in ("log", "pay")]})
    upstream, forward = _forwarded(_with(consume_ctx(), *deleter), request)
    assert [t.name for t in upstream.topics] == ["__fedkafka-shadow-pay"]
    answer = build(response_type(47, 0), {"error_code": ErrorCode.none, "topics": [
        {"name": "__fedkafka-shadow-pay", "partitions": [{"partition_index": p, "error_code": ErrorCode.none}
                                                         for p in (0, 2)]}]})
    out = forward.finish([answer])
    assert out.error_code == ErrorCode.none
    assert {t.name: [(p.partition_index, p.error_code) for p in t.partitions] for t in out.topics} == {
        "pay": [(0, ErrorCode.none), (2, ErrorCode.none)],
        "log": [(0, ErrorCode.topic_authorization_failed), (2, ErrorCode.topic_authorization_failed)]}


# -- ListGroups: every group with DESCRIBE on the cluster, else those the principal may describe (KafkaApis) --------
def _listed(c, names=("orders", "billing", "pay-eu")) -> list[str]:
    """The groups a proxy lists, the only consume proxy of its pool (so the coordinator of every group)."""
    c = dataclasses.replace(c, view=dataclasses.replace(VIEW, proxies=(VIEW.proxies[0], VIEW.proxies[2])))
    plan = groups.handle(c, None, build(request_type(16, 5), {"states_filter": [], "types_filter": []}))
    fan = plan.finish([build(response_type(3, 12), {"brokers": [{"node_id": 5, "host": "h", "port": 1}]})])
    listed = build(response_type(16, 5), {"groups": [{"group_id": g, "protocol_type": "consumer"} for g in names]})
    return [g.group_id for g in fan.finish([listed]).groups]


def test_list_groups_without_describe_on_the_cluster_lists_the_groups_the_principal_may_describe():
    assert _listed(_with(consume_ctx(), acl(G, "pay-", Operation.DESCRIBE, "User:mallory", pattern=PRE),
                         acl(G, "orders", Operation.READ, "User:mallory"))) == ["orders", "pay-eu"]
    assert _listed(_with(consume_ctx(), acl(C, "kafka-cluster", Operation.DESCRIBE, "User:alice"))) == []


def test_list_groups_with_a_cluster_right_implying_describe_lists_every_group():
    """ALTER on the cluster implies DESCRIBE on it (Kafka's rule): every group, none of them granted on its own."""
    assert _listed(_with(consume_ctx(), acl(C, "kafka-cluster", Operation.ALTER, "User:mallory"))) == \
        ["orders", "billing", "pay-eu"]


def test_list_groups_refuses_no_principal_and_tells_each_the_same_condition():
    """KafkaApis.handleListGroupsRequest: never an authorization error for the call, no denial logged (logIfDenied
    false), only the groups filtered; a coordinator that cannot list answers its error and no group to any principal
    (GroupCoordinatorService.listGroups: COORDINATOR_NOT_AVAILABLE while not active; a failed partition's error
    alone). So a principal with no right learns no more through the proxy: without a coordination cluster, the
    cluster not reached, or a broker's error next to another's groups (session 36: checked, no change needed)."""
    refusals: list[tuple] = []
    nobody = dataclasses.replace(_with(consume_ctx()), on_refusal=lambda *a: refusals.append(a))
    request = build(request_type(16, 5), {"states_filter": [], "types_filter": []})
    nowhere = dataclasses.replace(nobody, view=dataclasses.replace(VIEW, coordination_cluster=None))
    answer = groups.handle(nowhere, None, request)
    assert (answer.error_code, answer.groups) == (ErrorCode.coordinator_not_available, ())
    lookup = groups.handle(nobody, None, request)
    answer = lookup.finish([UpstreamError("c1", "gone")])
    assert (answer.error_code, answer.groups) == (ErrorCode.coordinator_not_available, ())
    fan = lookup.finish([build(response_type(3, 12), {"brokers": [{"node_id": n, "host": "h", "port": 1}
                                                                  for n in (4, 5)]})])
    loading = build(response_type(16, 5), {"error_code": ErrorCode.coordinator_load_in_progress, "groups": []})
    listed = build(response_type(16, 5), {"groups": [{"group_id": g, "protocol_type": "consumer"}
                                                     for g in ("orders", "billing")]})
    answer = fan.finish([loading, listed])
    assert (answer.error_code, answer.groups) == (ErrorCode.coordinator_load_in_progress, ())
    assert _listed(nobody) == []
    assert refusals == []


def test_offset_fetch_naming_a_group_twice_across_two_coordinators_answers_each_entry_its_own_topics():
    """Entries [g, h, g]: g's coordinator (node 4) answers both g entries in request order, h's (node 5) the other;
    the merged answer (g, h, g: request order, as Kafka) gives each g entry the refused topics it asked, not the
    other's."""
    c = _with(consume_ctx(), *FETCHER, acl(G, "h", Operation.DESCRIBE, "User:mallory"))
    request = build(request_type(9, 8), {"groups": [
        {"group_id": "g", "topics": [{"name": "log", "partition_indexes": [0]}]},
        {"group_id": "h", "topics": [{"name": "log", "partition_indexes": [1]}]},
        {"group_id": "g", "topics": [{"name": "pay", "partition_indexes": [0]}]}], "require_stable": False})
    coordinators = [{"key": k, "node_id": n, "host": "h", "port": 1, "error_code": ErrorCode.none}
                    for k, n in (("g", 4), ("h", 5))]
    found = build(response_type(10, 4), {"coordinators": coordinators})
    forward = groups.handle(c, None, request).finish([found])
    assert [[g.group_id for g in call.request.groups] for call in forward.calls] == [["g", "g"], ["h"]]
    pay = {"name": "__fedkafka-shadow-pay", "partitions": [{"partition_index": 0, "committed_offset": 7,
                                                             "committed_leader_epoch": -1, "metadata": "",
                                                             "error_code": ErrorCode.none}]}
    on_4 = build(response_type(9, 8), {"groups": [{"group_id": "g", "topics": [], "error_code": ErrorCode.none},
                                                  {"group_id": "g", "topics": [pay], "error_code": ErrorCode.none}]})
    on_5 = build(response_type(9, 8), {"groups": [{"group_id": "h", "topics": [], "error_code": ErrorCode.none}]})
    out = forward.finish([on_4, on_5])
    assert [(g.group_id, {t.name: [p.partition_index for p in t.partitions] for t in g.topics}) for g in out.groups] \
        == [("g", {"log": [0]}), ("h", {"log": [1]}), ("g", {"pay": [0]})]
