"""Metadata, DescribeCluster, CreateTopics, CreatePartitions, (Incremental)AlterConfigs and InitProducerId answered
as Apache Kafka 4.x answers the same requests (KafkaApis.handleTopicMetadataRequest, AuthHelper.computeDescribeCluster
Response, ControllerApis.createTopics / createPartitions, ConfigAdminManager.preprocess, ReplicationControlManager
.createTopic, KafkaApis.handleInitProducerIdRequest, Authorizer.authorizeByResourceType). Review rvmeta: each test
failed on main when written. The handlers as pure functions."""

from __future__ import annotations

import dataclasses
import uuid

from kio.schema.errors import ErrorCode

from fedkafka.proxy.handlers import alter_configs, describe_cluster, init_producer_id, metadata, topic_admin
from fedkafka.proxy.plan import Plan
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session
from fedkafka.view.model import (
    Endpoint,
    LogicalTopic,
    PartitionChain,
    ProxyInfo,
    ProxyRole,
    Segment,
)
from proxy.test_admin_handlers import TIMEOUT, req
from proxy.test_handlers import ctx, view

T_ID = uuid.UUID(hex="0" * 31 + "1")  # the id of topic "t" in test_handlers.view()
MIN_INT32 = -(2**31)  # the schema default of an authorized-operations field: "not asked / not known"


def _metadata(c, topics, version: int = 12, **flags):
    body = {"topics": topics, "allow_auto_topic_creation": False, "include_topic_authorized_operations": False}
    return metadata.handle(c, None, req(3, version, {**body, **flags}))


# -- Metadata ----------------------------------------------------------------------------------------------

def test_metadata_v12_by_topic_id_answers_the_topic_and_unknown_topic_id_for_an_unknown_id():
    """Kafka 4 answers a v12 request naming topics by id (the Java AdminClient's describeTopics(TopicCollection
    .ofTopicIds(...)), kafka-topics --describe --topic-id): the topic of a known id, UNKNOWN_TOPIC_ID for another."""
    unknown = uuid.UUID(int=7)
    resp = _metadata(ctx(), [{"topic_id": T_ID, "name": None}, {"topic_id": unknown, "name": None}])
    by_id = {t.topic_id: t for t in resp.topics}
    assert set(by_id) == {T_ID, unknown}
    assert by_id[T_ID].name == "t" and by_id[T_ID].error_code == ErrorCode.none
    assert len(by_id[T_ID].partitions) == 3
    assert by_id[unknown].error_code == ErrorCode.unknown_topic_id


def _listeners(*protocols: str) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(p, "h", 9000 + i) for i, p in enumerate(protocols))


def test_metadata_never_names_a_leader_that_is_not_in_its_broker_list():
    """A proxy of the pool without the client's protocol is left out of the broker list (docs §11), but it still
    leads partitions: a SASL_SSL client is told leader 8, a node it has no address for (the Java client's leader is
    then null, librdkafka logs "leader not found": the partition takes no produce from that client)."""
    p7 = ProxyInfo(7, "p7", 9092, ProxyRole.BOTH, listeners=_listeners("PLAINTEXT", "SASL_SSL"))
    p8 = ProxyInfo(8, "p8", 9092, ProxyRole.BOTH, listeners=_listeners("PLAINTEXT"))
    chains = tuple(PartitionChain(segments=(Segment("c1", "phys", p, 0, None, 0),)) for p in range(16))
    v = dataclasses.replace(view(), proxies=(p7, p8), topics={"t": LogicalTopic("t", T_ID.hex, chains)})
    resp = _metadata(ctx(v, me=p7, session=Session(protocol="SASL_SSL")), [{"topic_id": None, "name": "t"}])
    brokers = {b.node_id for b in resp.brokers}
    assert brokers == {7}
    leaders = {p.leader_id for p in resp.topics[0].partitions}
    assert leaders <= brokers, f"leaders {sorted(leaders - brokers)} are not in the broker list {sorted(brokers)}"


def test_metadata_controller_id_is_in_the_broker_list_while_this_proxy_drains():
    """A draining proxy leaves itself out of the brokers it lists, but still names itself the controller: the Java
    AdminClient's controller is then null (MetadataResponse.buildCluster looks the id up among the brokers), so its
    CreateTopics, DeleteTopics, CreatePartitions... wait for another metadata round. Kafka answers a live broker."""
    v = dataclasses.replace(view(), draining=(7,))
    resp = _metadata(ctx(v), [])
    assert [b.node_id for b in resp.brokers] == [8]
    assert resp.controller_id in {b.node_id for b in resp.brokers}


