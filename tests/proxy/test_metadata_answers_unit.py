"""Metadata and DescribeCluster answers beyond the review's cases (test_metadata_admin_kafka_rules.py), each as Kafka
4 answers it: topics by id (KafkaApis.handleTopicMetadataRequest), authorized operations by principal
(AuthHelper.authorizedOperations), the brokers, leaders and controller a client of a draining proxy is told of, the
endpoint types a broker refuses (AuthHelper.computeDescribeClusterResponse), and the answer cache's key."""

from __future__ import annotations

import dataclasses
import uuid

from kio.schema.errors import ErrorCode

from fedkafka.proxy.handlers import describe_cluster, metadata
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session
from fedkafka.view.model import Endpoint, ProxyInfo, ProxyRole
from proxy.test_admin_handlers import req
from proxy.test_handlers import ctx, view

T_ID = uuid.UUID(hex="0" * 31 + "1")  # the id of topic "t" in test_handlers.view()
UNKNOWN_ID = uuid.UUID(int=7)
MIN_INT32 = -(2**31)
WHO = "User:alice"


def _metadata(c, topics, version: int = 12, **flags):
    body = {"topics": topics, "allow_auto_topic_creation": False, "include_topic_authorized_operations": False}
    return metadata.handle(c, None, req(3, version, {**body, **flags}))


def _as(*bindings: tuple[ResourceType, str, Operation, Permission]):
    """The default context, its principal WHO under these ACL bindings (literal, any host)."""
    acls = tuple(AclBinding(rt, name, PatternType.LITERAL, WHO, "*", op, perm) for rt, name, op, perm in bindings)
    return dataclasses.replace(ctx(), authorizer=Authorizer(acls), session=Session(principal=WHO))


def test_metadata_by_id_answers_an_id_the_principal_may_not_describe_with_the_id_and_no_name():
    """KafkaApis: topic ids are not sensitive, so a denied id is TOPIC_AUTHORIZATION_FAILED with the id asked (a
    name asked for and denied gets the zero id instead); an unknown id is UNKNOWN_TOPIC_ID whoever asks."""
    resp = _metadata(_as(), [{"topic_id": T_ID, "name": None}, {"topic_id": UNKNOWN_ID, "name": None}])
    assert [(t.error_code, t.name, t.topic_id, t.partitions) for t in resp.topics] == [
        (ErrorCode.topic_authorization_failed, None, T_ID, ()), (ErrorCode.unknown_topic_id, None, UNKNOWN_ID, ())]
    by_name = _metadata(_as(), [{"topic_id": None, "name": "t"}]).topics[0]
    assert (by_name.error_code, by_name.name) == (ErrorCode.topic_authorization_failed, "t")
    assert by_name.topic_id in (None, uuid.UUID(int=0))  # the zero id (kio reads it as None)


def test_metadata_with_any_topic_id_answers_the_ids_alone_each_once():
    """KafkaApis (useTopicId): once an entry carries an id, the request's names are not read, an entry's own name
    either: an unknown id next to the name of a topic that exists is UNKNOWN_TOPIC_ID, a name-only entry is not
    answered, and an id repeated is answered once."""
    resp = _metadata(ctx(), [{"topic_id": UNKNOWN_ID, "name": "t"}, {"topic_id": None, "name": "t"},
                             {"topic_id": T_ID, "name": "other"}, {"topic_id": T_ID, "name": None}])
    assert [(t.error_code, t.name, t.topic_id) for t in resp.topics] == [
        (ErrorCode.unknown_topic_id, None, UNKNOWN_ID), (ErrorCode.none, "t", T_ID)]


def test_metadata_before_v12_with_a_topic_id_is_refused_whole_as_kafka():
    """Kafka refuses Metadata v10-11 naming an id (InvalidRequestException, MetadataRequest.getErrorResponse):
    every entry INVALID_REQUEST, no broker; it used to be answered by name, the id ignored."""
    resp = _metadata(ctx(), [{"topic_id": T_ID, "name": "t"}, {"topic_id": None, "name": "u"}], version=11)
    assert [(t.error_code, t.name) for t in resp.topics] == [(ErrorCode.invalid_request, "t"),
                                                              (ErrorCode.invalid_request, "u")]
    assert resp.brokers == ()


def test_metadata_authorized_operations_are_the_principals_own():
    """Each operation the principal's ACLs allow on the topic, implied DESCRIBE included; none for a denied topic
    (the schema default); Metadata v8-10's cluster bit field, 0 without DESCRIBE on the cluster."""
    c = _as((ResourceType.TOPIC, "t", Operation.WRITE, Permission.ALLOW),
            (ResourceType.CLUSTER, "kafka-cluster", Operation.IDEMPOTENT_WRITE, Permission.ALLOW))
    resp = _metadata(c, [{"topic_id": None, "name": "t"}, {"topic_id": None, "name": "u"}], version=10,
                     include_topic_authorized_operations=True, include_cluster_authorized_operations=True)
    assert [t.topic_authorized_operations for t in resp.topics] == [
        (1 << Operation.WRITE) | (1 << Operation.DESCRIBE), MIN_INT32]
    assert resp.cluster_authorized_operations == 0
    c = _as((ResourceType.CLUSTER, "kafka-cluster", Operation.DESCRIBE, Permission.ALLOW))
    resp = _metadata(c, [], version=9, include_topic_authorized_operations=False,
                     include_cluster_authorized_operations=True)
    assert resp.cluster_authorized_operations == 1 << Operation.DESCRIBE


