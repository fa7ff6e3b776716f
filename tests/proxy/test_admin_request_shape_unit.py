"""The edges of Kafka's request-shape checks of the admin handlers (fixm3): (Incremental)AlterConfigs'
ConfigAdminManager.preprocess, CreatePartitions' duplicate names (ControllerApis.createPartitions), CreateTopics'
replication factor (ReplicationControlManager.createTopic), InitProducerId's id and epoch
(KafkaApis.handleInitProducerIdRequest). The handlers as pure functions."""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode

from fedkafka.proxy.handlers import alter_configs, init_producer_id, topic_admin
from fedkafka.proxy.plan import ControllerAnswer, Plan
from fedkafka.security.acl import Authorizer
from fedkafka.security.session import Session
from proxy.test_admin_handlers import TIMEOUT, req
from proxy.test_handlers import ctx

NAMED_TWICE = (ErrorCode.invalid_request, "Each resource must appear at most once.")


def _resource(name: str, configs: list[dict], resource_type: int = 2) -> dict:
    return {"resource_type": resource_type, "resource_name": name, "configs": configs}


def _applied() -> ControllerAnswer:
    return ControllerAnswer(200, {"topic": {"name": "t2", "config": {}}, "view_version": 9})


def _denied():
    return dataclasses.replace(ctx(), authorizer=Authorizer(()), session=Session(principal="User:nobody"))


def test_every_entry_of_a_resource_named_three_times_is_refused_and_the_others_are_applied():
    config = [{"name": "retention.ms", "value": "1000", "config_operation": 0}]
    resources = [_resource("t", config), _resource("t", config), _resource("t2", config), _resource("t", config)]
    plan = alter_configs.handle(ctx(), None, req(44, 1, {"resources": resources, "validate_only": False}))
    assert [c.request.path for c in plan.calls] == ["/v1/admin/topics/t2/config"]
    resp = plan.finish([_applied()])
    assert [(r.resource_name, r.error_code, r.error_message) for r in resp.responses] == [
        ("t", *NAMED_TWICE), ("t", *NAMED_TWICE), ("t2", ErrorCode.none, None), ("t", *NAMED_TWICE)]


def test_one_name_as_a_topic_and_as_a_group_is_two_resources():
    config = [{"name": "retention.ms", "value": "1000"}]
    resources = [_resource("x", config), _resource("x", config, resource_type=32)]
    reply = alter_configs.handle(ctx(), None, req(33, 2, {"resources": resources, "validate_only": False}))
    assert [c.request.path for c in reply.calls] == ["/v1/admin/topics/x/config"]


def test_the_request_shape_is_judged_before_authorization_as_kafka():
    """KafkaApis runs ConfigAdminManager.preprocess before the controller authorizes what is left."""
    config = [{"name": "retention.ms", "value": "1000"}]
    resources = [_resource("t", config), _resource("t", config),
                 _resource("u", [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]), _resource("v", config)]
    resp = alter_configs.handle(_denied(), None, req(33, 2, {"resources": resources, "validate_only": False}))
    assert [(r.error_code, r.error_message) for r in resp.responses] == [
        NAMED_TWICE, NAMED_TWICE, (ErrorCode.invalid_request, "Error due to duplicate config keys"),
        (ErrorCode.topic_authorization_failed, None)]


def test_null_values_are_named_in_kafkas_message_and_incremental_delete_needs_none():
    legacy = [_resource("t", [{"name": "retention.ms", "value": None}, {"name": "segment.ms", "value": None}])]
    resp = alter_configs.handle(ctx(), None, req(33, 2, {"resources": legacy, "validate_only": False}))
    assert (resp.responses[0].error_code, resp.responses[0].error_message) == (
        ErrorCode.invalid_request, "Null value not supported for : retention.ms, segment.ms")
    incremental = [_resource("t", [{"name": "retention.ms", "config_operation": 1, "value": None},
                                   {"name": "cleanup.policy", "config_operation": 2, "value": None}]),
                   _resource("t2", [{"name": "retention.ms", "config_operation": 1, "value": None}])]
    plan = alter_configs.handle(ctx(), None, req(44, 1, {"resources": incremental, "validate_only": False}))
    assert [c.request.body["ops"] for c in plan.calls] == [[{"name": "retention.ms", "op": 1, "value": None}]]
    resp = plan.finish([_applied()])
    assert (resp.responses[0].error_code, resp.responses[0].error_message) == (
        ErrorCode.invalid_request, "Null value not supported for : cleanup.policy")
    assert resp.responses[1].error_code == ErrorCode.none


