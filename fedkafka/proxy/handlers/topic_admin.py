"""CreateTopics, DeleteTopics, CreatePartitions: logical topics, created, grown and deleted by the controller.

Each topic of a request is one call to the controller's admin API (`/v1/admin/topics...`), which does what
`fedkafka topic create` does: the physical topics on the clusters the placement chooses and the shadow topic
first, then the database (docs/DESIGN.md §7.1). The client is answered once this proxy serves the view that
holds the change. Replica assignments are refused: where a logical partition lives is the federation's choice
(segment chains over physical clusters), and the physical clusters keep their own replication.

Authorization is Kafka's (docs/DESIGN.md §11), checked before a topic's call is built: CreateTopics needs CREATE on
the cluster or on the topic (and DESCRIBE_CONFIGS on it to see the configs in the answer), DeleteTopics DELETE on
the cluster or the topic (a topic id the principal may not describe is answered without its name), CreatePartitions
ALTER on the topic. A denied topic is TOPIC_AUTHORIZATION_FAILED and never reaches the controller.
"""

from __future__ import annotations

import datetime
import uuid
from urllib.parse import quote

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Call, Context, ControllerApi, ControllerRequest, Plan, admin_outcome, authorized
from fedkafka.security.acl import Operation, ResourceType

CREATE_TOPICS, DELETE_TOPICS, CREATE_PARTITIONS = 19, 20, 37
API_KEYS = {CREATE_TOPICS: (2, 7), DELETE_TOPICS: (1, 6), CREATE_PARTITIONS: (0, 3)}
ROLE = "any"
NEEDS_CONTROLLER = True
AUTHORIZES = True

DYNAMIC_TOPIC_CONFIG = 1  # CreateTopics v5+ config_source of a config the request set
NO_ASSIGNMENTS = ("fedkafka places logical partitions itself (segment chains over physical clusters); "
                  "replica assignments are not accepted: give a partition count instead")
ZERO_ID = uuid.UUID(int=0)
DENIED = "Authorization failed."  # Kafka's message for a topic the principal may not create


def handle(ctx: Context, header, request):
    key = request.__api_key__
    if key == CREATE_TOPICS:
        return create_topics(ctx, request)
    if key == DELETE_TOPICS:
        return delete_topics(ctx, request)
    return create_partitions(ctx, request)


def _may(ctx: Context, operation: Operation, topic: str, on_cluster: bool = False) -> bool:
    """Kafka lets CREATE and DELETE on the cluster stand for the same right on every topic."""
    return (on_cluster and authorized(ctx, operation, ResourceType.CLUSTER)) or \
        authorized(ctx, operation, ResourceType.TOPIC, topic)


def _timeout_s(request) -> float:
    """The client's own timeout for the operation, within sane bounds (a topic creation waits on Kafka)."""
    timeout = getattr(request, "timeout", None) or getattr(request, "timeout_ms", None)
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else 30.0
    return min(max(seconds, 5.0), 60.0)


def _run(results: list, calls: list[tuple[int, Call]], answer, on_result):
    """Send the calls (each filling results[i] via on_result) and build the answer from `results`."""
    if not calls:
        return answer(results)

    def finish(replies: list):
        for (i, _call), reply in zip(calls, replies, strict=True):
            on_result(i, reply)
        return answer(results)

    return Plan([c for _, c in calls], finish)


# -- CreateTopics ----------------------------------------------------------------------------------------

