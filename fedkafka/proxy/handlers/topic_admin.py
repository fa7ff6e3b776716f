"""CreateTopics, DeleteTopics, CreatePartitions: logical topics, created, grown and deleted by the controller.

Each topic of a request is one call to the controller's admin API (`/v1/admin/topics...`), which does what
`fedkafka topic create` does: the physical topics on the clusters the placement chooses and the shadow topic
first, then the database (docs/DESIGN.md §7.1). The client is answered once this proxy serves the view that
holds the change. Replica assignments are refused: where a logical partition lives is the federation's choice
(segment chains over physical clusters), and the physical clusters keep their own replication: a replication
factor Kafka refuses (0, below -1) is INVALID_REPLICATION_FACTOR, one it takes is not applied (each physical topic
gets its cluster's default.replication.factor). A topic CreatePartitions names twice is answered once,
INVALID_REQUEST, and not grown, as Kafka (ControllerApis.createPartitions).

Authorization is Kafka's (docs/DESIGN.md §11), checked before a topic's call is built: CreateTopics needs CREATE on
the cluster or on the topic (and DESCRIBE_CONFIGS on it to see the configs in the answer), DeleteTopics DELETE on
the cluster or the topic (a topic id the principal may not describe is answered without its name), CreatePartitions
ALTER on the topic. A denied topic is TOPIC_AUTHORIZATION_FAILED and never reaches the controller.

A CreateTopics v5+ answer carries, for each topic created that the principal may DESCRIBE_CONFIGS, its partition
count, replication factor and every config with its source, as Kafka's controller answers it: the proxy asks the
cluster of partition 0's physical topic (Metadata and DescribeConfigs) once the controller created it. A validate-only
request creates no physical topic: its answer carries the configs set (each a topic config) and replication factor -1.
"""

from __future__ import annotations

import datetime
import uuid
from urllib.parse import quote

from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.types import TopicName

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema, response_schema
from fedkafka.proxy.plan import (
    AnyBroker,
    Call,
    Context,
    ControllerApi,
    ControllerRequest,
    Plan,
    UpstreamError,
    admin_outcome,
    as_now,
    authorized,
)
from fedkafka.security.acl import Operation, ResourceType

CREATE_TOPICS, DELETE_TOPICS, CREATE_PARTITIONS = 19, 20, 37
DESCRIBE_CONFIGS, TOPIC_RESOURCE = 32, 2
API_KEYS = {CREATE_TOPICS: (2, 7), DELETE_TOPICS: (1, 6), CREATE_PARTITIONS: (0, 3)}
ROLE = "any"
NEEDS_CONTROLLER = True
AUTHORIZES = True

DYNAMIC_TOPIC_CONFIG = 1  # CreateTopics v5+ config_source of a config the request set
NO_ASSIGNMENTS = ("fedkafka places logical partitions itself (segment chains over physical clusters); "
                  "replica assignments are not accepted: give a partition count instead")
ZERO_ID = uuid.UUID(int=0)
DENIED = "Authorization failed."  # Kafka's message for a topic the principal may not create
BAD_REPLICATION_FACTOR = "Replication factor must be larger than 0, or -1 to use the default value."


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


# The physical describe of a created topic (`_describe_timeout_s`): a healthy cluster answers it in milliseconds, and
# a few seconds covers a reconnect; a quarter of the client's timeout leaves the rest to the controller's creation
DESCRIBE_AFTER_CREATE_S, DESCRIBE_SHARE, DESCRIBE_FLOOR_S = 5.0, 0.25, 0.5


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

def _named_twice(names) -> set[str]:
    """The names given more than once (a set per name: linear in the request)."""
    seen: set[str] = set()
    twice: set[str] = set()
    for name in names:
        (twice if name in seen else seen).add(name)
    return twice


def _created(name: str, code=ErrorCode.none, message: str | None = None) -> dict:
    """A CreateTopics answer entry: nothing created yet (Kafka's -1 counts and the zero id)."""
    return {"name": name, "topic_id": ZERO_ID, "num_partitions": -1, "replication_factor": -1, "configs": [],
            "error_code": code, "error_message": message}


def _valid_replication_factor(factor: int) -> bool:
    """Kafka (ReplicationControlManager.createTopic) refuses 0 and anything below -1. A factor Kafka takes is not
    applied: each physical topic gets its own cluster's default.replication.factor (docs/DESIGN.md §5.8)."""
    return factor == -1 or factor > 0