def test_create_partitions_grows_the_other_topics_of_a_request_naming_one_twice():
    topics = [{"name": "t", "count": 4, "assignments": None}, {"name": "u", "count": 5, "assignments": None},
              {"name": "t", "count": 6, "assignments": None}, {"name": "t", "count": 7, "assignments": None}]
    plan = topic_admin.handle(ctx(), None, req(37, 3, {"topics": topics, "timeout": TIMEOUT, "validate_only": False}))
    assert [(c.request.path, c.request.body["count"]) for c in plan.calls] == [("/v1/admin/topics/u/partitions", 5)]
    resp = plan.finish([ControllerAnswer(200, {"topic": {"name": "u"}, "view_version": 9})])
    assert [(r.name, r.error_code, r.error_message) for r in resp.results] == [
        ("t", ErrorCode.invalid_request, "Duplicate topic name."), ("u", ErrorCode.none, None)]


def test_a_duplicate_create_partitions_is_refused_before_authorization_as_kafka():
    topics = [{"name": "t", "count": 4, "assignments": None}, {"name": "t", "count": 6, "assignments": None}]
    resp = topic_admin.handle(_denied(), None, req(37, 3, {"topics": topics, "timeout": TIMEOUT,
                                                           "validate_only": False}))
    assert [(r.name, r.error_code) for r in resp.results] == [("t", ErrorCode.invalid_request)]


def test_create_topics_replication_factor_kafka_takes_is_not_applied():
    """-1 and any positive factor are sent to the controller without it: each physical topic gets its cluster's
    default.replication.factor (docs/DESIGN.md §5.8), even a factor above a cluster's broker count, which
    Kafka itself would refuse (INVALID_REPLICATION_FACTOR "... cannot be reached because only n broker(s) are
    registered.")."""
    topics = [{"name": f"r{rf}", "num_partitions": 1, "replication_factor": rf, "assignments": [], "configs": []}
              for rf in (-1, 1, 3, 100)]
    plan = topic_admin.handle(ctx(), None, req(19, 7, {"topics": topics, "timeout": TIMEOUT, "validate_only": False}))
    assert isinstance(plan, Plan)
    assert [c.request.body for c in plan.calls] == [
        {"name": f"r{rf}", "partitions": 1, "config": {}, "validate_only": False} for rf in (-1, 1, 3, 100)]


def test_create_topics_refuses_a_bad_replication_factor_with_kafkas_message_after_authorization():
    topic = {"name": "r", "num_partitions": 1, "replication_factor": 0, "assignments": [], "configs": []}
    refused = topic_admin.handle(ctx(), None, req(19, 7, {"topics": [topic], "timeout": TIMEOUT,
                                                          "validate_only": True}))
    assert (refused.topics[0].error_code, refused.topics[0].error_message) == (
        ErrorCode.invalid_replication_factor,
        "Replication factor must be larger than 0, or -1 to use the default value.")
    denied = topic_admin.handle(_denied(), None, req(19, 7, {"topics": [topic], "timeout": TIMEOUT,
                                                             "validate_only": True}))
    assert denied.topics[0].error_code == ErrorCode.topic_authorization_failed


def _init(version: int, on=None, **ids):
    body = {"transactional_id": None, "transaction_timeout": 60000, **ids}
    return init_producer_id.handle(on or ctx(), None, req(22, version, body))


def test_init_producer_id_gives_a_new_id_for_an_id_given_with_its_epoch_and_to_old_versions():
    """A KIP-360 bump without a transactional id gets a new id, epoch 0, as from Kafka (TransactionCoordinator.
    handleInitProducerId): the id named may be another client's (tests/proxy/test_foreign_producer_ids.py)."""
    one = ctx()
    holder = _init(4, one, producer_id=-1, producer_epoch=-1)
    bumped = _init(4, one, producer_id=holder.producer_id, producer_epoch=0)
    assert bumped.error_code == ErrorCode.none and bumped.producer_epoch == 0
    assert bumped.producer_id not in (-1, holder.producer_id)
    old = _init(2)  # v0-2 have neither field
    assert old.error_code == ErrorCode.none and old.producer_id >= 0 and old.producer_epoch == 0
    for producer_id, epoch in ((-2, -1), (-1, 0)):
        refused = _init(4, producer_id=producer_id, producer_epoch=epoch)
        assert (refused.error_code, refused.producer_id, refused.producer_epoch) == (ErrorCode.invalid_request, -1, -1)
