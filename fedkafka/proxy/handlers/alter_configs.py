"""AlterConfigs and IncrementalAlterConfigs on logical topics, applied by the controller.

A topic's config is the federation's: the controller applies it to every physical topic of the topic's chains,
stores it in the config database and gives it to the physical topics of new segments. AlterConfigs replaces
the whole topic config (configs not named go back to their defaults), as Kafka does; IncrementalAlterConfigs
sets, deletes, appends to or subtracts from single configs. Names and values are judged by the physical
clusters (INVALID_CONFIG with Kafka's own message). Broker and other resources belong to the physical
clusters, not to the federation: they are refused with a message that says so.

The request's shape is checked first, as Kafka's ConfigAdminManager.preprocess does before any authorization: every
entry of a resource named more than once is INVALID_REQUEST "Each resource must appear at most once." (none of
them is altered: two legacy AlterConfigs of one topic would each replace its whole config, the last one to reach
the controller silently undoing the other), a resource naming a config twice "Error due to duplicate config
keys", a null value (legacy: any; incremental: any but DELETE's) "Null value not supported for : <names>".

Authorization next, as Kafka (docs/DESIGN.md §11): ALTER_CONFIGS on the topic (TOPIC_AUTHORIZATION_FAILED), on the
cluster for broker, broker-logger and client-metrics resources (CLUSTER_AUTHORIZATION_FAILED), on the group for
group configs (GROUP_AUTHORIZATION_FAILED); a denied resource never reaches the controller.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import quote

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Call, Context, ControllerApi, ControllerRequest, Plan, admin_outcome, authorized
from fedkafka.security.acl import CLUSTER_NAME, Operation, ResourceType

ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS = 33, 44
API_KEYS = {ALTER_CONFIGS: (0, 2), INCREMENTAL_ALTER_CONFIGS: (0, 1)}
ROLE = "any"
NEEDS_CONTROLLER = True
AUTHORIZES = True

TOPIC, BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP = 2, 4, 8, 16, 32  # Kafka's config resource types
SET, DELETE = 0, 1
# What ALTER_CONFIGS is checked on per config resource type, and the error a denial gets (Kafka's rules)
_AUTHORIZED_ON = {TOPIC: (ResourceType.TOPIC, ErrorCode.topic_authorization_failed),
                  GROUP: (ResourceType.GROUP, ErrorCode.group_authorization_failed)}
_ON_CLUSTER = (ResourceType.CLUSTER, ErrorCode.cluster_authorization_failed)
NOT_A_TOPIC = ("fedkafka serves configs of logical topics only; broker and other configs belong to each physical "
               "cluster: change them there")
# Kafka's answers to a malformed resource (ConfigAdminManager.preprocess), all INVALID_REQUEST
NAMED_TWICE = "Each resource must appear at most once."
DUPLICATE_KEYS = "Error due to duplicate config keys"
NULL_VALUE = "Null value not supported for : "


def handle(ctx: Context, header, request):
    key = request.__api_key__
    version = type(request).__version__
    results: list[dict] = []
    calls: list[tuple[int, Call]] = []
    named_twice = _named_twice(request.resources)
    for res in request.resources:
        result = {"error_code": ErrorCode.none, "error_message": None, "resource_type": res.resource_type,
                  "resource_name": res.resource_name}
        results.append(result)
        malformed = _malformed(res, key == INCREMENTAL_ALTER_CONFIGS, named_twice)
        if malformed is not None:
            result.update(error_code=ErrorCode.invalid_request, error_message=malformed)
            continue
        denied = _denial(ctx, res.resource_type, res.resource_name)
        if denied is not None:
            ctx.refused("auth", res.resource_name, -1, "ALTER_CONFIGS")
            result.update(error_code=denied)
            continue
        if res.resource_type != TOPIC:
            result.update(error_code=ErrorCode.invalid_request, error_message=NOT_A_TOPIC)
            continue
        if key == INCREMENTAL_ALTER_CONFIGS:
            ops = [{"name": c.name, "op": int(c.config_operation), "value": c.value} for c in res.configs]
        else:  # AlterConfigs: the named configs are the whole config
            ops = [{"name": c.name, "op": SET, "value": c.value} for c in res.configs]
        body = {"ops": ops, "replace": key == ALTER_CONFIGS, "validate_only": bool(request.validate_only)}
        path = f"/v1/admin/topics/{quote(res.resource_name, safe='')}/config"
        calls.append((len(results) - 1, Call(ControllerApi(), ControllerRequest("POST", path, body))))

    def answer():
        return build(response_schema(key, version), {"responses": results})

    if not calls:
        return answer()

    def finish(replies: list):
        for (i, _call), reply in zip(calls, replies, strict=True):
            code, message = admin_outcome(reply)
            results[i].update(error_code=code, error_message=message)
        return answer()

    return Plan([c for _, c in calls], finish)


def _named_twice(resources) -> set[tuple[int, str]]:
    """(type, name) of every resource the request names more than once."""
    counts = Counter((int(r.resource_type), r.resource_name) for r in resources)
    return {resource for resource, count in counts.items() if count > 1}


def _malformed(res, incremental: bool, named_twice: set[tuple[int, str]]) -> str | None:
    """Kafka's INVALID_REQUEST message for a resource entry that cannot be applied as given, or None."""
    if (int(res.resource_type), res.resource_name) in named_twice:
        return NAMED_TWICE
    names = [c.name for c in res.configs]
    if len(set(names)) < len(names):
        return DUPLICATE_KEYS
    nulls = [c.name for c in res.configs
             if c.value is None and not (incremental and int(c.config_operation) == DELETE)]
    return NULL_VALUE + ", ".join(nulls) if nulls else None


def _denial(ctx: Context, config_type: int, name: str) -> ErrorCode | None:
    """The authorization error for altering this config resource, or None when allowed."""
    resource_type, error = _AUTHORIZED_ON.get(config_type, _ON_CLUSTER)
    on = name if resource_type != ResourceType.CLUSTER else CLUSTER_NAME
    return None if authorized(ctx, Operation.ALTER_CONFIGS, resource_type, on) else error