def test_metadata_of_an_invalid_topic_name_is_invalid_topic_exception():
    """Kafka answers a name no topic can have INVALID_TOPIC_EXCEPTION (Topic.validate), not UNKNOWN_TOPIC_OR_PARTITION:
    the Java producer then fails the send at once (InvalidTopicException) instead of waiting max.block.ms (60 s) for a
    topic that can never appear."""
    resp = _metadata(ctx(), [{"topic_id": None, "name": "no spaces allowed"}, {"topic_id": None, "name": "x" * 250}])
    assert [t.error_code for t in resp.topics] == [ErrorCode.invalid_topic_exception] * 2


def test_metadata_answers_topic_authorized_operations_when_asked():
    """Metadata v8+ with include_topic_authorized_operations: Kafka fills each topic's bitfield (with authorization
    off, every topic operation). fedkafka leaves the schema default (-2^31): the Java AdminClient's
    TopicDescription.authorizedOperations() is null."""
    resp = _metadata(ctx(), [{"topic_id": None, "name": "t"}], include_topic_authorized_operations=True)
    ops = resp.topics[0].topic_authorized_operations
    assert ops != MIN_INT32 and ops & (1 << Operation.WRITE) and ops & (1 << Operation.DESCRIBE)


# -- DescribeCluster -------------------------------------------------------------------------------------

def test_describe_cluster_answers_cluster_authorized_operations_when_asked():
    """Kafka (AuthHelper.computeDescribeClusterResponse): with include_cluster_authorized_operations the bitfield of
    the cluster operations allowed (0 without DESCRIBE on the cluster); fedkafka leaves -2^31, so
    describeCluster(includeAuthorizedOperations=true).authorizedOperations() is null (UIs read it to decide what the
    user may do)."""
    resp = describe_cluster.handle(ctx(), None, req(60, 1, {"include_cluster_authorized_operations": True,
                                                            "endpoint_type": 1}))
    ops = resp.cluster_authorized_operations
    assert ops != MIN_INT32 and ops & (1 << Operation.DESCRIBE) and ops & (1 << Operation.CREATE)


def test_describe_cluster_for_controllers_is_a_mismatched_endpoint_type():
    """A DescribeCluster v1 asking for controllers (endpoint_type 2, an AdminClient with bootstrap.controllers) sent to
    a broker is MISMATCHED_ENDPOINT_TYPE in Kafka; fedkafka lists its proxies as if they were the controllers."""
    resp = describe_cluster.handle(ctx(), None, req(60, 1, {"include_cluster_authorized_operations": False,
                                                            "endpoint_type": 2}))
    assert resp.error_code == ErrorCode.mismatched_endpoint_type
    assert list(resp.brokers) == []


# -- CreateTopics ----------------------------------------------------------------------------------------

class _CountedName(str):
    """A topic name that counts how often it is compared for equality (the handler's work per request)."""

    comparisons = 0

    def __eq__(self, other):
        type(self).comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_create_topics_duplicate_check_is_not_quadratic_in_the_topics_named():
    """`names.count(topic.name)` per topic: n^2 name comparisons on the event loop, before any authorization. A
    CreateTopics v4 of 99,990 topics (under the 100,000-element limit: 2.3 MB, decoded by codec.decode_request) is
    10^10 comparisons: ~70-90 s of one worker's loop (measured: 500 of its counts took ~0.36 s), every client of the
    worker and its lease renewal waiting. Kafka finds duplicates with a hash set."""
    n = 1500
    topics = [{"name": _CountedName(f"topic-{i:06d}"), "num_partitions": 1, "replication_factor": -1,
               "assignments": [], "configs": []} for i in range(n)]
    denied = dataclasses.replace(ctx(), authorizer=Authorizer(()), session=Session(principal="User:nobody"))
    _CountedName.comparisons = 0
    reply = topic_admin.handle(denied, None, req(19, 4, {"topics": topics, "timeout": TIMEOUT,
                                                         "validate_only": False}))
    assert not isinstance(reply, Plan)
    assert _CountedName.comparisons <= 20 * n, f"{_CountedName.comparisons} name comparisons for {n} topics"


def test_create_topics_names_a_duplicate_once_as_kafka():
    """ControllerApis.createTopics: a name given twice is answered once, INVALID_REQUEST "Duplicate topic name.";
    fedkafka answers it once per entry with ZooKeeper-era wording."""
    topic = {"name": "d", "num_partitions": 1, "replication_factor": -1, "assignments": [], "configs": []}
    resp = topic_admin.handle(ctx(), None, req(19, 7, {"topics": [topic, topic], "timeout": TIMEOUT,
                                                       "validate_only": False}))
    assert [(t.name, t.error_code, t.error_message) for t in resp.topics] == [
        ("d", ErrorCode.invalid_request, "Duplicate topic name.")]