def test_metadata_authorized_operations_of_a_missing_topic_and_by_id():
    """Kafka fills the field of every topic the principal may describe, one that does not exist too; by id, of a
    known topic only."""
    resp = _metadata(ctx(), [{"topic_id": None, "name": "missing"}], include_topic_authorized_operations=True)
    assert resp.topics[0].error_code == ErrorCode.unknown_topic_or_partition
    assert resp.topics[0].topic_authorized_operations == sum(1 << op for op in (
        Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DESCRIBE, Operation.DELETE, Operation.ALTER,
        Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS))
    resp = _metadata(ctx(), [{"topic_id": UNKNOWN_ID, "name": None}, {"topic_id": T_ID, "name": None}],
                     include_topic_authorized_operations=True)
    assert [t.topic_authorized_operations != MIN_INT32 for t in resp.topics] == [False, True]


def test_metadata_of_kafkas_invalid_names_and_of_valid_absent_ones():
    """Topic.validate: empty, ".", "..", over 249 characters or a character outside [a-zA-Z0-9._-] are invalid;
    249 characters of them, "..." and "a.b_c-D9" are merely absent."""
    invalid = ["", ".", "..", "x" * 250, "é", "a/b"]
    absent = ["x" * 249, "...", "a.b_c-D9"]
    resp = _metadata(ctx(), [{"topic_id": None, "name": n} for n in invalid + absent])
    assert [t.error_code for t in resp.topics] == \
        [ErrorCode.invalid_topic_exception] * len(invalid) + [ErrorCode.unknown_topic_or_partition] * len(absent)


def _endpoints(*protocols: str) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(p, "h", 9000 + i) for i, p in enumerate(protocols))


def test_a_draining_proxy_lists_itself_when_no_other_has_the_clients_protocol():
    """The others of the pool have no SASL_SSL listener: leaving itself out would leave a SASL_SSL client with no
    broker, no leader and no controller at all, so the draining proxy stays listed for it (and only for it)."""
    me = ProxyInfo(7, "p7", 9092, ProxyRole.BOTH, listeners=_endpoints("PLAINTEXT", "SASL_SSL"))
    other = ProxyInfo(8, "p8", 9092, ProxyRole.BOTH, listeners=_endpoints("PLAINTEXT"))
    v = dataclasses.replace(view(), proxies=(me, other), draining=(7,))
    for protocol, listed in (("SASL_SSL", [7]), ("PLAINTEXT", [8])):
        resp = _metadata(ctx(v, me=me, session=Session(protocol=protocol)), [{"topic_id": None, "name": "t"}])
        assert [b.node_id for b in resp.brokers] == listed and resp.controller_id == listed[0]
        assert {p.leader_id for p in resp.topics[0].partitions} == set(listed)


def test_describe_cluster_lists_what_metadata_lists_and_names_a_listed_controller():
    """A draining proxy's DescribeCluster names the brokers its Metadata names (it used to list itself and name
    itself controller); endpoint types Kafka does not know are UNSUPPORTED_ENDPOINT_TYPE."""
    c = ctx(dataclasses.replace(view(), draining=(7,)))
    resp = describe_cluster.handle(c, None, req(60, 1, {"include_cluster_authorized_operations": False,
                                                        "endpoint_type": 1}))
    assert [b.broker_id for b in resp.brokers] == [8] and resp.controller_id == 8
    assert resp.cluster_authorized_operations == MIN_INT32
    for wrong in (0, 3):
        resp = describe_cluster.handle(ctx(), None, req(60, 1, {"include_cluster_authorized_operations": False,
                                                                "endpoint_type": wrong}))
        assert (resp.error_code, resp.error_message) == (ErrorCode.unsupported_endpoint_type,
                                                         f"Unsupported endpoint type {wrong}")


def test_describe_cluster_authorized_operations_are_zero_without_describe_on_the_cluster():
    """ALTER_CONFIGS implies DESCRIBE_CONFIGS, not DESCRIBE: 0; ALTER implies DESCRIBE: both bits."""
    ask = req(60, 0, {"include_cluster_authorized_operations": True})
    c = _as((ResourceType.CLUSTER, "kafka-cluster", Operation.ALTER_CONFIGS, Permission.ALLOW))
    assert describe_cluster.handle(c, None, ask).cluster_authorized_operations == 0
    c = _as((ResourceType.CLUSTER, "kafka-cluster", Operation.ALTER, Permission.ALLOW))
    assert describe_cluster.handle(c, None, ask).cluster_authorized_operations == \
        (1 << Operation.ALTER) | (1 << Operation.DESCRIBE)


def test_the_answer_cache_key_covers_ids_and_the_operations_asked_for():
    """The cached answer of one request is never another's: by id against by name, other ids, authorized
    operations asked or not; a request refused whole (an id before v12) is not kept."""
    def key(topics, version=12, **flags):
        body = {"topics": topics, "allow_auto_topic_creation": False, "include_topic_authorized_operations": False}
        return metadata.cache_key(ctx(), req(3, version, {**body, **flags}))

    by_name, by_id = [{"topic_id": None, "name": "t"}], [{"topic_id": T_ID, "name": None}]
    keys = [key(by_name), key(by_id), key([{"topic_id": UNKNOWN_ID, "name": None}]),
            key(by_name, include_topic_authorized_operations=True), key(None), key(None, version=10),
            key(None, version=10, include_cluster_authorized_operations=True)]
    assert len(set(keys)) == len(keys)
    assert key([{"topic_id": T_ID, "name": "x"}, {"topic_id": T_ID, "name": None}]) == key(by_id)
    assert key(by_id, version=11) is None