def create_topics(ctx: Context, request):
    version = type(request).__version__
    results: list[dict] = []
    calls: list[tuple[int, Call]] = []
    # Kafka's hash set (ControllerApis.createTopics), not a count per topic: that was n^2 name comparisons on the
    # event loop for a request of n topics, before any authorization
    answered_duplicates: set[str] = set()
    duplicates = _named_twice(t.name for t in request.topics)
    for topic in request.topics:
        if topic.name in duplicates:  # never created; answered once, at its first entry, as Kafka does
            if topic.name not in answered_duplicates:
                answered_duplicates.add(topic.name)
                results.append(_created(topic.name, ErrorCode.invalid_request, DUPLICATE_NAME))
            continue
        configs = {c.name: c.value for c in topic.configs if c.value is not None}
        result = _created(topic.name)
        results.append(result)
        if not _may(ctx, Operation.CREATE, topic.name, on_cluster=True):
            ctx.refused("auth", topic.name, -1, "CREATE on the topic")
            result.update(error_code=ErrorCode.topic_authorization_failed, error_message=DENIED)
        elif topic.assignments:
            result.update(error_code=ErrorCode.invalid_replica_assignment, error_message=NO_ASSIGNMENTS)
        elif not _valid_replication_factor(topic.replication_factor):
            result.update(error_code=ErrorCode.invalid_replication_factor, error_message=BAD_REPLICATION_FACTOR)
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
        results[i].update(topic_id=uuid.UUID(hex=topic["topic_id"]) if topic.get("topic_id") else ZERO_ID)
        if not authorized(ctx, Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC, topic["name"]):
            # as Kafka (ReplicationControlManager.createTopic): no counts, no configs
            results[i].update(topic_config_error_code=ErrorCode.topic_authorization_failed)
            return
        # what the controller stored; `_with_physical_answers` replaces them with the physical topic's
        results[i].update(num_partitions=topic["partitions"], configs=[
            {"name": k, "value": v, "read_only": False, "config_source": DYNAMIC_TOPIC_CONFIG, "is_sensitive": False}
            for k, v in sorted(topic["config"].items())])

    def answer(done: list[dict]):
        if version < 5 or request.validate_only:  # no physical topic was created to describe
            return build(response_schema(CREATE_TOPICS, version), {"topics": done})
        return _with_physical_answers(ctx, version, done, _describe_timeout_s(request))

    return _run(results, calls, answer, on_result)


# (result, physical partition) of each created topic to describe, by cluster and physical topic
Described = dict[str, dict[str, list[tuple[dict, int]]]]


def _describe_timeout_s(request) -> float:
    """How long the answer of a created topic waits for its physical describe: DESCRIBE_AFTER_CREATE_S, and at most
    DESCRIBE_SHARE of the client's own timeout (never below DESCRIBE_FLOOR_S). The controller's part already ran
    against the client's timeout; an answer held past it made the client retry and read TOPIC_ALREADY_EXISTS for
    the topic it had just created (review rvp)."""
    timeout = getattr(request, "timeout", None) or getattr(request, "timeout_ms", None)
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else 30.0
    return max(DESCRIBE_FLOOR_S, min(DESCRIBE_AFTER_CREATE_S, seconds * DESCRIBE_SHARE))


def _with_physical_answers(ctx: Context, version: int, results: list[dict], timeout_s: float):
    """The CreateTopics v5+ answer, each topic created and describable with its replication factor and every config
    as Kafka's controller answers them (computeEffectiveTopicConfigs: the configs DescribeConfigs lists, with their
    sources, sorted by name). The proxy learns them from the cluster holding the physical topic of the topic's
    partition 0, which DescribeConfigs of the logical topic asks too: one Metadata (replicas of the physical
    partition) and one DescribeConfigs per cluster. A cluster that does not answer leaves the answer as the
    controller gave it (the configs set, replication factor -1): the topic was created, the client must not retry. So
    does one that does not answer within `timeout_s` (`_describe_timeout_s`): a slow cluster neither holds the answer
    past the client's timeout nor is marked unreachable for it (the wait is the client's, not the cluster's)."""
    view = (as_now(ctx) or ctx).view  # by now this proxy serves the view holding the created topics
    asks: Described = {}
    for result in results:
        topic = view.topics.get(result["name"])
        if result["error_code"] != ErrorCode.none or "topic_config_error_code" in result or topic is None \
                or uuid.UUID(hex=topic.topic_id) != result["topic_id"]:
            continue
        segment = topic.partitions[0].active
        asks.setdefault(segment.cluster, {}).setdefault(segment.topic, []).append((result, segment.partition))

    def answer(replies: list) -> object:
        for n, cluster in enumerate(asks):
            _fill_physical(asks[cluster], replies[2 * n], replies[2 * n + 1])
        return build(response_schema(CREATE_TOPICS, version), {"topics": results})

    if not asks:
        return answer([])
    calls = [call for cluster, physical in asks.items() for call in _physical_calls(cluster, list(physical), timeout_s)]
    return Plan(calls, answer)


