"""Metadata: the pool's proxies as brokers, logical topics with P partitions and logical leader epochs."""

from __future__ import annotations

import hashlib
import uuid

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context, authorized, reachable_brokers
from fedkafka.security.acl import Operation, ResourceType
from fedkafka.view.model import ProxyInfo, View

API_KEYS = {3: (1, 12)}
ROLE = "any"
AUTHORIZES = True


def pool_brokers(ctx: Context) -> tuple[ProxyInfo, ...]:
    """The proxies a client of this proxy's pool talks to; includes this proxy itself (before the view lists it)
    unless it is draining: then only the others, so its clients move there (docs/DESIGN.md §4.11)."""
    found = tuple(p for p in ctx.view.proxies_in_pool(ctx.me.pool) if p.node_id != ctx.me.node_id)
    if ctx.me.node_id in ctx.view.draining and found:
        return found
    return (ctx.me, *found)


def leader_candidates(ctx: Context) -> tuple[ProxyInfo, ...]:
    """Live proxies of the pool that serve the same side (produce or consume) as this one."""
    brokers = pool_brokers(ctx)
    if ctx.me.role.produces() and ctx.me.role.consumes():
        return brokers
    wanted = "produces" if ctx.me.role.produces() else "consumes"
    return tuple(p for p in brokers if getattr(p.role, wanted)())


def cache_key(ctx: Context, request):
    """The answer depends on the view, this proxy, the client's listener protocol and the topics asked for
    (None: all), nothing else. The topics by a digest of their names: a key holds no client-sized tuple."""
    topics = None if request.topics is None else _digest(_names(request))
    principal = (ctx.session.principal, ctx.session.host) if ctx.authorizer is not None else None  # what it sees
    return type(request).__version__, ctx.me, ctx.session.protocol, principal, topics


def handle(ctx: Context, header, request):
    view = ctx.view
    version = type(request).__version__
    candidates = leader_candidates(ctx)
    if request.topics is None:  # all topics: only those the principal may describe, as Kafka hides the rest
        names = [n for n in sorted(view.topics) if authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, n)]
        topics = [_topic(view, name, candidates) for name in names]
    else:
        topics = [_topic(view, name, candidates) if authorized(ctx, Operation.DESCRIBE, ResourceType.TOPIC, name)
                  else _denied(name) for name in _names(request)]
    brokers = [{"node_id": p.node_id, "host": e.host, "port": e.port, "rack": p.rack}
               for p, e in reachable_brokers(ctx, pool_brokers(ctx))]
    return build(response_schema(3, version), {
        "brokers": brokers, "cluster_id": view.federation_id, "controller_id": ctx.me.node_id, "topics": topics,
    })


def _names(request) -> list[str]:
    """The topic names asked for, each once, in the order first asked (Kafka's broker reads them into a set: a
    name repeated is answered once, not once per repetition)."""
    return list(dict.fromkeys(t.name for t in request.topics if t.name is not None))


def _digest(names: list[str]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for name in names:
        encoded = name.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
    return digest.digest()


def _denied(name: str) -> dict:
    return {"error_code": ErrorCode.topic_authorization_failed, "name": name, "topic_id": uuid.UUID(int=0),
            "partitions": []}


def _topic(view: View, name: str, candidates: tuple[ProxyInfo, ...]) -> dict:
    t = view.topics.get(name)
    if t is None:
        # auto-create is the controller's job; refused here (docs/DESIGN.md §4.8)
        return {"error_code": ErrorCode.unknown_topic_or_partition, "name": name, "topic_id": uuid.UUID(int=0),
                "partitions": []}
    partitions = []
    for p, chain in enumerate(t.partitions):
        leader = view.leader_for(name, p, candidates)
        node = leader.node_id if leader else -1
        partitions.append({
            "error_code": ErrorCode.none if leader else ErrorCode.leader_not_available,
            "partition_index": p, "leader_id": node, "leader_epoch": chain.leader_epoch,
            "replica_nodes": [node], "isr_nodes": [node], "offline_replicas": [],
        })
    return {"error_code": ErrorCode.none, "name": name, "topic_id": uuid.UUID(hex=t.topic_id),
            "is_internal": False, "partitions": partitions}
