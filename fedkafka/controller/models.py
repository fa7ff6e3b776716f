"""Config database tables (SQLAlchemy 2). Alembic migrations in `migrations/` create them; keep both in step."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedkafka.view.model import marked_given_up


class Base(DeclarativeBase):
    pass


class ClusterRow(Base):
    __tablename__ = "clusters"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer)  # registration order: placement and coordination default
    bootstrap: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16), default="active")
    coordination: Mapped[bool] = mapped_column(Boolean, default=False)
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # a coordination move copies the groups' offsets away from this cluster: commits refused meanwhile
    commits_frozen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # counts the freezes of commits set on this cluster: a move's switch checks the freeze is still the one its own
    # thread set, not one cleared and set again since, even by its own run resumed elsewhere (docs/DESIGN.md §10.1)
    freeze_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # a failover gave the cluster up (True, with its read_only step), or this release's read_only step of a
    # decommission (or the operator's) gave nothing up (False): the view says so (`cluster_given_up`), and a timestamp
    # question leaves its segments out while it is dead (§9.2). NULL unless a controller with the mark set it: an
    # active cluster (read_only -> active sets NULL), or an older controller's state change during an upgrade,
    # read as before the mark (read_only given up), so an older controller's failover still gives its cluster up
    given_up: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class TopicRow(Base):
    __tablename__ = "topics"
    name: Mapped[str] = mapped_column(String(249), primary_key=True)
    topic_id: Mapped[str] = mapped_column(String(32))
    partitions: Mapped[int] = mapped_column(Integer)
    placement: Mapped[str] = mapped_column(String(16))
    config_json: Mapped[str] = mapped_column(Text, default="{}")


class ChainRow(Base):
    """Per logical partition: leader epoch and frozen flag (the segments hang off it)."""

    __tablename__ = "chains"
    topic: Mapped[str] = mapped_column(ForeignKey("topics.name", ondelete="CASCADE"), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    leader_epoch: Mapped[int] = mapped_column(Integer, default=0)
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)


class SegmentRow(Base):
    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("topic", "partition", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(ForeignKey("topics.name", ondelete="CASCADE"), index=True)
    partition: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)  # position in the chain, oldest first
    cluster: Mapped[str] = mapped_column(String(64))
    physical_topic: Mapped[str] = mapped_column(String(249))
    physical_partition: Mapped[int] = mapped_column(Integer)
    phys_start: Mapped[int] = mapped_column(BigInteger)
    phys_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    logical_base: Mapped[int] = mapped_column(BigInteger)


class PhysicalPartitionRow(Base):
    """Which logical partition owns a physical partition: claimed with the segment or the move that first targets
    it, in the same transaction, and never released while the topic exists, so a physical partition serves one
    logical partition only, forever (docs/DESIGN.md §2 rule 4, §4.13). The primary key refuses a second claim."""

    __tablename__ = "physical_partitions"
    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    physical_topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    physical_partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(ForeignKey("topics.name", ondelete="CASCADE"), index=True)
    partition: Mapped[int] = mapped_column(Integer)
    # the last high watermark a scan read of it while it held an active segment, and when (wall-clock seconds):
    # the seal of a failover run by a controller that has not scanned it itself (docs/DESIGN.md §9.1)
    scanned_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    scanned_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class PendingDeletionRow(Base):
    """A physical topic (or shadow topic) of a deleted logical topic that its cluster has not yet confirmed gone:
    written in the transaction that deletes the logical topic, removed once Kafka confirms the deletion (deleted, or
    UNKNOWN_TOPIC_OR_PARTITION). While `topic` has a row, creating a topic of that name is refused, so a new topic's
    segments never start at offset 0 of a physical topic holding the old one's records (docs/DESIGN.md §4.5)."""

    __tablename__ = "pending_deletions"
    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    physical_topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249), index=True)  # the deleted logical topic (no foreign key: gone)
    deleted_at: Mapped[float] = mapped_column(Float)  # wall-clock seconds of the logical deletion
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # Kafka's id of the physical topic to delete (32 hex digits), learned while this row was pending (or while the
    # logical topic it is of still existed): the deletion names only this id, so it never deletes a physical topic
    # of a topic created again under the name (docs/DESIGN.md §5.8). None until learned.
    kafka_topic_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # this row's own random id: a row recorded again for the same physical topic has another one, so an id learned
    # while one row was pending is never stored in a later one (revision 0016)
    record_id: Mapped[str] = mapped_column(String(32))


