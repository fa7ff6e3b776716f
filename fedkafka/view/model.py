"""The federation view: an immutable, versioned snapshot of everything a proxy needs (docs/DESIGN.md §2, §3.5).

Pure data, no I/O. The controller composes it; proxies and the name service only read it.
JSON form (`View.to_dict` / `View.from_dict`) is what travels over HTTP.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar, overload

from fedkafka.security.acl import AclBinding

T = TypeVar("T")


class ClusterState(StrEnum):
    ACTIVE = "active"
    READ_ONLY = "read_only"
    DRAINING = "draining"
    REMOVED = "removed"


class ProxyRole(StrEnum):
    PPROXY = "pproxy"
    CPROXY = "cproxy"
    BOTH = "both"

    def produces(self) -> bool:
        return self in (ProxyRole.PPROXY, ProxyRole.BOTH)

    def consumes(self) -> bool:
        return self in (ProxyRole.CPROXY, ProxyRole.BOTH)


@dataclass(frozen=True, slots=True)
class Cluster:
    id: str
    bootstrap: str
    state: ClusterState = ClusterState.ACTIVE
    reachable: bool = True
    # a failover gave the cluster up (set with its read_only step, cleared by read_only -> active): a timestamp
    # question leaves its segments out while it is dead; a decommission's read_only step gives nothing up
    # (docs/DESIGN.md §9.2). None: the view does not say (composed by a controller from before the mark), and
    # read_only is taken for given up, as it was then (`marked_given_up`); a controller with the mark reads its
    # database's NULL (a state an older controller set) the same way and always says (`controller.models`)
    given_up: bool | None = None

    @property
    def gave_up(self) -> bool:
        """Whether the operator gave this cluster up: removed, or marked so (`marked_given_up`)."""
        return self.state == ClusterState.REMOVED or marked_given_up(self.state, self.given_up)


def marked_given_up(state: str, mark: bool | None) -> bool:
    """Whether a cluster in `state` with the given-up `mark` (a view's `given_up`, the database's `clusters.given_up`)
    is given up, the one rule for both (docs/DESIGN.md §9.2): never while active (an older controller making a
    given-up cluster active again leaves the column as it was); else the mark; no mark (NULL, or a view from a
    controller before it) read as before the mark: read_only is given up, draining is not."""
    if state == ClusterState.ACTIVE:
        return False
    return state == ClusterState.READ_ONLY if mark is None else bool(mark)


@dataclass(frozen=True, slots=True)
class Segment:
    """A contiguous slice of one logical partition's log, stored in one physical partition."""

    cluster: str
    topic: str
    partition: int
    phys_start: int
    phys_end: int | None  # exclusive; None while active
    logical_base: int

    @property
    def active(self) -> bool:
        return self.phys_end is None

    @property
    def identity(self) -> bool:
        return self.phys_start == 0 and self.logical_base == 0

    @property
    def logical_end(self) -> int | None:
        """Exclusive logical end of a sealed segment (None while active)."""
        return None if self.phys_end is None else self.logical_base + (self.phys_end - self.phys_start)

    def sealed_end(self) -> int:
        """`logical_end` of a segment the caller knows is sealed (ValueError on the active one)."""
        end = self.logical_end
        if end is None:
            raise ValueError(f"segment {self.cluster}/{self.topic}/{self.partition} is active, not sealed")
        return end

    def sealed_phys_end(self) -> int:
        """`phys_end` of a segment the caller knows is sealed (ValueError on the active one)."""
        if self.phys_end is None:
            raise ValueError(f"segment {self.cluster}/{self.topic}/{self.partition} is active, not sealed")
        return self.phys_end

    def to_physical(self, logical: int) -> int:
        return self.phys_start + (logical - self.logical_base)

    def to_logical(self, physical: int) -> int:
        return self.logical_base + (physical - self.phys_start)

    def contains_logical(self, logical: int) -> bool:
        end = self.logical_end
        return logical >= self.logical_base and (end is None or logical < end)


