"""The controller: config database + physical clusters -> versioned view, pushed to proxies.

Every change is one database transaction followed by `compose()`, which writes a new view only when
its content changed, by compare-and-set on the version row (two controllers on one database never
corrupt it: the loser re-reads and composes again). Physical topics are created *before* the
database row that needs them, so a crash leaves at most an unused physical topic, never a view that
points at nothing; the scan loop re-creates whatever is missing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from confluent_kafka import KafkaException
from sqlalchemy import CursorResult, Table, bindparam, case, delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from fedkafka.client_rules import pool_for
from fedkafka.controller import acls, claims, db, deletions, leftovers
from fedkafka.controller.claims import ClaimTaken
from fedkafka.controller.compose import build_view, coordination_cluster
from fedkafka.controller.errors import Conflict, Forbidden, Invalid, NotFound, PhysicalTopicLost, Unavailable
from fedkafka.controller.kafka_admin import KafkaAdmin, KafkaRefused, KafkaUnavailable, Scan
from fedkafka.controller.leadership import ACTIVE, STANDBY, TAKING_OVER, Leadership, NotLeader, RoundLog
from fedkafka.controller.metrics import Metrics
from fedkafka.controller.models import (
    ChainRow,
    ClientRuleRow,
    ClusterRow,
    MoveRow,
    PhysicalPartitionRow,
    ProxyRow,
    ScramCredentialRow,
    SegmentRow,
    TopicRow,
    ViewRow,
    cluster_given_up,
    gives_up_nothing,
)
from fedkafka.controller.moves import FINISHED as MOVE_FINISHED
from fedkafka.controller.moves import freeze_planned, may_still_write, moves_named, unfinished_moves_to
from fedkafka.controller.producer_ids import ProducerIdBlocks
from fedkafka.controller.publish import Publisher
from fedkafka.controllers import (
    DUPLICATE_REGISTRATION,
    MAX_PREDECESSOR_SECRETS,
    MAX_SECRET_LENGTH,
    MEMBER_SECRET_HEADER,
    PREDECESSOR_SECRET_HEADER,
    PREDECESSOR_SEPARATOR,
)
from fedkafka.fencing import DEFAULT_FENCE_S, FENCE_GRACE_S
from fedkafka.security.scram import MECHANISMS as SCRAM_MECHANISMS
from fedkafka.security.scram import MIN_ITERATIONS
from fedkafka.security.upstream import PLAINTEXT, UpstreamConfig
from fedkafka.view.chains import next_version
from fedkafka.view.model import SECURITY_PROTOCOLS, TOPIC_NAME, ClusterState, ProxyInfo, ProxyRole, View, shadow_topic
from fedkafka.view.placement import Placement, Slot, identity_chains, physical_partition_counts, place

log = logging.getLogger(__name__)

# used with fullmatch: `re.match` with `$` also matched before a trailing newline ("c1\n" was a cluster id)
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")
CLUSTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
BOOTSTRAP = re.compile(r"[^\s,:\x00]+:[0-9]{1,5}(,[^\s,:\x00]+:[0-9]{1,5})*")
STATE_ORDER = [ClusterState.ACTIVE, ClusterState.READ_ONLY, ClusterState.DRAINING, ClusterState.REMOVED]
MAX_PARTITIONS = 10_000
# a secret a registration sends shorter than this is not taken (one is drawn): a proxy draws 43 characters
MIN_MEMBER_SECRET = 32
MAX_WORKER = 1023  # worker index of a proxy run with --workers N (docs/DESIGN.md §4.10)
# A renewal whose write committed this long after it was checked is not acknowledged (the proxy keeps its old
# deadline): a move's ack wait may have stopped counting the proxy meanwhile (docs/DESIGN.md §4.9).
LATE_RENEWAL_S = FENCE_GRACE_S / 4
# the member secret a caller that checked none (a test, a tool) passes as a renewal's `accepted`: its write then
# holds for any secret the row has (not a SHA-256 hex digest, so never a row's hash)
ANY_SECRET = "*"
# how long a renewal refused by its batch's write is remembered for the heartbeat that waits on that batch: longer
# than any such heartbeat waits (LATE_RENEWAL_S answers it 503 first)
REFUSED_MEMORY_S = 60.0
# transactions a registration tries before it answers 503, each lost to a concurrent write of its rows
REGISTRATION_TRIES = 3
# PostgreSQL aborted the transaction to break a deadlock (40P01), or on a serialization failure (40001)
LOST_RACE_SQLSTATES = ("40P01", "40001")
# What a compose meets in operation, once the change it follows is committed (`compose_after_commit`): its
# compare-and-set lost to too many concurrent writers (Conflict 503, the only Conflict it raises), the leader row lost
# since the commit (NotLeader), the database failing its read or write (DBAPIError: connection lost, locked, aborted)
COMPOSE_FAILURES: tuple[type[Exception], ...] = (Conflict, NotLeader, DBAPIError)
BIGINT_MAX = 2**63 - 1  # the version column's bound: no version, reported or composed, comes near it
# The highest applied version a heartbeat may report: above it, it is refused (422), never taken as the floor of the
# next version, so composing past a floor never overflows the version column (docs/DESIGN.md §3.3). Any number of
# lost views below it is composed past, however old the database restored.
MAX_REPORTED_VERSION = BIGINT_MAX // 2
STORED_END_REFRESH_S = 60.0  # an unchanged scanned log end is written again this often (its `scanned_at`)
_CLAIMS = cast(Table, PhysicalPartitionRow.__table__)
# a scanned log end stored on its physical partition's claim (a partition whose claim is gone matches no row)
_STORE_END = (update(_CLAIMS).where(_CLAIMS.c.cluster == bindparam("k_cluster"),
                                    _CLAIMS.c.physical_topic == bindparam("k_topic"),
                                    _CLAIMS.c.physical_partition == bindparam("k_partition"))
              .values(scanned_end=bindparam("k_end"), scanned_at=bindparam("k_at")))


@dataclass
class Settings:
    db_url: str
    lease_ms: int = 10_000  # a proxy not renewed for this long leaves the view (leadership moves)
    fence_ms: int = int(DEFAULT_FENCE_S * 1000)  # ... and stops producing this long after (docs/DESIGN.md §4.9)
    scan_interval: float = 5.0
    kafka_timeout: float = 3.0
    # fail a cluster over once it has been unreachable this many seconds (None: never on its own; docs/DESIGN.md §9)
    auto_failover_after: float | None = None
    # seconds between copies of every group's committed offsets (what `coordination move --unclean` restores)
    offsets_copy_interval: float = 30.0
    upstream: UpstreamConfig = PLAINTEXT  # TLS and SASL towards the physical clusters' brokers

    def __post_init__(self) -> None:
        if self.fence_ms < self.lease_ms:
            raise ValueError(f"the fence ({self.fence_ms} ms) must be at least the lease ({self.lease_ms} ms)")


class Composed(NamedTuple):
    """What `compose_after_commit` did: the view composed (None if not now), and the view version holding the
    change: the composed view's, or, not composed, the one owed (`Controller._owe_new_version`: past the version
    served before the compose tried and every view a proxy holds, a floor learned while the compose failed too)."""
    view: View | None
    version: int


class Renewal(NamedTuple):
    """A proxy member's renewal to write: its new lease and fence expiry, applied version, load, and the fence the
    renewal was accepted against (`seen_fence`): it is written only while the row's fence is still at least that
    (`Controller._write_renewal`), as fences only move forward except at a deregistration."""
    lease: float
    fence: float
    applied: int
    load: dict
    seen_fence: float


def new_federation_id() -> str:
    """A federation's id (its Kafka cluster id too), drawn like Kafka's Uuid.randomUuid: 22 base64url characters
    of a random UUID, never starting with "-" (a tool would read it as a flag)."""
    while True:
        drawn = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not drawn.startswith("-"):
            return drawn


class Controller:
    def __init__(self, settings: Settings, kafka: KafkaAdmin | None = None, *, standby: bool = False):
        """`standby`: one of the controllers that compete for the database's leader row (docs/DESIGN.md §3.6). It
        starts by loading the stored view and writes nothing, not even a view, until its `leadership` holds the row
        (`become_active` composes then). Without it (one controller in process, tests) it acts at once."""
        self.settings = settings
        self._standby = standby
        self.engine = db.make_engine(settings.db_url)
        db.migrate(self.engine)
        self.session = db.session_factory(self.engine)
        self.kafka = kafka or KafkaAdmin(settings.kafka_timeout, settings.upstream)
        self.metrics = Metrics()
        self.producer_ids = ProducerIdBlocks(self.session)
        self._write_lock = threading.Lock()  # one topology change at a time in this process
        # physical topics of deleted topics not yet gone: retried by the scan, block a new topic of the name
        self.deletions = deletions.PhysicalDeletions(self.session, self.kafka, self._write_lock, self.check_leader,
                                                     lambda: self.view.topics)
        self.producer_ids.seed()
        self._seed_view()
        self.publisher = Publisher(self._stored_view()[0])
        # The proxies of the view this controller inherits stay listed for one lease, even if their leases
        # ran out while no controller ran: they re-register within a heartbeat, and dropping then re-adding
        # them one by one moves partition leaders between proxies and back (a client's retry that crosses
        # proxies is not deduplicated by the broker). Fencing is unchanged: a proxy whose lease ran out
        # refuses produce on its own, and moves wait on leases, not on this list.
        self._inherited = (frozenset(p.node_id for p in self.publisher.view.proxies),
                           time.time() + settings.lease_ms / 1000)
        self._init_versioning()
        self._hb_lock = threading.Lock()
        # member id (a proxy's row: its node id, or a worker's own row) -> (lease, fence expiry, applied version)
        self._leases: dict[int, tuple[float, float, int]] = {}
        self._node_of: dict[int, int] = {}  # member id -> the node id clients see (docs/DESIGN.md §4.10)
        # member id -> hash of its member secret as this controller last saw it in the database (§5.2)
        self._secret_hashes: dict[int, str] = {}
        self._pending: dict[int, Renewal] = {}  # renewals not yet in the database
        # member id -> the secret hash its pending renewal was accepted with: it is written only while the row
        # holds that hash (and its fence), compared in the writing statement (`_write_renewal`)
        self._pending_accepted: dict[int, str | None] = {}
        # (member id, accepted hash) -> (the batch's ticket, superseded, monotonic time) of a renewal whose write
        # matched no row: the heartbeat waiting on that batch is refused (`_refusal`)
        self._refused: dict[tuple[int, str | None], tuple[int, bool, float]] = {}
        self._flush_lock = threading.RLock()  # one heartbeat batch written at a time
        self._renewals = 0  # renewals taken so far ...
        self._durable = 0  # ... and how many of them are committed
        self._stop = threading.Event()
        self.leadership: Leadership | None = None  # set by the app when several controllers may share the database
        # a controller started as a standby takes writes only once `become_active` served the database's view and
        # composed it: before, it serves the view loaded at its start, and a route's answer numbered from that view
        # may be a version the proxies hold already without the change (docs/DESIGN.md §3.6, §5.1)
        self._took_over = not standby
        self.log_offsets: dict[tuple[str, str, int], tuple[int, int]] = {}  # (cluster, topic, p) -> start, end
        self._stored_ends: dict[tuple[str, str, int], tuple[int, float]] = {}  # ends written by this one, and when
        # per cluster, the physical topics it lacks that held data (never re-created: `_create_missing`)
        self.lost_topics: dict[str, list[str]] = {}
        self.offsets_copy: dict | None = None  # the groups' offsets as last copied (controller.coordination)
        self._threads: list[threading.Thread] = []
        if not standby:  # a standby serves the stored view: a view composed now would be an unfenced write
            self.compose()
        self.metrics.watch(self)

    def _init_versioning(self) -> None:
        """The state `compose` numbers views by (part of `__init__`)."""
        self._compose_lock, self._compose_owed, self._new_version_owed = threading.Lock(), threading.Event(), False
        # a predecessor (the process before a restart, the controller before a takeover) may have answered a version
        # it could not compose: owed once this one has heard the proxies (`_owe_predecessors_version`)
        self._predecessor_owed = not self._standby
        self._committed_at: dict[int, float] = {}
        # the newest view a proxy reported applied that the database does not hold (it lost its last commits):
        # the next view is numbered past it, never a version a proxy holds with other content (§3 durability)
        self._version_floor = 0
        # set once this controller saw the database hold an older view than a proxy or itself did (it lost
        # commits): {"db_version", "seen_version", "message", "at"}; new workflow runs are refused until restart
        self.db_regression: dict[str, Any] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start_background(self) -> None:
        for target, name in ((self._scan_loop, "scan"), (self._lease_loop, "leases")):
            t = threading.Thread(target=target, name=f"controller-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def check_leader(self, session) -> None:
        """In a write transaction that must not commit once another controller took over (moves): raises
        NotLeader then (docs/DESIGN.md §3.6). A controller without leadership (tests, in process) always passes,
        unless it was started as a standby. Taking over (the row held, `become_active` not done), it refuses too."""
        self._check_may_publish(session)
        if not self._took_over:
            raise NotLeader("this controller is taking over: it does not serve the database's view yet",
                            self.leadership.url if self.leadership is not None else None)

    def _check_may_publish(self, session) -> None:
        """`check_leader` as `compose` asks it: `become_active` composes before this controller takes writes."""
        if self.leadership is not None:
            self.leadership.check(session)
        elif self._standby:
            raise NotLeader("this controller is a standby: it does not compete for the leader row yet")

    def refuse_unless_leading(self) -> None:
        """NotLeader unless this controller holds the leader row now: asked before a change touches Kafka (creates
        or alters physical topics), which no transaction can undo; its write transaction checks again."""
        if self.leadership is not None or self._standby:
            with self.session() as s:
                self.check_leader(s)

    def took_over(self) -> bool:
        """This controller takes writes (`/v1/` behind the leadership's gate): it was not started as a standby, or
        `become_active` has served the database's view and composed it since it took the leader row."""
        return self._took_over

    def role(self, leadership: Leadership | None = None) -> str:
        """What `/healthz` and `fedkafka_controller_active` tell an operator (docs/DESIGN.md §3.6): "active" once this
        controller takes writes, "taking_over" while it holds the leader row but `become_active` has not served the
        database's view yet (the gate answers 503), "standby" otherwise. `leadership`: the app's, which the gate
        reads (the controller's own is set only once its leadership thread starts)."""
        lead = leadership or self.leadership
        if not (lead.active if lead is not None else not self._standby):
            return STANDBY
        return ACTIVE if self._took_over else TAKING_OVER

    def become_active(self) -> None:
        """This controller now holds the leader row: serve the database's view, keep its proxies listed for one
        lease (they renew within a heartbeat), forget renewals of an earlier term, compose; only then take writes
        (`took_over`: until then the gate answers 503 and `check_leader` refuses)."""
        view = self._refresh_from_db()
        self._inherited = (frozenset(p.node_id for p in view.proxies), time.time() + self.settings.lease_ms / 1000)
        with self._hb_lock:
            self._leases.clear()
            self._pending.clear()
            self._pending_accepted.clear()
            self._secret_hashes.clear()
        self._predecessor_owed = True
        self.compose()
        self._took_over = True

    def stopping(self) -> bool:
        """stop() was called: the background loops and the workflow threads end."""
        return self._stop.is_set()

    def wait_stopping(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, woken early by stop(); True once the controller is stopping."""
        return self._stop.wait(timeout)

    @contextmanager
    def topology_change(self) -> Iterator[Session]:
        """A session for one change of clusters, topics, segments or security, holding this process's write lock:
        such changes run one at a time in this process (another controller on the database: leadership and
        `check_leader`, docs/DESIGN.md §3.6)."""
        with self._write_lock, self.session() as s:
            yield s

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.settings.kafka_timeout + 5)
        self.flush_heartbeats()
        self.engine.dispose()

    def _seed_view(self) -> None:
        """The version row exists exactly once, even when two controllers start together. Its first body names
        the federation: an id drawn once per database and kept by every view composed after it, so a proxy can
        tell this federation's views from another's, or from those of a database made anew at the same URL
        (docs/DESIGN.md §4.7). A database seeded before keeps the id it has ("fedkafka")."""
        with self.session() as s:
            if s.get(ViewRow, 1) is None:
                first = View(version=0, federation_id=new_federation_id())
                s.add(ViewRow(id=1, version=0, body=json.dumps(first.to_dict()), committed_at=time.time()))
                try:
                    s.commit()
                except IntegrityError:  # the other controller's row won
                    s.rollback()

    # -- the view --------------------------------------------------------------------------------
    @property
    def view(self) -> View:
        return self.publisher.view

    def _stored_view(self) -> tuple[View, float]:
        with self.session() as s:
            row = s.get_one(ViewRow, 1)
            return View.from_dict(json.loads(row.body)), row.committed_at

    def compose(self) -> View:
        """Build the view from the database; store and publish it only if something changed, or a route answered
        a version past the served one for a change it could not compose (`_new_version_owed`: reached even when
        the change left the view as it was)."""
        with self._compose_lock:
            started = time.perf_counter()
            for _ in range(20):
                with self.session() as s:
                    # read first: a row never acks more than the view read after it, unless the database lost it
                    acked = s.scalar(select(func.max(ProxyRow.applied_version))) or 0
                    stored_version = s.scalars(select(ViewRow.version).where(ViewRow.id == 1)).one()
                    current = self.publisher.view
                    if stored_version != current.version:  # another controller wrote it (or the database lost it)
                        current = self._refresh_from_db()
                    if stored_version < current.version:  # this controller holds a view the database does not
                        if self._peek_version() >= current.version:
                            continue  # another controller committed it since `stored_version` was read: read again
                        self._regressed(stored_version, current.version, "this controller holds")
                    top = self._newest_held(acked, current.version)
                    if top > stored_version:  # proxies (or this controller) hold views up to `top` the database lost:
                        freeze_planned(s)  # this view is the one they take: no planned move's partition writable
                    now = time.time()
                    listed, until = self._inherited
                    candidate = build_view(s, now, federation_id=current.federation_id,
                                           keep_listed=listed if now < until else frozenset())
                    nxt = next_version(current, candidate)  # numbered current.version + 1 = top + 1 if new
                    # proxies hold views the database lost, or a route answered a version not composed (same
                    # content then: proxies ack it, leaders stay)
                    if top > stored_version or (nxt is current and self._new_version_owed):
                        nxt = candidate.with_version(top + 1)
                    if nxt is current:
                        return current
                    self._check_may_publish(s)  # a controller that lost its row publishes no view (§3.6)
                    now = time.time()
                    body = json.dumps(nxt.to_dict(), separators=(",", ":"))
                    res = cast(CursorResult[Any], s.execute(  # an UPDATE's result: it has a rowcount
                        update(ViewRow).where(ViewRow.id == 1, ViewRow.version == stored_version)
                        .values(version=nxt.version, body=body, committed_at=now)))
                    if res.rowcount != 1:
                        s.rollback()
                        continue  # lost a compare-and-set race: re-read and compose again
                    s.commit()
                # past every version this controller answered before. Not its predecessor's (`_predecessor_owed`
                # stays): numbered before every live proxy reported, this view may be one they hold with other content
                self._new_version_owed = False
                self._committed_at[nxt.version] = now
                self.publisher.publish(nxt)
                self.metrics.view_version.set(nxt.version)
                self.metrics.proxies.set(len(nxt.proxies))
                self.metrics.compose_seconds.observe(time.perf_counter() - started)
                # the listed proxies decide partition leadership (rendezvous): a change moves leaders (§4.2)
                log.info("view %d committed (proxies %s)", nxt.version, [p.node_id for p in nxt.proxies])
                return nxt
            raise Conflict("could not commit the view: too many concurrent writers", status=503)

    def _newest_held(self, acked: int, served: int) -> int:
        """The newest view version a proxy or this controller may hold: `served`, `acked` (the newest a proxy row
        acks) or the floor (a proxy reported it applied, the database lost it). The next view is numbered one past
        it (`compose`), never a version a proxy holds with other content (docs/DESIGN.md §3 durability)."""
        return max(self._version_floor, acked, served)

    def compose_after_commit(self, what: str) -> Composed:
        """Compose the view after a write route committed change `what`: the composed view and the version a caller
        may wait for to see the change (`Composed.version`). Not composed now, the version owed (`_owe_new_version`),
        past the version served before the compose tried (read under the compose lock: a compose begun before the
        commit, holding a view without the change, has published by then; every view numbered past it holds the
        change). Also for a row the route found unchanged: it may be a change an earlier request committed but could
        not compose (the same request again), which the view served does not hold.
        The change stands whatever this compose meets, so the route answers its success: a compose failure met in
        operation (`COMPOSE_FAILURES`) is logged and the next lease round composes (`_compose_owed`); a 503 would
        tell the caller nothing was written (docs/DESIGN.md §5.1). Any other error is a bug: it propagates (500),
        the compose still owed."""
        with self._compose_lock:
            served_before = self.view.version
        try:
            composed = self.compose()
            return Composed(composed, composed.version)
        except Exception as e:
            owed = self._owe_new_version(served_before)
            if not isinstance(e, COMPOSE_FAILURES):
                raise
            log.warning("%s (committed), but the view was not composed now (%s: %s): the next lease round composes "
                        "it (the active controller's, if this one lost the leader row)", what, type(e).__name__, e)
            return Composed(None, owed)

    def _owe_new_version(self, served_before: int) -> int:
        """A compose failed after a commit: owe the next compose a new view (`_new_version_owed`: numbered even if
        the change left the view as it was) and the lease round a compose (`_compose_owed`); the version to answer,
        the number `compose` gives that view at the least (`_newest_held` + 1: past every view a proxy holds).
        Read once the compose failed, not before it tried: a floor learned meanwhile (a proxy's heartbeat reporting
        a view the database lost, docs/DESIGN.md §3.3) is passed. Under the compose lock, as the flag is set: a
        compose in flight (numbered by the floor it read) clears the flag before, not after; the next one numbers
        its view past the answer. A compose that published since `served_before` held the change: the answer may
        be that view's version, and the one more view owed is harmless."""
        with self._compose_lock:
            self._new_version_owed = True
            self._compose_owed.set()
            # not the rows' acks: the database may be failing now (a proxy acking past the view sets the floor)
            return self._newest_held(0, served_before) + 1

    def _version_served_or_owed(self) -> int:
        """The view version holding every committed change, for a route that committed nothing and composes nothing
        (`put_topic` unchanged): the one served, or the number the next view takes while a compose that failed
        after a commit is owed (`_new_version_owed`: that view comes, the served one may lack the change)."""
        with self._compose_lock:  # the flag and the view as one compose left them
            served = self.view.version
            return self._newest_held(0, served) + 1 if self._new_version_owed else served

    def _compose_if_owed(self) -> None:
        """Compose the view a write route committed a change for but could not compose (`compose_after_commit`).
        The lease round asks: of the background loops, the one that runs every fraction of a second whatever the
        federation holds (the scans compose too, but only every `scan_interval` and not without a cluster)."""
        if not self._compose_owed.is_set():
            return
        self._compose_owed.clear()  # first: a compose failing after a commit while this one runs owes one again
        try:
            self.compose()
        except Exception:
            self._compose_owed.set()
            raise

    def _regressed(self, db_version: int, seen: int, who: str) -> None:
        """The database holds view `db_version` while `who` holds view `seen` (newer): it lost commits. Said loudly
        (an ERROR line, `fedkafka_controller_db_regressed`, /healthz and /v1/status), and no new workflow run
        starts in this process from now on (docs/DESIGN.md §3.3, "Lost commits")."""
        message = (f"the config database holds view {db_version} but {who} view {seen}: it lost its last commits "
                   f"(a failover to an asynchronous replica?)")
        before = self.db_regression
        if before is None or seen > before["seen_version"]:
            log.error("%s; the next view is numbered %d, moves whose targets took writes it does not know are "
                      "held, and no new workflow starts until this controller is restarted", message, seen + 1)
            self.db_regression = {"db_version": db_version, "seen_version": seen, "message": message,
                                  "at": time.time()}
            self.metrics.db_regressed.set(1)

    def _refresh_from_db(self) -> View:
        view, committed_at = self._stored_view()
        self._committed_at[view.version] = committed_at
        self.publisher.publish(view)
        return view if view.version >= self.publisher.view.version else self.publisher.view

    # -- clusters --------------------------------------------------------------------------------
    def list_clusters(self) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = list(s.scalars(select(ClusterRow).order_by(ClusterRow.ordinal, ClusterRow.id)))
            coord = coordination_cluster(rows)
            return [_cluster_dict(c, coord) for c in rows]

    def get_cluster(self, cluster_id: str) -> dict[str, Any]:
        for c in self.list_clusters():
            if c["id"] == cluster_id:
                return c
        raise NotFound(f"unknown cluster {cluster_id!r}")

    def put_cluster(self, cluster_id: str, bootstrap: str, coordination: bool | None) -> tuple[dict, bool]:
        if not CLUSTER_ID.fullmatch(cluster_id):
            raise Invalid(f"cluster id {cluster_id!r} must be 1-64 letters, digits, '_' or '-'")
        if not BOOTSTRAP.fullmatch(bootstrap) or any(int(hp.rsplit(":", 1)[1]) > 65535 for hp in bootstrap.split(",")):
            raise Invalid(f"bootstrap {bootstrap!r} must be HOST:PORT[,HOST:PORT...]")
        with self._write_lock:
            before = self._cluster_or_none(cluster_id)
            with self.session() as s:
                self.check_leader(s)  # a controller that lost its row registers no cluster (§3.6)
                row = s.get(ClusterRow, cluster_id)
                if row is None:
                    ordinal = (s.scalar(select(func.max(ClusterRow.ordinal))) or 0) + 1
                    row = ClusterRow(id=cluster_id, ordinal=ordinal, bootstrap=bootstrap, state="active",
                                     coordination=False, reachable=True)
                    s.add(row)
                elif row.state == ClusterState.REMOVED:
                    raise Conflict(f"cluster {cluster_id} was removed; to use its Kafka again, first delete there the "
                                   "leftover physical topics of deleted topics (fedkafka stopped deleting them when "
                                   "the cluster was removed; a topic is not created over one holding records), then "
                                   "register it under a new id")
                if bootstrap != row.bootstrap:
                    row.bootstrap = bootstrap
                if coordination:
                    s.execute(update(ClusterRow).where(ClusterRow.id != cluster_id).values(coordination=False))
                    row.coordination = True
                elif coordination is False and row.coordination:
                    row.coordination = False
                if before is None or before["bootstrap"] != bootstrap:
                    scan = self.kafka.scan(cluster_id, bootstrap)  # the view says at once whether it answers
                    row.reachable, row.last_error = scan.reachable, scan.error
                s.commit()
            self.compose_after_commit(f"cluster {cluster_id} registered or changed")
            after = self.get_cluster(cluster_id)
        return after, _public(before) != _public(after)

    def set_cluster_state(self, cluster_id: str, state: str) -> tuple[dict, bool]:
        try:
            new = ClusterState(state)
        except ValueError:
            raise Invalid(f"state must be one of {', '.join(s.value for s in ClusterState)}, got {state!r}") from None
        with self.topology_change() as s:
            row = s.get(ClusterRow, cluster_id)
            if row is None:
                raise NotFound(f"unknown cluster {cluster_id!r}")
            old = ClusterState(row.state)
            if old == new:
                return self.get_cluster(cluster_id), False
            back_to_active = old == ClusterState.READ_ONLY and new == ClusterState.ACTIVE
            if STATE_ORDER.index(new) < STATE_ORDER.index(old) and not back_to_active:
                raise Conflict(f"cluster {cluster_id} cannot go from {old} back to {new}")
            if new == ClusterState.REMOVED:
                used = s.scalar(select(func.count()).select_from(SegmentRow).where(SegmentRow.cluster == cluster_id))
                if used:
                    raise Conflict(f"cluster {cluster_id} still holds {used} segments; decommission it first")
            # a draining cluster never goes back to active, and a held move's publish needs an active target
            if new in (ClusterState.DRAINING, ClusterState.REMOVED) and (moving := unfinished_moves_to(s, cluster_id)):
                raise Conflict(f"cluster {cluster_id} is the target of {len(moving)} unfinished moves "
                               f"({moves_named(moving)}); a held one is repaired first (docs/OPERATIONS.md, "
                               f"\"A held move\"), the others settle by themselves")
            if new == ClusterState.REMOVED and coordination_cluster(list(s.scalars(select(ClusterRow)))) == cluster_id \
                    and s.scalar(select(func.count()).select_from(TopicRow)):
                raise Conflict(f"cluster {cluster_id} is the coordination cluster and holds the groups' offsets")
            row.state = new.value
            if back_to_active:
                row.given_up = None  # taking writes again: a failover's mark no longer holds (§9.2)
            elif old == ClusterState.ACTIVE and new == ClusterState.READ_ONLY:
                row.given_up = False  # a decommission's read_only step (or the operator's) gives nothing up (§9.2)
            self.check_leader(s)  # a workflow of a controller that lost its row changes no state (§3.6)
            s.commit()
        self.compose_after_commit(f"cluster {cluster_id} set {new.value}")
        return self.get_cluster(cluster_id), True

    def give_up_cluster(self, cluster_id: str) -> bool:
        """A failover's first step: the cluster marked given up, and read_only if it was active (no new partition or
        move targets it), in one commit, so no view says read_only without the mark. A decommission's read_only
        gives nothing up; the view's mark is what tells the two apart (docs/DESIGN.md §9.2). A removed cluster holds
        no segment and is left as it is, and so is one read_only or draining that answers: a failover is for a dead
        cluster, and a decommission moved its writes off cleanly (`gives_up_nothing`). Whether anything changed."""
        with self.topology_change() as s:
            row = s.get(ClusterRow, cluster_id)
            if row is None:
                raise NotFound(f"unknown cluster {cluster_id!r}")
            if gives_up_nothing(row):
                return False
            if row.state == ClusterState.ACTIVE:
                row.state = ClusterState.READ_ONLY.value
            row.given_up = True
            self.check_leader(s)  # a workflow of a controller that lost its row changes nothing (§3.6)
            s.commit()
        self.compose_after_commit(f"cluster {cluster_id} given up by a failover")
        return True

    def _cluster_or_none(self, cluster_id: str) -> dict | None:
        try:
            return self.get_cluster(cluster_id)
        except NotFound:
            return None

    # -- topics ----------------------------------------------------------------------------------
    def list_topics(self) -> list[dict[str, Any]]:
        with self.session() as s:
            return [_topic_summary(t) for t in s.scalars(select(TopicRow).order_by(TopicRow.name))]

    def get_topic(self, name: str) -> dict[str, Any]:
        with self.session() as s:
            row = s.get(TopicRow, name)
            if row is None:
                raise NotFound(f"unknown topic {name!r}")
            summary = _topic_summary(row)
        topic = self.view.topics.get(name)
        chains = [] if topic is None else [
            {"partition": p, "leader_epoch": c.leader_epoch, "frozen": c.frozen,
             "segments": [{"cluster": g.cluster, "topic": g.topic, "partition": g.partition, "phys_start": g.phys_start,
                           "phys_end": g.phys_end, "logical_base": g.logical_base, "active": g.active,
                           **self._scanned(g)} for g in c.segments]} for p, c in enumerate(topic.partitions)]
        return {**summary, "chains": chains}

    def _scanned(self, seg) -> dict[str, int]:
        """Last scanned physical log start/end of an active segment, and the logical end they imply."""
        found = self.log_offsets.get((seg.cluster, seg.topic, seg.partition)) if seg.active else None
        if found is None:
            return {}
        return {"physical_log_start": found[0], "physical_log_end": found[1],
                "logical_end": seg.to_logical(max(found[1], seg.phys_start))}

    def put_topic(self, name: str, partitions: int, placement: str, config: dict[str, str],
                  create_only: bool = False) -> tuple[dict, bool, int]:
        """Create the topic, or grow it and set its config. `create_only`: an existing topic is a conflict
        (Kafka's CreateTopics), decided under the write lock so two creations of one name cannot both win.
        Answers the topic, whether it changed and the view version holding it (`Composed.version`)."""
        check_topic(name, partitions, placement, config)
        with self._write_lock:
            self.refuse_unless_leading()  # before Kafka: a controller that lost its row creates nothing there (§3.6)
            new, existing, clusters, used = self._topic_as_stored(name)
            if create_only and existing is not None:
                raise Conflict(f"Topic '{name}' already exists.", kafka_error="TOPIC_ALREADY_EXISTS")
            if existing is not None and partitions < existing[0]:
                raise Conflict(f"topic {name} has {existing[0]} partitions; logical partitions can only grow "
                               f"(shrinking to {partitions} would re-hash keys and strand records)",
                               kafka_error="INVALID_PARTITIONS")
            if existing == (partitions, config):
                return self.get_topic(name), False, self._version_served_or_owed()
            coord = coordination_cluster(clusters)
            targets = [c for c in clusters if c.state == ClusterState.ACTIVE and c.reachable]
            if coord is None or not targets:
                raise Conflict("no active, reachable cluster: register a cluster first")
            have = existing[0] if existing else 0
            slots = place(partitions - have, [c.id for c in targets], placement, first=have, existing=used)
            self._ensure_physical_topics(name, partitions, config, existing, {c.id: c.bootstrap for c in clusters},
                                         coord, used, slots)
            self._write_topic_rows(name, partitions, placement, config, new, have, slots)
            composed = self.compose_after_commit(f"topic {name} {'created' if new else 'changed'}")
            return self.get_topic(name), True, composed.version

    def _topic_as_stored(self, name: str) -> tuple[bool, tuple[int, dict] | None, list[ClusterRow], list[Slot]]:
        """(whether the topic is new, its (partitions, config) or None, the clusters in registration order, every
        physical partition ever claimed for it). A new one is refused while a deleted topic's physical topics of the
        name are left (§4.5)."""
        with self.session() as s:
            row = s.get(TopicRow, name)
            if row is None:  # a deleted topic's physical topics left behind would serve its records (§4.5)
                deletions.refuse_pending(s, name)
            existing = None if row is None else (row.partitions, json.loads(row.config_json))
            clusters = list(s.scalars(select(ClusterRow).order_by(ClusterRow.ordinal, ClusterRow.id)))
            # every physical partition ever claimed: dropped segments' records stay, moves' targets come
            used = [Slot(cluster, i) for (cluster, _), owners in claims.load(s, name).items() for i in owners]
        return row is None, existing, clusters, used

    def validate_new_partitions(self, name: str, partitions: int, placement: str) -> None:
        """What `put_topic` checks on Kafka before it creates anything, for a validate-only CreateTopics or
        CreatePartitions growing the topic to `partitions`: the same placement, and the same refusals (a leftover
        physical topic with records, one that lost its data), creating nothing (docs/DESIGN.md §4.13)."""
        _new, existing, clusters, used = self._topic_as_stored(name)
        have = existing[0] if existing else 0
        targets = [c.id for c in clusters if c.state == ClusterState.ACTIVE and c.reachable]
        if not targets or partitions <= have:  # refused as the change is, by the caller
            return
        slots = place(partitions - have, targets, placement, first=have, existing=used)
        try:
            self._refuse_unsafe_targets(name, existing is not None, {c.id: c.bootstrap for c in clusters}, used,
                                        slots)
        except KafkaUnavailable as e:
            raise Unavailable(f"{e}; nothing was changed, retry when it is back") from None

    def _refuse_unsafe_targets(self, name: str, growth: bool, bootstrap: dict[str, str], used: list[Slot],
                               slots: list[Slot]) -> None:
        """Refuses new identity segments `slots` of topic `name` on a physical topic that lost its data, or on one
        holding records no partition of the topic claims (`used`): an identity segment starts at offset 0, never on
        another's records (DESIGN §4.13)."""
        targets = physical_partition_counts(slots)
        self.refuse_lost([(cluster_id, name) for cluster_id in targets], bootstrap)
        claimed: dict[str, set[int]] = {}
        for slot in used:
            claimed.setdefault(slot.cluster, set()).add(slot.partition)
        leftovers.refuse_written(self.kafka, name, targets, claimed, bootstrap,
                                 "POLICY_VIOLATION" if growth else "TOPIC_ALREADY_EXISTS")

    def _ensure_physical_topics(self, name: str, partitions: int, config: dict[str, str],
                                existing: tuple[int, dict] | None, bootstrap: dict[str, str], coord: str,
                                used: list[Slot], slots: list[Slot]) -> None:
        """Kafka first, database second: a failure here leaves nothing half-written in the view."""
        try:
            needed = physical_partition_counts([*used, *slots])
            targets = physical_partition_counts(slots)
            self._refuse_unsafe_targets(name, existing is not None, bootstrap, used, slots)
            for cluster_id in targets:
                self.kafka.ensure_topic(cluster_id, bootstrap[cluster_id], name, needed[cluster_id], config)
            self.kafka.ensure_topic(coord, bootstrap[coord], shadow_topic(name), partitions)
            if existing and existing[1] != config:
                dropped = [k for k in existing[1] if k not in config]
                for cluster_id in needed:
                    self.kafka.alter_topic_config(cluster_id, bootstrap[cluster_id], name, config, dropped)
        except KafkaRefused as e:
            raise Invalid(str(e), kafka_error=e.code) from None
        except KafkaUnavailable as e:
            raise Unavailable(f"{e}; nothing was changed, retry when it is back") from None

    def _write_topic_rows(self, name: str, partitions: int, placement: str, config: dict[str, str], new: bool,
                          have: int, slots: list[Slot]) -> None:
        """The topic row and a chain of one segment for each added partition `have`, `have + 1`, ...; committed
        only while this controller leads (§3.6)."""
        with self.session() as s:
            self.check_leader(s)
            if new:
                s.add(TopicRow(name=name, topic_id=uuid.uuid4().hex, partitions=partitions, placement=placement,
                               config_json=json.dumps(config, sort_keys=True)))
                s.flush()
            else:
                s.execute(update(TopicRow).where(TopicRow.name == name).values(
                    partitions=partitions, config_json=json.dumps(config, sort_keys=True)))
            for i, chain in enumerate(identity_chains(name, slots)):
                p = have + i
                seg = chain.active
                try:
                    claims.claim(s, seg.cluster, seg.topic, seg.partition, name, p)
                except ClaimTaken:  # a move claimed it since it was read
                    raise Conflict(f"topic {name} was changed concurrently; retry") from None
                s.add(ChainRow(topic=name, partition=p, leader_epoch=chain.leader_epoch, frozen=False))
                s.add(SegmentRow(topic=name, partition=p, seq=0, cluster=seg.cluster, physical_topic=seg.topic,
                                 physical_partition=seg.partition, phys_start=0, phys_end=None, logical_base=0))
            try:
                s.commit()
            except IntegrityError:
                raise Conflict(f"topic {name} was changed concurrently; retry") from None

    def delete_topic(self, name: str, topic_id: str | None = None) -> int:
        """Delete the topic, its chains and claims, and roll back its unfinished moves in the same transaction (a
        frozen chain goes with the topic; a move's seal, even one recorded, is of a topic no longer there): a move
        never goes on into a topic created again under the name (docs/DESIGN.md §4.1). The same transaction records
        its physical topics as pending deletions; they are deleted now, on the clusters that answer, and by the scans
        after (`deletions`): the name cannot be created again before all are gone (docs/DESIGN.md §4.5).
        `topic_id` (32 hex digits), when given, is the topic the caller means: a topic of the name with another id
        (created again since) is not deleted, NotFound with UNKNOWN_TOPIC_ID; checked in the deletion's transaction.
        The physical topics' Kafka topic ids are asked of the clusters the last scan reached before that transaction,
        and recorded only if the topic read in it is the one read before asking (its deletions go by id, §5.8); the
        transaction commits only while this controller leads (§3.6). Answers the view version without the topic
        (`Composed.version`)."""
        with self._write_lock:
            with self.session() as s:
                incarnation, physical, clusters = self._deletion_plan(s, name, topic_id)
            reachable = {c.id: c.bootstrap for c in clusters if c.reachable}
            kafka_ids = deletions.learn_ids(self.kafka, reachable, physical)
            with self.session() as s:
                self.check_leader(s)
                again, physical, clusters = self._deletion_plan(s, name, topic_id)
                if again != incarnation:  # another topic of the name meanwhile: its ids are learned at the attempts
                    kafka_ids = {}
                self._roll_back_moves(s, name)
                for table in (SegmentRow, ChainRow, PhysicalPartitionRow):
                    s.execute(delete(table).where(table.topic == name))
                s.delete(s.get(TopicRow, name))
                deletions.record(s, name, physical, kafka_ids)
                s.commit()
            self._forget_ends(name)
            composed = self.compose_after_commit(f"topic {name} deleted")
            # now on the clusters the last scan reached (one that did not costs no timeout here: the scans retry);
            # not composed, the view served still routes to them: the scans delete them after their compose
            if composed.view is not None:
                self.deletions.attempt({c.id: c.bootstrap for c in clusters if c.reachable}, topic=name)
        return composed.version

    @staticmethod
    def _deletion_plan(s: Session, name: str, topic_id: str | None) -> tuple[
            str, set[tuple[str, str]], list[ClusterRow]]:
        """The topic's id, every physical topic its deletion leaves to delete, and the clusters; NotFound if there
        is no topic `name` (of id `topic_id`, when given)."""
        row = s.get(TopicRow, name)
        if topic_id is not None and (row is None or row.topic_id != topic_id):
            raise NotFound(f"unknown topic id {topic_id} (no topic {name!r} of that id)",
                           kafka_error="UNKNOWN_TOPIC_ID")
        if row is None:
            raise NotFound(f"unknown topic {name!r}")
        clusters = list(s.scalars(select(ClusterRow)))
        # every physical topic it ever claimed: a drained cluster's holds records no segment names (a removed
        # cluster may be switched off)
        removed = {c.id for c in clusters if c.state == ClusterState.REMOVED}
        segments = s.scalars(select(SegmentRow).where(SegmentRow.topic == name))
        physical = {(g.cluster, g.physical_topic) for g in segments}
        physical |= {(c, t) for c, t in claims.load(s, name) if c not in removed}
        # its shadow topic (its groups' commits) wherever it may be: on the coordination cluster, and on any that held
        # the groups before (a move leaves them there) or was a move's target; the database does not know which, so
        # every cluster not removed (one without it confirms at once, docs/DESIGN.md §10.3)
        physical |= {(c.id, shadow_topic(name)) for c in clusters if c.id not in removed}
        return row.topic_id, physical, clusters

    def _forget_ends(self, topic: str) -> None:
        """Forget the log ends the scans read of the physical partitions of `topic` (deleted): a topic created again
        under the name has physical partitions of the same names, and a failover before a scan read them would seal
        them at the deleted topic's ends (`Mover.known_end`), far above their own (docs/DESIGN.md §9.1). The
        physical topics carry the logical topic's name. Called under the write lock, which `_scan_offsets` takes to
        record what it read, so a scan that read before the deletion records nothing after it."""
        for ends in (self.log_offsets, self._stored_ends):
            for key in [key for key in ends if key[1] == topic]:
                del ends[key]

    def _roll_back_moves(self, s: Session, name: str) -> None:
        now = time.time()
        for move in s.scalars(select(MoveRow).where(MoveRow.topic == name, MoveRow.state.not_in(MOVE_FINISHED))):
            log.warning("move %d of %s/%s (%s) rolled back: topic deleted", move.id, name, move.partition, move.state)
            self.metrics.move_left(move.state, move.updated_at)
            move.state, move.error, move.updated_at = "rolled_back", "topic deleted during the move", now

    # -- proxies and name service ------------------------------------------------------------------
    def register_proxy(self, instance_id: str, host: str, port: int, role: str, pool: str,
                       listeners: list[tuple[str, str, int]] | None = None, worker: int = 0,
                       member_secret: bool = False, presented: str | None = None,
                       predecessor: str | None = None) -> dict[str, Any]:
        """Register (again) a proxy, or worker `worker` of a proxy run with --workers N: every worker of a node
        shares its node id (clients see one broker) and has a row of its own, `member_id`, which it heartbeats
        as: its own lease, fence and applied version, so a move waits for each worker (docs/DESIGN.md §4.10).
        `member_secret`: the proxy presents a member secret on its heartbeats: require it (answered); a proxy before
        member secrets does not ask, and renews without one (§5.2). `presented`: the proxy's own secret (chosen once
        per process; drawn here if none: a proxy before proxy-chosen secrets), the one required, and a live member's
        is required to register it again (`_refuse_live_member`): a retry after a lost answer is taken at once.
        `predecessor`: the secrets of the member's previous processes, which have exited (`_record_predecessor`),
        joined by PREDECESSOR_SEPARATOR."""
        if not instance_id or not host or not 0 < port < 65536 or not pool:
            raise Invalid("instance_id, host, pool must be non-empty and port in 1..65535")
        if not 0 <= worker <= MAX_WORKER:
            raise Invalid(f"worker must be in 0..{MAX_WORKER}, got {worker}")
        if "/" in instance_id:  # reserved for the rows of workers i > 0 (host:port/w<i>)
            raise Invalid(f"instance_id must not contain '/', got {instance_id!r}")
        listeners = [(str(p), str(h), int(n)) for p, h, n in listeners or ()]
        if any(p not in SECURITY_PROTOCOLS or not h or not 0 < n < 65536 for p, h, n in listeners):
            raise Invalid(f"listener protocols are {', '.join(SECURITY_PROTOCOLS)}, with a host and a port")
        try:
            ProxyRole(role)
        except ValueError:
            raise Invalid(f"role must be pproxy, cproxy or both, got {role!r}") from None
        now = time.time()
        expires, fence = now + self.settings.lease_ms / 1000, now + self.settings.fence_ms / 1000
        claimed = _ProxyIdentity(host, port, role, pool, tuple(sorted(listeners)))
        secret = _member_secret(presented) if member_secret else None  # its heartbeats present it (§5.2)
        secret_hash = _secret_hash(secret) if secret is not None else None
        member_id, node_id = self._register_member(instance_id, worker, claimed,
                                                   (presented, _predecessor_secrets(predecessor)),
                                                   (listeners, (expires, fence), secret_hash), now)
        self.compose_after_commit(f"proxy member {member_id} ({instance_id!r}, worker {worker}) registered")
        return {"node_id": node_id, "member_id": member_id, **({"member_secret": secret} if secret else {}),
                "worker": worker, "lease_ms": self.settings.lease_ms,
                "fence_ms": self.settings.fence_ms, "producer_id_block": self.producer_ids.allocate().to_dict()}

    def _register_member(self, instance_id: str, worker: int, claimed: _ProxyIdentity,
                         secrets_shown: tuple[str | None, tuple[str, ...]],
                         written: tuple[list[tuple[str, str, int]], tuple[float, float], str | None],
                         now: float) -> tuple[int, int]:
        """Register member `worker` of proxy `instance_id` in one transaction: (member id, node id). `written`: its
        listeners, lease and fence expiries, secret hash. A transaction that loses to a concurrent one is tried again
        whole, from a new read: two registrations making the same row at once (IntegrityError: on PostgreSQL a row
        that does not exist yet locks nothing, so both INSERT it and the second fails at its flush or commit; the
        row exists now), a PostgreSQL deadlock or serialization failure, SQLite's write lock not taken in time
        (`_lost_race`). Unavailable (503: the proxy retries) if every try lost, or for any other OperationalError."""
        listeners, lease, secret_hash = written
        for _ in range(REGISTRATION_TRIES):
            try:
                with self.session() as s:
                    # the member row is read, decided on and written back under the write lock (SQLite) or its row
                    # lock (PostgreSQL: `_proxy_row`): no renewal of the previous process commits in between (§4.9 F4)
                    db.begin_writing(s)
                    self.check_leader(s)  # the row's role, pool and listeners go into the view (§3.6)
                    self._refuse_takeover(s, instance_id, claimed, now)
                    # worker i > 0: the node's own row (worker 0's) names the node id, made now if worker 0 has not
                    # registered yet (no lease, no fence: neither listed nor counted until worker 0 registers); it
                    # is locked before the worker's own row, as a heartbeat batch locks rows (`flush_heartbeats`)
                    node_of = self._proxy_row(s, instance_id).node_id if worker else None
                    row = self._proxy_row(s, f"{instance_id}/w{worker}" if worker else instance_id)
                    self._refuse_live_member(row, secrets_shown[0], now)
                    self._record_predecessor(row, secrets_shown, now)
                    return self._commit_registration(s, row, claimed, listeners, (worker, node_of), lease,
                                                     secret_hash)
            except IntegrityError as e:
                lost: DBAPIError = e
            except OperationalError as e:
                if not _lost_race(e):
                    raise Unavailable(f"proxy {instance_id!r} worker {worker} not registered: database write failed: "
                                      f"{type(e.orig).__name__}; retry") from None
                lost = e
            log.info("registration of proxy %r worker %d lost a race with another transaction (%s): trying again",
                     instance_id, worker, type(lost.orig).__name__)
        raise Unavailable(f"proxy {instance_id!r} worker {worker} not registered: {REGISTRATION_TRIES} tries each lost "
                          f"a race with concurrent writes of its rows ({type(lost.orig).__name__}); retry")

    def _commit_registration(self, s: Session, row: ProxyRow, claimed: _ProxyIdentity,
                             listeners: list[tuple[str, str, int]], worker: tuple[int, int | None],
                             lease: tuple[float, float], secret_hash: str | None) -> tuple[int, int]:
        """Write a registration to member `row` and commit it, then cache its lease, fence, node id and secret hash
        for its heartbeats: (member id, node id). `worker`: its index and the node id of its node's row (None for
        worker 0); `lease`: the lease's and the fence's new expiry."""
        expires, fence = lease
        row.host, row.port, row.role, row.pool = claimed.host, claimed.port, claimed.role, claimed.pool
        row.lease_expires = expires
        row.fence_expires = max(row.fence_expires or 0.0, fence)  # never earlier than one already granted
        row.listeners_json = json.dumps(listeners)
        row.worker, row.worker_of = worker
        row.secret_hash = secret_hash  # None: an old proxy's, which sends no secret (no lease otherwise)
        s.commit()
        member_id, node_id = row.node_id, row.node
        with self._hb_lock:
            self._leases[member_id] = (expires, row.fence_expires, row.applied_version)
            self._node_of[member_id] = node_id
            if secret_hash is None:
                self._secret_hashes.pop(member_id, None)
            else:
                self._secret_hashes[member_id] = secret_hash
        return member_id, node_id

    def check_member_secret(self, member_id: int, secret: str | None) -> str | None:
        """Forbidden unless `secret` is the one member `member_id`'s latest registration was given: every proxy
        host holds the service token, so the token alone must not renew another proxy's lease (keeping a dead
        proxy listed) or ack views for it (a move would go on while that proxy still writes with an older view,
        docs/DESIGN.md §5.2). Checked against this controller's copy of the hash, else the database's (a member
        registered through another controller, or before a failover). A member without a secret (its holder presents
        none) refuses a caller presenting one: a previous process, superseded by a registration without a secret
        (§4.9 F4). NotFound for an unknown member: register.
        Answers the hash accepted (None: a member without a secret): the renewal is written only while the row
        still holds it (`renew_lease`), as a registration or deregistration may commit between the two steps."""
        given = _secret_hash(secret or "")
        with self._hb_lock:
            cached = self._secret_hashes.get(member_id)
        if cached is not None and hmac.compare_digest(cached, given):
            return cached
        with self.session() as s:
            row = s.get(ProxyRow, member_id)
            stored = row.secret_hash if row is not None else None
        if row is None:
            raise NotFound(f"proxy {member_id} is not registered: register again")
        if stored is None:  # registered by a proxy (or through a controller) before member secrets (§5.2) ...
            if secret:  # ... which presents none: a secret is a previous holder's, superseded by that registration
                raise Forbidden(f"member {member_id}: registered again since without a member secret: the secret "
                                f"presented ({MEMBER_SECRET_HEADER}) is a previous registration's: register again")
            return None
        if not secret or not hmac.compare_digest(stored, given):
            raise _wrong_secret(member_id)
        with self._hb_lock:
            self._secret_hashes[member_id] = stored
        return stored

    @staticmethod
    def _refuse_takeover(s: Session, instance_id: str, claimed: _ProxyIdentity, now: float) -> None:
        """Conflict if a member (any worker) of proxy `instance_id` holds a live lease under another address,
        listeners, role or pool: the service token every proxy host holds must not re-point a live proxy's clients
        or move it between pools (docs/DESIGN.md §11). The same identity registers again at once (a restart); any
        once every such lease has run out (a proxy that moved to another host)."""
        node = s.scalar(select(ProxyRow).where(ProxyRow.instance_id == instance_id).with_for_update())
        if node is None:
            return
        live = s.scalars(select(ProxyRow).where(or_(ProxyRow.node_id == node.node_id,
                                                    ProxyRow.worker_of == node.node_id),
                                                ProxyRow.lease_expires > now, ProxyRow.role != ""))
        held = [m for m in live if _ProxyIdentity.of(m) != claimed]
        if held:
            until = max(m.lease_expires for m in held)
            was = held[0]
            raise Conflict(
                f"proxy {instance_id!r} is registered at {was.host}:{was.port} (pool {was.pool!r}, role {was.role}) "
                f"with a live lease until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))} "
                f"({until - now:.1f} s from now, longer while it heartbeats): a registration that changes its "
                "address, listeners, pool or role is refused while the lease is live; register once it has run out")

    @staticmethod
    def _refuse_live_member(row: ProxyRow, presented: str | None, now: float) -> None:
        """Conflict if member `row` holds a live lease and a member secret and `presented` is not that secret: the
        service token alone must not take over a live member (a fresh secret, then fake acks and renewals until the
        real proxy's next registration takes it back, docs/DESIGN.md §5.2). Like KRaft's DUPLICATE_BROKER_REGISTRATION:
        the same process registers again with its secret (a 403/404 race, a registration whose answer it lost); a
        new one (a restart: its own secret) once the lease has run out. A member without a secret (registered by a
        proxy before member secrets) is taken as before."""
        if row.secret_hash is None or not row.role or row.lease_expires <= now:
            return
        if presented and hmac.compare_digest(row.secret_hash, _secret_hash(presented)):
            return
        until = row.lease_expires
        raise Conflict(
            f"member {row.node_id} ({row.instance_id!r}) is registered with a member secret and a live lease until "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))} ({until - now:.1f} s from now, longer while "
            f"it heartbeats): a registration that does not present its secret ({MEMBER_SECRET_HEADER}) is refused "
            "while the lease is live; a restarted proxy registers once it has run out",
            kafka_error=DUPLICATE_REGISTRATION)

    @staticmethod
    def _record_predecessor(row: ProxyRow, secrets_shown: tuple[str | None, tuple[str, ...]], now: float) -> None:
        """A registration by another process than the one holding member `row` (it does not present the row's
        secret: a restart, a proxy moved to another host, another token holder once the lease ran out; or the row has
        no secret, so no process can show it is the same) takes the member over while the previous process may
        still produce: cut off from the controllers for longer than a lease, it keeps its own deadline, at most the
        row's fence (F1, F2). Record that fence: a move counts the member as acked only once it and the grace have
        passed, whatever the new process acks (`Mover.await_version`, docs/DESIGN.md §4.9, F4). A row whose fence
        and grace have passed (never registered, fenced, or deregistered more than the grace ago) leaves nothing.
        `secrets_shown`: the registration's own secret, and its predecessors' (any one vouches: a restart that
        exited before its registration committed leaves the row holder's among them): a worker's parent (the only
        other holder of the secret it drew for that worker) passes it on only once it saw that process exit, and a
        proxy reads them beside its view cache only once it took the very lock (same boot, same inode) those
        processes held until their exit (§4.9 F4). Such a process sends nothing more, though a write it sent just
        before may still be appended within the grace (§4.1): its fence is recorded as ending now at the latest, so
        a move waits at most the grace (§4.10)."""
        if not row.role or row.fence_expires + FENCE_GRACE_S <= now:
            return
        own, predecessors = secrets_shown
        if _holds_secret(row, own):
            return  # the same process again: it drained before it acks (F3)
        exited = any(_holds_secret(row, predecessor) for predecessor in predecessors)
        fence = min(row.fence_expires, now) if exited else row.fence_expires
        row.predecessor_fence_expires = max(row.predecessor_fence_expires or 0.0, fence)
        log.log(logging.INFO if exited else logging.WARNING,
                "member %d (%r) taken over by a new process while its previous one %s: moves count it as acked only "
                "%.0f s from now", row.node_id, row.instance_id, _previous_process(row, exited, now),
                row.predecessor_fence_expires + FENCE_GRACE_S - now)

    @staticmethod
    def _proxy_row(s, instance_id: str) -> ProxyRow:
        """The row of member `instance_id`, locked until the session ends (PostgreSQL; SQLite: `db.begin_writing`),
        made now if there is none."""
        row = s.scalar(select(ProxyRow).where(ProxyRow.instance_id == instance_id).with_for_update())
        if row is None:
            row = ProxyRow(instance_id=instance_id, host="", port=0, role="", pool="", lease_expires=0.0,
                           fence_expires=0.0, applied_version=0, load_json="{}", listeners_json="[]", worker=0)
            s.add(row)
            s.flush()  # its node id, which a worker row names
        return row

    def _renewed(self, member_id: int) -> dict[str, Any]:
        node_id = self._node_of.get(member_id, member_id)
        if self._version_floor > self.view.version:
            self.compose()  # it holds a view the database lost: number the next one past it
        if node_id not in self.view.draining and all(p.node_id != node_id for p in self.view.proxies):
            self.compose()  # its lease had run out (dropped from the view) but not its fence: list it again
        return {"lease_ms": self.settings.lease_ms, "fence_ms": self.settings.fence_ms,
                "view_version": self.view.version}

    def _countable(self, reported: int) -> int:
        """The applied version a heartbeat may record: at most the newest view in the database. A proxy that
        reports a newer one holds views the database lost (SQLite or a PostgreSQL replica that dropped its
        last commits, docs/DESIGN.md §3): counted, a move frozen at a reused version would take it as acked.
        Not counted (0: the row keeps what it has), and the next view is composed past it."""
        if reported <= self.view.version:
            return reported
        with self.session() as s:  # another controller on the database may have composed it
            stored = s.scalar(select(ViewRow.version).where(ViewRow.id == 1)) or 0
        if reported <= stored:
            return reported
        if reported > MAX_REPORTED_VERSION:
            log.error("a proxy reported applied view %d, above %d (half the version column's bound): refused",
                      reported, MAX_REPORTED_VERSION)
            raise Invalid(f"applied_version {reported} is above {MAX_REPORTED_VERSION}: no controller composed it")
        if reported > self._version_floor:
            self._regressed(stored, reported, "a proxy applied")
            with self._hb_lock:
                self._version_floor = max(self._version_floor, reported)
        return 0

    def renew_lease(self, node_id: int, applied_version: int, load: dict,
                    accepted: str | None) -> dict[str, Any] | None:
        """Heartbeat of a proxy this controller knows is alive. None: ask `heartbeat` (the database).

        Answered only once the renewal is committed: every controller on the database (a move's ack wait)
        must see at least the lease and fence a proxy was told it holds. Renewals are written in batches:
        whoever writes takes every renewal waiting, so concurrent heartbeats share one transaction.

        Renewed only while the proxy's fence has not passed: until then every move counted it as writing, so
        it may go on with the view it has (docs/DESIGN.md §4.9); after it, it must register again.

        `accepted`: the secret hash the heartbeat was accepted with (`check_member_secret`). The write holds only
        while the row still holds it and its fence (`_write_renewal`): a takeover or a deregistration committed
        since the check refuses it (Forbidden, NotFound), never answered renewed."""
        applied_version = self._countable(applied_version)
        now = time.time()
        with self._hb_lock:
            known = self._leases.get(node_id)
            if known is None or known[1] <= now:
                return None
            if node_id in self._pending and self._pending_accepted.get(node_id, ANY_SECRET) != accepted:
                return None  # another process's renewal of the member waits: this one is written on its own
            if applied_version > known[2] and applied_version in self._committed_at:
                self.metrics.apply_seconds.observe(max(0.0, now - self._committed_at[applied_version]))
            expires, fence = now + self.settings.lease_ms / 1000, now + self.settings.fence_ms / 1000
            # `_leases` learns it only once written (flush_heartbeats): a renewal whose write failed must not
            # let a later heartbeat pass this check after the fence in the database ran out
            waiting = self._pending.get(node_id)
            applied = max(known[2], applied_version, waiting.applied if waiting is not None else 0)
            self._pending[node_id] = Renewal(expires, fence, applied, load, known[1])
            self._pending_accepted[node_id] = accepted
            self._renewals += 1
            ticket = self._renewals
        with self._flush_lock:
            if self._durable < ticket:
                try:
                    self.flush_heartbeats()
                except SQLAlchemyError as e:
                    raise Unavailable(f"lease of proxy {node_id} not renewed: database write failed: "
                                      f"{type(e).__name__}") from None
        self._raise_if_refused(node_id, accepted, ticket)
        if time.time() - now > LATE_RENEWAL_S:
            raise Unavailable(f"lease of proxy {node_id} not renewed: its write took longer than {LATE_RENEWAL_S} s")
        return self._renewed(node_id)

    def live_leases(self) -> list[tuple[float, int]]:
        """(lease expiry, applied version) of each proxy whose lease this controller knows to be running."""
        now = time.time()
        with self._hb_lock:
            return [(expires, applied) for expires, _fence, applied in self._leases.values() if expires > now]

    def heartbeat(self, node_id: int, applied_version: int, load: dict, accepted: str | None) -> dict[str, Any]:
        fast = self.renew_lease(node_id, applied_version, load, accepted)
        if fast is not None:
            return fast
        applied_version = self._countable(applied_version)
        now = time.time()
        with self.session() as s:
            row = s.get(ProxyRow, node_id)
            if row is None or row.fence_expires <= now:
                raise _not_registered(node_id)
            if applied_version > row.applied_version and applied_version in self._committed_at:
                self.metrics.apply_seconds.observe(max(0.0, now - self._committed_at[applied_version]))
            renewal = Renewal(now + self.settings.lease_ms / 1000, now + self.settings.fence_ms / 1000, applied_version,
                              load, row.fence_expires)
            written = self._write_renewal(s, node_id, accepted, renewal, now)
            if written is None:  # taken over or deregistered since the secret was checked (or since the read)
                superseded = self._superseded(s, node_id, accepted)
                self._note_refused({(node_id, accepted): superseded}, 0)
                raise _wrong_secret(node_id) if superseded else _not_registered(node_id)
            s.commit()
            with self._hb_lock:
                self._leases[node_id] = written[:3]
                self._node_of[node_id] = written[3]
        if time.time() - now > LATE_RENEWAL_S:
            raise Unavailable(f"lease of proxy {node_id} not renewed: its write took longer than {LATE_RENEWAL_S} s")
        return self._renewed(node_id)

    @staticmethod
    def _write_renewal(s: Session, member_id: int, accepted: str | None, renewal: Renewal,
                       now: float) -> tuple[float, float, int, int] | None:
        """Write `renewal` to member `member_id`, only if its row still holds the secret hash `accepted` (None: no
        secret) and a fence that has not passed at `now` and is not below the one the renewal was accepted against:
        one conditional UPDATE, so a registration (a takeover: another hash) or a deregistration (its fence ended,
        below the one seen, though maybe above `now`, taken before the UPDATE waited for the lock) commits wholly
        before it (nothing matches) or after it (it sees the renewal), on SQLite (one writer) and on PostgreSQL
        (the UPDATE waits for the row and checks its condition again). Deadlines only move forward.
        The row as written, (lease, fence, applied version, node id); None: it matched nothing."""
        expires, fence, applied, load, seen_fence = renewal
        held = [ProxyRow.node_id == member_id, ProxyRow.fence_expires > now, ProxyRow.fence_expires >= seen_fence]
        if accepted != ANY_SECRET:
            held.append(ProxyRow.secret_hash.is_(None) if accepted is None else ProxyRow.secret_hash == accepted)
        written = s.execute(
            update(ProxyRow).where(*held)
            .values(lease_expires=_at_least(ProxyRow.lease_expires, expires),
                    fence_expires=_at_least(ProxyRow.fence_expires, fence),
                    applied_version=_at_least(ProxyRow.applied_version, applied), load_json=json.dumps(load))
            .returning(ProxyRow.lease_expires, ProxyRow.fence_expires, ProxyRow.applied_version,
                       func.coalesce(ProxyRow.worker_of, ProxyRow.node_id))
            .execution_options(synchronize_session=False)).first()
        return None if written is None else (written[0], written[1], written[2], written[3])

    @staticmethod
    def _superseded(s: Session, member_id: int, accepted: str | None) -> bool:
        """Why a renewal accepted with `accepted` matched no row: another secret now holds it (a registration
        since: True, refused as a wrong secret is), or its fence passed (a deregistration) or the row is gone."""
        current = s.execute(select(ProxyRow.secret_hash).where(ProxyRow.node_id == member_id)).first()
        return current is not None and accepted != ANY_SECRET and current[0] != accepted

    def _note_refused(self, refused: dict[tuple[int, str | None], bool], ticket: int) -> None:
        """Remember renewals whose write matched no row, for the heartbeats waiting on batch `ticket`, and forget
        what they show is stale: the cached secret hash of a member registered since through another controller,
        the cached lease of a member deregistered (its next renewal is checked in the database)."""
        at = time.monotonic()
        with self._hb_lock:
            for (member_id, accepted), superseded in refused.items():
                earlier = self._refused.get((member_id, accepted), (0, False, at))
                self._refused[(member_id, accepted)] = (max(ticket, earlier[0]), superseded or earlier[1], at)
                if superseded and self._secret_hashes.get(member_id) == accepted:
                    del self._secret_hashes[member_id]
                elif not superseded:
                    self._leases.pop(member_id, None)
            for key in [key for key, (_, _, noted) in self._refused.items() if at - noted > REFUSED_MEMORY_S]:
                del self._refused[key]

    def _raise_if_refused(self, member_id: int, accepted: str | None, ticket: int) -> None:
        """Refuse renewal `ticket` of `member_id` if the batch that wrote it (or a later one) matched no row for
        it: a registration or deregistration committed since its secret was checked."""
        with self._hb_lock:
            refused = self._refused.get((member_id, accepted))
        if refused is not None and refused[0] >= ticket:
            raise _wrong_secret(member_id) if refused[1] else _not_registered(member_id)

    def flush_heartbeats(self) -> None:
        """Write the pending renewals in one transaction. They stay pending until it commits (a failed write
        loses none; a newer renewal of the same proxy replaces an older one, newest wins). Each is written only
        while its row holds the secret it was accepted with and a live fence (`_write_renewal`); one that matches
        nothing is refused to the heartbeat waiting on it (`_raise_if_refused`)."""
        with self._flush_lock:
            with self._hb_lock:
                batch, upto = dict(self._pending), self._renewals
                accepted = {member_id: self._pending_accepted.get(member_id, ANY_SECRET) for member_id in batch}
            durable: dict[int, tuple[float, float, int]] = {}
            refused: dict[tuple[int, str | None], bool] = {}
            if batch:
                now = time.time()
                with self.session() as s:
                    # in ascending member id: a node's row (made before its workers' rows) before a worker's, the
                    # order a worker's registration locks them in (`_register_member`): no deadlock on PostgreSQL
                    for member_id, renewal in sorted(batch.items()):
                        stored = self._write_renewal(s, member_id, accepted[member_id], renewal, now)
                        if stored is None:
                            refused[(member_id, accepted[member_id])] = self._superseded(s, member_id,
                                                                                         accepted[member_id])
                        else:
                            durable[member_id] = stored[:3]
                    s.commit()
            with self._hb_lock:
                for node_id, written in batch.items():
                    if self._pending.get(node_id) is written:
                        del self._pending[node_id]
                        self._pending_accepted.pop(node_id, None)
                self._leases.update(durable)
                self._durable = max(self._durable, upto)
            if refused:
                self._note_refused(refused, upto)

    def deregister_proxy(self, member_id: int, presented: str | None) -> dict[str, Any]:
        """A cleanly stopped proxy process gives up member `member_id` (docs/DESIGN.md §5.2, §4.9 "deregistered"):
        its lease ends now (the next view drops it, a restart of it registers at once) and so does its fence (it
        attests that it sends no write again; a move counts it for the grace more, as after any fence).
        Only with the secret of the member's latest registration, compared in the transaction that writes: a
        process superseded by a new registration (a restart whose old deregistration arrives late) holds another
        secret and is refused (Conflict), so it never ends its successor's lease or fence. A member registered
        without a secret (a proxy before member secrets) is refused too. Idempotent: the same secret answers
        success again; an unknown member is NotFound (nothing to end, as a heartbeat's). Fenced by leadership as
        every write route is (NotLeader, 503, nothing written: the proxy asks the next controller, §3.6): the
        controller that takes it drops the member from its lease cache and its view at once."""
        now = time.time()
        with self.session() as s:
            # the secret is compared under the write lock the write holds (SQLite), or the row's lock (PostgreSQL):
            # a registration of the next process never commits in between (it would end that process's fence)
            db.begin_writing(s)
            # the leader row before the member's, as a registration locks them (PostgreSQL: one order, no deadlock)
            self.check_leader(s)
            row = s.scalar(select(ProxyRow).where(ProxyRow.node_id == member_id).with_for_update())
            if row is None:
                raise NotFound(f"proxy {member_id} is not registered: nothing to deregister")
            if row.secret_hash is None or not presented or not hmac.compare_digest(row.secret_hash,
                                                                                  _secret_hash(presented)):
                raise Conflict(f"member {member_id} ({row.instance_id!r}) not deregistered: "
                               + ("it was registered without a member secret (its lease runs out instead)"
                                  if row.secret_hash is None else
                                  f"missing or wrong member secret ({MEMBER_SECRET_HEADER}): only the process "
                                  "holding its latest registration may deregister it"))
            row.lease_expires = min(row.lease_expires, now)
            # its fence ends now, not a grace ago: a write it gave up on before this call (an upstream connection
            # it closed, a request timed out) may still be appended within the grace (§4.1), so a move counts it
            # until now + FENCE_GRACE_S, as for any fence that ran out
            row.fence_expires = min(row.fence_expires, now)
            s.commit()
            instance_id = row.instance_id
        with self._hb_lock:  # its renewals go to the database now, which answers 404 (register again)
            self._leases.pop(member_id, None)
        log.info("proxy member %d (%r) deregistered: stopped cleanly", member_id, instance_id)
        # its lease has ended: a round that composes drops it (the lease round does, `expire_leases`, in any case)
        self.compose_after_commit(f"proxy member {member_id} deregistered")
        return {"member_id": member_id, "instance_id": instance_id, "deregistered": True}

    def set_draining(self, node_id: int, draining: bool) -> dict[str, Any]:
        """Drain (or undrain) a proxy node, every worker of it: the view no longer lists it, so it leads no
        partition, and names it draining, so it refuses produce with a retriable error (docs/DESIGN.md §4.11).
        `node_id` may be any member id of the node. Answers the view version to wait for; a drain that would leave
        the node's pool without another live proxy of its role is refused (409)."""
        with self.topology_change() as s:  # one at a time: two drains must not both count the other as leader
            self.check_leader(s)  # ... in this process; across controllers, only the one leading drains (§3.6)
            member = s.get(ProxyRow, node_id)
            node = s.get(ProxyRow, member.node) if member is not None else None
            if node is None:
                raise NotFound(f"proxy {node_id} is not registered")
            changed = node.draining != draining
            if changed and draining:
                self._check_others_serve(s, node)
            node.draining = draining
            s.commit()
            node_id, instance_id = node.node_id, node.instance_id
        composed = self.compose_after_commit(f"proxy {node_id} set {'draining' if draining else 'not draining'}")
        log.info("proxy %d (%r) %s", node_id, instance_id, "draining" if draining else "no longer draining")
        return {"node_id": node_id, "instance_id": instance_id, "draining": draining, "changed": changed,
                "view_version": composed.version}

    def _check_others_serve(self, s: Session, node: ProxyRow) -> None:
        # the rows, not only the view: a drain committed just before ours may not be composed yet
        drained = set(s.scalars(select(ProxyRow.node_id).where(ProxyRow.draining)))
        others = [p for p in self.view.proxies if p.node_id != node.node_id and p.pool == node.pool
                  and p.role.value == node.role and p.node_id not in drained]
        if not others:
            raise Conflict(f"proxy {node.node_id} ({node.instance_id}) is the last live {node.role} of pool "
                           f"{node.pool!r}: draining it would leave its partitions without a leader")

    def proxies_for(self, client_id: str) -> dict[str, Any]:
        """Name-service rule (client_rules.pool_for): exact match, then the longest prefix, then pool "default"."""
        pool = pool_for(client_id, self.list_rules())
        return {"pool": pool, "proxies": [_proxy_address(p) for p in self.view.proxies if p.pool == pool]}

    def client_routing(self) -> dict[str, Any]:
        """What the name service matches client.ids against itself (client_rules.pool_for): every client rule, in
        the order pool_for breaks ties in (by name), and every pool's proxies."""
        pools: dict[str, list[dict[str, Any]]] = {}
        for p in self.view.proxies:
            pools.setdefault(p.pool, []).append(_proxy_address(p))
        rules = [{"match": r["match"], "pattern": r["pattern"], "pool": r["pool"]} for r in self.list_rules()]
        return {"rules": rules, "pools": pools}

    # -- users (SCRAM credentials; the controller never sees a password) ---------------------------
    def put_user(self, user: str, credentials: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Set a user's credentials, one per mechanism given (the others are kept)."""
        if not USER_NAME.fullmatch(user):
            raise Invalid(f"user name {user!r} must be 1-128 letters, digits, '.', '_', '@' or '-'")
        rows = [_credential_row(user, c) for c in credentials]
        if not rows or len({r.mechanism for r in rows}) != len(rows):
            raise Invalid("give one credential per mechanism, at least one")
        with self.topology_change() as s:
            self.check_leader(s)
            changed = False
            for row in rows:
                old = s.get(ScramCredentialRow, (user, row.mechanism))
                if old is None or _credential_fields(old) != _credential_fields(row):
                    s.merge(row)
                    changed = True
            s.commit()
        self.compose_after_commit(f"credentials of user {user} set")
        return self.get_user(user), changed

    def get_user(self, user: str) -> dict[str, Any]:
        for u in self.list_users():
            if u["user"] == user:
                return u
        raise NotFound(f"unknown user {user!r}")

    def list_users(self) -> list[dict[str, Any]]:
        """Names, mechanisms and iterations only: the stored keys are not shown."""
        users: dict[str, list[dict[str, Any]]] = {}
        with self.session() as s:
            for r in s.scalars(select(ScramCredentialRow).order_by(ScramCredentialRow.user,
                                                                   ScramCredentialRow.mechanism)):
                users.setdefault(r.user, []).append({"mechanism": r.mechanism, "iterations": r.iterations})
        return [{"user": u, "credentials": c} for u, c in users.items()]

    # -- ACLs --------------------------------------------------------------------------------------
    def create_acls(self, bindings: list[dict[str, Any]]) -> dict[str, Any]:
        parsed = [acls.binding_from_dict(b) for b in bindings]
        with self.topology_change() as s:
            self.check_leader(s)
            added = acls.create(s, parsed)
            s.commit()
        composed = self.compose_after_commit(f"{len(added)} ACL bindings created")
        return {"created": [acls.binding_dict(b) for b in added],
                "view_version": composed.version}

    def list_acls(self, acl_filter: dict[str, Any]) -> list[dict[str, str]]:
        f = acls.filter_from_dict(acl_filter)
        with self.session() as s:
            return [acls.binding_dict(b) for b in acls.all_bindings(s) if f.matches(b)]

    def delete_acls(self, acl_filter: dict[str, Any]) -> dict[str, Any]:
        f = acls.filter_from_dict(acl_filter)
        with self.topology_change() as s:
            self.check_leader(s)
            gone = acls.delete(s, f)
            s.commit()
        composed = self.compose_after_commit(f"{len(gone)} ACL bindings deleted")
        return {"deleted": [acls.binding_dict(b) for b in gone],
                "view_version": composed.version}

    def delete_user(self, user: str) -> None:
        with self.topology_change() as s:
            self.check_leader(s)
            res = cast(CursorResult[Any], s.execute(  # a DELETE's result: it has a rowcount
                delete(ScramCredentialRow).where(ScramCredentialRow.user == user)))
            s.commit()
        if res.rowcount == 0:
            raise NotFound(f"unknown user {user!r}")
        self.compose_after_commit(f"user {user} deleted")

    def put_rule(self, name: str, match: str, pattern: str, pool: str) -> tuple[dict, bool]:
        """One rule per match kind and pattern: another name for the same pair is a Conflict naming the rule that
        has it (two would both be stored and only the first by name would route, silently; docs/DESIGN.md §3.4).
        To give a pattern another pool, set that rule again, or delete it first. The check runs under this process's
        lock only: a controller on the same database writing at once is refused by the database's constraints
        (revision 0017), and that too is a Conflict."""
        if match not in ("exact", "prefix"):
            raise Invalid(f"match must be exact or prefix, got {match!r}")
        if not name or not pattern or not pool:
            raise Invalid("name, pattern and pool must be non-empty")
        with self._write_lock, self.session() as s:
            self.check_leader(s)
            _refuse_a_taken_pattern(s, name, match, pattern)
            row = s.get(ClientRuleRow, name)
            before = None if row is None else _rule_dict(row)
            if row is None:
                row = ClientRuleRow(name=name)
                s.add(row)
            row.match, row.pattern, row.pool = match, pattern, pool
            try:
                s.commit()
            except IntegrityError:  # another controller's rule committed since the check: the database's own
                s.rollback()        # constraints (one rule per name, one per match and pattern) refused this one
                _refuse_a_taken_pattern(s, name, match, pattern)
                raise Conflict(f"client rule {name!r} was written by another controller at the same time; "
                               "read it again (GET /v1/client-rules) and retry") from None
            after = _rule_dict(row)
        return after, before != after

    def delete_rule(self, name: str) -> None:
        with self._write_lock, self.session() as s:
            self.check_leader(s)
            res = cast(CursorResult[Any], s.execute(delete(ClientRuleRow).where(ClientRuleRow.name == name)))
            s.commit()
        if res.rowcount == 0:
            raise NotFound(f"unknown client rule {name!r}")

    def list_rules(self) -> list[dict[str, str]]:
        with self.session() as s:
            return [_rule_dict(r) for r in s.scalars(select(ClientRuleRow).order_by(ClientRuleRow.name))]

    def status(self) -> dict[str, Any]:
        self.flush_heartbeats()
        now = time.time()
        with self.session() as s:
            counted = list(s.scalars(select(ProxyRow).where(  # every process a move would still wait for
                ProxyRow.role != "", or_(ProxyRow.lease_expires > now, may_still_write(now)))
                .order_by(ProxyRow.node_id)))
            topics = s.scalar(select(func.count()).select_from(TopicRow))
            pending = deletions.pending_by_cluster(s)
        clusters = self.list_clusters()
        return {"view_version": self.view.version, "db_regression": self.db_regression,
                "clusters": len(clusters), "topics": topics,
                "proxies": _proxy_status(counted, now), "coordination_cluster": self.view.coordination_cluster,
                "unreachable": [c["id"] for c in clusters if not c["reachable"] and c["state"] != "removed"],
                "lost_topics": {c: topics for c, topics in sorted(self.lost_topics.items()) if topics},
                "pending_deletions": pending}

    # -- background loops ------------------------------------------------------------------------
    def scan_once(self) -> list[Scan]:
        """Scan every cluster in parallel (a dead one costs one timeout, not a stall), record
        reachability, re-create missing physical and shadow topics, compose; then retry the pending deletions of
        deleted topics' physical topics on the clusters that answered (`deletions`)."""
        with self.session() as s:
            clusters = [c for c in s.scalars(select(ClusterRow)) if c.state != ClusterState.REMOVED]
        if not clusters:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(clusters))) as pool:
            scans = list(pool.map(lambda c: self.kafka.scan(c.id, c.bootstrap), clusters))
        with self.session() as s:
            self.check_leader(s)  # a controller that lost its row (cut off from a cluster, perhaps) records no scan
            for scan in scans:
                self.metrics.scan_seconds.labels(scan.cluster).observe(scan.seconds)
                self.metrics.cluster_reachable.labels(scan.cluster).set(1 if scan.reachable else 0)
                self.metrics.cluster_scanned.labels(scan.cluster).set(time.time())
                row = s.get(ClusterRow, scan.cluster)
                if row is not None and (row.reachable, row.last_error) != (scan.reachable, scan.error):
                    if row.reachable != scan.reachable:
                        log.warning("cluster %s is now %s%s", scan.cluster,
                                    "reachable" if scan.reachable else "UNREACHABLE",
                                    f": {scan.error}" if scan.error else "")
                    row.reachable, row.last_error = scan.reachable, scan.error
            s.commit()
        with self.topology_change() as s:  # read after the scans, so a topic deleted meanwhile is not revived
            needed = self._needed_topics(s, clusters)
        bootstrap = {c.id: c.bootstrap for c in clusters}
        ends: dict[tuple[str, str, int], tuple[int, str]] = {}
        for scan in scans:
            if scan.reachable:
                ends.update(self._scan_offsets(scan.cluster, bootstrap[scan.cluster]))
        self._store_ends(ends)
        self._create_missing(scans, needed, bootstrap, clusters)
        self._forget_lost(scans, needed)
        self.compose()
        self.deletions.retry({scan.cluster: bootstrap[scan.cluster] for scan in scans if scan.reachable})
        return scans

    def _forget_lost(self, scans: list[Scan], needed: dict[str, dict[str, tuple[int, dict]]]) -> None:
        """Stop reporting what `_create_missing` cannot see go away: a removed cluster's lost topics (its entry and
        its gauge label dropped; the scans skip it) and, on an unreachable cluster, the lost topics no chain needs any
        more (the operator gave them up: the topic deleted, the partition moved away)."""
        scanned = {scan.cluster: scan.reachable for scan in scans}
        for cluster in sorted(self.lost_topics):
            if cluster not in scanned:
                del self.lost_topics[cluster]
                with contextlib.suppress(KeyError):  # its label never set
                    self.metrics.physical_topics_lost.remove(cluster)
            elif not scanned[cluster]:
                kept = [t for t in self.lost_topics[cluster] if t in needed.get(cluster, {})]
                self.lost_topics[cluster] = kept
                self.metrics.physical_topics_lost.labels(cluster).set(len(kept))

    def _create_missing(self, scans: list[Scan], needed: dict[str, dict[str, tuple[int, dict]]],
                        bootstrap: dict[str, str], clusters: list[ClusterRow]) -> None:
        """Create the physical and shadow topics (or partitions) a reachable cluster lacks, but never one that held
        data: created again it would be empty, and written from offset 0, below the offsets the chains map to it
        (an acked record at an older segment's logical offset, docs/DESIGN.md §4.5, §9.3). Those are left missing
        (their partitions unwritable: the proxies find no leader), logged, counted and listed (`lost_topics`)."""
        for scan in scans:
            if not scan.reachable:
                continue
            missing = {topic: want for topic, want in needed.get(scan.cluster, {}).items()
                       if scan.topics.get(topic, 0) < want[0]}
            lost = sorted(t for _, t in self.lost_physical_topics(
                [(scan.cluster, t) for t in missing], bootstrap, {scan.cluster: scan.topics}))
            if lost:  # the listing predates the log ends: a topic created and written since is not lost
                lost, missing = self._lost_listed_again(scan.cluster, lost, missing, bootstrap)
            if creatable := {topic: want for topic, want in missing.items() if topic not in lost}:
                self._create_needed(scan.cluster, creatable, bootstrap, clusters)
            for topic in sorted(set(lost) - set(self.lost_topics.get(scan.cluster, ()))):
                log.error("cluster %s lost physical topic %s, which held data: NOT re-created (it would take writes "
                          "at offsets already handed out); its partitions refuse produce until the data is restored "
                          "or the operator gives it up (docs/OPERATIONS.md, \"A cluster lost a topic's data\")",
                          scan.cluster, topic)
            self.lost_topics[scan.cluster] = sorted(lost)
            self.metrics.physical_topics_lost.labels(scan.cluster).set(len(lost))

    def _create_needed(self, cluster: str, missing: dict[str, tuple[int, dict]], bootstrap: Mapping[str, str],
                       clusters: list[ClusterRow]) -> None:
        """Create the `missing` physical topics of `cluster` that are still needed, decided and created under the write
        lock: a topic deleted since the scan read what it needs is not created again (a physical topic no chain names,
        left behind for a topic created again under the name; `delete_topic` deletes its rows under the lock).
        The first KafkaUnavailable ends the cluster's creations for this scan (the next scan retries): a cluster that
        stopped answering costs one kafka_timeout under the lock, not one per topic."""
        with self._write_lock:
            with self.session() as s:
                self.check_leader(s)  # narrows, cannot close, the window of a stale creation on Kafka (§3.6)
                still = self._needed_topics(s, clusters).get(cluster, {})
            for topic, (partitions, config) in missing.items():
                if topic not in still:
                    continue
                try:
                    # the listing may predate a creation (a `put_topic` between the scan's listing and its read of
                    # the database): the topic is there then, and nothing was re-created
                    if self.kafka.ensure_topic(cluster, bootstrap[cluster], topic, partitions, config):
                        log.info("re-created physical topic %s on %s", topic, cluster)
                except KafkaRefused as e:
                    log.warning("cannot create %s on %s: %s", topic, cluster, e)
                except KafkaUnavailable as e:
                    log.warning("cannot create %s on %s: %s; its other missing topics wait for the next scan",
                                topic, cluster, e)
                    return

    def _lost_listed_again(self, cluster: str, lost: list[str], missing: dict[str, tuple[int, dict]],
                           bootstrap: Mapping[str, str]) -> tuple[list[str], dict[str, tuple[int, dict]]]:
        """`lost` and `missing` (`_create_missing`'s, from a scan's listing of `cluster`) with `lost` decided again
        from a listing taken now, after the log ends were read: a topic created (by a `put_topic`, a move's target)
        and written after the scan listed `cluster` has a log end above 0 and no partition in that listing, and is
        not lost. A cluster that does not answer now: only what was already reported stays lost, nothing is created."""
        try:
            again = sorted(t for _, t in self.lost_physical_topics([(cluster, t) for t in lost], bootstrap))
        except KafkaUnavailable as e:
            log.warning("cluster %s not listed again to confirm lost topics %s: %s", cluster, ", ".join(lost), e)
            again = sorted(set(lost) & set(self.lost_topics.get(cluster, ())))
            return again, {t: want for t, want in missing.items() if t not in lost}
        return again, {t: want for t, want in missing.items() if t not in set(lost) - set(again)}

    def lost_physical_topics(self, wanted: Iterable[tuple[str, str]], bootstrap: Mapping[str, str],
                             have: Mapping[str, Mapping[str, int]] | None = None) -> set[tuple[str, str]]:
        """The (cluster, physical topic) pairs of `wanted` whose cluster lacks a physical partition that held data
        (`_held_data`: the database's segments and stored ends): created, or grown, again it would be empty and written
        from offset 0, below the offsets the chains map to it (docs/DESIGN.md §4.5, §9.3). Decided from the database
        and the cluster, never from what a scan of this controller remembers, so a controller that has not scanned
        yet (just started, just took over) decides alike. `have`: each cluster's partition count per topic when a
        scan just read them; otherwise a cluster is asked, only when a partition of a wanted pair held data
        (KafkaUnavailable when it does not answer). Every creation of a data topic asks this first
        (`refuse_lost`, the scans' `_create_missing`, the planners)."""
        pairs = set(wanted)
        if not pairs:
            return set()
        with self.session() as s:
            held = self._held_data(s)
        last: dict[tuple[str, str], int] = {}  # the highest partition of each wanted pair that held data
        for c, t, p in held:
            if (c, t) in pairs:
                last[(c, t)] = max(last.get((c, t), -1), p)
        counts: dict[str, Mapping[str, int]] = dict(have or {})
        lost = set()
        for (cluster, topic), highest in sorted(last.items()):
            if cluster not in counts:
                scan = self.kafka.scan(cluster, bootstrap[cluster])
                if not scan.reachable:
                    raise KafkaUnavailable(f"cluster {cluster} ({bootstrap[cluster]}) did not answer: {scan.error}")
                counts[cluster] = scan.topics
            if counts[cluster].get(topic, 0) <= highest:
                lost.add((cluster, topic))
        return lost

    def refuse_lost(self, wanted: Iterable[tuple[str, str]], bootstrap: Mapping[str, str]) -> None:
        """PhysicalTopicLost naming every (cluster, physical topic) of `wanted` that `lost_physical_topics` finds:
        called before a data topic is created or grown (`put_topic`, a move's targets, `expand`)."""
        lost = self.lost_physical_topics(wanted, bootstrap)
        if lost:
            raise PhysicalTopicLost(", ".join(f"{t} on {c}" for c, t in sorted(lost)))

    def _held_data(self, s) -> set[tuple[str, str, int]]:
        """The physical partitions known to have held records: a sealed segment with records, a segment that
        started past 0, or a log end above 0 read by a scan (this controller's, or stored by any)."""
        held = {(c, t, p) for c, t, p, start, end in s.execute(select(
            SegmentRow.cluster, SegmentRow.physical_topic, SegmentRow.physical_partition, SegmentRow.phys_start,
            SegmentRow.phys_end)) if start > 0 or (end is not None and end > start)}
        held.update((c, t, p) for c, t, p in s.execute(
            select(PhysicalPartitionRow.cluster, PhysicalPartitionRow.physical_topic,
                   PhysicalPartitionRow.physical_partition).where(PhysicalPartitionRow.scanned_end > 0)))
        held.update(key for key, (_start, end) in self.log_offsets.items() if end > 0)
        return held

    def _scan_offsets(self, cluster: str, bootstrap: str) -> dict[tuple[str, str, int], tuple[int, str]]:
        """Log start/end of the physical partitions holding active segments (what a seal and a describe need);
        returns the ends read, each with the id of the topic it was read for (`_store_ends` checks it again)."""
        with self.session() as s:
            incarnations = dict(s.execute(select(TopicRow.name, TopicRow.topic_id)).all())
            parts = list(s.execute(select(SegmentRow.physical_topic, SegmentRow.physical_partition)
                                   .where(SegmentRow.cluster == cluster, SegmentRow.phys_end.is_(None))))
        try:
            found = self.kafka.log_offsets(cluster, bootstrap, [(t, p) for t, p in parts])
        except KafkaException as e:
            log.warning("offsets of %s not read: %s", cluster, e)
            return {}
        with self.topology_change() as s:  # one at a time with a deletion, which forgets its topic's ends
            now = dict(s.execute(select(TopicRow.name, TopicRow.topic_id)).all())
            # read of a topic deleted (perhaps created again) since: the ends of another incarnation, not kept
            found = {tp: offsets for tp, offsets in found.items()
                     if tp[0] in now and now[tp[0]] == incarnations.get(tp[0])}
            for (topic, partition), offsets in found.items():
                self.log_offsets[(cluster, topic, partition)] = offsets
        return {(cluster, topic, partition): (end, now[topic]) for (topic, partition), (_start, end) in found.items()}

    def _store_ends(self, ends: dict[tuple[str, str, int], tuple[int, str]]) -> None:
        """Write the log ends a scan read, in one transaction: the seal a failover takes when its controller has
        not scanned the dead cluster itself (a takeover, a restart: `Mover.known_end`, docs/DESIGN.md §9.1).
        Only those that moved since this controller last wrote them, or that it wrote `STORED_END_REFRESH_S` ago
        or more (so `scanned_at` says the end was still that a minute ago at most): a scan writes one row per
        physical partition that took writes since the last scan, plus each idle one once a minute. A failed
        write is logged and tried again by the next scan (the scan goes on: the in-memory ends serve this one).

        Each end comes with the id of the topic it was read for (`ends`: key -> (end, topic id)); one whose topic was
        deleted since (perhaps created again under its name: same physical partitions, another topic) is dropped.
        Checked, written and remembered under the write lock a deletion takes to forget its topic's ends
        (`_forget_ends`), so neither the claim rows of a topic created again nor `_stored_ends` get the old one's."""
        read_at = time.time()
        try:
            with self.topology_change() as s:
                self.check_leader(s)  # its older ends must not replace the active one's (a failover's seal)
                now = dict(s.execute(select(TopicRow.name, TopicRow.topic_id)).all())
                changed = {key: end for key, (end, topic_id) in ends.items() if now.get(key[1]) == topic_id and (
                    (stored := self._stored_ends.get(key)) is None or stored[0] != end
                    or read_at - stored[1] >= STORED_END_REFRESH_S)}
                if not changed:
                    return
                s.execute(_STORE_END, [{"k_cluster": c, "k_topic": t, "k_partition": p, "k_end": end,
                                        "k_at": read_at} for (c, t, p), end in changed.items()])
                s.commit()
                self._stored_ends.update({key: (end, read_at) for key, end in changed.items()})
        except SQLAlchemyError as e:
            log.warning("log ends of %d partitions not stored: %s", len(ends), e)

    def _needed_topics(self, s, clusters) -> dict[str, dict[str, tuple[int, dict]]]:
        needed: dict[str, dict[str, tuple[int, dict]]] = {}
        configs = {t.name: (t.partitions, json.loads(t.config_json)) for t in s.scalars(select(TopicRow))}
        rows = s.execute(select(SegmentRow.cluster, SegmentRow.physical_topic, SegmentRow.topic,
                                func.max(SegmentRow.physical_partition))
                         .group_by(SegmentRow.cluster, SegmentRow.physical_topic, SegmentRow.topic))
        for cluster_id, physical, logical, max_partition in rows:
            needed.setdefault(cluster_id, {})[physical] = (max_partition + 1, configs[logical][1])
        coord = coordination_cluster(clusters)
        for name, (partitions, _) in configs.items():
            if coord:
                needed.setdefault(coord, {})[shadow_topic(name)] = (partitions, {})
        return needed

    def expire_leases(self) -> None:
        """Compose when a proxy in the view has let its lease run out (it is then dropped)."""
        self.flush_heartbeats()
        now = time.time()
        in_view = [p.node_id for p in self.view.proxies]
        if not in_view:
            return
        node = func.coalesce(ProxyRow.worker_of, ProxyRow.node_id)
        with self.session() as s:  # a node with workers is listed while any of them holds its lease
            expired = list(s.scalars(select(node).where(node.in_(in_view)).group_by(node)
                                     .having(func.max(ProxyRow.lease_expires) <= now)))
        if expired:
            # operators (and the replicated soak) count these: each one moves partition leaders between proxies
            log.warning("lease ran out: proxies %s leave the view", sorted(expired))
            self.compose()

    def round_log(self, loop: str, logger: logging.Logger = log) -> RoundLog:
        """How background loop `loop` logs a failed round: a lost leader row once, other errors with traceback."""
        return RoundLog(logger, loop, lambda: self.leadership)

    def _scan_loop(self) -> None:
        rounds = self.round_log("scan")
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception as e:  # the controller outlives any scan failure; the next round retries
                rounds.failed(e)
            self._stop.wait(self.settings.scan_interval)

    def _lease_loop(self) -> None:
        rounds = self.round_log("lease check")
        while not self._stop.wait(min(0.2, self.settings.lease_ms / 4000)):
            try:
                self.lease_round()
            except Exception as e:
                rounds.failed(e)

    def lease_round(self) -> None:
        """One round of the lease loop: drop the proxies whose lease ran out, serve the database's view, and compose
        the view a write route owes (`compose_after_commit`)."""
        self.expire_leases()
        self._owe_predecessors_version()
        stored = self._peek_version()
        if self.publisher.view.version < stored:
            self._refresh_from_db()  # a second controller committed: serve its view
        elif self.publisher.view.version > stored:
            self.compose()  # the database lost views this controller holds: number the next past them (§3.3)
        self._compose_if_owed()

    def _owe_predecessors_version(self) -> None:
        """A predecessor (the process before a restart, the controller before a takeover) may have answered a
        version past its view that it could not compose (`compose_after_commit` meeting NotLeader): the flag owing
        it a new view died with it, and a change leaving the view as it was (a drain of a node that is down) makes
        none. Owed here, one lease after this controller started or took over, even if it published since: a view
        numbered before every live proxy reported the one it holds may be numbered as one they hold with other
        content (a database that lost its last view: its floor not known yet), the predecessor's answer past it.
        Not at once: by then the floor is known, and the view owed is numbered past every view a proxy holds
        (docs/DESIGN.md §3.3, §5.1). It costs one view of the same content at most (proxies ack it, leaders stay)."""
        if self._predecessor_owed and time.time() >= self._inherited[1]:
            self._predecessor_owed = False
            self._new_version_owed = True
            self._compose_owed.set()

    def _peek_version(self) -> int:
        with self.session() as s:
            return s.scalars(select(ViewRow.version).where(ViewRow.id == 1)).one()


