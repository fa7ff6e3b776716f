"""DescribeConfigs: topic configs passed through to the cluster of the topic's partition-0 active segment.

One upstream DescribeConfigs per physical cluster, naming each physical topic once, however many resources of the
request name it (a request naming one topic 99,000 times was 99,000 upstream requests). Every resource is answered,
in the request's order, as Kafka answers a resource named twice: once per entry (ConfigHelper.describeConfigs), each
with the configs its own `configuration_keys` asked for (none or empty: all of them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import AnyBroker, Call, Context, Plan, UpstreamError, authorized
from fedkafka.security.acl import Operation, ResourceType

API_KEYS = {32: (1, 4)}
ROLE = "any"
AUTHORIZES = True
TOPIC, BROKER = 2, 4

# per physical cluster, per physical topic: (result index, the resource asked) of each entry naming it
Asks = dict[str, dict[str, list[tuple[int, Any]]]]


def handle(ctx: Context, header, request):
    version = type(request).__version__
    results: list[dict | None] = []
    asks: Asks = {}
    for res in request.resources:
        t = ctx.view.topics.get(res.resource_name) if res.resource_type == TOPIC else None
        if res.resource_type == TOPIC and not authorized(ctx, Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC,
                                                         res.resource_name):
            results.append(_error(res, ErrorCode.topic_authorization_failed, None))
        elif res.resource_type == BROKER and not authorized(ctx, Operation.DESCRIBE_CONFIGS, ResourceType.CLUSTER):
            results.append(_error(res, ErrorCode.cluster_authorization_failed, None))
        elif res.resource_type == TOPIC and t is None:
            results.append(_error(res, ErrorCode.unknown_topic_or_partition, "unknown logical topic"))
        elif t is not None:  # a topic this view has
            seg = t.partitions[0].active
            asks.setdefault(seg.cluster, {}).setdefault(seg.topic, []).append((len(results), res))
            results.append(None)
        elif res.resource_type == BROKER:
            results.append({"error_code": ErrorCode.none, "resource_type": res.resource_type,
                            "resource_name": res.resource_name, "configs": []})
        else:
            results.append(_error(res, ErrorCode.invalid_request, "only topic and broker resources are served"))
    clusters = list(asks)
    calls = [Call(AnyBroker(cluster), replace(request, resources=tuple(
        _physical_resource(physical, [res for _, res in entries]) for physical, entries in asks[cluster].items())))
        for cluster in clusters]

    def finish(responses: list) -> object:
        for cluster, resp in zip(clusters, responses, strict=True):
            _fill(results, asks[cluster], resp)
        return build(response_schema(32, version), {"results": results})

    return Plan(calls, finish) if calls else finish([])


def _physical_resource(physical: str, asked: list):
    """The one upstream resource of a physical topic: every config any entry naming it asked for."""
    keys = None if any(not res.configuration_keys for res in asked) else \
        tuple(dict.fromkeys(k for res in asked for k in res.configuration_keys))
    return replace(asked[0], resource_name=physical, configuration_keys=keys)


def _fill(results: list[dict | None], topics: dict[str, list[tuple[int, Any]]], resp) -> None:
    """The answer of each entry asked of one cluster, from the cluster's one answer."""
    answered = {} if isinstance(resp, UpstreamError) else {r.resource_name: r for r in resp.results}
    for physical, entries in topics.items():
        r = answered.get(physical)
        for i, res in entries:
            if r is None:  # the cluster did not answer (or did not answer for this topic): retriable
                reason = str(resp) if isinstance(resp, UpstreamError) else f"no answer for {physical}"
                results[i] = _error(res, ErrorCode.request_timed_out, reason)
                continue
            keys = set(res.configuration_keys or ())
            configs = [c for c in r.configs if c.name in keys] if keys else r.configs
            results[i] = {"error_code": r.error_code, "error_message": r.error_message,
                          "resource_type": r.resource_type, "resource_name": res.resource_name,
                          "configs": configs}


def _error(res, code: ErrorCode, message: str | None) -> dict:
    return {"error_code": code, "error_message": message, "resource_type": res.resource_type,
            "resource_name": res.resource_name, "configs": []}
