"""The Kafka admin handlers as pure functions: requests -> controller calls / physical DeleteRecords -> answers.

Bad input of each API: unknown topic, replica assignments, duplicate names, a bad config (the controller's
INVALID_CONFIG passed through), partitions decreasing (INVALID_PARTITIONS), DeleteRecords past the high
watermark (the broker's OFFSET_OUT_OF_RANGE, and then nothing older is deleted)."""

from __future__ import annotations

import datetime
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32Timedelta

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.core.dispatch import registry_for
from fedkafka.proxy.handlers import alter_configs, cluster_ops, delete_records, topic_admin
from fedkafka.proxy.plan import Broker, ControllerAnswer, ControllerApi, Plan, UpstreamError
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View
from proxy.test_handlers import ctx

TIMEOUT = i32Timedelta.parse(datetime.timedelta(seconds=30))
TOPIC_ID = "0" * 31 + "1"


def req(api_key: int, version: int, body: dict):
    return build(request_type(api_key, version), body)


def created(name: str, partitions: int, config: dict | None = None) -> ControllerAnswer:
    return ControllerAnswer(200, {"topic": {"name": name, "topic_id": TOPIC_ID, "partitions": partitions,
                                            "config": config or {}}, "view_version": 9})


def refused(status: int, kafka_error: str, detail: str) -> ControllerAnswer:
    return ControllerAnswer(status, {"detail": detail, "kafka_error": kafka_error})


def test_admin_writes_are_not_advertised_without_a_controller():
    with_ctl = registry_for(ProxyRole.BOTH, with_controller=True)
    without = registry_for(ProxyRole.BOTH, with_controller=False)
    for key in (19, 20, 37, 33, 44):
        assert key in with_ctl and key not in without
    assert 21 in without  # DeleteRecords needs the physical brokers only


def test_create_topics_asks_the_controller_and_answers_kafka_codes():
    request = req(19, 7, {"topics": [
        {"name": "a", "num_partitions": 3, "replication_factor": -1, "assignments": [],
         "configs": [{"name": "retention.ms", "value": "1000"}]},
        {"name": "b", "num_partitions": 2, "replication_factor": 1, "assignments": [], "configs": []},
        {"name": "c", "num_partitions": -1, "replication_factor": -1,
         "assignments": [{"partition_index": 0, "broker_ids": [1]}], "configs": []},
        {"name": "d", "num_partitions": 1, "replication_factor": -1, "assignments": [],
         "configs": [{"name": "no.such.config", "value": "1"}]},
    ], "timeout": TIMEOUT, "validate_only": False})
    plan = topic_admin.handle(ctx(), None, request)
    assert isinstance(plan, Plan) and len(plan.calls) == 3  # c is refused without asking
    assert all(isinstance(c.target, ControllerApi) for c in plan.calls)
    assert plan.calls[0].request.body == {"name": "a", "partitions": 3, "config": {"retention.ms": "1000"},
                                          "validate_only": False}
    resp = plan.finish([created("a", 3, {"retention.ms": "1000"}),
                        refused(409, "TOPIC_ALREADY_EXISTS", "Topic 'b' already exists."),
                        refused(422, "INVALID_CONFIG", "Unknown topic config name: no.such.config")])
    by_name = {t.name: t for t in resp.topics}
    assert by_name["a"].error_code == ErrorCode.none and by_name["a"].num_partitions == 3
    assert by_name["a"].topic_id == uuid.UUID(hex=TOPIC_ID)
    assert [(c.name, c.value) for c in by_name["a"].configs] == [("retention.ms", "1000")]
    assert by_name["b"].error_code == ErrorCode.topic_already_exists
    assert by_name["c"].error_code == ErrorCode.invalid_replica_assignment
    assert "replica assignments are not accepted" in by_name["c"].error_message
    assert by_name["d"].error_code == ErrorCode.invalid_config
    assert "no.such.config" in by_name["d"].error_message


def test_create_topics_with_the_controller_down_is_a_retriable_timeout():
    request = req(19, 5, {"topics": [{"name": "a", "num_partitions": 1, "replication_factor": -1,
                                      "assignments": [], "configs": []}], "timeout": TIMEOUT, "validate_only": True})
    plan = topic_admin.handle(ctx(), None, request)
    assert plan.calls[0].request.body["validate_only"] is True
    resp = plan.finish([UpstreamError("controller", "controller unreachable: connection refused")])
    assert resp.topics[0].error_code == ErrorCode.request_timed_out
    assert "unreachable" in resp.topics[0].error_message


def test_duplicate_names_in_one_create_request_are_refused():
    topic = {"name": "a", "num_partitions": 1, "replication_factor": -1, "assignments": [], "configs": []}
    resp = topic_admin.handle(ctx(), None, req(19, 7, {"topics": [topic, topic], "timeout": TIMEOUT,
                                                       "validate_only": False}))
    assert [t.error_code for t in resp.topics] == [ErrorCode.invalid_request]  # once, as Kafka answers it


