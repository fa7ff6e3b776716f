"""Scale-up and decommission runs (docs/DESIGN.md §7): validated at once, then driven in a thread, resumable.

A run is a row in `workflows` whose `record_json` is what `GET /v1/workflows/{id}` shows: phases
with timestamps and progress, the partitions moved, the error. Every phase is idempotent given the
database (planned moves are rows, cluster states are rows), so a restarted controller simply runs
each unfinished run again from the top and the finished phases change nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from math import ceil
from typing import Any, NamedTuple

from confluent_kafka import KafkaException
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fedkafka.controller import claims, leftovers
from fedkafka.controller.claims import ClaimTaken
from fedkafka.controller.compose import coordination_cluster
from fedkafka.controller.coordination import CoordinationMove
from fedkafka.controller.errors import Conflict, Invalid, NotFound, PhysicalTopicLost, Unavailable
from fedkafka.controller.kafka_admin import KafkaRefused, KafkaUnavailable
from fedkafka.controller.leadership import NotLeader, RoundLog
from fedkafka.controller.models import (
    ChainRow,
    ClusterRow,
    MoveRow,
    SegmentRow,
    TopicRow,
    WorkflowRow,
    gives_up_nothing,
)
from fedkafka.controller.moves import UNSETTLED, MoveFailed, Mover, moves_named, topic_gone, unfinished_moves_to
from fedkafka.view.chains import UNCLEAN_GAP
from fedkafka.view.model import ClusterState, PartitionChain, Segment, shadow_topic
from fedkafka.view.rebalance import LogRange, Move, droppable_prefix, evacuate, rebalance, reused_below_seal

log = logging.getLogger(__name__)

KINDS = ("scale_up", "decommission", "failover", "coordination_move")
SWEEP_INTERVAL_S = 30.0
# A run's end (its moves settled, its record) is committed again after a database error that a reconnect clears
# (`_clears`), waiting this long at first, twice as long each time up to the last: a database restart shorter than
# the leader lease stops no controller. The settling is tried END_SETTLE_TRIES times; then the run records `failed`,
# its moves left to the sweeper (an error that looks like an outage may be a bug: SQLite reports both alike).
END_RETRY_S = (0.5, 10.0)
END_SETTLE_TRIES = 16  # 15 waits: 0.5 s + 1 + 2 + 4 + 8 + 10 x 10 s, about two minutes
STRATEGIES = ("rebalance", "expand")
DRAINS = ("retention", "groups")
_DRAIN_ALIASES: dict[str | bool | None, str | bool | None] = {True: "groups", False: "retention", None: "retention"}
MOVE_PHASES = ["plan", "freeze", "acks", "seal", "publish"]
PHASES = {
    ("scale_up", "rebalance"): ["register", *MOVE_PHASES],
    ("scale_up", "expand"): ["register", "expand"],
    ("decommission", None): ["read_only", *MOVE_PHASES, "draining", "drain", "removed"],
    ("failover", None): ["read_only", *MOVE_PHASES],
    ("coordination_move", False): ["shadow_topics", "freeze", "acks", "copy", "switch"],
    ("coordination_move", True): ["shadow_topics", "copy", "switch"],
}
# A failover retries partitions another run was moving (their moves settle within the ack and seal timeouts).
FAILOVER_BUSY_WAIT_S = 120.0
GIVEN_UP = "given up"  # a failover's state change of a cluster already read_only or draining: the mark only (§9.2)
PLAN_ATTEMPTS = 5  # a run plans again when another claimed one of its targets meanwhile (docs/DESIGN.md §4.13)


def _coordination(clusters: dict[str, ClusterRow]) -> str:
    coord = coordination_cluster(list(clusters.values()))
    if coord is None:
        raise Unavailable("no coordination cluster: every cluster is removed")
    return coord


class _ExpansionBase(NamedTuple):
    """What an expansion of a topic onto a cluster was planned from; it commits only onto the topic as it was."""
    topic_id: str
    partitions: int
    claimed: Mapping[int, tuple[str, int]]  # physical partition of the topic's name on the cluster -> its owner


def _expansion_base(s, name: str, target: str) -> _ExpansionBase | None:
    """Topic `name` (None: deleted) and the claims of its physical topic on `target`, read in session `s`."""
    topic = s.get(TopicRow, name)
    if topic is None:
        return None
    return _ExpansionBase(topic.topic_id, topic.partitions, claims.load(s, name).get((target, name), {}))


def _changed_during_expansion(name: str) -> Conflict:
    return Conflict(f"topic {name} changed during the expansion; run it again")


class WorkflowEngine:
    def __init__(self, controller, drain_interval: float | None = None):
        self.ctl = controller
        self.mover = Mover(controller)
        self.coordination = CoordinationMove(controller, self.mover)
        self.drain_interval = drain_interval or max(0.5, min(controller.settings.scan_interval, 5.0))
        self._run_lock = threading.Lock()  # one run moves segments at a time
        # One coordination move at a time, never during a drain round's judgement and drop (`_drop_drained`): an
        # unclean move restores offsets no lower than each chain's first segment as it finds it, which a drop between
        # its write and its switch would raise (docs/DESIGN.md §10.2, §10.4). Not the run lock: a decommission holds
        # that for its whole drain, and a dead coordination cluster's groups must move now.
        self._coordination_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._records: dict[int, dict[str, Any]] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._sweep_rounds = RoundLog(log, "sweep", lambda: self.ctl.leadership)

    # -- API ------------------------------------------------------------------------------------
    def start(self, kind: str, cluster: str, strategy: str | None = None, drain: str | bool | None = None,
              bootstrap: str | None = None, unclean: bool = False) -> dict[str, Any]:
        """Validate (a clear error and nothing changed when the input is wrong), record the run, start it.
        An unfinished run of the same kind and cluster is returned instead of starting a second one."""
        params, phases = _request(kind, strategy, drain, bootstrap, unclean)
        if self.ctl.db_regression is not None and kind != "failover":  # docs/DESIGN.md §3.3, "Lost commits"
            raise Conflict(f"no workflow starts: {self.ctl.db_regression['message']}; check the held moves and the "
                           f"proxies' views, then restart the controller", status=503)
        with self._start_lock:
            running = self._unfinished(kind, cluster)
            if running is not None:
                return self.get(running)
            registered = False
            if kind == "scale_up":
                self._check_scale_up(cluster, bootstrap)
                registered = self._register(cluster, bootstrap)
            elif kind == "failover":
                self._check_failover(cluster)
            elif kind == "coordination_move":
                self.coordination.check(cluster, bool(unclean))
            else:
                self._check_decommission(cluster)
            now = time.time()
            record = {"kind": kind, "cluster": cluster, **params, "state": "running", "step": phases[0],
                      "changed": registered, "moved": 0, "partitions_moved": [], "error": None, "created_at": now,
                      "finished_at": None, "phases": [{"name": p, "state": "pending", "started_at": None,
                                                       "finished_at": None, "done": 0, "total": 0} for p in phases]}
            record.pop("bootstrap", None)
            with self.ctl.session() as s:
                row = WorkflowRow(kind=kind, cluster=cluster, state="running", step=phases[0],
                                  params_json=json.dumps(params), created_at=now, record_json=json.dumps(record),
                                  updated_at=now)
                s.add(row)
                self.ctl.check_leader(s)  # a controller that lost its row records no run the active one never sees
                s.commit()
                record["id"] = row.id
            self._records[row.id] = record
            self._save(row.id)
            self._spawn(row.id)
            return self.get(row.id)

    def dry_run(self, kind: str, cluster: str, strategy: str | None = None, drain: str | bool | None = None,
                bootstrap: str | None = None, unclean: bool = False) -> dict[str, Any]:
        """What start() would do, planned from the current view, without doing it (`POST /v1/workflows?dry_run=true`,
        the modules' check mode). The same validation, so a request start() refuses gets the same error; the
        moves are the ones start() would plan now (the same planners). Writes nothing, not even a registration.
        With a run of the same kind and cluster unfinished, start() would return that run: the plan is then its
        moves not yet finished, and nothing new."""
        params, _ = _request(kind, strategy, drain, bootstrap, unclean)
        plan = {"dry_run": True, "kind": kind, "cluster": cluster, **params, "running": None, "registers": False,
                "states": [], "partitions_moved": []}
        plan.pop("bootstrap", None)
        running = self._unfinished(kind, cluster)
        if running is not None:
            plan["running"] = running
            plan["partitions_moved"] = self._unfinished_moves(running)
        elif kind == "scale_up":
            self._check_scale_up(cluster, bootstrap)
            plan["registers"] = cluster not in self._clusters()
            plan["partitions_moved"] = self._scale_up_plan(cluster, params["strategy"])
        elif kind == "failover":
            self._check_failover(cluster)
            plan["states"], plan["partitions_moved"] = self._failover_dry_plan(cluster)
        elif kind == "coordination_move":
            old = self.coordination.check(cluster, bool(unclean))
            plan["from"] = old
            plan["states"] = [] if old == cluster else [f"coordination {old} -> {cluster}"]
        else:
            self._check_decommission(cluster)
            plan["states"], plan["partitions_moved"] = self._decommission_plan(cluster)
        plan["moved"] = sum(m.get("partitions_added", 1) for m in plan["partitions_moved"])
        plan["changed"] = running is None and bool(plan["registers"] or plan["states"] or plan["partitions_moved"])
        return plan

    def _scale_up_plan(self, target: str, strategy: str) -> list[dict[str, Any]]:
        active = self._active()
        if target not in self._clusters():
            active.append(target)  # start() registers it first
        elif target not in active:
            raise Unavailable(f"cluster {target} does not answer (reachable: false): a scale-up onto it would fail")
        if strategy == "expand":
            return [{"topic": name, "partitions_added": ceil(partitions / max(1, len(active) - 1)), "to": target}
                    for name, partitions in self._expand_todo(target)]
        lost = self._lost_targets([target]) if target in self._clusters() else frozenset()
        return [_planned(m) for m in rebalance(self._chains(), active, target, self._claims(), lost=lost)]

    def _decommission_plan(self, cluster: str) -> tuple[list[str], list[dict[str, Any]]]:
        """The state changes and moves of a decommission; like _decommission, it leaves out what is done."""
        state = ClusterState(self._clusters()[cluster].state)
        order = [ClusterState.ACTIVE, ClusterState.READ_ONLY, ClusterState.DRAINING, ClusterState.REMOVED]
        states = [f"{a.value} -> {b.value}" for a, b in itertools.pairwise(order[order.index(state):])]
        moves = []
        if state in (ClusterState.ACTIVE, ClusterState.READ_ONLY):
            moves = [_planned(m) for m in self._evacuate_plan(cluster)]
        return states, moves

    def _failover_dry_plan(self, cluster: str) -> tuple[list[str], list[dict[str, Any]]]:
        """The state change and unclean moves of a failover: _failover's first round (the same evacuation). A
        partition another run is moving now is listed with the target it would get now; the run takes it once
        that move settled (§9.1), planned again then."""
        row = self._clusters()[cluster]
        state = ClusterState(row.state)
        # the mark alone for a dead cluster a decommission made read_only or draining (§9.2), with read_only otherwise
        states = ["active -> read_only"] if state == ClusterState.ACTIVE else [GIVEN_UP]
        if gives_up_nothing(row):
            states = []
        if state not in (ClusterState.ACTIVE, ClusterState.READ_ONLY):
            return states, []
        return states, [{**_planned(m), "gap": m.gap} for m in self._failover_plan(cluster)]

    def _unfinished_moves(self, run_id: int) -> list[dict[str, Any]]:
        with self.ctl.session() as s:
            rows = list(s.scalars(select(MoveRow).where(MoveRow.id.in_(self.mover.unfinished(run_id)))
                                  .order_by(MoveRow.id)))
        return [{"topic": r.topic, "partition": r.partition, "from": r.from_cluster, "to": r.to_cluster,
                 "state": r.state} for r in rows]

    def get(self, run_id: int) -> dict[str, Any]:
        """The run's record as last saved (the worker thread saves it on every change). With its id even when the
        database went away right after start() recorded it, before the record with the id was saved."""
        with self.ctl.session() as s:
            row = s.get(WorkflowRow, run_id)
            if row is None:
                raise NotFound(f"unknown workflow run {run_id}")
            return {**json.loads(row.record_json), "id": run_id}

    def runs(self) -> list[dict[str, Any]]:
        with self.ctl.session() as s:
            ids = list(s.scalars(select(WorkflowRow.id).order_by(WorkflowRow.id)))
        return [self.get(i) for i in ids]

    def resume(self) -> list[int]:
        """Start a thread for every run a previous controller left unfinished; settle the moves no running
        run owns (a run that failed and could not roll back, a controller that died in a direct move), and
        keep doing both in the background (`sweep_round`)."""
        self.mover.sweep()
        resumed = self._respawn()
        threading.Thread(target=self._sweep_loop, name="workflow-sweeper", daemon=True).start()
        if self.ctl.settings.offsets_copy_interval > 0:
            threading.Thread(target=self._offsets_copy_loop, name="offsets-copy", daemon=True).start()
        if self.ctl.settings.auto_failover_after is not None:
            threading.Thread(target=self._auto_failover_loop, name="auto-failover", daemon=True).start()
        return resumed

    def _sweep_loop(self) -> None:
        while not self.ctl.wait_stopping(SWEEP_INTERVAL_S):
            self.sweep_round()

    def sweep_round(self) -> list[int]:
        """What the sweeper does every SWEEP_INTERVAL_S: resume every run the database says is running that has no
        thread here (one whose thread died, e.g. on a database error it could not commit its end through), and
        settle the moves no running run owns (docs/DESIGN.md §7), and clear a freeze of commits no running coordination
        move owns (§10.1). Returns the runs resumed.

        Settling needs no run lock: a run commits a state other than `running` only once its moves are settled or
        it gave up on them (`_end`), so no thread drives a move whose run is not running; a running run's moves are
        its own."""
        resumed = []
        try:
            self.ctl.refuse_unless_leading()  # one that lost the row settles nothing: the active one's sweeper does
            resumed = self._respawn()
            self.mover.sweep()
            self.coordination.clear_orphaned_freeze()
        except Exception as e:
            self._sweep_rounds.failed(e)
        return resumed

    def _respawn(self) -> list[int]:
        """A thread for every running run that has none, while this controller holds the leader row (one that lost
        it leaves them to the active one). Under the start lock: start() records a run and spawns it in one go."""
        with self._start_lock:
            with self.ctl.session() as s:
                try:
                    self.ctl.check_leader(s)
                except NotLeader:
                    return []
                rows = list(s.scalars(select(WorkflowRow).where(WorkflowRow.state == "running")
                                      .order_by(WorkflowRow.id)))
            rows = [row for row in rows if not self._alive(row.id)]
            for row in rows:
                self._records[row.id] = {**json.loads(row.record_json), "id": row.id}
                log.info("resuming workflow %d (%s %s) at %s", row.id, row.kind, row.cluster, row.step)
                self._spawn(row.id)
        return [r.id for r in rows]

    def _alive(self, run_id: int) -> bool:
        thread = self._threads.get(run_id)
        return thread is not None and thread.is_alive()

    def _offsets_copy_loop(self) -> None:
        """Every `offsets_copy_interval` seconds, a copy of every group's committed offsets: what an unclean
        coordination move restores when the coordination cluster dies (docs/DESIGN.md §10)."""
        interval = self.ctl.settings.offsets_copy_interval
        while True:
            try:
                self.coordination.copy_now()
            except Exception as e:  # the coordination cluster does not answer: keep the last copy
                log.warning("groups' offsets not copied (the last copy is kept): %s", e)
            if self.ctl.wait_stopping(interval):
                return

    def _auto_failover_loop(self) -> None:
        """`--auto-failover-after N`: a cluster the scans found unreachable for N seconds is failed over, as if an
        operator asked (the same checks: never the coordination cluster or the only active one)."""
        after = self.ctl.settings.auto_failover_after
        down_since: dict[str, float] = {}
        refused: set[str] = set()
        rounds = RoundLog(log, "auto-failover check", lambda: self.ctl.leadership)
        while not self.ctl.wait_stopping(min(1.0, max(0.1, after / 4))):
            try:
                self.auto_failover_round(down_since, refused, after)
            except Exception as e:
                rounds.failed(e)

    def auto_failover_round(self, down_since: dict[str, float], refused: set[str], after: float) -> list[int]:
        """One check: start a failover of each cluster unreachable for `after` seconds that still takes writes.
        Returns the runs started. `down_since` and `refused` carry state between rounds."""
        now = time.monotonic()
        started = []
        for c in self._clusters().values():
            if c.reachable or c.state not in (ClusterState.ACTIVE, ClusterState.READ_ONLY):
                down_since.pop(c.id, None)
                refused.discard(c.id)
                continue
            since = down_since.setdefault(c.id, now)
            if now - since < after or not self._active_on(c.id) or self._unfinished("failover", c.id):
                continue
            try:
                run = self.start("failover", c.id)
            except (Conflict, NotFound) as e:
                if c.id not in refused:
                    log.warning("auto-failover of %s refused: %s", c.id, e)
                    refused.add(c.id)
                continue
            log.warning("cluster %s unreachable for %.0f s: failover started (run %d)", c.id, now - since, run["id"])
            started.append(run["id"])
        return started

    def wait(self, run_id: int, timeout: float | None = None) -> dict[str, Any]:
        t = self._threads.get(run_id)
        if t is not None:
            t.join(timeout)
        return self.get(run_id)

    # -- validation ----------------------------------------------------------------------------
    def _check_scale_up(self, cluster: str, bootstrap: str | None) -> None:
        rows = self._clusters()
        row = rows.get(cluster)
        if row is None and not bootstrap:
            raise NotFound(f"unknown cluster {cluster!r}: pass its bootstrap (--bootstrap HOST:PORT) to register it")
        if row is not None:
            if bootstrap and bootstrap != row.bootstrap:
                raise Conflict(f"cluster {cluster} is registered with bootstrap {row.bootstrap}, not {bootstrap}; "
                               "nothing was changed")
            if row.state != ClusterState.ACTIVE:
                raise Conflict(f"cluster {cluster} is {row.state}: only an active cluster can take writes")
            return
        scan = self.ctl.kafka.scan(cluster, bootstrap)  # read only: dry_run validates with it too
        if not scan.reachable:
            raise Unavailable(f"cannot reach a Kafka cluster at {bootstrap}: {scan.error}; nothing was changed")
        assert bootstrap  # a new cluster: checked above
        new_id = self._kafka_cluster_id(cluster, bootstrap)
        for other in rows.values():
            if other.state == ClusterState.REMOVED:
                continue
            if other.bootstrap == bootstrap or (new_id and new_id == self._kafka_cluster_id(other.id, other.bootstrap)):
                raise Conflict(f"{bootstrap} is the Kafka cluster already registered as {other.id}; "
                               "a physical cluster can join the federation only once. Nothing was changed")

    def _register(self, cluster: str, bootstrap: str | None) -> bool:
        """A scale-up onto a cluster not registered yet registers it, once _check_scale_up accepted it: True
        when it did (the run's record says changed, as the dry run's `registers` predicts)."""
        if bootstrap and cluster not in self._clusters():
            self.ctl.put_cluster(cluster, bootstrap, None)
            return True
        return False

    def _check_decommission(self, cluster: str) -> None:
        rows = self._clusters()
        row = rows.get(cluster)
        if row is None:
            raise NotFound(f"unknown cluster {cluster!r}")
        if row.state == ClusterState.REMOVED:
            return  # nothing to do: the run finishes at once, unchanged
        if coordination_cluster(list(rows.values())) == cluster:
            raise Conflict(f"cluster {cluster} is the coordination cluster (it holds the consumer groups and "
                           "their committed offsets): move that role first with `fedkafka coordination move --to "
                           "CLUSTER`. Nothing was changed")
        others = [c.id for c in rows.values() if c.id != cluster and c.state == ClusterState.ACTIVE and c.reachable]
        if not others:
            raise Conflict(f"cluster {cluster} is the last active cluster: its partitions would have nowhere "
                           "to go. Add a cluster first. Nothing was changed")

    def _check_failover(self, cluster: str) -> None:
        """Refused when a planned move could keep every acked record (the cluster answers), or when there is
        nowhere to go or the groups live there (docs/DESIGN.md §9)."""
        rows = self._clusters()
        row = rows.get(cluster)
        if row is None:
            raise NotFound(f"unknown cluster {cluster!r}")
        if coordination_cluster(list(rows.values())) == cluster:
            raise Conflict(f"cluster {cluster} is the coordination cluster (it holds every consumer group and its "
                           "committed offsets): move that role first with `fedkafka coordination move --to "
                           "CLUSTER [--unclean]`. Nothing was changed")
        # no active segment there: the run moves nothing and finishes at once, only marking given up a dead cluster a
        # decommission made read_only or draining; one that answers, or is given up already, is left as it is
        # (`gives_up_nothing`: a failover asked twice, or by a playbook run again, changes nothing)
        if row.state in (ClusterState.DRAINING, ClusterState.REMOVED):
            return
        if row.state == ClusterState.READ_ONLY and not self._active_on(cluster):
            return
        others = [c.id for c in rows.values() if c.id != cluster and c.state == ClusterState.ACTIVE and c.reachable]
        if not others:
            raise Conflict(f"cluster {cluster} is the only active cluster: its partitions would have nowhere to "
                           "go. Nothing was changed")
        if row.reachable:
            raise Conflict(f"cluster {cluster} is reachable: a failover would leave a gap in its partitions' "
                           f"offsets for nothing. Move its writes with `fedkafka decommission --cluster {cluster}` "
                           "(a planned move keeps every acked record in place). Nothing was changed")

    def _kafka_cluster_id(self, cluster: str, bootstrap: str) -> str | None:
        try:
            admin = self.ctl.kafka.client(cluster, bootstrap)
            return admin.describe_cluster(request_timeout=self.ctl.kafka.timeout).result(
                timeout=self.ctl.kafka.timeout + 2).cluster_id
        except (KafkaException, TimeoutError, ValueError) as e:
            log.warning("cluster id of %s (%s) not read: %s", cluster, bootstrap, e)
            return None

    def _clusters(self) -> dict[str, ClusterRow]:
        with self.ctl.session() as s:
            return {c.id: c for c in s.scalars(select(ClusterRow).order_by(ClusterRow.ordinal))}

    def _unfinished(self, kind: str, cluster: str) -> int | None:
        with self.ctl.session() as s:
            return s.scalar(select(WorkflowRow.id).where(WorkflowRow.kind == kind, WorkflowRow.cluster == cluster,
                                                         WorkflowRow.state == "running"))

    # -- running -----------------------------------------------------------------------------------
    def _spawn(self, run_id: int) -> None:
        t = threading.Thread(target=self._run, args=(run_id,), name=f"workflow-{run_id}", daemon=True)
        self._threads[run_id] = t
        t.start()

    def _run(self, run_id: int) -> None:
        rec = self._records[run_id]
        try:
            if rec["kind"] == "coordination_move":
                with self._coordination_lock:
                    done = self.coordination.run(rec["cluster"], rec.get("unclean", False),
                                                 lambda phase, d, t: self._phase(run_id, phase, d, t), run_id)
                rec["changed"], rec["from"], rec["groups"] = done["changed"], done["from"], done["groups"]
                for ph in rec["phases"]:
                    if ph["state"] != "done":
                        self._phase(run_id, ph["name"], max(ph["total"], 1), max(ph["total"], 1))
            elif rec["kind"] == "failover":
                # not behind the run lock: a decommission's drain may hold it for hours, and a dead cluster's
                # writes must move now. Partitions another run is moving are retried once those moves settle.
                self._failover(run_id)
            else:
                self._run_locked(run_id)
            rec["state"] = "done"
        except _Stopping:  # left "running": the next controller resumes it
            log.info("workflow %d paused at %s: controller stopping", run_id, rec["step"])
            return
        except NotLeader as e:  # left "running": the active controller resumes it
            log.warning("workflow %d left at %s to the active controller: %s", run_id, rec["step"], e)
            return
        except Exception as e:  # the record says why; a new POST retries (every phase is idempotent)
            log.exception("workflow %d failed", run_id)
            rec["state"], rec["error"] = "failed", str(e)
        rec["finished_at"] = time.time()
        self._end(run_id)

    def _end(self, run_id: int) -> None:
        """Commit the run's end: its unfinished moves settled first (a move that failed while the database was down
        too is still frozen: docs/DESIGN.md §4.1), then its record, each retried while the database does not answer.
        Moves that cannot be settled (an error no reconnect clears, or END_SETTLE_TRIES outages in a row) are left
        to the sweeper, which settles the moves of runs not `running`: the run then records `failed`."""
        rec = self._records[run_id]
        try:
            if not self._until_committed(run_id, lambda: self._settle_own(run_id), END_SETTLE_TRIES):
                return  # left `running` to the active or the next controller
        except Exception as e:
            log.exception("workflow %d: its moves not settled; the sweeper settles them", run_id)
            why = f"its moves were left to the sweeper: {e}"
            rec["state"], rec["error"] = "failed", f"{rec['error']}; {why}" if rec["error"] else why
        try:
            self._until_committed(run_id, lambda: self._record_end(run_id))
        except Exception:  # no thread, `running`: the sweeper runs it again
            log.exception("workflow %d: its end not recorded", run_id)

    def _settle_own(self, run_id: int) -> None:
        ids = self.mover.unfinished(run_id)
        if ids:
            self.mover.settle(ids, self._records[run_id]["error"] or "the run ended", strict=True)

    def _record_end(self, run_id: int) -> None:
        if any(ph["name"] == "plan" for ph in self._records[run_id]["phases"]):
            self._record_moves(run_id)  # saves the record with the moves as they ended
        else:
            self._save(run_id)

    def _until_committed(self, run_id: int, write, tries: int | None = None) -> bool:
        """`write()` again, with backoff, while the database does not answer (a restart shorter than the leader
        lease stops no controller, and a run must not stay `running` with no thread). False when this controller
        lost its row or stops: the run stays `running`, the active controller (or the next) resumes it. Raises an
        error no reconnect clears (`_clears`) at once, and the last one after `tries` tries."""
        delay, longest = END_RETRY_S
        for attempt in itertools.count(1):
            try:
                write()
                return True
            except NotLeader as e:
                log.warning("workflow %d left to the active controller: %s", run_id, e)
                return False
            except Exception as e:
                if not _clears(e) or attempt == tries:
                    raise
                log.warning("workflow %d: its end not committed (%s); again in %.1f s", run_id, e, delay)
            if self.ctl.wait_stopping(delay):
                return False
            delay = min(2 * delay, longest)
        raise AssertionError("unreachable")

    def _run_locked(self, run_id: int) -> None:
        rec = self._records[run_id]
        with self._run_lock:
            if rec["kind"] == "scale_up" and rec.get("strategy") == "expand":
                self._expand(run_id)
            elif rec["kind"] == "scale_up":
                self._phase(run_id, "register", 1, 1)
                resumed = self._has_moves(run_id)
                rolled_back = self._moves(run_id, lambda avoid: self._rebalance_plan(rec["cluster"], avoid))
                if rolled_back:  # done only once it moved what it planned (a move rolled back alone raises nothing)
                    resumed_note = " (found when the run was resumed)" if resumed else ""
                    raise MoveFailed(f"moves rolled back, writes continue where they were: {'; '.join(rolled_back)}"
                                     f"{resumed_note}; run the scale-up again")
                self._moves_done(run_id)
            else:
                self._decommission(run_id)

    def _phase(self, run_id: int, name: str, done: int, total: int) -> None:
        """Progress of one phase; earlier phases count as finished. Saved whenever it changes."""
        rec = self._records[run_id]
        now = time.time()
        changed = False
        for ph in rec["phases"]:
            if ph["name"] == name:
                if ph["started_at"] is None:
                    ph["started_at"], changed = now, True
                if (ph["done"], ph["total"]) != (done, total):
                    ph["done"], ph["total"], changed = done, total, True
                state = "done" if done >= total else "running"
                if ph["state"] != state:
                    ph["state"], changed = state, True
                    ph["finished_at"] = now if state == "done" else None
                break
            if ph["state"] != "done":
                ph["state"], ph["finished_at"], changed = "done", now, True
                ph["started_at"] = ph["started_at"] or now
        if rec["step"] != name:
            rec["step"], changed = name, True
        if changed:
            self._save(run_id)

    def _save(self, run_id: int) -> None:
        rec = self._records[run_id]
        with self.ctl.session() as s:
            row = s.get(WorkflowRow, run_id)
            row.state, row.step, row.record_json = rec["state"], rec["step"], json.dumps(rec)
            row.updated_at = time.time()
            self.ctl.check_leader(s)
            s.commit()

    # -- moves (both workflows) ----------------------------------------------------------------------
    def _moves(self, run_id: int, planner) -> list[str]:
        """Plan (once: planned moves are rows) and run this run's moves; a restart picks them up again. Returns why
        the moves of the run that ended rolled back were: rolled back alone while the run went on (`Mover.run` raises
        nothing for a move whose returning target did not settle, docs/DESIGN.md §6.3), or found so by a resumed run
        (an earlier thread of the run failed them and could not record its `failed`: it lost the leader row, stopped,
        or the database went away in `_end`). A move whose topic was deleted under it is not among them (`topic_gone`:
        nothing of it is left to move). The run neither plans again nor moves them: its caller decides what that
        means (a scale-up fails, never `done` with a planned move not made; a decommission finds partitions still on
        the cluster)."""
        if not self._has_moves(run_id):
            self._plan_once(run_id, planner)
        ids = self.mover.unfinished(run_id)
        self._phase(run_id, "plan", 1, 1)
        self._run_moves(run_id, ids)
        with self.ctl.session() as s:
            ended = s.scalars(select(MoveRow.error).where(MoveRow.workflow_id == run_id,
                                                          MoveRow.state == "rolled_back"))
            return sorted({error or "no reason recorded" for error in ended if not topic_gone(error)})

    def _has_moves(self, run_id: int) -> bool:
        """Whether the run recorded its moves already (resumed: it plans none again)."""
        with self.ctl.session() as s:
            return bool(s.scalar(select(func.count()).select_from(MoveRow).where(MoveRow.workflow_id == run_id)))

    def _moves_done(self, run_id: int) -> None:
        """Every move phase marked finished: a run resumed with its moves already finished never went through them."""
        for phase in MOVE_PHASES:
            ph = next(p for p in self._records[run_id]["phases"] if p["name"] == phase)
            if ph["state"] != "done":
                self._phase(run_id, phase, ph["total"], ph["total"])

    def _plan_once(self, run_id: int, planner) -> None:
        for _ in range(PLAN_ATTEMPTS):
            plans, ends = self._ready_plans(planner)
            if self._plan_moves(run_id, plans, ends) is not None:
                return
        raise MoveFailed(f"targets claimed by other runs {PLAN_ATTEMPTS} times in a row; nothing was moved")

    def _ready_plans(self, planner, avoided: AbstractSet[tuple[str, str, int]] = frozenset()
                     ) -> tuple[list[Move], dict[tuple[str, str, int], int]]:
        """`planner(avoid)`'s moves with their targets created, and the targets' log ends (`_ensure_targets`). A move
        back onto an old physical partition of its chain whose log end is below an older segment's seal there (its
        cluster lost its data: `reused_below_seal`) would be refused at its seal (docs/DESIGN.md §4.5): planned again
        with that partition avoided, it takes a new one. So does a move back onto one whose high watermark does not
        reach its leader's log end within the seal timeout (`Mover.returning_ends`, docs/DESIGN.md §6.3): a new one
        needs no such wait. Each round avoids at least one more, so it ends. `avoided`: avoided from the start."""
        avoid: set[tuple[str, str, int]] = set(avoided)
        while True:
            plans = planner(avoid)
            ends, unsettled = self.mover.returning_ends(plans, self._ensure_targets(plans)) if plans else ({}, set())
            below = reused_below_seal(self._chains(), plans, ends)
            if not below and not unsettled:
                return plans, ends
            if below:
                log.warning("physical partitions %s hold less than older segments of their partitions sealed there "
                            "(their cluster lost data?): planned again onto new ones", sorted(below))
            if unsettled:
                log.warning("physical partitions %s hold older segments of their partitions and their high watermarks "
                            "did not reach their log ends: planned again onto new ones", sorted(unsettled))
            avoid |= below | unsettled

    def _plan_moves(self, run_id: int, plans: list[Move],
                    ends: dict[tuple[str, str, int], int] | None = None) -> list[int] | None:
        """Record the moves, each with its target's log end `ends` (read by the mover when None), or None (nothing
        recorded) when another run claimed one of their targets meanwhile, e.g. a failover that planned from the same
        view (docs/DESIGN.md §4.13): plan again then."""
        try:
            return self.mover.plan(run_id, plans, ends)
        except ClaimTaken as e:
            log.info("workflow %d plans again: %s", run_id, e)
            return None

    def _run_moves(self, run_id: int, ids: list[int]) -> None:
        try:
            self.mover.run(ids, lambda phase, done, total: self._phase(run_id, phase, done, total))
        except MoveFailed as e:
            raise MoveFailed(f"moves rolled back, writes continue where they were: {e}") from None
        finally:
            self._record_moves(run_id)

    def _record_moves(self, run_id: int) -> None:
        with self.ctl.session() as s:
            rows = list(s.scalars(select(MoveRow).where(MoveRow.workflow_id == run_id, MoveRow.state == "done")
                                  .order_by(MoveRow.id)))
        rec = self._records[run_id]
        rec["partitions_moved"] = [{"topic": r.topic, "partition": r.partition, "from": r.from_cluster,
                                    "to": r.to_cluster, "seal": r.seal, "phys_start": r.phys_start} for r in rows]
        rec["moved"] = len(rows)
        rec["changed"] = rec["changed"] or bool(rows)
        self._save(run_id)

    def _ensure_targets(self, plans: list[Move]) -> dict[tuple[str, str, int], int]:
        """Physical partitions the moves write to exist before any move row points at them (Kafka first). Returns
        their log ends, which the moves record (`planned_target_end`, docs/DESIGN.md §3.3)."""
        needed: dict[tuple[str, str], int] = {}
        for m in plans:
            needed[(m.to_cluster, m.to_topic)] = max(needed.get((m.to_cluster, m.to_topic), 0), m.to_partition + 1)
        clusters = self._clusters()
        with self.ctl.session() as s:
            configs = {t.name: json.loads(t.config_json) for t in s.scalars(select(TopicRow))}
        self._refuse_lost(needed, clusters)  # created again it would be empty (DESIGN §9.3)
        for (cluster, topic), partitions in sorted(needed.items()):
            try:
                self.ctl.kafka.ensure_topic(cluster, clusters[cluster].bootstrap, topic, partitions,
                                            configs.get(topic, {}))
            except (KafkaUnavailable, KafkaRefused) as e:
                raise MoveFailed(f"cannot create {topic} on {cluster}: {e}; nothing was moved") from None
        # A partition created a moment ago has no leader yet: wait for it now, not while producers are frozen.
        wanted: dict[str, set[tuple[str, int]]] = {}
        for m in plans:
            wanted.setdefault(m.to_cluster, set()).add((m.to_topic, m.to_partition))
        try:
            return self.mover.read_ends(wanted, {c: clusters[c].bootstrap for c in wanted})
        except MoveFailed as e:
            raise MoveFailed(f"new partitions not ready: {e}; nothing was moved") from None

    def _refuse_lost(self, pairs: Iterable[tuple[str, str]], clusters: dict) -> None:
        """MoveFailed when a (cluster, physical topic) of `pairs` lost the data it held (`Controller.refuse_lost`:
        decided from the database, before this controller's first scan too), or its cluster cannot tell."""
        try:
            self.ctl.refuse_lost(pairs, {c: r.bootstrap for c, r in clusters.items()})
        except (PhysicalTopicLost, KafkaUnavailable) as e:
            raise MoveFailed(f"{e}; nothing was moved") from None

    def _lost_targets(self, targets: Iterable[str]) -> set[tuple[str, str]]:
        """(cluster, physical topic) pairs among `targets` x the topics whose cluster lost the data they held: the
        planners send no partition there (one lost topic would otherwise fail every move of a run)."""
        clusters = self._clusters()
        try:
            return self.ctl.lost_physical_topics({(c, t) for c in targets for t in self.ctl.view.topics},
                                                 {c: r.bootstrap for c, r in clusters.items()})
        except KafkaUnavailable as e:  # (a dry run answers 503, a run fails)
            raise Unavailable(f"{e}; nothing was moved") from None

    def _chains(self):
        view = self.ctl.view
        return {name: [c.segments for c in t.partitions] for name, t in view.topics.items()}

    def _claims(self):
        """Every physical partition claimed (segments, dropped ones included, and moves' targets): a planner's new
        targets are past them (docs/DESIGN.md §4.13)."""
        with self.ctl.session() as s:
            return claims.load(s)

    def _active(self) -> list[str]:
        return [c.id for c in self._clusters().values() if c.state == ClusterState.ACTIVE and c.reachable]

    def _rebalance_plan(self, target: str, avoid: AbstractSet[tuple[str, str, int]] = frozenset()) -> list[Move]:
        return rebalance(self._chains(), self._active(), target, self._claims(), avoid, self._lost_targets([target]))

    # -- expand ------------------------------------------------------------------------------------
    def _expand(self, run_id: int) -> None:
        """Add logical partitions on the new cluster (keys re-hash: opt-in). Topics that already have an
        active partition on it are left alone, so a second run changes nothing."""
        rec = self._records[run_id]
        target = rec["cluster"]
        self._phase(run_id, "register", 1, 1)
        active = self._active()
        todo = self._expand_todo(target)
        for i, (name, partitions) in enumerate(todo):
            self._phase(run_id, "expand", i, len(todo))
            extra = ceil(partitions / max(1, len(active) - 1))
            self._add_partitions(name, partitions, extra, target)
            rec["partitions_moved"].append({"topic": name, "partitions_added": extra, "to": target})
            rec["moved"] += extra
            rec["changed"] = True
        self._phase(run_id, "expand", len(todo), len(todo))

    def _expand_todo(self, target: str) -> list[tuple[str, int]]:
        """(topic, partitions) of the topics with no active segment on `target` yet."""
        return [(name, len(parts)) for name, parts in sorted(self._chains().items())
                if not any(segs[-1].cluster == target for segs in parts)]

    def _add_partitions(self, name: str, have: int, extra: int, target: str) -> None:
        clusters = self._clusters()
        coord = _coordination(clusters)
        with self.ctl.session() as s:
            base = _expansion_base(s, name, target)  # claims: dropped segments' partitions hold records still
            config = json.loads(s.get(TopicRow, name).config_json) if base is not None else {}
        if base is None or base.partitions != have:
            raise _changed_during_expansion(name)
        first = max(base.claimed, default=-1) + 1
        self._refuse_lost([(target, name)], clusters)  # created again it would be empty (DESIGN §9.3)
        self._refuse_leftover(name, target, clusters[target].bootstrap, base)
        self.ctl.kafka.ensure_topic(target, clusters[target].bootstrap, name, first + extra, config)
        self.ctl.kafka.ensure_topic(coord, clusters[coord].bootstrap, shadow_topic(name), have + extra)
        with self.ctl.topology_change() as s:
            if _expansion_base(s, name, target) != base:
                raise _changed_during_expansion(name)
            s.get(TopicRow, name).partitions = have + extra
            for i in range(extra):
                try:
                    claims.claim(s, target, name, first + i, name, have + i)
                except ClaimTaken:  # another controller's commit, meanwhile
                    raise _changed_during_expansion(name) from None
                s.add(ChainRow(topic=name, partition=have + i, leader_epoch=0, frozen=False))
                s.add(SegmentRow(topic=name, partition=have + i, seq=0, cluster=target, physical_topic=name,
                                 physical_partition=first + i, phys_start=0, phys_end=None, logical_base=0))
            self.ctl.check_leader(s)
            s.commit()
        self.ctl.compose()

    def _refuse_leftover(self, name: str, target: str, bootstrap: str, base: _ExpansionBase) -> None:
        """Identity segments start at offset 0: never on records no partition of the topic accepted (DESIGN §4.13,
        "A new topic's physical topics"). Kafka is read without the write lock; what it found is judged under the
        lock, after the concurrent-change check, against the claims read there: a partition the topic claimed since
        `base` (a growth onto `target`, a move's target) holds the topic's own records, and answers "changed during
        the expansion", never "delete it"."""
        written = leftovers.unclaimed_written(self.ctl.kafka, target, bootstrap, name, set(base.claimed))
        if not written:
            return
        with self.ctl.topology_change() as s:
            if _expansion_base(s, name, target) != base:
                raise _changed_during_expansion(name)
        # the same topic id and claims now as when Kafka was read: those partitions were unclaimed then, and nothing
        # of fedkafka writes where no segment (so no claim) points
        raise leftovers.leftover_conflict(name, target, written, "POLICY_VIOLATION")

    # -- failover ----------------------------------------------------------------------------------
    def _failover(self, run_id: int) -> None:
        """Every active segment on a dead cluster gets a new segment on a live one, after a gap (docs/DESIGN.md
        §9): read_only first (it comes back read_only), then unclean moves, as many rounds as partitions that
        another run was moving need (they are left out of a plan until those moves settle)."""
        rec = self._records[run_id]
        cluster = rec["cluster"]
        # read_only (no new partition or move targets it) and marked given up: a timestamp question leaves out its
        # segments while it is dead, which a decommission's read_only does not (§9.2)
        if self.ctl.give_up_cluster(cluster):
            rec["changed"] = True
        self._phase(run_id, "read_only", 1, 1)
        own = self.mover.unfinished(run_id)  # a resumed run finishes its own moves first
        if own:
            self._run_moves(run_id, own)
        deadline = time.monotonic() + FAILOVER_BUSY_WAIT_S
        lost_claims = 0
        while self._active_on(cluster):
            busy = self._busy()
            plans, ends = self._ready_plans(lambda avoid, busy=busy: [p for p in self._failover_plan(cluster, avoid)
                                                                      if (p.topic, p.partition) not in busy],
                                            self._unsettled_targets(run_id))
            if plans:
                ids = self._plan_moves(run_id, plans, ends)  # None: a target was claimed meanwhile, the next round
                if ids is not None:                    # plans past it
                    lost_claims = 0
                    self._phase(run_id, "plan", 1, 1)
                    self._run_moves(run_id, ids)
                elif (lost_claims := lost_claims + 1) >= PLAN_ATTEMPTS:  # the same plan lost every time: no spin
                    raise MoveFailed(f"targets claimed by other runs {PLAN_ATTEMPTS} times in a row; run the "
                                     f"failover again")
            elif (left := self._writing_to(cluster)) and not any(key in busy for key in left):
                raise MoveFailed(f"{len(left)} partitions still write to {cluster}: their physical topic lost the "
                                 f"data it held on every live cluster ({', '.join(f'{t}/{p}' for t, p in left[:10])}); "
                                 "repair one and run the failover again (docs/OPERATIONS.md, \"A cluster lost a "
                                 "topic's data\")")
            elif time.monotonic() > deadline:
                raise MoveFailed(f"{self._active_on(cluster)} partitions still write to {cluster}: other moves of "
                                 f"them did not settle within {FAILOVER_BUSY_WAIT_S:.0f} s; run the failover again")
            else:
                time.sleep(0.5)
            if self._stop_requested():
                raise _Stopping()
        self._moves_done(run_id)

    def _unsettled_targets(self, run_id: int) -> set[tuple[str, str, int]]:
        """The targets of this run's moves rolled back because their returning target did not settle at the freeze or
        the seal (`moves.UNSETTLED`): avoided by its later plans. A target settling at each plan but never at the
        freeze would otherwise take the partition back every round, without end (docs/DESIGN.md §6.3 point 5)."""
        with self.ctl.session() as s:
            return {(c, t, p) for c, t, p in s.execute(
                select(MoveRow.to_cluster, MoveRow.to_topic, MoveRow.to_partition)
                .where(MoveRow.workflow_id == run_id, MoveRow.state == "rolled_back", MoveRow.error == UNSETTLED))}

    def _failover_plan(self, dead: str, avoid: AbstractSet[tuple[str, str, int]] = frozenset()) -> list[Move]:
        return [dataclasses.replace(m, gap=UNCLEAN_GAP) for m in self._evacuate_plan(dead, avoid)]

    def _writing_to(self, cluster: str) -> list[tuple[str, int]]:
        return [(t, p) for t, parts in sorted(self._chains().items()) for p, segs in enumerate(parts)
                if segs[-1].cluster == cluster]

    def _busy(self) -> set[tuple[str, int]]:
        with self.ctl.session() as s:
            return {(t, p) for t, p in s.execute(select(MoveRow.topic, MoveRow.partition)
                                                 .where(MoveRow.state.not_in(("done", "rolled_back"))))}

    # -- decommission ------------------------------------------------------------------------------
    def _decommission(self, run_id: int) -> None:
        rec = self._records[run_id]
        cluster = rec["cluster"]
        state = ClusterState(self._clusters()[cluster].state)
        if state == ClusterState.REMOVED:
            for ph in rec["phases"]:
                ph["state"] = "done"
            return
        if state == ClusterState.ACTIVE:
            self._read_only_unless_coordination(cluster)
        rec["changed"] = True
        self._phase(run_id, "read_only", 1, 1)
        if state in (ClusterState.ACTIVE, ClusterState.READ_ONLY):
            self._settle_moves_to(run_id, cluster)
            self._moves(run_id, lambda avoid: self._evacuate_plan(cluster, avoid))  # moves rolled back: `left` says so
            self._moves_done(run_id)
            left = self._active_on(cluster)
            if left:
                raise MoveFailed(f"{left} partitions still write to {cluster}; run the decommission again")
            self.ctl.set_cluster_state(cluster, "draining")
        self._phase(run_id, "draining", 1, 1)
        self._drain(run_id, cluster, rec["drain"])
        self.ctl.set_cluster_state(cluster, "removed")
        self._phase(run_id, "removed", 1, 1)

    def _read_only_unless_coordination(self, cluster: str) -> None:
        """`cluster` read_only (new writes never land on it again), unless a coordination move made it the
        coordination cluster since the run was checked (coordination moves do not wait for the run lock): under the
        coordination lock, so no move is between its check (which wants an active target) and its switch."""
        with self._coordination_lock:
            if _coordination(self._clusters()) == cluster:
                raise Conflict(f"cluster {cluster} became the coordination cluster since the decommission was "
                               "started: move that role first with `fedkafka coordination move --to CLUSTER`. "
                               "Nothing was changed")
            self.ctl.set_cluster_state(cluster, "read_only")

    def _settle_moves_to(self, run_id: int, cluster: str) -> None:
        """Wait until no unfinished move targets `cluster` (e.g. a rebalance's, planned before it went read_only), so
        that it is not drained or removed under one. MoveFailed at once for a held move: it waits for an operator (its
        target may hold records acked under a publish the config database lost), and when the others did not settle
        within FAILOVER_BUSY_WAIT_S."""
        deadline = time.monotonic() + FAILOVER_BUSY_WAIT_S
        while True:
            with self.ctl.session() as s:
                moving = unfinished_moves_to(s, cluster)
                held = [r for r in moving if r.state == "held"]
                named, held_named = moves_named(moving), moves_named(held)
            if held:
                raise MoveFailed(f"{len(held)} held moves target {cluster} ({held_named}): it may hold records acked "
                                 f"under a publish the config database lost. Repair them first: `fedkafka cluster "
                                 f"activate {cluster}`, publish or roll back each (docs/OPERATIONS.md, \"A held "
                                 f"move\"), then run the decommission again")
            if not moving:
                self._waiting(run_id, [])
                return
            if time.monotonic() > deadline:
                raise MoveFailed(f"{len(moving)} unfinished moves still target {cluster} ({named}) after "
                                 f"{FAILOVER_BUSY_WAIT_S:.0f} s; run the decommission again")
            self._waiting(run_id, [f"unfinished moves to {cluster}: {named}"])
            if self._stop_requested():
                raise _Stopping()
            time.sleep(self.drain_interval)

    def _evacuate_plan(self, leaving: str, avoid: AbstractSet[tuple[str, str, int]] = frozenset()) -> list[Move]:
        active = [c for c in self._clusters().values() if c.reachable and c.state == ClusterState.ACTIVE]
        targets = [c.id for c in active if c.id != leaving]
        return evacuate(self._chains(), [*targets, leaving], leaving, self._claims(), avoid,
                        self._lost_targets(targets))

    def _active_on(self, cluster: str) -> int:
        with self.ctl.session() as s:
            return s.scalar(select(func.count()).select_from(SegmentRow).where(
                SegmentRow.cluster == cluster, SegmentRow.phys_end.is_(None)))

    def _drain(self, run_id: int, cluster: str, mode: str) -> None:
        """Drop each chain's oldest segments up to its last one on `cluster` once retention removed them
        (or every group committed past them); done when no segment references `cluster`, and no unfinished move targets
        it (`_settle_moves_to`)."""
        self._settle_moves_to(run_id, cluster)
        with self.ctl.session() as s:
            total = s.scalar(select(func.count()).select_from(SegmentRow).where(SegmentRow.cluster == cluster))
        while True:
            with self.ctl.session() as s:
                left = s.scalar(select(func.count()).select_from(SegmentRow).where(SegmentRow.cluster == cluster))
            self._phase(run_id, "drain", total - left, total)
            if not left:
                self._waiting(run_id, [])
                return
            with self._coordination_lock:  # never between an unclean coordination move's write and its switch
                blockers = self._drop_drained(cluster, mode)
            self._waiting(run_id, blockers)
            if self._stop_requested():
                raise _Stopping()
            time.sleep(self.drain_interval)

    def _stop_requested(self) -> bool:
        return self.ctl.stopping()

    def _waiting(self, run_id: int, blockers: list[str]) -> None:
        """What the drain still waits for, in the run's record (the CLI shows it): an operator can act on it,
        e.g. delete a consumer group that was abandoned behind a seal."""
        rec = self._records[run_id]
        if rec.get("waiting_for", []) != blockers:
            rec["waiting_for"] = blockers
            self._save(run_id)

    def _drop_drained(self, cluster: str, mode: str) -> list[str]:
        """Drop what drained; returns what the rest waits for (at most 10 lines)."""
        chains = self._chains_on(cluster)
        if not chains:
            return []
        drops, blockers = self._judge_drained(cluster, mode, chains)
        if drops:
            self._drop_judged(drops)
        return sorted(blockers)[:10]

    def _chains_on(self, cluster: str) -> dict[tuple[str, int], list[tuple[int, Segment]]]:
        """Every chain with a segment on `cluster`, read from the database (not from this controller's view, which
        may be older): per (topic, partition), its segments oldest first, each with its row's `seq`."""
        with self.ctl.session() as s:
            keys = set(s.execute(select(SegmentRow.topic, SegmentRow.partition).where(SegmentRow.cluster == cluster)))
            rows = s.scalars(select(SegmentRow).where(SegmentRow.topic.in_({t for t, _ in keys}))
                             .order_by(SegmentRow.topic, SegmentRow.partition, SegmentRow.seq))
            chains: dict[tuple[str, int], list[tuple[int, Segment]]] = {}
            for row in rows:
                if (row.topic, row.partition) in keys:
                    chains.setdefault((row.topic, row.partition), []).append((row.seq, _segment(row)))
        return chains

    def _judge_drained(self, cluster: str, mode: str, chains: dict[tuple[str, int], list[tuple[int, Segment]]]
                       ) -> tuple[dict[tuple[str, int], list[tuple[int, Segment]]], list[str]]:
        """Per chain, the head segments that drained (docs/DESIGN.md §7.5), and what the others wait for."""
        committed = self._committed({name for name, _ in chains}) if mode == "groups" else {}
        held = self._log_ranges([[seg for _, seg in rows] for rows in chains.values()]) if mode == "retention" else {}
        drops, blockers = {}, []
        for (name, p), rows in chains.items():
            segs = [seg for _, seg in rows]
            floor = committed.get((name, p), -1) if mode == "groups" else None
            if mode == "groups" and (name, p) not in committed and committed.get((name, "groups")):
                floor = -1  # some group consumes the topic but never committed this partition: wait
            elif mode == "groups" and not committed.get((name, "groups")):
                floor = 1 << 62  # no group reads the topic: nothing to wait for
            n = droppable_prefix(segs, cluster, lambda seg: held.get((seg.cluster, seg.topic, seg.partition)), floor)
            if n:
                drops[(name, p)] = rows[:n]
            elif not any(s.active for s in segs if s.cluster == cluster):
                blockers.append(_blocker(name, p, segs, cluster, floor, committed.get((name, p, "group"))))
        return drops, blockers

    def _drop_judged(self, drops: dict[tuple[str, int], list[tuple[int, Segment]]]) -> None:
        """Delete exactly the segments judged drained, by identity (`seq` and content), in a transaction that commits
        only while this controller is the active one (docs/DESIGN.md §3.6, §7.5). A chain whose head is no longer what
        was judged (another controller dropped or changed it meanwhile) is left for the next round."""
        dropped = {}
        with self.ctl.topology_change() as s:
            self.ctl.check_leader(s)
            for (name, p), judged in drops.items():
                rows = list(s.scalars(select(SegmentRow).where(SegmentRow.topic == name, SegmentRow.partition == p)
                                      .order_by(SegmentRow.seq)))
                head = rows[: len(judged)]
                if len(rows) > len(judged) and [(r.seq, _segment(r)) for r in head] == judged:
                    for row in head:
                        s.delete(row)
                    dropped[(name, p)] = len(head)
                else:
                    log.warning("%s/%d: head segments changed since judged drained; judged again next round", name, p)
            s.commit()
        self.ctl.compose()
        log.info("dropped drained segments: %s", dropped)

    def _log_ranges(self, chains: list[list[Segment]]) -> dict[tuple[str, str, int], LogRange]:
        """What each physical partition of these chains holds: log start, and for a segment followed by an unclean
        gap the leader's log end too (its tail may run past its seal, docs/DESIGN.md §9.2). Partitions of a cluster
        that does not answer are left out: their segments do not count as drained."""
        clusters = self._clusters()
        wanted: dict[str, set[tuple[str, int]]] = {}
        tails: dict[str, set[tuple[str, int]]] = {}
        for segs in chains:
            chain = PartitionChain(tuple(segs))
            for seg in segs[:-1]:
                wanted.setdefault(seg.cluster, set()).add((seg.topic, seg.partition))
                if chain.gap_after(seg) is not None:
                    tails.setdefault(seg.cluster, set()).add((seg.topic, seg.partition))
        found: dict[tuple[str, str, int], LogRange] = {}
        for cluster, parts in wanted.items():
            kafka, bootstrap = self.ctl.kafka, clusters[cluster].bootstrap
            try:
                starts = kafka.log_offsets(cluster, bootstrap, sorted(parts))
                ends = kafka.log_end_offsets(cluster, bootstrap, sorted(tails.get(cluster, ())))
            except Exception as e:  # unreachable: its segments simply do not count as drained yet
                log.warning("log offsets of %s not read: %s", cluster, e)
                continue
            found.update({(cluster, t, p): LogRange(start, ends.get((t, p)))
                          for (t, p), (start, _hw) in starts.items()})
        return found

    def _committed(self, topics: set[str]) -> dict:
        """Per (topic, partition): the lowest logical offset committed by the groups that consume the topic;
        (topic, "groups"): how many such groups there are. Read from the coordination cluster's shadow topics."""
        clusters = self._clusters()
        coord = _coordination(clusters)
        kafka, bootstrap = self.ctl.kafka, clusters[coord].bootstrap
        try:
            committed = kafka.committed_offsets(coord, bootstrap, kafka.consumer_groups(coord, bootstrap))
        except (KafkaUnavailable, KafkaRefused) as e:
            log.warning("committed offsets of the groups on %s not read: %s", coord, e)
            return {(t, "groups"): 1 for t in topics}  # unknown: wait
        shadows = {shadow_topic(t): t for t in topics}
        lowest: dict = {}
        for group, parts in committed.items():
            seen = set()
            for shadow, partition, offset, _epoch, _metadata in parts:
                topic = shadows.get(shadow)
                if topic is None or offset < 0:
                    continue
                seen.add(topic)
                key = (topic, partition)
                if offset < lowest.get(key, 1 << 62):
                    lowest[key], lowest[(topic, partition, "group")] = offset, group
            for topic in seen:
                lowest[(topic, "groups")] = lowest.get((topic, "groups"), 0) + 1
        return lowest


def _clears(e: BaseException) -> bool:
    """An error a reconnect (or a moment) clears: the server restarting or away (psycopg raises OperationalError for
    a refused connection, a shutdown, a server starting up), a connection closed under us (InterfaceError, or any
    error SQLAlchemy found the connection dead on), SQLite locked or unable to open its file (OperationalError),
    no pooled connection free in time. Not one a statement raises the same way every time (IntegrityError,
    DataError, ProgrammingError: a bug or bad data)."""
    if isinstance(e, DBAPIError):
        return isinstance(e, (OperationalError, InterfaceError)) or e.connection_invalidated
    return isinstance(e, PoolTimeout)


def _segment(row: SegmentRow) -> Segment:
    return Segment(row.cluster, row.physical_topic, row.physical_partition, row.phys_start, row.phys_end,
                   row.logical_base)


def _blocker(topic: str, p: int, segs, cluster: str, floor: int | None, group: str | None) -> str:
    last = max(i for i, s in enumerate(segs) if s.cluster == cluster)
    end, after = segs[last].sealed_end(), segs[last + 1].logical_base
    ends = f"ends at {end}" if after == end else f"ends at {end} or, in its unclean tail, before {after}"
    if floor is None:
        return f"{topic}/{p}: {cluster}'s data {ends} not expired by retention yet (or {cluster} not read)"
    if floor < 0:
        return f"{topic}/{p}: a group consuming {topic} has not committed this partition yet"
    return f"{topic}/{p}: group {group!r} committed {floor}, {cluster}'s data {ends}"


class _Stopping(Exception):
    pass


def _request(kind: str, strategy: str | None, drain: str | bool | None, bootstrap: str | None,
             unclean: bool = False) -> tuple[dict[str, Any], list[str]]:
    """A request's parameters, normalised, and its phases; Invalid when a value is wrong."""
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "failover":
        return {}, PHASES[(kind, None)]
    if kind == "coordination_move":
        return {"unclean": bool(unclean)}, PHASES[(kind, bool(unclean))]
    if kind == "scale_up":
        strategy = strategy or "rebalance"
        if strategy not in STRATEGIES:
            raise Invalid(f"strategy must be rebalance or expand, got {strategy!r}")
        return {"strategy": strategy, "bootstrap": bootstrap}, PHASES[(kind, strategy)]
    drain = _DRAIN_ALIASES.get(drain, drain)
    if drain not in DRAINS:
        raise Invalid(f"drain must be retention or groups, got {drain!r}")
    return {"drain": drain}, PHASES[(kind, None)]


def _planned(move) -> dict[str, Any]:
    return {"topic": move.topic, "partition": move.partition, "from": move.from_cluster, "to": move.to_cluster}