def _physical_calls(cluster: str, names: list[str], timeout_s: float) -> tuple[Call, Call]:
    """A Metadata and a DescribeConfigs of the physical topics `names` of `cluster`, each given up after
    `timeout_s`."""
    topics = tuple(MetadataRequestTopic(topic_id=None, name=TopicName(name)) for name in names)
    metadata = MetadataRequest(topics=topics, allow_auto_topic_creation=False,
                               include_topic_authorized_operations=False)
    configs = build(request_schema(DESCRIBE_CONFIGS, 4), {"resources": [
        {"resource_type": TOPIC_RESOURCE, "resource_name": name, "configuration_keys": None} for name in names],
        "include_synonyms": False, "include_documentation": False})
    return (Call(AnyBroker(cluster), metadata, timeout_s=timeout_s, client_timeout=True),
            Call(AnyBroker(cluster), configs, timeout_s=timeout_s, client_timeout=True))


def _fill_physical(asked: dict[str, list[tuple[dict, int]]], metadata, described) -> None:
    """The replication factor and configs of each created topic, from its cluster's answers (if it answered)."""
    if not isinstance(metadata, UpstreamError):
        replicas = {(t.name, p.partition_index): len(p.replica_nodes) for t in metadata.topics
                    if t.error_code == ErrorCode.none for p in t.partitions}
        for name, results in asked.items():
            for result, partition in results:
                result["replication_factor"] = replicas.get((name, partition), -1)
    if not isinstance(described, UpstreamError):
        for r in described.results:
            if r.error_code != ErrorCode.none or r.resource_name not in asked:
                continue
            configs = [{"name": c.name, "value": None if c.is_sensitive else c.value, "read_only": c.read_only,
                        "config_source": c.config_source, "is_sensitive": c.is_sensitive}
                       for c in sorted(r.configs, key=lambda c: c.name)]
            for result, _partition in asked[r.resource_name]:
                result["configs"] = configs


# -- DeleteTopics ----------------------------------------------------------------------------------------

# Kafka's answers to a malformed DeleteTopics entry (ControllerApis.deleteTopics)
NEITHER_NAME_NOR_ID = "Neither topic name nor id were specified."
BOTH_NAME_AND_ID = "You may not specify both topic name and topic id."
DUPLICATE_NAME, DUPLICATE_ID = "Duplicate topic name.", "Duplicate topic id."
NAME_OF_AN_ID_GIVEN = "The provided topic name maps to an ID that was already supplied."


def _deletion_entries(request, version: int) -> list[tuple[str | None, uuid.UUID]]:
    """(name, topic id) of each entry: v0-5 name every topic, v6+ name it or give its id (the other one unset)."""
    if version < 6:
        return [(name, ZERO_ID) for name in request.topic_names]
    return [(t.name, t.topic_id or ZERO_ID) for t in request.topics]


def _deletion_answer(name: str | None, topic_id: uuid.UUID, code=ErrorCode.none, message: str | None = None) -> dict:
    return {"name": name, "topic_id": topic_id, "error_code": code, "error_message": message}


def _malformed_deletions(entries: list[tuple[str | None, uuid.UUID]]) -> tuple[dict[int, dict], set[int]]:
    """Kafka's checks of the entries themselves, before any topic is looked up or authorized: the answers of the
    entries refused (INVALID_REQUEST: neither a name nor an id, both, a name or an id given twice), and the entries
    left unanswered (a name or an id given more than once is answered once, as Kafka does)."""
    answers: dict[int, dict] = {}
    unanswered: set[int] = set()
    first: dict[tuple[str | None, uuid.UUID], int] = {}
    for i, (name, topic_id) in enumerate(entries):
        if name is None and topic_id == ZERO_ID:
            answers[i] = _deletion_answer(None, ZERO_ID, ErrorCode.invalid_request, NEITHER_NAME_NOR_ID)
        elif name is not None and topic_id != ZERO_ID:  # the id would say which topic of the name: Kafka refuses
            answers[i] = _deletion_answer(name, topic_id, ErrorCode.invalid_request, BOTH_NAME_AND_ID)
        elif (name, topic_id) in first:
            answers[first[name, topic_id]] = _deletion_answer(name, topic_id, ErrorCode.invalid_request,
                                                              DUPLICATE_ID if name is None else DUPLICATE_NAME)
            unanswered.add(i)
        else:
            first[name, topic_id] = i
    return answers, unanswered