class ProxyRow(Base):
    __tablename__ = "proxies"
    node_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(String(256), unique=True)
    host: Mapped[str] = mapped_column(String(256))
    port: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(8))
    pool: Mapped[str] = mapped_column(String(128))
    lease_expires: Mapped[float] = mapped_column(Float)  # wall-clock seconds: shared by every controller
    # until when the proxy may produce without renewing (docs/DESIGN.md §4.9); moves count it as writing until
    # this plus FENCE_GRACE_S. Only ever moved forward while it has not passed.
    fence_expires: Mapped[float] = mapped_column(Float, server_default="0")
    applied_version: Mapped[int] = mapped_column(BigInteger, default=0)
    load_json: Mapped[str] = mapped_column(Text, default="{}")
    listeners_json: Mapped[str] = mapped_column(Text, default="[]")  # [[protocol, host, port], ...]
    # A proxy run with --workers N is one node (one node id in the view) and N rows: worker 0 is the node's own
    # row, worker i > 0 a row of its own (instance id `host:port/w<i>`) naming the node in `worker_of`. Each row
    # has its own lease, fence and applied version, so a move counts every worker (docs/DESIGN.md §4.10).
    worker: Mapped[int] = mapped_column(Integer, server_default="0")
    worker_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # set on the node's own row (worker 0's) by POST /v1/proxies/{node}/drain, cleared only by .../undrain: the
    # node, every worker of it, leaves the view's proxies and leads no partition (docs/DESIGN.md §4.11)
    draining: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # SHA-256 (hex) of the secret the member's latest registration was given: its heartbeats (lease renewals and
    # view acks) must present it (docs/DESIGN.md §5.2, "Member secrets"). NULL: registered before member secrets.
    secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the fence of the process that held the member before a registration with another secret took it over while
    # that fence and the grace had not passed: that process may still produce under its old view until then, so a
    # move counts the member as acked only after it (docs/DESIGN.md §4.9, F4). NULL: never taken over so.
    predecessor_fence_expires: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def node(self) -> int:
        """The node id clients see: the node's own row id, for a worker row too."""
        return self.worker_of if self.worker_of is not None else self.node_id


class ClientRuleRow(Base):
    """A name service rule (docs/DESIGN.md §3.4). One rule per match kind and pattern, kept by the database itself
    (revision 0017): two controllers writing at once each pass their own check, the constraint refuses the later."""

    __tablename__ = "client_rules"
    __table_args__ = (UniqueConstraint("match", "pattern", name="uq_client_rules_match_pattern"),)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    match: Mapped[str] = mapped_column(String(8))
    pattern: Mapped[str] = mapped_column(String(256))
    pool: Mapped[str] = mapped_column(String(128))


