"""DescribeConfigs: topic configs passed through to the cluster of the topic's partition-0 active segment.

One upstream DescribeConfigs per physical cluster, naming each physical topic once, however many resources of the
request name it (a request naming one topic 99,000 times was 99,000 upstream requests). Every resource is answered,
in the request's order, as Kafka answers a resource named twice: once per entry (ConfigHelper.describeConfigs), each
with the configs its own `configuration_keys` asked for (none or empty: all of them).

BROKER and BROKER_LOGGER resources are about the broker the client sees, this proxy, and are answered here as Kafka's
broker answers its own (ConfigHelper.describeConfigs): BROKER of this proxy's node id its static configs (`node.id`,
`broker.id`), of the empty name the cluster-wide dynamic defaults (the proxy has none); BROKER_LOGGER of its node id
the proxy's loggers and their levels; another broker's id, a name that is not an integer and a BROKER_LOGGER of the
empty name INVALID_REQUEST with Kafka's messages. Both need DESCRIBE_CONFIGS on the cluster.
"""

from __future__ import annotations

import logging
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
TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
STATIC_BROKER_CONFIG, DYNAMIC_BROKER_LOGGER_CONFIG = 4, 6  # DescribeConfigsResponse.ConfigSource
INT_CONFIG, STRING_CONFIG = 3, 2  # DescribeConfigsResponse.ConfigType
UNSERVED = "only topic, broker and broker logger resources are served"
LOG4J_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}  # Python's level names that log4j spells otherwise

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
        elif res.resource_type in (BROKER, BROKER_LOGGER) and not authorized(ctx, Operation.DESCRIBE_CONFIGS,
                                                                             ResourceType.CLUSTER):
            results.append(_error(res, ErrorCode.cluster_authorization_failed, None))
        elif res.resource_type == TOPIC and t is None:
            results.append(_error(res, ErrorCode.unknown_topic_or_partition, "unknown logical topic"))
        elif t is not None:  # a topic this view has
            seg = t.partitions[0].active
            asks.setdefault(seg.cluster, {}).setdefault(seg.topic, []).append((len(results), res))
            results.append(None)
        elif res.resource_type in (BROKER, BROKER_LOGGER):
            results.append(_of_this_broker(ctx.me.node_id, res, bool(getattr(request, "include_synonyms", False))))
        else:
            results.append(_error(res, ErrorCode.invalid_request, UNSERVED))
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


def _of_this_broker(node_id: int, res, include_synonyms: bool) -> dict:
    """A BROKER or BROKER_LOGGER resource answered as Kafka's broker `node_id` answers it (ConfigHelper)."""
    name = res.resource_name
    if res.resource_type == BROKER and not name:  # the cluster-wide dynamic defaults: the proxy has none
        return _answer(res, [])
    if res.resource_type == BROKER_LOGGER and not name:
        return _error(res, ErrorCode.invalid_request, "Broker id must not be empty")
    try:
        asked = int(name)
    except ValueError:
        return _error(res, ErrorCode.invalid_request, f"Broker id must be an integer, but it is: {name}")
    if asked != node_id:
        expected = f"{node_id} or empty string," if res.resource_type == BROKER else f"{node_id}"
        return _error(res, ErrorCode.invalid_request, f"Unexpected broker id, expected {expected} but received {name}")
    if res.resource_type == BROKER:
        configs = [_static_config(key, str(node_id), include_synonyms) for key in ("broker.id", "node.id")]
    else:
        configs = [_logger_config(logger, level) for logger, level in _logger_levels().items()]
    keys = set(res.configuration_keys or ())
    return _answer(res, [c for c in configs if c["name"] in keys] if keys else configs)


def _static_config(name: str, value: str, include_synonyms: bool) -> dict:
    """A read-only broker config set when the proxy started (Kafka's STATIC_BROKER_CONFIG)."""
    synonyms = [{"name": name, "value": value, "source": STATIC_BROKER_CONFIG}] if include_synonyms else []
    return {"name": name, "value": value, "read_only": True, "config_source": STATIC_BROKER_CONFIG,
            "is_sensitive": False, "synonyms": synonyms, "config_type": INT_CONFIG, "documentation": None}


def _logger_config(logger: str, level: str) -> dict:
    return {"name": logger, "value": level, "read_only": False, "config_source": DYNAMIC_BROKER_LOGGER_CONFIG,
            "is_sensitive": False, "synonyms": [], "config_type": STRING_CONFIG, "documentation": None}


def _logger_levels() -> dict[str, str]:
    """Each logger of this process (`root` first) and its effective level, as Kafka's LoggingController.loggers lists
    the broker's log4j loggers."""
    loggers = {"root": logging.getLogger()}
    loggers.update(sorted((name, logger) for name, logger in logging.Logger.manager.loggerDict.items()
                          if isinstance(logger, logging.Logger)))
    return {name: _level_name(logger.getEffectiveLevel()) for name, logger in loggers.items()}


def _level_name(level: int) -> str:
    name = logging.getLevelName(level)
    return LOG4J_LEVELS.get(name, name)


def _answer(res, configs: list[dict]) -> dict:
    return {"error_code": ErrorCode.none, "error_message": None, "resource_type": res.resource_type,
            "resource_name": res.resource_name, "configs": configs}
