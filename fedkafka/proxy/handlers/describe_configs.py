"""DescribeConfigs: topic configs passed through to the cluster of the topic's partition-0 active segment."""

from __future__ import annotations

from dataclasses import replace

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import AnyBroker, Call, Context, Plan, UpstreamError, authorized
from fedkafka.security.acl import Operation, ResourceType

API_KEYS = {32: (1, 4)}
ROLE = "any"
AUTHORIZES = True
TOPIC, BROKER = 2, 4


def handle(ctx: Context, header, request):
    version = type(request).__version__
    results: list[dict | None] = []
    calls: list[Call] = []
    slots: list[tuple[int, str, str]] = []  # (result index, logical name, physical name) per call
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
            one = replace(request, resources=(replace(res, resource_name=seg.topic),))
            slots.append((len(results), res.resource_name, seg.topic))
            calls.append(Call(AnyBroker(seg.cluster), one))
            results.append(None)
        elif res.resource_type == BROKER:
            results.append({"error_code": ErrorCode.none, "resource_type": res.resource_type,
                            "resource_name": res.resource_name, "configs": []})
        else:
            results.append(_error(res, ErrorCode.invalid_request, "only topic and broker resources are served"))

    def finish(responses: list) -> object:
        for (i, logical, _physical), resp in zip(slots, responses, strict=True):
            if isinstance(resp, UpstreamError) or not resp.results:
                results[i] = {"error_code": ErrorCode.request_timed_out, "error_message": str(resp),
                              "resource_type": TOPIC, "resource_name": logical, "configs": []}
            else:
                r = resp.results[0]
                results[i] = {"error_code": r.error_code, "error_message": r.error_message,
                              "resource_type": r.resource_type, "resource_name": logical, "configs": r.configs}
        return build(response_schema(32, version), {"results": results})

    return Plan(calls, finish) if calls else finish([])


def _error(res, code: ErrorCode, message: str | None) -> dict:
    return {"error_code": code, "error_message": message, "resource_type": res.resource_type,
            "resource_name": res.resource_name, "configs": []}
