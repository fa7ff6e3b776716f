"""Metadata: the pool's proxies as brokers, logical topics with P partitions and logical leader epochs, answered as
Kafka 4's KafkaApis.handleTopicMetadataRequest answers (docs/DESIGN.md §3.1)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import (
    Context,
    authorized,
    authorized_operations,
    cluster_authorized_operations,
    controller_id,
    listed_brokers,
)
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import Endpoint, PartitionChain, ProxyInfo, Segment

API_KEYS = {3: (1, 12)}
ROLE = "any"
AUTHORIZES = True

_ZERO_ID = uuid.UUID(int=0)
# a name Kafka's Topic.validate accepts: 1 to 249 of ASCII letters, digits, '.', '_' and '-'; not "." nor ".."
_KAFKA_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def leader_candidates(ctx: Context, listed: Sequence[tuple[ProxyInfo, Endpoint]]) -> tuple[ProxyInfo, ...]:
    """The listed brokers (`plan.listed_brokers`) that serve the same side (produce or consume) as this proxy: a
    leader the answer does not list is a node the client has no address for."""
    brokers = tuple(p for p, _ in listed)
    if ctx.me.role.produces() and ctx.me.role.consumes():
        return brokers
    wanted = "produces" if ctx.me.role.produces() else "consumes"
    return tuple(p for p in brokers if getattr(p.role, wanted)())


def cache_key(ctx: Context, request):
    """The answer depends on the view, this proxy, the client's listener protocol, the principal (authorization
    on), the topics asked for (None: all; by id or by name, as `handle` reads them, through a digest: a key holds
    no client-sized tuple), whether authorized operations are asked for and the physical replicas and ISRs this
    proxy knows (`_replicas`, through the physical state's replication version), nothing else. A request refused
    whole (topic ids before v12) is not kept."""
    version = type(request).__version__
    if request.topics is None:
        topics = None
    elif ids := _ids(request, version):
        if version < 12:
            return None
        topics = _digest(b"id", (i.bytes for i in ids))
    else:
        topics = _digest(b"name", (n.encode("utf-8", "surrogatepass") for n in _names(request)))
    principal = (ctx.session.principal, ctx.session.host) if ctx.authorizer is not None else None  # what it sees
    operations = (getattr(request, "include_topic_authorized_operations", False),
                  getattr(request, "include_cluster_authorized_operations", False))
    return version, ctx.me, ctx.session.protocol, principal, topics, operations, ctx.physical.replication_version


def handle(ctx: Context, header, request):
    version = type(request).__version__
    ids = [] if request.topics is None else _ids(request, version)
    if ids and version < 12:
        return _refused_whole(request, version)
    listed = listed_brokers(ctx)
    with_operations = version >= 8 and request.include_topic_authorized_operations
    topics = _topics(ctx, request, ids, leader_candidates(ctx, listed), with_operations)
    body = {"brokers": [{"node_id": p.node_id, "host": e.host, "port": e.port, "rack": p.rack} for p, e in listed],
            "cluster_id": ctx.view.federation_id, "controller_id": controller_id(ctx, listed), "topics": topics}
    if 8 <= version <= 10 and request.include_cluster_authorized_operations:
        body["cluster_authorized_operations"] = cluster_authorized_operations(ctx)
    return build(response_schema(3, version), body)


def _topics(ctx: Context, request, ids: list[uuid.UUID], candidates: tuple[ProxyInfo, ...],
            with_operations: bool) -> list[dict]:
    """Every topic the principal may describe when all are asked (Kafka hides the rest); else each topic id
    asked (Kafka then reads no name, an entry's own either), or, without ids, each name asked."""
    if request.topics is None:
        names = (n for n in sorted(ctx.view.topics) if authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, n))
        return [_topic(ctx, name, candidates, with_operations) for name in names]
    if ids:
        return [_topic_of_id(ctx, topic_id, candidates, with_operations) for topic_id in ids]
    denied = ErrorCode.topic_authorization_failed  # the name as asked, the zero id: Kafka tells no more
    return [_topic(ctx, name, candidates, with_operations)
            if authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, name) else _failed(denied, name)
            for name in _names(request)]


def _ids(request, version: int) -> list[uuid.UUID]:
    """The topic ids asked for, each once, in the order first asked (v10+; kio reads the zero id, "by name", as
    None). Kafka answers by these alone when there is any (KafkaApis.handleTopicMetadataRequest: useTopicId)."""
    if version < 10:
        return []
    return list(dict.fromkeys(i for t in request.topics if (i := t.topic_id) is not None and i != _ZERO_ID))


