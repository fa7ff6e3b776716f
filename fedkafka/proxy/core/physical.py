"""What the proxy knows about the physical clusters: brokers, partition leaders, API versions, health.

Refreshed in the background (periodically, and soon after a handler asks), never on a request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field

from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.metadata.v12.request import MetadataRequest

from fedkafka.proxy.core.upstream import UpstreamConnection
from fedkafka.security.upstream import PLAINTEXT, UpstreamSource

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 30.0
RETRY_UNREACHABLE_S = 1.0


@dataclass(slots=True)
class ClusterInfo:
    id: str
    bootstrap: str
    brokers: dict[int, tuple[str, int]] = field(default_factory=dict)
    leaders: dict[tuple[str, int], int] = field(default_factory=dict)
    # (topic, partition) -> (replicas, in-sync replicas): what Metadata's logical replicas and ISR stand for
    replication: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    # the partitions whose counts a Metadata answer read since the last `replication_version` bump: only a change
    # of theirs can make a cached answer stale (not other tenants' topics, __consumer_offsets, sealed segments)
    read: set[tuple[str, int]] = field(default_factory=set)
    topic_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # physical topic name -> its id here
    topic_names: dict[uuid.UUID, str] = field(default_factory=dict)
    api_versions: dict[int, tuple[int, int]] = field(default_factory=dict)
    reachable: bool = True  # optimistic until a refresh fails
    # a refresh answered since the proxy tracks the cluster with this bootstrap: until one, `topic_ids` is empty for
    # want of an answer, and a topic it does not name is not known missing there (`topics_known`)
    topics_read: bool = False
    refreshed_at: float = 0.0
    turn: int = 0  # rotation over the brokers for calls any broker can answer


class Flag:
    """A flag nothing waits on: `value` read as an attribute (`Dispatcher._route` looks once a request; an
    asyncio.Event's `is_set()` is a Python call each time)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def clear(self) -> None:
        self.value = False

    def is_set(self) -> bool:
        return self.value


class PhysicalClusters:
    def __init__(self, upstream: UpstreamSource = PLAINTEXT) -> None:
        self.upstream = upstream
        self.clusters: dict[str, ClusterInfo] = {}
        self._wanted: set[str] = set()
        self._wake = asyncio.Event()
        self.changed = Flag()  # set after a refresh changed api versions (dispatch re-advertises)
        # bumped when counts a Metadata answer read changed (`learn`), a cluster's went unknown (`mark_unreachable`)
        # or a cluster came or went (`set_clusters`): part of Metadata's answer cache key
        self.replication_version = 0

    # -- PhysicalState (read by handlers) ------------------------------------------------------
    def leader(self, cluster: str, topic: str, partition: int) -> int | None:
        info = self.clusters.get(cluster)
        return None if info is None else info.leaders.get((topic, partition))

    def topic_id(self, cluster: str, topic: str) -> uuid.UUID | None:
        info = self.clusters.get(cluster)
        return None if info is None else info.topic_ids.get(topic)

    def topic_name(self, cluster: str, topic_id: uuid.UUID) -> str | None:
        info = self.clusters.get(cluster)
        if info is None:
            return None
        return info.topic_names.get(topic_id)

    def replication(self, cluster: str, topic: str, partition: int) -> tuple[int, int] | None:
        """(replicas, in-sync replicas) of a physical partition as its cluster's last Metadata named them."""
        info = self.clusters.get(cluster)
        if info is None:
            return None
        key = (topic, partition)
        info.read.add(key)  # a later change of its counts drops the cached answers (`learn`)
        return info.replication.get(key)

    def reachable(self, cluster: str) -> bool:
        info = self.clusters.get(cluster)
        return info is not None and info.reachable

    def topics_known(self, cluster: str) -> bool:
        """Whether `topic_id` answers from the cluster's own Metadata: a refresh answered since the proxy tracks the
        cluster (it started, or the cluster's bootstrap changed). Before one, no physical topic counts as missing
        there: a sealed segment is not lost for good, a gap's tail not out of reach (docs/DESIGN.md §9.2)."""
        info = self.clusters.get(cluster)
        return info is not None and info.topics_read

    def request_refresh(self, cluster: str) -> None:
        self._wanted.add(cluster)
        self._wake.set()

    # -- used by the core ----------------------------------------------------------------------
    def address(self, cluster: str, node_id: int) -> tuple[str, int]:
        """Where broker `node_id` listens (an unknown id: the first candidate)."""
        info = self.clusters[cluster]
        if node_id in info.brokers:
            return info.brokers[node_id]
        return self.candidates(cluster)[0]

    def candidates(self, cluster: str) -> list[tuple[str, int]]:
        """Addresses for a call any broker can answer, in the order to try them: the known brokers, starting
        one further each time (no broker takes every such call, and a dead one is not always first), then
        the bootstrap addresses that are not among them."""
        info = self.clusters[cluster]
        brokers = list(info.brokers.values())
        if brokers:
            info.turn = (info.turn + 1) % len(brokers)
            brokers = brokers[info.turn:] + brokers[:info.turn]
        return brokers + [addr for addr in _bootstrap(info.bootstrap) if addr not in brokers]

    def broker_lost(self, cluster: str, node_id: int | None, reason: str) -> None:
        """A broker did not answer: its partitions may have a new leader by now. Refresh; the cluster counts as
        unreachable only when no broker answers the refresh."""
        log.info("cluster %s broker %s: %s; refreshing metadata", cluster, node_id, reason)
        self.request_refresh(cluster)

    def tracked(self, cluster: str) -> ClusterInfo | None:
        """What the proxy tracks of `cluster` now (None: not tracked). A call that goes on to ask the brokers it names
        (`Dispatcher._send_to_any`) hands it to `mark_unreachable` with its failure."""
        return self.clusters.get(cluster)

    def mark_unreachable(self, cluster: str, reason: str, asked: ClusterInfo | None = None) -> None:
        """No broker of `cluster` answered. `asked`: the entry whose brokers were tried (None: the current one). The
        failure of an entry the view replaced meanwhile (the bootstrap changed, or the cluster left the view) says
        nothing of the new one, not asked yet: nothing is marked, as `refresh` drops such an outcome (docs/DESIGN.md
        §9.2). Marked, the new bootstrap's cluster counted as dead until its next refresh: a gap's tail skipped."""
        info = self.clusters.get(cluster)
        if asked is not None and info is not asked:
            log.info("cluster %s: a bootstrap the view no longer names did not answer (%s); not counted", cluster,
                     reason)
            if info is not None:
                self.request_refresh(cluster)
            return
        if info is not None and info.reachable:
            log.warning("cluster %s unreachable: %s", cluster, reason)
            info.reachable = False
        if info is not None and info.replication:  # counts no longer read: its partitions list the leader alone
            answered = any(key in info.replication for key in info.read)
            info.replication = {}
            if answered:
                self._replication_changed()
        self.request_refresh(cluster)

    def set_clusters(self, bootstraps: dict[str, str]) -> list[str]:
        """Track exactly these clusters; returns the ids that are new (refresh them first)."""
        new = [cid for cid in bootstraps if cid not in self.clusters or self.clusters[cid].bootstrap != bootstraps[cid]]
        gone = set(self.clusters) - set(bootstraps)
        for cid in new:
            self.clusters[cid] = ClusterInfo(cid, bootstraps[cid])
        for cid in gone:
            del self.clusters[cid]
        if new or gone:  # replicas known of a cluster forgotten or reset
            self._replication_changed()
        return new

    def _replication_changed(self) -> None:
        """Every cached Metadata answer is stale: a new version, and no partition read under it yet."""
        self.replication_version += 1
        for info in self.clusters.values():
            info.read.clear()

    def api_tables(self) -> list[dict[int, tuple[int, int]]]:
        return [c.api_versions for c in self.clusters.values() if c.api_versions]

    async def refresh(self, cluster: str) -> bool:
        info = self.clusters.get(cluster)
        if info is None:
            return False
        answer, errors = await self._read_metadata(cluster, info)
        if self.clusters.get(cluster) is not info:
            # the view changed the cluster's bootstrap (or dropped it) meanwhile: this answer, or failure, is the old
            # address's, not the new one's; learned, a topic would count as missing there, or the cluster as
            # unreachable, before the new bootstrap was ever asked (docs/DESIGN.md §9.2). Ask the new one instead.
            if cluster in self.clusters:
                self.request_refresh(cluster)
            return False
        if answer is not None:
            self.learn(cluster, *answer)
            return True
        self.mark_unreachable(cluster, "; ".join(errors) or "no bootstrap address")
        self._wanted.discard(cluster)
        return False

    async def _read_metadata(self, cluster: str, info: ClusterInfo) -> tuple[tuple | None, list[str]]:
        """ApiVersions and Metadata from the first of `info`'s candidates that answers: ((versions, metadata), the
        errors of those tried before), or (None, every candidate's error)."""
        errors: list[str] = []
        for host, port in self.candidates(cluster):  # a dead bootstrap broker does not hide the live ones
            if self.clusters.get(cluster) is not info:
                break  # the view moved the cluster to a new bootstrap: the old one's brokers say nothing of it
            addr = f"{host}:{port}"
            conn = UpstreamConnection(host, port, f"{cluster}/metadata", self.upstream.for_cluster(cluster), cluster)
            try:
                await conn.connect()
                versions_f = conn.send(ApiVersionsRequest(client_software_name="fedkafka",
                                                          client_software_version="0.1"))
                meta_f = conn.send(MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                   include_topic_authorized_operations=False))
                return await asyncio.wait_for(asyncio.gather(versions_f, meta_f), 10), errors
            except (OSError, ConnectionError, TimeoutError) as e:
                errors.append(f"{addr}: {e}")
            finally:
                conn.close()
        return None, errors

    def learn(self, cluster: str, versions, meta) -> None:
        """What a refresh read from one of `cluster`'s brokers: its ApiVersions answer `versions` and its Metadata v12
        answer `meta` (brokers, partition leaders, each partition's replica and ISR counts, topic ids)."""
        info = self.clusters[cluster]
        old_versions = info.api_versions
        info.api_versions = {k.api_key: (k.min_version, k.max_version) for k in versions.api_keys}
        info.brokers = {b.node_id: (b.host, b.port) for b in meta.brokers}
        info.leaders = {(t.name, p.partition_index): p.leader_id for t in meta.topics
                        for p in t.partitions if p.leader_id >= 0}
        replication = {(t.name, p.partition_index): (len(p.replica_nodes), len(p.isr_nodes)) for t in meta.topics
                       for p in t.partitions}
        old, info.replication = info.replication, replication
        if any(old.get(key) != replication.get(key) for key in info.read):  # O(partitions answered), not all
            self._replication_changed()
        info.topic_ids = {t.name: t.topic_id for t in meta.topics if t.topic_id is not None}
        info.topic_names = {tid: name for name, tid in info.topic_ids.items()}
        info.topics_read = True
        if not info.reachable:
            log.info("cluster %s reachable again", cluster)
        info.reachable = True
        info.refreshed_at = time.monotonic()
        if old_versions != info.api_versions:
            self.changed.set()

    async def run(self) -> None:
        """Background refresher: asked-for clusters soon, unreachable ones every second, all every 30 s."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RETRY_UNREACHABLE_S)
            self._wake.clear()
            await asyncio.sleep(0.05)  # coalesce a burst of requests
            now = time.monotonic()
            due = set(self._wanted) | {c.id for c in self.clusters.values()
                                       if not c.reachable or now - c.refreshed_at > REFRESH_INTERVAL_S}
            self._wanted.clear()
            await asyncio.gather(*(self.refresh(c) for c in due if c in self.clusters))


def _bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for addr in bootstrap.split(","):
        host, port = addr.strip().rsplit(":", 1)
        out.append((host, int(port)))
    return out