def create_topics(ctx: Context, request):
    version = type(request).__version__
    results: list[dict] = []
    calls: list[tuple[int, Call]] = []
    names = [t.name for t in request.topics]
    for topic in request.topics:
        configs = {c.name: c.value for c in topic.configs if c.value is not None}
        result = {"name": topic.name, "topic_id": ZERO_ID, "num_partitions": -1, "replication_factor": -1,
                  "configs": [], "error_code": ErrorCode.none, "error_message": None}
        results.append(result)
        if names.count(topic.name) > 1:
            result.update(error_code=ErrorCode.invalid_request,
                          error_message=f"Create topics request from client contains topic {topic.name} twice")
        elif not _may(ctx, Operation.CREATE, topic.name, on_cluster=True):
            ctx.refused("auth", topic.name, -1, "CREATE on the topic")
            result.update(error_code=ErrorCode.topic_authorization_failed, error_message=DENIED)
        elif topic.assignments:
            result.update(error_code=ErrorCode.invalid_replica_assignment, error_message=NO_ASSIGNMENTS)
        else:
            body = {"name": topic.name, "partitions": int(topic.num_partitions), "config": configs,
                    "validate_only": bool(request.validate_only)}
            calls.append((len(results) - 1, Call(ControllerApi(), ControllerRequest("POST", "/v1/admin/topics", body),
                                                 timeout_s=_timeout_s(request))))

    def on_result(i: int, reply) -> None:
        code, message = admin_outcome(reply)
        if code != ErrorCode.none:
            results[i].update(error_code=code, error_message=message)
            return
        topic = reply.body["topic"]
        results[i].update(num_partitions=topic["partitions"],
                          topic_id=uuid.UUID(hex=topic["topic_id"]) if topic.get("topic_id") else ZERO_ID)
        if not authorized(ctx, Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC, topic["name"]):
            results[i].update(topic_config_error_code=ErrorCode.topic_authorization_failed)  # as Kafka: no configs
            return
        results[i].update(configs=[{"name": k, "value": v, "read_only": False, "config_source": DYNAMIC_TOPIC_CONFIG,
                                    "is_sensitive": False} for k, v in sorted(topic["config"].items())])

    return _run(results, calls, lambda r: build(response_schema(CREATE_TOPICS, version), {"topics": r}), on_result)


# -- DeleteTopics ----------------------------------------------------------------------------------------

def delete_topics(ctx: Context, request):
    version = type(request).__version__
    by_id = {uuid.UUID(hex=t.topic_id): name for name, t in ctx.view.topics.items()}
    wanted = list(request.topics) if version >= 6 else [None] * len(request.topic_names)
    results: list[dict] = []
    calls: list[tuple[int, Call]] = []
    for i, state in enumerate(wanted):
        name = request.topic_names[i] if state is None else state.name
        topic_id = ZERO_ID if state is None else state.topic_id  # v0-5 name every topic
        result = {"name": name, "topic_id": topic_id or ZERO_ID, "error_code": ErrorCode.none, "error_message": None}
        results.append(result)
        if name is None and topic_id not in by_id:
            result.update(error_code=ErrorCode.unknown_topic_id, error_message=f"unknown topic id {topic_id}")
            continue
        name = name if name is not None else by_id[topic_id]
        if not _may(ctx, Operation.DELETE, name, on_cluster=True):
            ctx.refused("auth", name, -1, "DELETE on the topic")
            # a topic asked for by id keeps its name hidden unless the principal may describe it (as Kafka)
            visible = state is None or state.name is not None or authorized(ctx, Operation.DESCRIBE,
                                                                             ResourceType.TOPIC, name)
            result.update(name=name if visible else None, error_code=ErrorCode.topic_authorization_failed)
            continue
        result["name"] = name
        path = f"/v1/admin/topics/{quote(name, safe='')}"
        if state is not None and state.name is None:  # named by id: the controller deletes only the topic of that id
            path += f"?topic_id={topic_id.hex}"
        calls.append((i, Call(ControllerApi(), ControllerRequest("DELETE", path), timeout_s=_timeout_s(request))))

    def on_result(i: int, reply) -> None:
        code, message = admin_outcome(reply)
        results[i].update(error_code=code, error_message=message)

    return _run(results, calls, lambda r: build(response_schema(DELETE_TOPICS, version), {"responses": r}), on_result)


# -- CreatePartitions ------------------------------------------------------------------------------------

def create_partitions(ctx: Context, request):
    version = type(request).__version__
    results: list[dict] = []
    calls: list[tuple[int, Call]] = []
    for topic in request.topics:
        result = {"name": topic.name, "error_code": ErrorCode.none, "error_message": None}
        results.append(result)
        if not _may(ctx, Operation.ALTER, topic.name):
            ctx.refused("auth", topic.name, -1, "ALTER on the topic")
            result.update(error_code=ErrorCode.topic_authorization_failed)
            continue
        if topic.assignments:
            result.update(error_code=ErrorCode.invalid_replica_assignment, error_message=NO_ASSIGNMENTS)
            continue
        body = {"count": int(topic.count), "validate_only": bool(request.validate_only)}
        path = f"/v1/admin/topics/{quote(topic.name, safe='')}/partitions"
        calls.append((len(results) - 1, Call(ControllerApi(), ControllerRequest("POST", path, body),
                                             timeout_s=_timeout_s(request))))

    def on_result(i: int, reply) -> None:
        code, message = admin_outcome(reply)
        results[i].update(error_code=code, error_message=message)

    return _run(results, calls, lambda r: build(response_schema(CREATE_PARTITIONS, version), {"results": r}),
                on_result)