def check_topic(name: str, partitions: int, placement: str, config: dict[str, str]) -> None:
    if not TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise Invalid(f"topic name {name!r} must be 1-231 of letters, digits, '.', '_', '-' "
                      "(Kafka allows 249; the coordination cluster's shadow topic adds a prefix)",
                      kafka_error="INVALID_TOPIC_EXCEPTION")
    if name.startswith("__"):
        raise Invalid(f"topic name {name!r}: names starting with '__' are reserved for Kafka and fedkafka",
                      kafka_error="INVALID_TOPIC_EXCEPTION")
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise Invalid(f"partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}",
                      kafka_error="INVALID_PARTITIONS")
    try:
        Placement(placement)
    except ValueError:
        raise Invalid(f"placement must be blocks or balanced, got {placement!r}") from None
    bad = [k for k, v in config.items() if not isinstance(k, str) or not isinstance(v, str) or not k]
    if bad:
        raise Invalid(f"config keys and values must be strings: {bad}", kafka_error="INVALID_CONFIG")


@dataclass(frozen=True)
class _ProxyIdentity:
    """What a registration claims and clients are routed by: a live proxy's may not change (`_refuse_takeover`)."""
    host: str
    port: int
    role: str
    pool: str
    listeners: tuple[tuple[str, str, int], ...]

    @classmethod
    def of(cls, row: ProxyRow) -> _ProxyIdentity:
        listeners = sorted((str(p), str(h), int(n)) for p, h, n in json.loads(row.listeners_json or "[]"))
        return cls(row.host, row.port, row.role, row.pool, tuple(listeners))