def _names(request) -> list[str]:
    """The topic names asked for, each once, in the order first asked (Kafka's broker reads them into a set: a
    name repeated is answered once, not once per repetition)."""
    return list(dict.fromkeys(t.name for t in request.topics if t.name is not None))


def _digest(kind: bytes, items: Iterable[bytes]) -> bytes:
    digest = hashlib.blake2b(kind, digest_size=16)
    for item in items:
        digest.update(len(item).to_bytes(4, "big") + item)
    return digest.digest()


def _refused_whole(request, version: int):
    """Kafka refuses a Metadata before v12 that names a topic id (InvalidRequestException "Topic IDs are not
    supported in requests for version N"), answered as MetadataRequest.getErrorResponse does: every entry as
    asked, INVALID_REQUEST, and no broker."""
    return build(response_schema(3, version), {"brokers": [], "topics": [
        {"error_code": ErrorCode.invalid_request, "name": t.name if t.name is not None else "",
         "topic_id": t.topic_id, "is_internal": False, "partitions": []} for t in request.topics]})


def _failed(error: ErrorCode, name: str | None, topic_id: uuid.UUID = _ZERO_ID) -> dict:
    return {"error_code": error, "name": name, "topic_id": topic_id, "is_internal": False, "partitions": []}


def _topic_of_id(ctx: Context, topic_id: uuid.UUID, candidates: tuple[ProxyInfo, ...], with_operations: bool) -> dict:
    """A topic asked by id: UNKNOWN_TOPIC_ID for no topic of the view, TOPIC_AUTHORIZATION_FAILED for one the
    principal may not describe (Kafka: ids are not sensitive), each with a null name and the id asked."""
    name = ctx.view.topics_by_id().get(topic_id)
    if name is None:
        return _failed(ErrorCode.unknown_topic_id, None, topic_id)
    if not authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, name):
        return _failed(ErrorCode.topic_authorization_failed, None, topic_id)
    return _topic(ctx, name, candidates, with_operations)


def _topic(ctx: Context, name: str, candidates: tuple[ProxyInfo, ...], with_operations: bool) -> dict:
    """A topic the principal may describe, with its bit field of authorized operations when asked (Kafka fills it
    for these only, a topic that does not exist too)."""
    view = ctx.view
    t = view.topics.get(name)
    if t is None:  # auto-create is the controller's job; refused here (docs/DESIGN.md §4.8)
        valid = _KAFKA_TOPIC_NAME.fullmatch(name) is not None and name not in (".", "..")
        answer = _failed(ErrorCode.unknown_topic_or_partition if valid else ErrorCode.invalid_topic_exception, name)
    else:
        partitions = [_partition(ctx, name, p, chain, candidates) for p, chain in enumerate(t.partitions)]
        answer = {"error_code": ErrorCode.none, "name": name, "topic_id": view.topic_ids()[name],
                  "is_internal": False, "partitions": partitions}
    if with_operations:
        answer["topic_authorized_operations"] = authorized_operations(ctx, ResourceType.TOPIC, name)
    return answer


def _partition(ctx: Context, name: str, index: int, chain: PartitionChain, candidates: tuple[ProxyInfo, ...]) -> dict:
    """A logical partition: its leader proxy, and replicas and ISR standing for its active segment's physical
    partition (`_replicas`)."""
    ranked = ctx.view.ranked_for(name, index, candidates)
    if not ranked:
        return {"error_code": ErrorCode.leader_not_available, "partition_index": index, "leader_id": -1,
                "leader_epoch": chain.leader_epoch, "replica_nodes": [-1], "isr_nodes": [-1], "offline_replicas": []}
    replicas, in_sync = _replicas(ctx, chain.active, ranked)
    return {"error_code": ErrorCode.none, "partition_index": index, "leader_id": ranked[0].node_id,
            "leader_epoch": chain.leader_epoch, "replica_nodes": replicas, "isr_nodes": in_sync,
            "offline_replicas": []}


def _replicas(ctx: Context, active: Segment, ranked: list[ProxyInfo]) -> tuple[list[int], list[int]]:
    """As many replicas as the physical partition has (the leader and the next proxies in rendezvous order, as many
    as there are), as many of them in sync as its ISR holds, so an under-replicated physical partition reads
    under-replicated: the same number out of sync even when fewer proxies than replicas are listed; the leader
    always in sync (Kafka's ISR holds its leader). A physical partition not known yet: the leader alone."""
    known = ctx.physical.replication(active.cluster, active.topic, active.partition)
    factor, in_sync = known if known is not None else (1, 1)
    replicas = [p.node_id for p in ranked[:max(1, factor)]]
    return replicas, replicas[:max(1, len(replicas) - max(0, factor - in_sync))]