@dataclass(frozen=True, slots=True)
class PartitionChain:
    """One logical partition: its segments oldest first; the last one is the active tail."""

    segments: tuple[Segment, ...]
    leader_epoch: int = 0
    frozen: bool = False

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a partition chain needs at least one segment")
        if any(s.active for s in self.segments[:-1]) or not self.segments[-1].active:
            raise ValueError("exactly the last segment of a chain is active")

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    def segment_for(self, logical: int) -> Segment | None:
        """The segment holding `logical`, or None when it falls before the chain or in a gap.

        Offsets at or beyond the active segment's base map into the active segment.
        """
        bases = [s.logical_base for s in self.segments]
        i = bisect.bisect_right(bases, logical) - 1
        if i < 0:
            return None
        seg = self.segments[i]
        return seg if seg.contains_logical(logical) else None

    def next_segment(self, seg: Segment) -> Segment | None:
        i = self._index(seg)
        return self.segments[i + 1] if i + 1 < len(self.segments) else None

    def _index(self, seg: Segment) -> int:
        """Position of `seg`: by identity first, since two empty segments of one chain can be equal (A -> B -> A
        with nothing written)."""
        for i, s in enumerate(self.segments):
            if s is seg:
                return i
        return self.segments.index(seg)

    def covering(self, logical: int) -> Segment | None:
        """The last segment starting at or before `logical` (it holds it, or the gap after it does)."""
        i = bisect.bisect_right([s.logical_base for s in self.segments], logical) - 1
        return self.segments[i] if i >= 0 else None

    def gap_after(self, seg: Segment) -> tuple[int, int] | None:
        """(first, end) logical offsets of the unclean gap that follows sealed `seg` (docs/DESIGN.md §2, §9),
        or None when the next segment starts at its logical end."""
        nxt = self.next_segment(seg)
        end = seg.logical_end
        if nxt is None or end is None or nxt.logical_base <= end:
            return None
        return end, nxt.logical_base

    def readable_end(self, seg: Segment) -> int | None:
        """Physical offset (exclusive) below which `seg`'s physical partition holds records of this segment.

        The seal, except for a segment followed by an unclean gap: its physical partition may hold records
        past the last end the controller knew (written before its cluster died), and they are read inside the
        gap, up to the gap's end, but never into a later segment of the same physical partition (A -> B -> A).
        """
        gap = self.gap_after(seg)
        if gap is None:
            return seg.phys_end
        i = self._index(seg)
        later = [s.phys_start for s in self.segments[i + 1:]
                 if (s.cluster, s.topic, s.partition) == (seg.cluster, seg.topic, seg.partition)]
        return min([seg.to_physical(gap[1]), *later])


