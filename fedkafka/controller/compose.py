"""Build a view (without version) from the config database: clusters, topics with chains, live proxies."""

from __future__ import annotations

import json
from collections import defaultdict

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from fedkafka.controller.acls import all_bindings
from fedkafka.controller.models import (
    ChainRow,
    ClusterRow,
    ProxyRow,
    ScramCredentialRow,
    SegmentRow,
    TopicRow,
    cluster_given_up,
)
from fedkafka.view.model import (
    Cluster,
    ClusterState,
    Endpoint,
    LogicalTopic,
    PartitionChain,
    ProxyInfo,
    ProxyRole,
    ScramCredential,
    Segment,
    View,
)


def coordination_cluster(clusters: list[ClusterRow]) -> str | None:
    """The flagged cluster, else the first registered one that is not removed."""
    # (ordinal, id): two controllers registering at once may give equal ordinals
    live = sorted((c for c in clusters if c.state != ClusterState.REMOVED), key=lambda c: (c.ordinal, c.id))
    flagged = [c for c in live if c.coordination]
    pick = flagged or live
    return pick[0].id if pick else None


def build_view(session: Session, now: float, federation_id: str = "fedkafka",
               keep_listed: frozenset[int] = frozenset()) -> View:
    """`keep_listed`: node ids listed even when their lease ran out (a restarted controller's grace)."""
    clusters = list(session.scalars(select(ClusterRow).order_by(ClusterRow.ordinal, ClusterRow.id)))
    topics = list(session.scalars(select(TopicRow).order_by(TopicRow.name)))
    # plain rows, not ORM objects, for the bulk: a federation has tens of thousands of segments
    chains = {(t, p): (epoch, frozen) for t, p, epoch, frozen in
              session.execute(select(ChainRow.topic, ChainRow.partition, ChainRow.leader_epoch, ChainRow.frozen))}
    segments: dict[tuple[str, int], list[Segment]] = defaultdict(list)
    for topic, partition, cluster, phys_topic, phys_partition, start, end, base in session.execute(
            select(SegmentRow.topic, SegmentRow.partition, SegmentRow.cluster, SegmentRow.physical_topic,
                   SegmentRow.physical_partition, SegmentRow.phys_start, SegmentRow.phys_end, SegmentRow.logical_base)
            .order_by(SegmentRow.topic, SegmentRow.partition, SegmentRow.seq)):
        segments[(topic, partition)].append(Segment(cluster, phys_topic, phys_partition, start, end, base))
    node = func.coalesce(ProxyRow.worker_of, ProxyRow.node_id)
    # one entry per node: the workers of a proxy run with --workers N share its node id (docs/DESIGN.md §4.10);
    # a node row made by a worker before worker 0 registered (no role yet) names no address of its own
    rows = session.scalars(select(ProxyRow).where(or_(ProxyRow.lease_expires > now, node.in_(keep_listed)),
                                                  ProxyRow.role != "")
                           .order_by(node, ProxyRow.worker))
    proxies: dict[int, ProxyRow] = {}
    for p in rows:
        proxies.setdefault(p.node, p)  # each node's lowest live worker names its address, role and pool
    # a draining node stays out of the list (no leadership, no Metadata entry) and is named so that its own
    # workers stop naming themselves leaders and refuse produce (docs/DESIGN.md §4.11)
    draining = set(session.scalars(select(ProxyRow.node_id).where(ProxyRow.draining, ProxyRow.node_id.in_(proxies))))
    coord = coordination_cluster(clusters)
    return View(
        version=0,
        federation_id=federation_id,
        coordination_cluster=coord,
        commits_frozen=any(c.commits_frozen for c in clusters if c.id == coord),
        clusters={c.id: Cluster(c.id, c.bootstrap, ClusterState(c.state), c.reachable, cluster_given_up(c))
                  for c in clusters},
        topics={t.name: LogicalTopic(
            name=t.name, topic_id=t.topic_id, config=tuple(sorted(json.loads(t.config_json).items())),
            partitions=tuple(_chain(chains.get((t.name, p)), segments[(t.name, p)]) for p in range(t.partitions)))
            for t in topics},
        proxies=tuple(ProxyInfo(p.node, p.host, p.port, ProxyRole(p.role), p.pool,
                                listeners=tuple(Endpoint(*e) for e in json.loads(p.listeners_json or "[]")))
                      for p in proxies.values() if p.node not in draining),
        draining=tuple(sorted(draining)),
        credentials=tuple(_credential(r) for r in session.scalars(
            select(ScramCredentialRow).order_by(ScramCredentialRow.user, ScramCredentialRow.mechanism))),
        acls=all_bindings(session),
    )


def _credential(r: ScramCredentialRow) -> ScramCredential:
    return ScramCredential.from_dict({"user": r.user, "mechanism": r.mechanism, "salt": r.salt,
                                      "iterations": r.iterations, "stored_key": r.stored_key,
                                      "server_key": r.server_key})


def _chain(row: tuple[int, bool] | None, segments: list[Segment]) -> PartitionChain:
    epoch, frozen = row or (0, False)
    return PartitionChain(segments=tuple(segments), leader_epoch=epoch, frozen=bool(frozen))
