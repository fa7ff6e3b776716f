"""DescribeConfigs asks each physical cluster once, each physical topic once, and answers every resource of the
request in its order, as Kafka does (ConfigHelper.describeConfigs: a resource named twice is described twice, each
entry with the configs its own configuration_keys asked for, none or empty meaning all)."""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.handlers import describe_configs
from fedkafka.proxy.plan import UpstreamError
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment
from proxy.test_admin_handlers import req
from proxy.test_handlers import ctx, view

TOPIC = 2


def _two_clusters_ctx():
    v = view()
    u = LogicalTopic("u", "0" * 31 + "2", (PartitionChain(segments=(Segment("c2", "u-phys", 0, 0, None, 0),)),))
    return ctx(dataclasses.replace(v, topics={**v.topics, "u": u}))


def _resource(name: str, keys=None) -> dict:
    return {"resource_type": TOPIC, "resource_name": name, "configuration_keys": keys}


def _config(name: str, value: str) -> dict:
    return {"name": name, "value": value, "read_only": False, "config_source": 1, "is_sensitive": False,
            "synonyms": [], "config_type": 0, "documentation": None}


def _cluster_answer(*resources: tuple[str, list[dict]]):
    return build(response_schema(32, 4), {"results": [
        {"error_code": ErrorCode.none, "error_message": None, "resource_type": TOPIC, "resource_name": name,
         "configs": configs} for name, configs in resources]})


def test_each_cluster_is_asked_once_and_every_entry_is_answered_in_order():
    resources = [_resource("t", ["retention.ms"]), _resource("u"), _resource("t"), _resource("nope"),
                 _resource("t", ["cleanup.policy", "retention.ms"])]
    plan = describe_configs.handle(_two_clusters_ctx(), None, req(32, 4, {
        "resources": resources, "include_synonyms": False, "include_documentation": False}))
    asked = {call.target.cluster: [(r.resource_name, r.configuration_keys) for r in call.request.resources]
             for call in plan.calls}
    assert asked == {"c1": [("phys", None)], "c2": [("u-phys", None)]}  # t once, all its configs (one entry asks all)
    answers = {"c1": _cluster_answer(("phys", [_config("retention.ms", "1"), _config("cleanup.policy", "delete"),
                                               _config("segment.ms", "2")])),
               "c2": _cluster_answer(("u-phys", [_config("retention.ms", "3")]))}
    resp = plan.finish([answers[call.target.cluster] for call in plan.calls])
    assert [(r.resource_name, r.error_code, [c.name for c in r.configs]) for r in resp.results] == [
        ("t", ErrorCode.none, ["retention.ms"]),
        ("u", ErrorCode.none, ["retention.ms"]),
        ("t", ErrorCode.none, ["retention.ms", "cleanup.policy", "segment.ms"]),
        ("nope", ErrorCode.unknown_topic_or_partition, []),
        ("t", ErrorCode.none, ["retention.ms", "cleanup.policy"])]


def test_the_keys_asked_upstream_are_every_key_any_entry_named():
    resources = [_resource("t", ["retention.ms"]), _resource("t", ["cleanup.policy", "retention.ms"])]
    plan = describe_configs.handle(ctx(), None, req(32, 4, {"resources": resources, "include_synonyms": False,
                                                            "include_documentation": False}))
    assert [(r.resource_name, r.configuration_keys) for call in plan.calls for r in call.request.resources] == [
        ("phys", ("retention.ms", "cleanup.policy"))]


def test_a_cluster_that_does_not_answer_fails_each_entry_it_had_retriably():
    resources = [_resource("t"), _resource("u"), _resource("t")]
    plan = describe_configs.handle(_two_clusters_ctx(), None, req(32, 4, {
        "resources": resources, "include_synonyms": False, "include_documentation": False}))
    answers = {"c1": UpstreamError("c1", "cannot reach cluster c1"),
               "c2": _cluster_answer(("u-phys", [_config("retention.ms", "3")]))}
    resp = plan.finish([answers[call.target.cluster] for call in plan.calls])
    assert [(r.resource_name, r.error_code) for r in resp.results] == [
        ("t", ErrorCode.request_timed_out), ("u", ErrorCode.none), ("t", ErrorCode.request_timed_out)]