@dataclass(frozen=True, slots=True)
class LogicalTopic:
    name: str
    topic_id: str  # 32 hex chars: the logical topic id (a UUID) clients see
    partitions: tuple[PartitionChain, ...]
    config: tuple[tuple[str, str], ...] = ()

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One client listener of a proxy: what a client using `protocol` connects to."""

    protocol: str  # one of SECURITY_PROTOCOLS
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    node_id: int
    host: str
    port: int
    role: ProxyRole = ProxyRole.BOTH
    pool: str = "default"
    rack: str | None = None
    listeners: tuple[Endpoint, ...] = ()  # empty: one PLAINTEXT listener at host:port (views before listeners)

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.listeners or (Endpoint("PLAINTEXT", self.host, self.port),)

    def endpoint(self, protocol: str) -> Endpoint | None:
        """This proxy's listener for `protocol`: clients are only ever sent to the protocol they came in on."""
        return next((e for e in self.endpoints() if e.protocol == protocol), None)


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """A user's SCRAM credential (RFC 5802): never the password, only what checks it (docs/DESIGN.md §11)."""

    user: str
    mechanism: str  # SCRAM-SHA-256 | SCRAM-SHA-512
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_dict(self) -> dict[str, Any]:
        b64 = base64.b64encode
        return {"user": self.user, "mechanism": self.mechanism, "salt": b64(self.salt).decode(),
                "iterations": self.iterations, "stored_key": b64(self.stored_key).decode(),
                "server_key": b64(self.server_key).decode()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScramCredential:
        b64 = base64.b64decode
        return cls(user=d["user"], mechanism=d["mechanism"], salt=b64(d["salt"]), iterations=int(d["iterations"]),
                   stored_key=b64(d["stored_key"]), server_key=b64(d["server_key"]))


@dataclass(frozen=True, slots=True)
class View:
    version: int
    clusters: dict[str, Cluster] = field(default_factory=dict)
    topics: dict[str, LogicalTopic] = field(default_factory=dict)
    proxies: tuple[ProxyInfo, ...] = ()
    coordination_cluster: str | None = None
    # a coordination move is copying the groups' offsets: OffsetCommit is refused (retriable) meanwhile
    commits_frozen: bool = False
    allow_auto_create_topics: bool = False
    federation_id: str = "fedkafka"
    credentials: tuple[ScramCredential, ...] = ()  # sorted by (user, mechanism)
    acls: tuple[AclBinding, ...] = ()  # sorted; enforced by proxies that run with authorization on
    # live nodes drained by an operator (sorted node ids): not in `proxies`, so they lead nothing; each refuses
    # produce with a retriable error and names only the others in Metadata (docs/DESIGN.md §4.11)
    draining: tuple[int, ...] = ()
    # lookups derived from the fields above, each worked out on first use and kept with this view object (a new
    # view, `replace` too, starts empty); not part of the view's value
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    # -- lookups -----------------------------------------------------------------------------
    def derived(self, name: str, make: Callable[[View], T]) -> T:
        """`make(self)`, worked out on first use and kept with this view object under `name`."""
        if name not in self._derived:
            self._derived[name] = make(self)
        value: T = self._derived[name]
        return value

    def topic_ids(self) -> dict[str, uuid.UUID]:
        """Each logical topic's id, parsed once per view object (a KIP-848 heartbeat parsed them all: 10,000
        topics cost ~14 ms a heartbeat)."""
        ids: dict[str, uuid.UUID] | None = self._derived.get("topic_ids")
        if ids is None:
            ids = self._derived["topic_ids"] = {name: uuid.UUID(hex=t.topic_id) for name, t in self.topics.items()}
        return ids

    def topics_by_id(self) -> dict[uuid.UUID, str]:
        """Logical topic names by their ids (`topic_ids` the other way round), once per view object."""
        names: dict[uuid.UUID, str] | None = self._derived.get("topics_by_id")
        if names is None:
            names = self._derived["topics_by_id"] = {i: name for name, i in self.topic_ids().items()}
        return names

    def chain(self, topic: str, partition: int) -> PartitionChain | None:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        return t.partitions[partition]

    def proxies_in_pool(self, pool: str | None = None, role: ProxyRole | None = None) -> tuple[ProxyInfo, ...]:
        found = tuple(p for p in self.proxies if (pool is None or p.pool == pool)
                      and (role is None or p.role == ProxyRole.BOTH or p.role == role))
        return found

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        return next((c for c in self.credentials if c.user == user and c.mechanism == mechanism), None)

    @overload
    def leader_for(self, topic: str, partition: int,
                   candidates: tuple[ProxyInfo, *tuple[ProxyInfo, ...]]) -> ProxyInfo: ...
    @overload
    def leader_for(self, topic: str, partition: int, candidates: tuple[ProxyInfo, ...]) -> ProxyInfo | None: ...

    def leader_for(self, topic: str, partition: int, candidates: tuple[ProxyInfo, ...]) -> ProxyInfo | None:
        """Logical leader of a partition among `candidates`: rendezvous hashing, so few leaders move
        when a proxy joins or leaves."""
        if not candidates:
            return None
        return max(candidates, key=lambda p: _rendezvous_weight(topic, partition, p.node_id))

    def ranked_for(self, topic: str, partition: int, candidates: tuple[ProxyInfo, ...]) -> list[ProxyInfo]:
        """`candidates` in rendezvous order for a partition, its `leader_for` first: the proxies Metadata names as
        its replicas, the same on every proxy and in any view order; the leader's successor is the second."""
        return sorted(candidates, key=lambda p: _rendezvous_weight(topic, partition, p.node_id), reverse=True)

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "federation_id": self.federation_id,
            "coordination_cluster": self.coordination_cluster,
            "commits_frozen": self.commits_frozen,
            "allow_auto_create_topics": self.allow_auto_create_topics,
            "clusters": [_cluster_to_dict(c) for c in self.clusters.values()],
            "topics": [_topic_to_dict(t) for t in self.topics.values()],
            "proxies": [_proxy_to_dict(p) for p in self.proxies],
            "credentials": [c.to_dict() for c in self.credentials],
            "acls": [b.to_list() for b in self.acls],
            "draining": list(self.draining),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> View:
        return cls(
            version=int(d["version"]),
            federation_id=d.get("federation_id", "fedkafka"),
            coordination_cluster=d.get("coordination_cluster"),
            commits_frozen=bool(d.get("commits_frozen", False)),
            allow_auto_create_topics=bool(d.get("allow_auto_create_topics", False)),
            clusters={c["id"]: _cluster_from_dict(c) for c in d.get("clusters", [])},
            topics={t["name"]: _topic_from_dict(t) for t in d.get("topics", [])},
            proxies=tuple(_proxy_from_dict(p) for p in d.get("proxies", [])),
            credentials=tuple(ScramCredential.from_dict(c) for c in d.get("credentials", [])),
            acls=tuple(AclBinding.from_list(b) for b in d.get("acls", [])),
            draining=tuple(int(n) for n in d.get("draining", ())),
        )

    def with_version(self, version: int) -> View:
        return replace(self, version=version)


SHADOW_PREFIX = "__fedkafka-shadow-"
# A logical topic's name: Kafka's characters, and at most 249 (Kafka's limit) with SHADOW_PREFIX before it. The
# controller creates no other; the proxy remembers no other (docs/DESIGN.md §5.3 rule 2: the refusal memory's bound).
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,231}$")