def _member_secret(presented: str | None) -> str:
    """The secret a registration asking for one holds its member to: the proxy's own (the same each registration
    of one process, docs/DESIGN.md §5.2), else one drawn here (a proxy before proxy-chosen secrets)."""
    if presented is not None and len(presented) >= MIN_MEMBER_SECRET:
        return presented
    return secrets.token_urlsafe(32)


def _previous_process(row: ProxyRow, exited: bool, now: float) -> str:
    """What a takeover's log line says of member `row`'s previous process: its fence may have ended already (a
    deregistration, or a lapse), though not its grace (`Controller._record_predecessor`)."""
    if exited:
        return ("exited (vouched for by a worker's parent or the view cache's lock; a write it sent before may still "
                "be appended)")
    if row.fence_expires > now:
        return f"may still produce for {row.fence_expires - now:.0f} s (its fence)"
    return (f"stopped producing: its fence ended {now - row.fence_expires:.0f} s ago (a deregistration, or a lapse), "
            "but a write it sent before may still be appended within the grace")


def _predecessor_secrets(header: str | None) -> tuple[str, ...]:
    """The exited processes' secrets a registration shows (`PREDECESSOR_SECRET_HEADER`): Invalid if there are more
    than MAX_PREDECESSOR_SECRETS, or one is empty or longer than a secret may be."""
    if not header:
        return ()
    shown = tuple(header.split(PREDECESSOR_SEPARATOR))
    if len(shown) > MAX_PREDECESSOR_SECRETS or not all(0 < len(secret) <= MAX_SECRET_LENGTH for secret in shown):
        raise Invalid(f"{PREDECESSOR_SECRET_HEADER}: at most {MAX_PREDECESSOR_SECRETS} member secrets, each of 1 to "
                      f"{MAX_SECRET_LENGTH} characters, joined by {PREDECESSOR_SEPARATOR!r}")
    return shown


