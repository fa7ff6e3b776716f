"""CreateTopics v5+ answers, as Kafka's controller answers them (ReplicationControlManager.createTopic): the topic's
partition count, its replication factor and every config of the topic as DescribeConfigs lists it, each with its
source (sorted by name; none when the principal may not DESCRIBE_CONFIGS it: TOPIC_AUTHORIZATION_FAILED as the
topic's config error). The proxy answered replication factor -1 and only the configs the request set, each with the
source of a topic config, so a client reading the answer (AdminClient's CreateTopicsResult.replicationFactor and
.config) saw -1 and no defaults at all."""

from __future__ import annotations

import dataclasses
import uuid

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_type
from fedkafka.proxy.handlers import topic_admin
from fedkafka.proxy.plan import Plan, UpstreamError
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment
from proxy.test_admin_handlers import TIMEOUT, TOPIC_ID, created, req
from proxy.test_handlers import ctx, view

TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5  # DescribeConfigs' config sources
METADATA, DESCRIBE_CONFIGS = 3, 32


class Live:
    """The proxy's state once the controller answered: it serves the view holding the new topic."""

    def __init__(self, v):
        self.view = v

    def lease_valid(self) -> bool:
        return True


def _created_view():
    """Topic "a" created on cluster c1 as physical topic "fk-a" (3 partitions)."""
    v = view()
    chains = tuple(PartitionChain(segments=(Segment("c1", "fk-a", p, 0, None, 0),)) for p in range(3))
    return dataclasses.replace(v, version=9, topics={**v.topics, "a": LogicalTopic("a", TOPIC_ID, chains)})


def _request(version: int = 7):
    return req(19, version, {"topics": [{"name": "a", "num_partitions": 3, "replication_factor": -1,
                                         "assignments": [], "configs": [{"name": "retention.ms", "value": "1000"}]}],
                             "timeout": TIMEOUT, "validate_only": False})


def _config(name: str, value: str | None, source: int, sensitive: bool = False) -> dict:
    return {"name": name, "value": value, "read_only": False, "config_source": source, "is_sensitive": sensitive,
            "synonyms": [], "config_type": 0, "documentation": None}


BROKER_CONFIGS = [_config("retention.ms", "1000", TOPIC_CONFIG),
                  _config("min.insync.replicas", "2", STATIC_BROKER_CONFIG),
                  _config("cleanup.policy", "delete", DEFAULT_CONFIG)]


def _cluster_answer(call):
    """c1's answer to one call: fk-a has 3 replicas of each partition and BROKER_CONFIGS."""
    request = call.request
    assert call.target.cluster == "c1"
    if request.__api_key__ == METADATA:
        assert [t.name for t in request.topics] == ["fk-a"]
        return build(response_type(METADATA, type(request).__version__), {"topics": [
            {"error_code": ErrorCode.none, "name": "fk-a", "topic_id": uuid.uuid4(), "partitions": [
                {"error_code": ErrorCode.none, "partition_index": p, "leader_id": 1, "leader_epoch": 0,
                 "replica_nodes": [1, 2, 3], "isr_nodes": [1, 2, 3], "offline_replicas": []} for p in range(3)]}]})
    assert request.__api_key__ == DESCRIBE_CONFIGS
    assert [r.resource_name for r in request.resources] == ["fk-a"]
    return build(response_type(DESCRIBE_CONFIGS, type(request).__version__), {"results": [
        {"error_code": ErrorCode.none, "error_message": None, "resource_type": 2, "resource_name": "fk-a",
         "configs": BROKER_CONFIGS}]})


def _answered(c, request=None, cluster=_cluster_answer):
    """The client's answer: the controller creates "a", then c1 answers whatever the proxy asks it."""
    reply = topic_admin.handle(c, None, request or _request()).finish([created("a", 3, {"retention.ms": "1000"})])
    while isinstance(reply, Plan):
        reply = reply.finish([cluster(call) for call in reply.calls])
    return reply.topics[0]


def test_the_answer_carries_the_physical_replication_factor_and_every_config_with_its_source():
    topic = _answered(ctx(live=Live(_created_view())))
    assert (topic.error_code, topic.num_partitions, topic.replication_factor) == (ErrorCode.none, 3, 3)
    assert [(c.name, c.value, c.config_source) for c in topic.configs] == [
        ("cleanup.policy", "delete", DEFAULT_CONFIG), ("min.insync.replicas", "2", STATIC_BROKER_CONFIG),
        ("retention.ms", "1000", TOPIC_CONFIG)]


def test_without_describe_configs_the_answer_has_no_counts_and_no_configs_as_kafka():
    """ReplicationControlManager.createTopic sets num_partitions, replication_factor and the configs only for a topic
    the principal may DESCRIBE_CONFIGS; otherwise they stay -1 and the topic's config error is
    TOPIC_AUTHORIZATION_FAILED (the proxy answered the partition count)."""
    creator = AclBinding(ResourceType.TOPIC, "a", PatternType.LITERAL, "User:app", "*", Operation.CREATE,
                         Permission.ALLOW)
    c = dataclasses.replace(ctx(live=Live(_created_view())), authorizer=Authorizer((creator,)),
                            session=Session(principal="User:app"))
    topic = _answered(c)
    assert (topic.error_code, topic.num_partitions, topic.replication_factor, topic.configs) == (
        ErrorCode.none, -1, -1, ())
    assert topic.topic_config_error_code == ErrorCode.topic_authorization_failed


def test_a_cluster_that_does_not_answer_leaves_the_creation_answered():
    topic = _answered(ctx(live=Live(_created_view())), cluster=lambda call: UpstreamError("c1", "gone"))
    assert (topic.error_code, topic.num_partitions) == (ErrorCode.none, 3)  # created: the client must not retry
    assert [(c.name, c.value) for c in topic.configs] == [("retention.ms", "1000")]