def shadow_topic(logical_topic: str) -> str:
    """Name of the data-less topic with P partitions on the coordination cluster that holds a logical
    topic's committed offsets (docs/DESIGN.md §5.6). The proxy rewrites group APIs' topic names both ways."""
    return SHADOW_PREFIX + logical_topic


def logical_from_shadow(physical_topic: str) -> str | None:
    return physical_topic[len(SHADOW_PREFIX):] if physical_topic.startswith(SHADOW_PREFIX) else None


def _rendezvous_weight(topic: str, partition: int, node_id: int) -> int:
    digest = hashlib.blake2b(f"{topic}\0{partition}\0{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _cluster_to_dict(c: Cluster) -> dict[str, Any]:
    out: dict[str, Any] = {"id": c.id, "bootstrap": c.bootstrap, "state": c.state.value, "reachable": c.reachable}
    if c.given_up is not None:
        out["given_up"] = c.given_up
    return out


def _cluster_from_dict(c: dict[str, Any]) -> Cluster:
    """A cluster of a view's JSON. One from a controller before the given-up mark has no `given_up`: None, read as
    before (`Cluster.gave_up`); a proxy from before the mark ignores the key (it reads the keys it knows)."""
    given_up = c.get("given_up")
    return Cluster(id=c["id"], bootstrap=c["bootstrap"], state=ClusterState(c["state"]),
                   reachable=bool(c.get("reachable", True)), given_up=None if given_up is None else bool(given_up))


def _proxy_to_dict(p: ProxyInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"node_id": p.node_id, "host": p.host, "port": p.port, "role": p.role.value,
                           "pool": p.pool, "rack": p.rack}
    if p.listeners:
        out["listeners"] = [[e.protocol, e.host, e.port] for e in p.listeners]
    return out


def _proxy_from_dict(p: dict[str, Any]) -> ProxyInfo:
    return ProxyInfo(node_id=p["node_id"], host=p["host"], port=p["port"], role=ProxyRole(p["role"]),
                     pool=p.get("pool", "default"), rack=p.get("rack"),
                     listeners=tuple(Endpoint(str(e[0]), str(e[1]), int(e[2])) for e in p.get("listeners") or ()))


def _topic_to_dict(t: LogicalTopic) -> dict[str, Any]:
    return {
        "name": t.name,
        "topic_id": t.topic_id,
        "config": dict(t.config),
        "partitions": [{"leader_epoch": c.leader_epoch, "frozen": c.frozen,
                        "segments": [[s.cluster, s.topic, s.partition, s.phys_start, s.phys_end, s.logical_base]
                                     for s in c.segments]} for c in t.partitions],
    }


def _topic_from_dict(d: dict[str, Any]) -> LogicalTopic:
    return LogicalTopic(
        name=d["name"],
        topic_id=d["topic_id"],
        config=tuple(sorted((d.get("config") or {}).items())),
        partitions=tuple(PartitionChain(segments=tuple(Segment(*s) for s in c["segments"]),
                                        leader_epoch=c.get("leader_epoch", 0), frozen=c.get("frozen", False))
                         for c in d["partitions"]),
    )