def test_delete_topics_by_name_and_by_id():
    c = ctx()
    known = uuid.UUID(hex=c.view.topics["t"].topic_id)
    plan = topic_admin.handle(c, None, req(20, 6, {"topics": [{"name": None, "topic_id": known},
                                                              {"name": "gone", "topic_id": uuid.UUID(int=0)},
                                                              {"name": None, "topic_id": uuid.uuid4()}],
                                                   "timeout": TIMEOUT}))
    assert [(x.request.method, x.request.path) for x in plan.calls] == [
        ("DELETE", f"/v1/admin/topics/t?topic_id={known.hex}"), ("DELETE", "/v1/admin/topics/gone")]
    resp = plan.finish([ControllerAnswer(200, {"deleted": "t", "view_version": 5}),
                        refused(404, "UNKNOWN_TOPIC_OR_PARTITION", "This server does not host this topic: gone")])
    assert [(r.name, r.error_code) for r in resp.responses] == [
        ("t", ErrorCode.none), ("gone", ErrorCode.unknown_topic_or_partition), (None, ErrorCode.unknown_topic_id)]
    old = topic_admin.handle(c, None, req(20, 4, {"topic_names": ["t"], "timeout": TIMEOUT}))
    assert old.calls[0].request.path == "/v1/admin/topics/t"


def test_create_partitions_passes_decreasing_and_assignments_are_refused():
    plan = topic_admin.handle(ctx(), None, req(37, 3, {"topics": [
        {"name": "t", "count": 2, "assignments": None},
        {"name": "t2", "count": 9, "assignments": [{"broker_ids": [1]}]},
    ], "timeout": TIMEOUT, "validate_only": False}))
    assert [(x.request.path, x.request.body) for x in plan.calls] == [
        ("/v1/admin/topics/t/partitions", {"count": 2, "validate_only": False})]
    resp = plan.finish([refused(422, "INVALID_PARTITIONS", "Topic currently has 3 partitions, which is higher")])
    assert [r.error_code for r in resp.results] == [ErrorCode.invalid_partitions, ErrorCode.invalid_replica_assignment]


def test_alter_configs_replace_and_incremental_ops_go_to_the_controller_broker_configs_are_refused():
    resources = [{"resource_type": 2, "resource_name": "t",
                  "configs": [{"name": "retention.ms", "config_operation": 0, "value": "5"},
                              {"name": "cleanup.policy", "config_operation": 2, "value": "compact"},
                              {"name": "segment.ms", "config_operation": 1, "value": None}]},
                 {"resource_type": 4, "resource_name": "1", "configs": []}]
    plan = alter_configs.handle(ctx(), None, req(44, 1, {"resources": resources, "validate_only": False}))
    assert plan.calls[0].request.body == {"ops": [{"name": "retention.ms", "op": 0, "value": "5"},
                                                  {"name": "cleanup.policy", "op": 2, "value": "compact"},
                                                  {"name": "segment.ms", "op": 1, "value": None}],
                                          "replace": False, "validate_only": False}
    resp = plan.finish([refused(422, "INVALID_CONFIG", "Invalid value 5x for configuration retention.ms")])
    assert [r.error_code for r in resp.responses] == [ErrorCode.invalid_config, ErrorCode.invalid_request]
    assert "physical cluster" in resp.responses[1].error_message
    legacy = alter_configs.handle(ctx(), None, req(33, 2, {"resources": [
        {"resource_type": 2, "resource_name": "t", "configs": [{"name": "retention.ms", "value": "7"}]}],
        "validate_only": True}))
    assert legacy.calls[0].request.body == {"ops": [{"name": "retention.ms", "op": 0, "value": "7"}],
                                            "replace": True, "validate_only": True}
    assert legacy.finish([created("t", 3)]).responses[0].error_code == ErrorCode.none


# -- DeleteRecords over segment chains -------------------------------------------------------------------

def chain_view() -> View:
    """p0: c1/old[0] 0..50 sealed (logical 0..50), c2/phys[0] from 10 (logical 50..), active; p1: identity."""
    p0 = PartitionChain(segments=(Segment("c1", "old", 0, 0, 50, 0), Segment("c2", "phys", 0, 10, None, 50)))
    p1 = PartitionChain(segments=(Segment("c1", "phys", 1, 0, None, 0),))
    return View(version=4, clusters={"c1": Cluster("c1", "h1:1"), "c2": Cluster("c2", "h2:2")},
                topics={"t": LogicalTopic("t", TOPIC_ID, (p0, p1))})


def records_req(parts: dict[int, int], topic: str = "t"):
    return req(21, 2, {"topics": [{"name": topic, "partitions": [{"partition_index": p, "offset": o}
                                                                  for p, o in parts.items()]}], "timeout": TIMEOUT})