def test_create_topics_with_an_invalid_replication_factor_is_refused():
    """Kafka refuses replication factor 0 or below -1 (INVALID_REPLICATION_FACTOR "Replication factor must be larger
    than 0, or -1 to use the default value."); fedkafka drops the field and creates the topic."""
    topics = [{"name": f"r{rf}", "num_partitions": 1, "replication_factor": rf, "assignments": [], "configs": []}
              for rf in (0, -2)]
    reply = topic_admin.handle(ctx(), None, req(19, 7, {"topics": topics, "timeout": TIMEOUT, "validate_only": False}))
    assert not isinstance(reply, Plan), "sent to the controller: " + repr([c.request.body for c in reply.calls])
    assert [t.error_code for t in reply.topics] == [ErrorCode.invalid_replication_factor] * 2


# -- CreatePartitions ------------------------------------------------------------------------------------

def test_create_partitions_naming_a_topic_twice_grows_nothing():
    """ControllerApis.createPartitions: a topic named twice is answered once, INVALID_REQUEST "Duplicate topic name.",
    and not grown. fedkafka sends both growths of it to the controller (which count wins is a race) and answers
    both."""
    topics = [{"name": "t", "count": 4, "assignments": None}, {"name": "t", "count": 6, "assignments": None}]
    reply = topic_admin.handle(ctx(), None, req(37, 3, {"topics": topics, "timeout": TIMEOUT,
                                                        "validate_only": False}))
    assert not isinstance(reply, Plan), "sent to the controller: " + repr([c.request.path for c in reply.calls])
    assert [(r.name, r.error_code, r.error_message) for r in reply.results] == [
        ("t", ErrorCode.invalid_request, "Duplicate topic name.")]


# -- (Incremental)AlterConfigs ---------------------------------------------------------------------------

def _topic_resource(configs: list[dict]) -> dict:
    return {"resource_type": 2, "resource_name": "t", "configs": configs}


def test_alter_configs_naming_a_resource_twice_changes_nothing():
    """ConfigAdminManager.preprocess: a resource named twice is INVALID_REQUEST "Each resource must appear at most
    once." on each entry, and not altered. fedkafka sends both to the controller: two legacy AlterConfigs (each
    replaces the whole config) race, the loser's configs are silently reset, and both are answered NONE."""
    for key, version, op in ((33, 2, {}), (44, 1, {"config_operation": 0})):
        resources = [_topic_resource([{"name": "retention.ms", "value": "1000", **op}]),
                     _topic_resource([{"name": "cleanup.policy", "value": "compact", **op}])]
        reply = alter_configs.handle(ctx(), None, req(key, version, {"resources": resources, "validate_only": False}))
        assert not isinstance(reply, Plan), f"api {key}: {len(reply.calls)} calls to the controller"
        assert [(r.error_code, r.error_message) for r in reply.responses] == [
            (ErrorCode.invalid_request, "Each resource must appear at most once.")] * 2


def test_legacy_alter_configs_with_a_null_value_is_an_invalid_request():
    """Legacy AlterConfigs replaces the whole config: Kafka refuses a null value (INVALID_REQUEST "Null value not
    supported for : retention.ms"); fedkafka drops the entry and sends the rest as the whole config, so the topic's
    retention.ms goes back to the default and the client is told NONE."""
    resources = [_topic_resource([{"name": "retention.ms", "value": None},
                                  {"name": "cleanup.policy", "value": "compact"}])]
    reply = alter_configs.handle(ctx(), None, req(33, 2, {"resources": resources, "validate_only": False}))
    assert not isinstance(reply, Plan), "sent to the controller: " + repr(reply.calls[0].request.body)
    assert reply.responses[0].error_code == ErrorCode.invalid_request


def test_incremental_alter_configs_with_a_config_named_twice_is_an_invalid_request():
    """Kafka: INVALID_REQUEST "Error due to duplicate config keys", nothing altered; fedkafka applies both in
    order (a SET then a DELETE of one name: the config is deleted, answered NONE)."""
    resources = [_topic_resource([{"name": "retention.ms", "config_operation": 0, "value": "1000"},
                                  {"name": "retention.ms", "config_operation": 1, "value": None}])]
    reply = alter_configs.handle(ctx(), None, req(44, 1, {"resources": resources, "validate_only": False}))
    assert not isinstance(reply, Plan), "sent to the controller: " + repr(reply.calls[0].request.body)
    assert (reply.responses[0].error_code, reply.responses[0].error_message) == (
        ErrorCode.invalid_request, "Error due to duplicate config keys")