def _holds_secret(row: ProxyRow, shown: str | None) -> bool:
    """`shown` is the secret of member `row`'s latest registration."""
    return row.secret_hash is not None and bool(shown) and hmac.compare_digest(row.secret_hash,
                                                                             _secret_hash(shown or ""))


def _lost_race(e: OperationalError) -> bool:
    """A transaction that lost to a concurrent one and may go through when tried again: PostgreSQL aborted it
    (`LOST_RACE_SQLSTATES`), or SQLite's write lock was not free within the busy timeout."""
    return getattr(e.orig, "sqlstate", None) in LOST_RACE_SQLSTATES or "database is locked" in str(e.orig)


def _wrong_secret(member_id: int) -> Forbidden:
    return Forbidden(f"member {member_id}: missing or wrong member secret ({MEMBER_SECRET_HEADER}); only the proxy "
                     "whose registration was given the secret may heartbeat as it: register again")


def _not_registered(member_id: int) -> NotFound:
    return NotFound(f"proxy {member_id} is not registered (or its fence ran out): register again")


def _at_least(column, value: float):
    """max(column, value) in SQL, on SQLite and PostgreSQL alike: deadlines only move forward."""
    return case((column < value, value), else_=column)


def _secret_hash(secret: str) -> str:
    """What the database keeps of a member secret (hex SHA-256): a copy of the database gives no heartbeat."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _proxy_status(rows: list[ProxyRow], now: float) -> list[dict[str, Any]]:
    """One entry per live node (one holding a lease). A node run with --workers N answers the lowest version its
    workers applied, and lists each worker a move still counts (docs/DESIGN.md §4.10)."""
    nodes: dict[int, list[ProxyRow]] = {}
    for row in sorted(rows, key=lambda r: (r.node, r.worker)):
        nodes.setdefault(row.node, []).append(row)
    found = []
    for node, members in nodes.items():
        if all(m.lease_expires <= now for m in members):
            continue
        first = members[0]
        entry = {"node_id": node, "instance_id": first.instance_id, "host": first.host, "port": first.port,
                 "role": first.role, "pool": first.pool, "applied_version": min(m.applied_version for m in members),
                 "lease_remaining_ms": int((max(m.lease_expires for m in members) - now) * 1000),
                 "fence_remaining_ms": int((min(m.fence_expires for m in members) - now) * 1000),
                 "load": json.loads(first.load_json), "draining": any(m.draining for m in members if not m.worker)}
        if len(members) > 1 or first.worker:
            entry["workers"] = [{"worker": m.worker, "member_id": m.node_id, "applied_version": m.applied_version,
                                 "lease_remaining_ms": int((m.lease_expires - now) * 1000),
                                 "fence_remaining_ms": int((m.fence_expires - now) * 1000)} for m in members]
        found.append(entry)
    return found


def _cluster_dict(c: ClusterRow, coord: str | None) -> dict[str, Any]:
    return {"id": c.id, "bootstrap": c.bootstrap, "state": c.state, "reachable": c.reachable,
            "coordination": c.id == coord, "last_error": c.last_error, "given_up": cluster_given_up(c)}


def _public(cluster: dict | None) -> dict | None:
    return None if cluster is None else {k: cluster[k] for k in ("bootstrap", "state", "coordination")}


def _topic_summary(t: TopicRow) -> dict[str, Any]:
    return {"name": t.name, "topic_id": t.topic_id, "partitions": t.partitions, "placement": t.placement,
            "config": json.loads(t.config_json)}


def _credential_row(user: str, c: dict[str, Any]) -> ScramCredentialRow:
    try:
        row = ScramCredentialRow(user=user, mechanism=str(c["mechanism"]), salt=str(c["salt"]),
                                 iterations=int(c["iterations"]), stored_key=str(c["stored_key"]),
                                 server_key=str(c["server_key"]))
        sizes = [len(base64.b64decode(v, validate=True)) for v in (row.salt, row.stored_key, row.server_key)]
    except (KeyError, TypeError, ValueError):
        raise Invalid("a credential has mechanism, salt, iterations, stored_key and server_key (base64)") from None
    if row.mechanism not in SCRAM_MECHANISMS:
        raise Invalid(f"mechanism must be one of {', '.join(SCRAM_MECHANISMS)}")
    digest_size = hashlib.new(SCRAM_MECHANISMS[row.mechanism]).digest_size
    if not MIN_ITERATIONS <= row.iterations <= 1_000_000 or not 8 <= sizes[0] <= 64 or sizes[1:] != [digest_size] * 2:
        raise Invalid(f"{row.mechanism}: iterations {MIN_ITERATIONS}..1000000, a salt of 8-64 bytes and "
                      f"{digest_size}-byte keys")
    return row


def _credential_fields(r: ScramCredentialRow) -> tuple:
    return r.salt, r.iterations, r.stored_key, r.server_key


def _proxy_address(p: ProxyInfo) -> dict[str, Any]:
    """A proxy as the name service relays to it."""
    return {"node_id": p.node_id, "host": p.host, "port": p.port, "role": p.role.value,
            "listeners": [[e.protocol, e.host, e.port] for e in p.endpoints()]}


def _refuse_a_taken_pattern(s: Session, name: str, match: str, pattern: str) -> None:
    """Conflict naming the rule other than `name` that has this match and pattern, if one does."""
    holder = s.scalar(select(ClientRuleRow.name).where(
        ClientRuleRow.match == match, ClientRuleRow.pattern == pattern, ClientRuleRow.name != name))
    if holder is not None:
        raise Conflict(f"client rule {holder!r} already has match {match} pattern {pattern!r}: set that rule "
                       f"to change its pool, or delete it first (DELETE /v1/client-rules/{holder})")


def _rule_dict(r: ClientRuleRow) -> dict[str, str]:
    return {"name": r.name, "match": r.match, "pattern": r.pattern, "pool": r.pool}