def broker_answer(call, errors: dict | None = None, low: dict | None = None):
    errors, low = errors or {}, low or {}
    return build(response_type(21, 2), {"topics": [{"name": t.name, "partitions": [
        {"partition_index": p.partition_index, "error_code": errors.get((t.name, p.partition_index), ErrorCode.none),
         "low_watermark": low.get((t.name, p.partition_index), p.offset)} for p in t.partitions]}
        for t in call.request.topics]})


def asked(plan: Plan) -> dict:
    return {(c.target.cluster, t.name, p.partition_index): p.offset for c in plan.calls for t in c.request.topics
            for p in t.partitions}


def test_delete_records_in_the_active_segment_deletes_the_older_segment_whole_afterwards():
    c = ctx(chain_view())
    plan = delete_records.handle(c, None, records_req({0: 70, 1: 5}))
    assert asked(plan) == {("c2", "phys", 0): 30, ("c1", "phys", 1): 5}  # logical 70 = physical 10 + 20
    assert all(isinstance(x.target, Broker) for x in plan.calls)
    second = plan.finish([broker_answer(x) for x in plan.calls])
    assert isinstance(second, Plan) and asked(second) == {("c1", "old", 0): 50}  # the sealed one, to its seal
    resp = second.finish([broker_answer(x) for x in second.calls])
    assert {p.partition_index: (p.error_code, p.low_watermark) for p in resp.topics[0].partitions} == {
        0: (ErrorCode.none, 70), 1: (ErrorCode.none, 5)}


def test_delete_records_inside_a_sealed_segment_touches_only_it():
    plan = delete_records.handle(ctx(chain_view()), None, records_req({0: 20}))
    assert asked(plan) == {("c1", "old", 0): 20}
    resp = plan.finish([broker_answer(x) for x in plan.calls])
    assert resp.topics[0].partitions[0].low_watermark == 20


def test_delete_records_at_the_high_watermark_sentinel():
    plan = delete_records.handle(ctx(chain_view()), None, records_req({0: -1}))
    assert asked(plan) == {("c2", "phys", 0): -1}
    second = plan.finish([broker_answer(x, low={("phys", 0): 25}) for x in plan.calls])
    resp = second.finish([broker_answer(x) for x in second.calls])
    assert resp.topics[0].partitions[0].low_watermark == 65  # physical 25 in the segment from 10 at logical 50


def test_delete_records_past_the_high_watermark_deletes_nothing_older():
    plan = delete_records.handle(ctx(chain_view()), None, records_req({0: 10_000}))
    resp = plan.finish([broker_answer(x, errors={("phys", 0): ErrorCode.offset_out_of_range}) for x in plan.calls])
    assert not isinstance(resp, Plan)  # the sealed segment is left alone
    assert resp.topics[0].partitions[0].error_code == ErrorCode.offset_out_of_range


def test_delete_records_bad_input():
    resp = delete_records.handle(ctx(chain_view()), None, req(21, 2, {"topics": [
        {"name": "nope", "partitions": [{"partition_index": 0, "offset": 1}]},
        {"name": "t", "partitions": [{"partition_index": 7, "offset": 1}, {"partition_index": 1, "offset": -5}]},
    ], "timeout": TIMEOUT}))
    codes = [p.error_code for t in resp.topics for p in t.partitions]
    assert codes == [ErrorCode.unknown_topic_or_partition, ErrorCode.unknown_topic_or_partition,
                     ErrorCode.offset_out_of_range]


def test_delete_records_with_a_lost_broker_is_retriable():
    plan = delete_records.handle(ctx(chain_view()), None, records_req({1: 3}))
    resp = plan.finish([UpstreamError("c1", "connection lost")])
    assert resp.topics[0].partitions[0].error_code == ErrorCode.request_timed_out


def test_reassignments_are_refused_with_a_message_and_none_are_listed():
    resp = cluster_ops.handle(ctx(), None, req(45, 0, {"timeout": TIMEOUT, "topics": [
        {"name": "t", "partitions": [{"partition_index": 0, "replicas": [1, 2]}]}]}))
    assert resp.error_code == ErrorCode.invalid_request and "physical cluster" in resp.error_message
    listed = cluster_ops.handle(ctx(), None, req(46, 0, {"timeout": TIMEOUT, "topics": None}))
    assert listed.error_code == ErrorCode.none and listed.topics == ()
    elected = cluster_ops.handle(ctx(), None, req(43, 2, {"election_type": 0, "timeout": TIMEOUT,
                                                          "topic_partitions": [{"topic": "t", "partitions": [0, 9]}]}))
    assert [p.error_code for p in elected.replica_election_results[0].partition_result] == [
        ErrorCode.election_not_needed, ErrorCode.unknown_topic_or_partition]