# -- InitProducerId --------------------------------------------------------------------------------------

def _init(c, producer_id: int, epoch: int):
    return init_producer_id.handle(c, None, req(22, 4, {"transactional_id": None, "transaction_timeout": 60000,
                                                        "producer_id": producer_id, "producer_epoch": epoch}))


def test_init_producer_id_with_an_id_but_no_epoch_is_an_invalid_request():
    """Kafka: a producer id without an epoch (or an epoch without an id) is INVALID_REQUEST. fedkafka takes it as a
    KIP-360 bump from epoch -1 and answers (id, 0): the epoch the id's holder got first, so two producers share
    one (logical id, epoch) and with it the physical ids and sequences the proxy maps it to."""
    holder = _init(ctx(), -1, -1)
    assert holder.error_code == ErrorCode.none and holder.producer_epoch == 0
    for producer_id, epoch in ((holder.producer_id, -1), (-1, 3)):
        resp = _init(ctx(), producer_id, epoch)
        assert (resp.error_code, resp.producer_id) == (ErrorCode.invalid_request, -1), (producer_id, epoch, resp)


def test_init_producer_id_needs_a_write_not_denied_everywhere():
    """Without IDEMPOTENT_WRITE Kafka accepts WRITE on some topic (authorizeByResourceType), but a DENY of WRITE on
    every topic (literal "*") wins over any ALLOW: CLUSTER_AUTHORIZATION_FAILED. fedkafka's allowed_any ignores
    denials and hands the principal a producer id."""
    who = "User:w"
    bindings = (AclBinding(ResourceType.TOPIC, "t", PatternType.LITERAL, who, "*", Operation.WRITE, Permission.ALLOW),
                AclBinding(ResourceType.TOPIC, "*", PatternType.LITERAL, who, "*", Operation.WRITE, Permission.DENY))
    c = dataclasses.replace(ctx(), authorizer=Authorizer(bindings), session=Session(principal=who))
    resp = _init(c, -1, -1)
    assert (resp.error_code, resp.producer_id) == (ErrorCode.cluster_authorization_failed, -1)


# -- IncrementalAlterConfigs APPEND / SUBTRACT as the controller applies them (controller/topic_admin._apply_ops) -

def test_incremental_append_to_a_config_never_set_starts_from_kafkas_default():
    """Kafka (ConfigurationControlManager.getParts) appends to the config's current value, its default when never
    set: APPEND cleanup.policy=compact on a topic with the default "delete" gives "delete,compact". The controller
    starts from an empty list and sets "compact": the topic stops deleting by retention (its disk grows) while the
    client asked to keep deleting and compact too."""
    from fedkafka.controller.topic_admin import APPEND, ConfigOp, _apply_ops

    assert _apply_ops({}, [ConfigOp(name="cleanup.policy", op=APPEND, value="compact")]) == {
        "cleanup.policy": "delete,compact"}


def test_incremental_append_to_a_config_that_is_not_a_list_is_invalid_config():
    """Kafka: INVALID_CONFIG "Can't APPEND to key retention.ms because its type is not LIST."; the controller joins
    the strings (APPEND retention.ms=1000 on an unset retention.ms sets it to 1000, answered NONE)."""
    from fedkafka.controller.errors import ControllerError
    from fedkafka.controller.topic_admin import APPEND, ConfigOp, _apply_ops

    try:
        applied = _apply_ops({}, [ConfigOp(name="retention.ms", op=APPEND, value="1000")])
    except ControllerError as e:
        assert e.kafka_error == "INVALID_CONFIG"
    else:
        raise AssertionError(f"applied: {applied}")


# -- DescribeConfigs -------------------------------------------------------------------------------------

def test_describe_configs_asks_each_cluster_once_however_many_resources_name_it():
    """One upstream DescribeConfigs per topic resource, none deduplicated or batched: a ~0.8 MB DescribeConfigs v3
    naming topic t 99,000 times (under the element limit) becomes 99,000 requests to t's physical cluster, written
    on the worker's pooled broker connections. A Kafka broker answers them all itself from its metadata."""
    from fedkafka.proxy.handlers import describe_configs

    resources = [{"resource_type": 2, "resource_name": "t", "configuration_keys": None}] * 1000
    plan = describe_configs.handle(ctx(), None, req(32, 4, {"resources": resources, "include_synonyms": False,
                                                            "include_documentation": False}))
    clusters = {call.target.cluster for call in plan.calls}
    assert len(plan.calls) <= len(clusters), f"{len(plan.calls)} upstream requests to {sorted(clusters)}"