class CounterRow(Base):
    """Named monotonic counters (logical producer id blocks); bumped by compare-and-set."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class ViewRow(Base):
    """The single current view (id = 1): version and JSON body. Only ever updated by compare-and-set."""

    __tablename__ = "view_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    committed_at: Mapped[float] = mapped_column(Float)


class WorkflowRow(Base):
    """Workflow runs (scale up, decommission): a resumable state machine per run (later issue)."""

    __tablename__ = "workflows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    cluster: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(String(64), default="")
    params_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[float] = mapped_column(Float)
    record_json: Mapped[str] = mapped_column(Text, default="{}")  # phases, moves, error: what GET shows
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)


UNFINISHED_MOVE = "state NOT IN ('done', 'rolled_back')"  # moves.FINISHED, as SQL (the index below)


class MoveRow(Base):
    """One active-segment move (docs/DESIGN.md §6): planned -> frozen -> sealed -> done, or rolled_back; or
    held (frozen for good, never sealed nor rolled back: the database lost commits, docs/DESIGN.md §3.3).
    Each state is committed before it takes effect, so a restarted controller resumes from it.

    At most one unfinished move per logical partition: the partial unique index refuses the second of two
    transactions that record one (two runs planning from one view, a failover beside a scale-up), on SQLite and
    PostgreSQL alike (docs/DESIGN.md §4.1, "A move seals only the segment it froze")."""

    __tablename__ = "moves"
    __table_args__ = (Index("ux_moves_unfinished_partition", "topic", "partition", unique=True,
                            sqlite_where=text(UNFINISHED_MOVE), postgresql_where=text(UNFINISHED_MOVE)),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workflow_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    topic: Mapped[str] = mapped_column(String(249))
    # the incarnation of the topic the move was planned for (TopicRow.topic_id): a topic deleted and created again
    # under its name is another topic, whose chains this move never froze (None: recorded before revision 0011)
    topic_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    partition: Mapped[int] = mapped_column(Integer)
    from_cluster: Mapped[str] = mapped_column(String(64))
    to_cluster: Mapped[str] = mapped_column(String(64))
    to_topic: Mapped[str] = mapped_column(String(249))
    to_partition: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    frozen_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    seal: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    phys_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the target physical partition's log end read before the freeze committed: nothing writes there until the
    # move publishes, so a seal that finds it grew meets records of a publish the database lost (held, never sealed
    # at the grown end; None: recorded before revision 0013; docs/DESIGN.md §3.3, "Lost commits")
    target_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the same log end read when the move was planned (before the plan committed): a freeze that finds it grew meets
    # records of a publish the database lost with the freeze (held; None: planned before revision 0014 or without it)
    planned_target_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the target was claimed for this logical partition before the move's plan (a move back onto its chain: it may
    # hold an older segment's unclean tail above a trailing high watermark, whether or not that segment still exists),
    # decided once in the plan's transaction: its freeze and seal take settled ends (None: planned before revision
    # 0021, taken as returning; docs/DESIGN.md §6.3, "A move back onto its chain")
    returning_target: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # why a held move is held (HELD_* in moves.py): "target_grew", "target_unread" (the sweeper reads its target
    # again and rolls it back if it reads at or below `target_end`), "no_target_end" (None: held before revision
    # 0014)
    held_for: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # logical offsets left between the seal and the new segment: 0, or UNCLEAN_GAP for a failover, whose seal is
    # the last log end the controller knew of a dead cluster (docs/DESIGN.md §9)
    gap: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class LeaderRow(Base):
    """The active controller (id = 1): who holds it, where it answers, since which term, until when.
    Taken over only once expired, by compare-and-set; every move transition checks it (docs/DESIGN.md §3.6)."""

    __tablename__ = "controller_leader"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))  # this process: its URL and a random tag
    url: Mapped[str] = mapped_column(String(1024))
    term: Mapped[int] = mapped_column(BigInteger)
    expires: Mapped[float] = mapped_column(Float)  # wall-clock seconds
class ScramCredentialRow(Base):
    """A user's SCRAM credential per mechanism: salt, iterations, StoredKey, ServerKey (RFC 5802), never the
    password. They travel to the proxies with the view (docs/DESIGN.md §11)."""

    __tablename__ = "scram_credentials"
    user: Mapped[str] = mapped_column(String(256), primary_key=True)
    mechanism: Mapped[str] = mapped_column(String(16), primary_key=True)
    salt: Mapped[str] = mapped_column(String(128))  # base64
    iterations: Mapped[int] = mapped_column(Integer)
    stored_key: Mapped[str] = mapped_column(String(128))  # base64
    server_key: Mapped[str] = mapped_column(String(128))  # base64


class AclRow(Base):
    """One ACL binding on a logical resource (Kafka's fields and names, docs/DESIGN.md §11)."""

    __tablename__ = "acls"
    __table_args__ = (UniqueConstraint("resource_type", "name", "pattern_type", "principal", "host", "operation",
                                       "permission"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(24))
    name: Mapped[str] = mapped_column(String(256))
    pattern_type: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str] = mapped_column(String(256))
    host: Mapped[str] = mapped_column(String(256))
    operation: Mapped[str] = mapped_column(String(24))
    permission: Mapped[str] = mapped_column(String(8))


def cluster_given_up(row: ClusterRow) -> bool:
    """Whether the operator gave the cluster up, as the view says it (the view's rule, `marked_given_up`)."""
    return marked_given_up(row.state, row.given_up)


def gives_up_nothing(row: ClusterRow) -> bool:
    """Whether a failover leaves the cluster's mark as it is (docs/DESIGN.md §9.1): removed, given up already, or
    read_only or draining and answering (a failover is for a dead cluster; a decommission moved this one's writes off
    cleanly, and its segments are read there). An active cluster always goes read_only and given up."""
    if row.state == "active":
        return False
    return row.state == "removed" or cluster_given_up(row) or row.reachable