def _deletion_by_id(ctx: Context, topic_id: uuid.UUID, by_id: dict[uuid.UUID, str]) -> dict:
    """The answer to an entry naming a topic by id, refused or (no error) to be deleted: an unknown id, then DELETE
    (a topic the principal may not describe keeps its name hidden, as Kafka)."""
    if topic_id not in by_id:
        return _deletion_answer(None, topic_id, ErrorCode.unknown_topic_id, f"unknown topic id {topic_id}")
    name = by_id[topic_id]
    if not _may(ctx, Operation.DELETE, name, on_cluster=True):
        ctx.refused("auth", name, -1, "DELETE on the topic")
        visible = authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, name)
        return _deletion_answer(name if visible else None, topic_id, ErrorCode.topic_authorization_failed)
    return _deletion_answer(name, topic_id)


def _deletion_by_name(ctx: Context, name: str) -> dict:
    """The answer to an entry naming a topic, refused or (no error) to be deleted: Kafka wants DESCRIBE and DELETE
    on the topic (DELETE on the cluster stands for both)."""
    if not authorized(ctx, Operation.DELETE, ResourceType.CLUSTER) and not (
            authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, name)
            and authorized(ctx, Operation.DELETE, ResourceType.TOPIC, name)):
        ctx.refused("auth", name, -1, "DELETE on the topic")
        return _deletion_answer(name, ZERO_ID, ErrorCode.topic_authorization_failed)
    return _deletion_answer(name, ZERO_ID)


def _refuse_names_of_ids_given(ctx: Context, entries: list[tuple[str | None, uuid.UUID]],
                               results: list[dict | None]) -> None:
    """A topic given by name and by id in one request is not deleted (Kafka): the name's entry is answered
    INVALID_REQUEST with the id, the id's entry not at all (an id given twice keeps its own answer)."""
    ids_given = {topic_id: i for i, ((name, topic_id), result) in enumerate(zip(entries, results, strict=True))
                 if name is None and result is not None
                 and (result["error_code"] == ErrorCode.none or result["error_message"] == DUPLICATE_ID)}
    for (name, _), result in zip(entries, results, strict=True):
        topic = ctx.view.topics.get(name) if name is not None else None
        if result is None or topic is None or result["error_code"] != ErrorCode.none:
            continue
        given = ids_given.get(uuid.UUID(hex=topic.topic_id))
        if given is None:
            continue
        result.update(topic_id=entries[given][1], error_code=ErrorCode.invalid_request,
                      error_message=NAME_OF_AN_ID_GIVEN)
        id_entry = results[given]
        if id_entry is not None and id_entry["error_code"] == ErrorCode.none:
            results[given] = None


def delete_topics(ctx: Context, request):
    version = type(request).__version__
    by_id = {uuid.UUID(hex=t.topic_id): name for name, t in ctx.view.topics.items()}
    entries = _deletion_entries(request, version)
    refused, unanswered = _malformed_deletions(entries)
    results: list[dict | None] = [
        None if i in unanswered else refused.get(i) or (
            _deletion_by_name(ctx, name) if name is not None else _deletion_by_id(ctx, topic_id, by_id))
        for i, (name, topic_id) in enumerate(entries)]
    _refuse_names_of_ids_given(ctx, entries, results)
    calls: list[tuple[int, Call]] = []
    for i, result in enumerate(results):
        if result is None or result["error_code"] != ErrorCode.none:
            continue
        path = f"/v1/admin/topics/{quote(result['name'], safe='')}"
        if entries[i][0] is None:  # named by id: the controller deletes only the topic of that id
            path += f"?topic_id={entries[i][1].hex}"
        calls.append((i, Call(ControllerApi(), ControllerRequest("DELETE", path), timeout_s=_timeout_s(request))))

    def on_result(i: int, reply) -> None:
        code, message = admin_outcome(reply)
        result = results[i]
        assert result is not None  # only an entry answered is sent
        result.update(error_code=code, error_message=message)

    def answer(done: list[dict | None]):
        return build(response_schema(DELETE_TOPICS, version), {"responses": [r for r in done if r is not None]})

    return _run(results, calls, answer, on_result)


# -- CreatePartitions ------------------------------------------------------------------------------------

def create_partitions(ctx: Context, request):
    version = type(request).__version__
    results: list[dict] = []
    calls: list[tuple[int, Call]] = []
    named_twice = _named_twice(topic.name for topic in request.topics)
    answered: set[str] = set()
    for topic in request.topics:
        if topic.name in answered:  # named twice: answered once, at its first entry
            continue
        answered.add(topic.name)
        result = {"name": topic.name, "error_code": ErrorCode.none, "error_message": None}
        results.append(result)
        if topic.name in named_twice:  # Kafka grows none of its entries (which count would win is a race here)
            result.update(error_code=ErrorCode.invalid_request, error_message=DUPLICATE_NAME)
            continue
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
