"""Moving active segments (docs/DESIGN.md §6): the resumable state machine behind scale-up and decommission.

Per move row: planned -> frozen -> sealed -> done (or rolled_back; or held: frozen until an operator repairs it,
when its target took records of a publish the config database lost, docs/DESIGN.md §3.3). Moves run in batches (one
view freezes every partition of the batch, one wait for the proxies' acks, one publish), so a
scale-up costs a handful of view versions, not a few per partition. Every state is committed
before it takes effect:

- frozen: the chain's frozen flag and the move state are one transaction; the view that carries
  the flag is composed right after (a restart composes again).
- acks: every proxy, of every role, applied that view, or its fence ran out at least FENCE_GRACE_S ago (it
  stops taking produce, and serving reads, on its own; what it still had upstream is over by then). Consume-only
  proxies are waited for too: one that skipped a move would map the offsets above the seal into the old
  segment's partition, which a later move back reuses (docs/DESIGN.md §4.9). A proxy that went silent is
  waited for until then (it may still be serving clients, cut off from the controller only: docs/DESIGN.md
  §4.9); one that keeps renewing but does not ack fails the move after its drain. Nothing is written; a
  restart simply waits again.
- planned records the target partition's log end (`planned_target_end`), read before the plan commits; frozen
  records it again (`target_end`), read before the freeze commits: a target that grew since the plan took writes
  under a publish the database lost with the freeze, and the move is held instead of frozen. A planned move's chain
  may be frozen already: the view composed past views the database lost freezes every planned one (`freeze_planned`).
- sealed: the old partition's log end (the seal) and the new partition's log end (its phys_start)
  are recorded while the chain is still frozen, so they cannot move any more; a target whose end grew past
  `target_end` took writes under a publish the database lost: the move is held instead.
- done: old segment sealed, new active segment, leader epoch + 1, unfrozen: one transaction.

Every transition commits only while this controller holds the leader row (`check_leader`, docs/DESIGN.md
§3.6): a controller that lost it to another mid-move writes nothing more.

A move that cannot finish (a proxy never acks, a cluster does not answer, any error) is rolled back
before its seal is committed (the chain is unfrozen and writes continue where they were) and finished
after it. Moves a stopped run left unfinished are settled the same way by `sweep`, at controller start and by the
sweeper (docs/DESIGN.md §7).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from fedkafka.controller import claims
from fedkafka.controller.leadership import NotLeader
from fedkafka.controller.models import (
    ChainRow,
    ClusterRow,
    MoveRow,
    PhysicalPartitionRow,
    ProxyRow,
    SegmentRow,
    TopicRow,
    WorkflowRow,
)
from fedkafka.fencing import FENCE_GRACE_S, ack_timeout_s, live_ack_timeout_s
from fedkafka.view.rebalance import Move

log = logging.getLogger(__name__)

FINISHED = ("done", "rolled_back")
PRODUCE_ROLES = ("pproxy", "both")
CONSUME_ROLES = ("cproxy", "both")
# A move changes where the offsets above its seal map: the writers and the readers of the partition apply it.
MOVE_ROLES = ("pproxy", "cproxy", "both")
FAULT_PAUSE = "FEDKAFKA_FAULT_PAUSE_AFTER"  # tests: stall after committing this move state (then kill -9)
FAULT_RAISE = "FEDKAFKA_FAULT_RAISE_AFTER"  # tests: raise after committing this move state
PLAN_ATTEMPTS = 3  # a plan that lost the race for a partition to another run's is recorded again, without it
# why a move is held (`moves.held_for`, docs/DESIGN.md §3.3, "Lost commits"): its target grew since its end was
# recorded (at the plan or the freeze); its target could not be read (the sweeper reads it again); it froze before
# revision 0013 recorded target ends
HELD_GREW, HELD_UNREAD, HELD_NO_END = "target_grew", "target_unread", "no_target_end"
# a move whose returning target's high watermark did not reach its leader's log end is rolled back alone (§6.3)
UNSETTLED = ("its returning target's high watermark did not reach its leader's log end within the seal timeout: "
             "rolled back alone, its batch goes on (docs/DESIGN.md §6.3, \"A move back onto its chain\")")
# the start of every rolled-back reason that says the move's topic went away under it: nothing of it is left to move,
# so a scale-up counts such a move as settled, not as one it failed to make (`topic_gone`)
TOPIC_GONE = "topic deleted"


def topic_gone(reason: str | None) -> bool:
    """Whether a rolled-back move's recorded reason says its topic was deleted (or deleted and created again)."""
    return reason is not None and reason.startswith(TOPIC_GONE)


class MoveFailed(RuntimeError):
    pass


class MoveHeld(RuntimeError):
    """A move was held (state `held`): its target took records the database does not know about, so it lost
    commits (docs/DESIGN.md §3.3, "Lost commits"). The partition stays frozen until an operator repairs it."""


class Mover:
    """Drives move rows to `done` (or `rolled_back`); `progress(phase, done, total)` reports each step."""

    def __init__(self, controller, ack_timeout: float | None = None, seal_timeout: float = 30.0):
        self.ctl = controller
        # a live proxy acks after its drain; a silent one counts until its fence and the fencing grace ran out
        lease = controller.settings.lease_ms / 1000
        fence = getattr(controller.settings, "fence_ms", controller.settings.lease_ms) / 1000
        self.ack_timeout = ack_timeout if ack_timeout is not None else ack_timeout_s(lease, fence)
        self.live_ack_timeout = min(self.ack_timeout, live_ack_timeout_s(lease))
        self.seal_timeout = seal_timeout

    # -- planning ------------------------------------------------------------------------------
    def plan(self, workflow_id: int | None, plans: Iterable[Move],
             target_ends: dict[tuple[str, str, int], int] | None = None) -> list[int]:
        """Record planned moves (one transaction); partitions with an unfinished move, and topics deleted since the
        plan was made, are left out. Each records its target's log end (`planned_target_end`: from `target_ends`,
        read before the plan, else read here once; None when unread): a freeze that finds it grew holds the move.
        Each move names the incarnation of its topic (`topic_id`), and its target is claimed for its logical
        partition in the same transaction: ClaimTaken (nothing recorded) when another logical partition owns one,
        e.g. claimed by a run that planned from the same view (docs/DESIGN.md §4.13).

        At most one unfinished move per partition: under this process's write lock, and the database's unique index
        refuses a move another controller recorded meanwhile (docs/DESIGN.md §4.1): then recorded again without
        that partition."""
        plans = list(plans)
        if target_ends is None:
            target_ends = self._plan_target_ends(plans)
        for _ in range(PLAN_ATTEMPTS):
            with self.ctl.topology_change() as s:
                ids = self._record(s, workflow_id, plans, target_ends)
            if ids is not None:
                return ids
        raise claims.ClaimTaken(f"partitions planned by other runs {PLAN_ATTEMPTS} times in a row; plan again")

    def _plan_target_ends(self, plans: list[Move]) -> dict[tuple[str, str, int], int]:
        """The log end of each planned move's target, read once (one that cannot be read is left out); a target
        claimed for its move's logical partition already has its settled end, or none (`returning_ends`)."""
        return self.returning_ends(plans, self.log_ends({(m.to_cluster, m.to_topic, m.to_partition) for m in plans}))[0]

    def returning_ends(self, plans: Iterable[Move], ends: dict[tuple[str, str, int], int]
                       ) -> tuple[dict[tuple[str, str, int], int], set[tuple[str, str, int]]]:
        """(`ends`, the high watermarks of `plans`' targets, where each target claimed for its move's logical partition
        already (`returning_targets`) has its settled end instead: its high watermark once it reached its leader's log
        end (`settled_ends`); the returning targets not settled within `seal_timeout`, left out of the ends). Such a
        target may hold acked records above a high watermark that trails after a restart (an unclean tail), and its
        plan, freeze and seal all record settled ends, so one compared with another grew only by writes
        (docs/DESIGN.md §6.3, "A move back onto its chain")."""
        with self.ctl.session() as s:
            returning = returning_targets(s, plans)
            bootstrap = {c.id: c.bootstrap for c in s.scalars(select(ClusterRow))}
        if not returning:
            return ends, set()
        settled = self.settled_ends(returning, bootstrap)
        kept = {target: end for target, end in ends.items() if target not in returning}
        return kept | settled, returning - settled.keys()

    def log_ends(self, partitions: set[tuple[str, str, int]]) -> dict[tuple[str, str, int], int]:
        """The log end of each (cluster, physical topic, partition), read once (one that cannot be read is left
        out), the clusters' bootstraps from the database."""
        with self.ctl.session() as s:
            bootstrap = {c.id: c.bootstrap for c in s.scalars(select(ClusterRow))}
        return self._read_once(partitions, bootstrap)

    def _record(self, s, workflow_id: int | None, plans: list[Move],
                target_ends: dict[tuple[str, str, int], int]) -> list[int] | None:
        """One attempt of `plan`: the ids recorded, or None (nothing recorded) when the unique index refused one."""
        now = time.time()
        busy = {(t, p) for t, p in s.execute(select(MoveRow.topic, MoveRow.partition)
                                             .where(MoveRow.state.not_in(FINISHED)))}
        incarnation = dict(s.execute(select(TopicRow.name, TopicRow.topic_id)
                                     .where(TopicRow.name.in_({m.topic for m in plans}))).all())
        todo = [m for m in plans if (m.topic, m.partition) not in busy and m.topic in incarnation]
        returning = returning_targets(s, todo)  # decided once, before this plan's own claims (§6.3)
        for m in todo:
            claims.claim(s, m.to_cluster, m.to_topic, m.to_partition, m.topic, m.partition)
        rows = [MoveRow(workflow_id=workflow_id, topic=m.topic, topic_id=incarnation[m.topic], partition=m.partition,
                        from_cluster=m.from_cluster, to_cluster=m.to_cluster, to_topic=m.to_topic,
                        to_partition=m.to_partition, gap=m.gap, state="planned", updated_at=now,
                        planned_target_end=target_ends.get((m.to_cluster, m.to_topic, m.to_partition)),
                        returning_target=(m.to_cluster, m.to_topic, m.to_partition) in returning)
                for m in todo]
        s.add_all(rows)
        try:
            s.flush()  # the unique index refuses a partition another transaction recorded a move of meanwhile
        except IntegrityError as e:
            s.rollback()
            log.info("a partition was planned by another run meanwhile; planning again without it: %s", e.orig)
            return None
        self.ctl.check_leader(s)
        s.commit()
        return [r.id for r in rows]

    def unfinished(self, workflow_id: int | None = None) -> list[int]:
        with self.ctl.session() as s:
            q = select(MoveRow.id).where(MoveRow.state.not_in(FINISHED))
            if workflow_id is not None:
                q = q.where(MoveRow.workflow_id == workflow_id)
            return list(s.scalars(q.order_by(MoveRow.id)))

    # -- the state machine ---------------------------------------------------------------------------
    def run(self, ids: list[int], progress: Callable[[str, int, int], None] = lambda *_: None) -> dict[str, int]:
        """Drive the moves `ids` from wherever they are to done/rolled_back. Returns counts per final state.

        Whatever goes wrong (a proxy that never acks, a database error, a bug), no move is left frozen: the
        ones not sealed yet are rolled back, the sealed ones finished; if even that fails, `sweep` does it at
        the next start (or the next sweep round)."""
        if ids:
            n = len(ids)
            try:
                _fault_point("planned")
                progress("freeze", 0, n)  # each step reports its start too: the run record times every phase
                self._freeze(ids)
                progress("freeze", n, n)
                _fault_point("frozen")
                self._await_acks(ids, progress)
                progress("seal", 0, n)
                self._seal(ids, progress)
                progress("publish", 0, n)
                self._publish(ids)
                progress("publish", n, n)
                self._raise_held(ids)
            except MoveHeld:
                raise  # the others are settled (published), the held ones stay as they are
            except Exception as e:
                self.settle(ids, str(e) or type(e).__name__)
                raise
        return self.counts(ids)

    def settle(self, ids: list[int], reason: str, strict: bool = False, retry_s: float | None = None) -> None:
        """Unfinished moves out of the way: not sealed yet -> rolled back (writes continue where they were),
        sealed -> published (the seal is recorded and nothing was written since). Never raises unless `strict`:
        a run ending retries while the database is down a moment (workflows `_end`), else leaves them to the sweeper.
        `retry_s`: how long the rollback reads an unread returning target again (`_roll_back`)."""
        try:
            self._roll_back(ids, reason, retry_s)
            self._publish(ids)
        except NotLeader as e:  # the active controller's sweeper settles them
            if strict:
                raise
            log.warning("moves %s not settled (%s): %s; left to the active controller", ids, reason, e)
        except Exception:
            if strict:
                raise
            log.exception("moves %s could not be settled (%s); retried when the run ends, else by the sweeper",
                          ids, reason)

    def sweep(self) -> list[int]:
        """Settle the unfinished moves no running workflow owns (its controller died in a direct move, or the
        run failed and could not settle them). One statement: a run another controller starts meanwhile is
        either seen running or has no moves yet. No thread drives such a move: a run commits its end only once
        its moves are settled, or gave up on them (workflows `_end`). Returns their ids. Then the held moves whose
        target could not be read have it read again (`recheck_held`).

        Each target is read once, an unread one held (`recheck_held` reads it again next round), not read again for
        seal_timeout as a failed run's rollback does: at a controller's activation this sweep runs in the leadership
        thread (`Leadership.run` -> `on_active` -> `Workflows.resume`), which renews no leader row meanwhile."""
        with self.ctl.session() as s:
            orphans = list(s.scalars(
                select(MoveRow.id).outerjoin(WorkflowRow, MoveRow.workflow_id == WorkflowRow.id)
                .where(MoveRow.state.not_in((*FINISHED, "held")),  # a held move waits for an operator
                       or_(WorkflowRow.id.is_(None), WorkflowRow.state != "running")).order_by(MoveRow.id)))
        if orphans:
            log.warning("settling moves %s that no running workflow owns", orphans)
            self.settle(orphans, "left unfinished by a workflow that stopped; settled by the sweeper", retry_s=0.0)
        self.recheck_held()
        return orphans

    def recheck_held(self) -> list[int]:
        """Read again the target of each move held because its target could not be read (`HELD_UNREAD`), judged by
        `lost_publish_shown`: one whose end is not above `target_end` took no writes under a lost publish and is rolled
        back as a rollback would have (writes go on at the source's log end); one that grew stays held, now for that;
        one still unread stays as it is. Returns the rolled back."""
        with self.ctl.session() as s:
            ids = list(s.scalars(select(MoveRow.id).where(MoveRow.state == "held", MoveRow.held_for == HELD_UNREAD)
                                 .order_by(MoveRow.id)))
        if not ids:
            return []
        ends = self.current_target_ends(ids, ("held",))
        done = []
        with self.ctl.topology_change() as s:
            for row in self._rows(s, ids, "held"):
                end = ends.get(row.id)
                shown = lost_publish_shown(row, end)
                if row.held_for != HELD_UNREAD or shown not in (None, HELD_GREW):
                    continue  # still unread (or nothing recorded to read it against): read again next round
                assert end is not None and row.target_end is not None  # what `lost_publish_shown` judged by
                if shown == HELD_GREW:
                    self._held(row, HELD_GREW, self._grew(row, end, row.target_end))
                    continue
                self.roll_back_one(s, row, f"held while its target could not be read; its log end read again is "
                                           f"{end_said(row, end)}")
                done.append(row.id)
            self.ctl.check_leader(s)
            s.commit()
        if done:
            self.ctl.compose()
        return done

    def counts(self, ids: list[int]) -> dict[str, int]:
        with self.ctl.session() as s:
            rows = s.execute(select(MoveRow.state, func.count()).where(MoveRow.id.in_(ids)).group_by(MoveRow.state))
            return dict(rows.all())

    def _rows(self, s, ids: list[int], state: str) -> list[MoveRow]:
        return list(s.scalars(select(MoveRow).where(MoveRow.id.in_(ids), MoveRow.state == state)
                              .order_by(MoveRow.id)))

    def _enter(self, row: MoveRow, state: str) -> None:
        """Move `row` to `state`, timing the state it leaves (metrics)."""
        self.ctl.metrics.move_left(row.state, row.updated_at)
        row.state, row.updated_at = state, time.time()

    def _freeze(self, ids: list[int]) -> None:
        """Freeze the planned moves `ids`, each recording its target's log end (`target_end`, read first: nothing
        writes to a target before its move publishes) in the transaction that freezes it. A move whose returning
        target does not settle is rolled back alone: the others freeze (docs/DESIGN.md §6.3)."""
        targets, unsettled = self._target_ends(ids)
        if unsettled:
            self._roll_back(unsettled, UNSETTLED, retry_s=0.0)  # settled_ends read it for seal_timeout
        with self.ctl.topology_change() as s:
            for row in self._rows(s, ids, "planned"):
                active = _active_segment(s, row.topic, row.partition)
                if _incarnation(s, row.topic) != row.topic_id:  # the topic is gone, or another of its name
                    row.state, row.error = "rolled_back", f"{TOPIC_GONE} since the move was planned"
                    continue
                if active is None or active.cluster != row.from_cluster:  # the segment moved meanwhile
                    row.state, row.error = "rolled_back", "active segment no longer on " + row.from_cluster
                    continue
                s.get_one(ChainRow, (row.topic, row.partition)).frozen = True
                self._freeze_one(row, targets[(row.to_cluster, row.to_topic, row.to_partition)])
            self.ctl.check_leader(s)
            s.commit()
        version = self.ctl.compose().version  # the view that carries the frozen flags
        with self.ctl.session() as s:
            for row in self._rows(s, ids, "frozen"):
                if row.frozen_version is None:
                    row.frozen_version = version
            self.ctl.check_leader(s)
            s.commit()

    def _freeze_one(self, row: MoveRow, end: int) -> None:
        """Planned move `row`, its chain frozen, to `frozen` with its target's end `end` read now; or held when the
        target grew since the plan: records of a publish the database lost with the freeze (docs/DESIGN.md §3.3)."""
        if row.planned_target_end is not None and end > row.planned_target_end and (
                row.returning_target is not None or self.ctl.db_regression is not None):  # `_lost_publish`
            row.target_end = row.planned_target_end  # what the target held before the lost publish's writes
            self._held(row, HELD_GREW, self._grew(row, end, row.planned_target_end, "was planned"))
            return
        row.target_end = end
        self._enter(row, "frozen")

    def _target_ends(self, ids: list[int]) -> tuple[dict[tuple[str, str, int], int], list[int]]:
        """(The log end of each planned move's target physical partition (MoveFailed if one cannot be read), settled
        for a returning target (`returning_rows`, the plan's decision), the moves whose returning target did not
        settle within `seal_timeout`)."""
        with self.ctl.session() as s:
            rows = self._rows(s, ids, "planned")
            bootstrap = {c.id: c.bootstrap for c in s.scalars(select(ClusterRow))}
        returning = returning_rows(rows)
        wanted: dict[str, set[tuple[str, int]]] = {}
        for row in rows:
            if row.id not in returning:
                wanted.setdefault(row.to_cluster, set()).add((row.to_topic, row.to_partition))
        ends = self.read_ends(wanted, bootstrap) if wanted else {}
        return self._returning_ends(returning, bootstrap, ends)

    def _returning_ends(self, returning: dict[int, tuple[str, str, int]], bootstrap: dict[str, str],
                        ends: dict[tuple[str, str, int], int]) -> tuple[dict[tuple[str, str, int], int], list[int]]:
        """(`ends` with the settled end of each target of `returning` (move id -> its returning target), the moves
        whose target did not settle within `seal_timeout`: each is rolled back alone, its batch goes on)."""
        settled = self.settled_ends(set(returning.values()), bootstrap) if returning else {}
        return ends | settled, sorted(move for move, target in returning.items() if target not in settled)

    def _raise_held(self, ids: list[int]) -> None:
        """MoveHeld naming the moves of `ids` that are held (and why), if any."""
        with self.ctl.session() as s:
            held = self._rows(s, ids, "held")
        if held:
            raise MoveHeld("; ".join(f"move {r.id} of {r.topic}/{r.partition} held, its partition frozen: {r.error}"
                                     for r in held))

    def _await_acks(self, ids: list[int], progress) -> None:
        with self.ctl.session() as s:
            versions = [r.frozen_version or 0 for r in self._rows(s, ids, "frozen")]
        if versions:
            self.await_version(max(versions), progress, roles=MOVE_ROLES)

    def await_version(self, needed: int, progress, roles: tuple[str, ...] = MOVE_ROLES,
                      timeout: float | None = None) -> None:
        """Until every proxy of `roles` that may still write or serve reads applied view `needed` (or is surely
        fenced: past its fence a proxy refuses produce, Fetch, ListOffsets and OffsetForLeaderEpoch), and no previous
        process of a member taken over may still write (its fence and the grace have passed, docs/DESIGN.md §4.9 F4);
        MoveFailed after the ack timeout (at most `timeout` when given), or sooner for a proxy that renews its lease
        without acking."""
        ack_timeout = self.ack_timeout if timeout is None else min(timeout, self.ack_timeout)
        live_ack_timeout = min(self.live_ack_timeout, ack_timeout)
        started = time.monotonic()
        renewing_since: dict[str, float] = {}  # behind while renewing its lease: alive, so it should ack soon
        while True:
            self.ctl.flush_heartbeats()
            now = time.time()
            writers = self._writers(now, roles, needed)
            # renewing and not acking: failed after `live_ack_timeout`; a predecessor's fence is waited out
            behind = {member: renewing for member, renewing, waiting, _ in writers if waiting}
            progress("acks", len(writers) - len(behind), len(writers))
            if not behind:
                return
            clock = time.monotonic()
            renewing_since = {n: renewing_since.get(n, clock) for n, renewing in behind.items() if renewing}
            stuck = [n for n, since in renewing_since.items() if clock - since > live_ack_timeout]
            if stuck:
                raise MoveFailed(f"proxies {', '.join(stuck)} did not apply view {needed} within "
                                 f"{live_ack_timeout:.0f} s while renewing their leases")
            if clock - started > ack_timeout:
                taken_over = sorted(member for member, _, _, predecessor in writers if predecessor)
                raise MoveFailed(f"proxies {', '.join(sorted(behind))} did not apply view {needed} within "
                                 f"{ack_timeout:.0f} s (before their fence ran out, or less than "
                                 f"{FENCE_GRACE_S:.0f} s after)" + (
                                     f"; {', '.join(taken_over)} taken over by a new process while the previous one's "
                                     "fence had not run out: counted once it and the grace have" if taken_over else ""))
            time.sleep(0.02)

    def _writers(self, now: float, roles: tuple[str, ...], needed: int) -> list[tuple[str, bool, bool, bool]]:
        """Every member that may still write for `roles`, or whose previous process may: (name, renewing without
        having applied `needed`, waited for, previous process pending)."""
        own, predecessor = still_fenced(now, roles)
        with self.ctl.session() as s:
            # Every proxy that may still write: one whose fence ran out a moment ago may still have a write out
            # upstream, so it is fenced only once the longest upstream request it may have sent is over. One cut
            # off from the controller keeps producing until its fence (docs/DESIGN.md §4.9). One row per process:
            # each worker of a proxy run with --workers N is counted alone, with its own fence and ack, never
            # through a sibling's (docs/DESIGN.md §4.10). A member taken over by a new process is not acked while
            # its previous process may still write (`predecessor_fence_expires`): waited for as a silent proxy,
            # whatever the new process acked, and whatever the row's role or fence now (the previous process may
            # have had another role, and the new one's fence may have ended: a deregistration, §4.9 F4).
            rows = s.execute(
                select(ProxyRow.node_id, ProxyRow.worker_of, ProxyRow.worker, ProxyRow.applied_version,
                       ProxyRow.lease_expires, own.label("own_fence"), predecessor.label("predecessor_fence"))
                .where(or_(own, predecessor))).all()
        writers = []
        for row in rows:
            counted = bool(row.own_fence) and row.applied_version < needed
            writers.append((_member_name(row), counted and row.lease_expires > now,
                            counted or bool(row.predecessor_fence), bool(row.predecessor_fence)))
        return writers

    def _seal(self, ids: list[int], progress) -> None:
        """Record each move's seal and new phys_start. An unclean move (a failover: `gap` > 0) does not read its
        seal from the dead cluster: it is the last log end this controller knew (docs/DESIGN.md §9).

        Only the segment the move froze is sealed (`frozen_segment`), checked again in the transaction that records
        the seal: a move whose partition is not as it froze it is rolled back alone (docs/DESIGN.md §4.1), and so is
        one whose returning target did not settle or settled below an end its plan or freeze recorded (§6.3)."""
        rows, olds, offsets = self._seal_ends(ids)
        if not rows:
            return
        with self.ctl.topology_change() as s:  # one at a time with a deletion of the topic
            for row in self._rows(s, ids, "frozen"):
                old = frozen_segment(s, row)
                if isinstance(old, str) or row.id not in olds or old.id != olds[row.id].id:
                    why = old if isinstance(old, str) else "the frozen segment changed during the seal"
                    self.roll_back_one(s, row, why)
                    continue
                start = offsets[(row.to_cluster, row.to_topic, row.to_partition)]
                if (below := below_recorded_end(row, start)) is not None:
                    self.roll_back_one(s, row, below)
                    continue
                row.seal = (self.known_end(s, old) if row.gap
                            else offsets[(old.cluster, old.physical_topic, old.physical_partition)])
                row.phys_start = start
                if row.seal < old.phys_start:
                    raise MoveFailed(f"{row.topic}/{row.partition}: log end {row.seal} of {old.cluster} is below the "
                                     f"segment start {old.phys_start} (was the physical topic re-created?)")
                check_start_past_older_segments(s, row)
                self._enter(row, "sealed")
            self.ctl.check_leader(s)
            s.commit()
        progress("seal", len(rows), len(rows))
        _fault_point("sealed")

    def _seal_ends(self, ids: list[int]) -> tuple[list[MoveRow], dict[int, SegmentRow], dict]:
        """(the frozen moves of `ids`, move id -> the segment it froze, the log ends its seal reads: the sources' and
        the targets', settled for returning ones), the moves whose target took writes under a lost publish held and
        those whose returning target did not settle rolled back alone (`_returning_ends`)."""
        with self.ctl.session() as s:
            rows = self._rows(s, ids, "frozen")
            bootstrap = {c.id: c.bootstrap for c in s.scalars(select(ClusterRow))}
            olds = {row.id: old for row in rows if isinstance(old := frozen_segment(s, row), SegmentRow)}
        if not rows:
            return rows, olds, {}
        sealed = [row for row in rows if row.id in olds]
        returning = returning_rows(sealed)
        wanted, sealing = _seal_reads(sealed, olds, returning)
        offsets, unsettled = self._returning_ends(
            returning, bootstrap, self.read_settled_ends(wanted, bootstrap, sealing) if wanted else {})
        if unsettled:
            self._roll_back(unsettled, UNSETTLED, retry_s=0.0)  # settled_ends read it for seal_timeout
        self._hold(ids, {row.id: offsets[(row.to_cluster, row.to_topic, row.to_partition)]
                         for row in sealed if row.id not in unsettled})  # committed alone: a failed seal rolls back
        return rows, olds, offsets                                          # the rest

    def _hold(self, ids: list[int], ends: dict[int, int | None]) -> None:
        """Hold each frozen (or planned) move of `ids` whose target's log end (`ends`: move id -> end, None when
        unread) shows it took writes under a publish the database lost (`_lost_publish`): neither sealed nor rolled
        back. A planned one held freezes its chain: the database lost its freeze too (docs/DESIGN.md §3.3)."""
        with self.ctl.topology_change() as s:
            for row in s.scalars(select(MoveRow).where(MoveRow.id.in_(ids), MoveRow.state.in_(("frozen", "planned")))
                                 .order_by(MoveRow.id)):
                held = self._lost_publish(row, ends.get(row.id))
                if held is not None:
                    if row.state == "planned":
                        s.get_one(ChainRow, (row.topic, row.partition)).frozen = True
                        row.target_end = row.planned_target_end
                    self._held(row, *held)
            self.ctl.check_leader(s)
            s.commit()

    def seal_held(self, row: MoveRow, seal: int, phys_start: int) -> None:
        """Held move `row` to `sealed` at `seal`, its new segment starting at `phys_start`: an operator's repair
        (`held.HeldMoves.publish`, docs/OPERATIONS.md "A held move"); published like any sealed move, by the sweeper.
        The caller saw every live proxy apply a view with the partition frozen first (`HeldMoves.publish`: a move held
        at its freeze, or by a rollback while planned, never waited for those acks), and checked `seal` after."""
        row.seal, row.phys_start = seal, phys_start
        self._enter(row, "sealed")

    def _held(self, row: MoveRow, why: str, reason: str) -> None:
        """Move `row` to `held` (`why`: HELD_*), saying so."""
        log.error("move %d of %s/%s held, its partition frozen: %s", row.id, row.topic, row.partition, reason)
        row.error, row.held_for = reason, why
        self._enter(row, "held")

    def current_target_ends(self, ids: list[int], states: tuple[str, ...] = ("frozen",),
                            retry_s: float = 0.0) -> dict[int, int | None]:
        """The log end of the target of each move of `ids` in `states`, read once (None: not read, e.g. its cluster
        is down): what `lost_publish_shown` judges writes under a lost publish by. A target its move's plan found
        returning is judged by its leader's log end (`_returning_write_ends`), read again for up to `retry_s` while
        it is not answered."""
        with self.ctl.session() as s:
            rows = list(s.scalars(select(MoveRow).where(MoveRow.id.in_(ids), MoveRow.state.in_(states))))
        return self.target_ends(rows, retry_s)

    def target_ends(self, rows: list[MoveRow], retry_s: float = 0.0,
                    read: dict[tuple[str, str, int], int] | None = None) -> dict[int, int | None]:
        """`current_target_ends` of moves `rows` its caller holds already; `read`: their targets' `log_ends`, read by
        the caller together with others (one read per cluster)."""
        targets = {row.id: (row.to_cluster, row.to_topic, row.to_partition) for row in rows}
        found = self.log_ends(set(targets.values())) if read is None else read
        ends = {move: found.get(target) for move, target in targets.items()}
        returning = [row for row in rows if row.returning_target]
        return ends | (self._returning_write_ends(returning, ends, retry_s) if returning else {})

    def _returning_write_ends(self, rows: list[MoveRow], ends: dict[int, int | None],
                              retry_s: float) -> dict[int, int | None]:
        """Move id -> the end that shows whether the returning target of each of `rows` took writes since its plan or
        freeze recorded a settled end: its leader's log end. Its high watermark (`ends`) is the very value that trails
        after a restart (the reason the target did not settle), so records acked there under a lost publish may all
        lie above it; a log end grows only by appends, and a settled end had no record above it, so one above the
        recorded end proves writes. It is evidence only, never recorded as a start (docs/DESIGN.md §6.3 point 4).
        Not read: the high watermark when above the recorded end (proof on its own), else None (unread: `_lost_publish`
        holds a frozen move for it, and a planned one once the database was seen losing commits)."""
        with self.ctl.session() as s:
            bootstrap = {c.id: c.bootstrap for c in s.scalars(select(ClusterRow))}
        log_ends = read_until(lambda left: self._leader_log_ends(left, bootstrap, "read again, then judged as unread"),
                              {(row.to_cluster, row.to_topic, row.to_partition) for row in rows}, retry_s,
                              self.ctl.wait_stopping)
        found: dict[int, int | None] = {}
        for row in rows:
            log_end, high_watermark = log_ends.get((row.to_cluster, row.to_topic, row.to_partition)), ends.get(row.id)
            recorded = _recorded_end(row)
            if log_end is not None:
                found[row.id] = max(log_end, high_watermark or 0)
            elif high_watermark is not None and recorded is not None and high_watermark > recorded:
                found[row.id] = high_watermark
            else:
                found[row.id] = None
        return found

    def _read_once(self, targets: set[tuple[str, str, int]], bootstrap: dict[str, str]) -> dict[tuple[str, str, int],
                                                                                                int]:
        """The log end of each of `targets`, one read per cluster; one that cannot be read is left out."""
        found: dict[tuple[str, str, int], int] = {}
        for cluster in sorted({c for c, _, _ in targets}):
            parts = sorted({(t, p) for c, t, p in targets if c == cluster})
            try:
                got = self.ctl.kafka.log_offsets(cluster, bootstrap[cluster], parts)
            except Exception as e:  # a rollback must not wait for a cluster that does not answer
                log.warning("log ends of %s not read: %s", cluster, e)
                got = {}
            found.update({(cluster, t, p): end for (t, p), (_start, end) in got.items()})
        return found

    @staticmethod
    def _grew(row: MoveRow, end: int, recorded: int, when: str = "froze") -> str:
        target = f"{row.to_cluster}/{row.to_topic}/{row.to_partition}"
        return (f"the log end of its target {target} is {end}, {recorded} when it {when}: the target holds records of "
                f"a publish the config database lost (it lost commits); sealed now, they would be unreachable and "
                f"their offsets handed out again. Restore the lost commits (docs/DESIGN.md §3.3)")

    def _lost_publish(self, row: MoveRow, end: int | None) -> tuple[str, str] | None:
        """Why move `row` (frozen, or planned) must be held, neither sealed at its target's log end `end` nor rolled
        back: (HELD_*, the reason), or None (`end` None: not read). Rolled back, writes would go on at the source's
        log end: the logical offsets the lost publish handed out. Nothing writes to a target between the plan and
        the publish, so a target whose end grew past the one read before the freeze (`target_end`; before the plan,
        `planned_target_end`, for a move still planned) holds records of a publish the database lost (a failover to
        an asynchronous replica): sealed now, the new segment would start above them, leaving them unreachable and
        their logical offsets handed out again. Once this controller saw the database lose commits, a move is not
        rolled back either when its target cannot be read and it may have frozen before the loss (a planned one: the
        database may have lost its freeze; a frozen one: `_froze_before_loss`), nor when it has no end to check
        against (frozen before revision 0013: no `target_end`; planned before 0014: no `planned_target_end`):
        docs/DESIGN.md §3.3. A frozen move whose returning target's leader log end was not read is held whether or
        not the loss was seen (`_unread_returning`): no heartbeat need ever report a lost publish, and a rollback
        would unfreeze its partition at the offsets that publish handed out; the sweeper reads it again
        (`recheck_held`). A planned one is rolled back: its partition is writable on the source in every view the
        database composes, so its rollback moves no write (§6.3 point 4). A move planned before revision 0021
        (`returning_target` None) recorded plain high watermarks, which trail the log end of a returning target after
        a restart: an end above them is no proof of a write, so it holds such a move only once the database was seen
        losing commits (§6.3 point 4)."""
        planned = row.state == "planned"
        recorded = _recorded_end(row)
        regression = self.ctl.db_regression
        shown = lost_publish_shown(row, end)
        if shown == HELD_GREW and (row.returning_target is not None or regression is not None):
            assert end is not None and recorded is not None  # read above the recorded end
            return HELD_GREW, self._grew(row, end, recorded, "was planned" if planned else "froze")
        if shown == HELD_UNREAD and not planned and row.returning_target:
            assert recorded is not None  # else HELD_NO_END
            return HELD_UNREAD, self._unread_returning(row, recorded)
        if regression is None:
            return None
        target = f"{row.to_cluster}/{row.to_topic}/{row.to_partition}"
        cannot = (f"and the config database lost commits ({regression['message']}): whether its target {target} took "
                  f"writes under a lost publish cannot be checked")
        if shown == HELD_NO_END:
            return HELD_NO_END, f"it {'was planned' if planned else 'froze'} before its target's end was kept, {cannot}"
        if shown == HELD_UNREAD and (planned or _froze_before_loss(row, regression)):
            return HELD_UNREAD, f"its target's log end was not read, {cannot} (read again by the sweeper)"
        return None

    @staticmethod
    def _unread_returning(row: MoveRow, recorded: int) -> str:
        """Why frozen move `row`, whose returning target's leader log end was not read, is held rather than rolled back
        (docs/DESIGN.md §6.3 point 4): whether or not this controller saw the database lose commits."""
        target = f"{row.to_cluster}/{row.to_topic}/{row.to_partition}"
        return (f"the leader log end of its returning target {target} was not read: records acked there under a "
                f"publish the config database may have lost (one no proxy reported yet) may lie above its high "
                f"watermark, which trails after a restart; rolled back, their offsets would be handed out again. "
                f"Frozen until the sweeper reads that log end: rolled back if it reads at or below "
                f"{recorded}, held for the writes if it grew (docs/DESIGN.md §6.3)")

    def known_end(self, s, segment) -> int:
        """The last high watermark the scans read of an active segment's physical partition (every record below it
        was replicated), or the segment's start when none was read since it became active (never below the start).
        This controller's own scans are the newest; a controller that has none for it (a takeover, a restart, the
        re-exec after a database outage: it cannot scan a dead cluster) takes the end the scans stored in the
        database (`Controller._store_ends`), which may be older than the last one read, never newer."""
        key = (segment.cluster, segment.physical_topic, segment.physical_partition)
        found = self.ctl.log_offsets.get(key)
        if found is not None:
            return max(segment.phys_start, found[1])
        claim = s.get(PhysicalPartitionRow, key)
        if claim is None or claim.scanned_end is None:
            return segment.phys_start
        log.info("%s/%s/%s: sealed at the log end %d a scan read %.0f s ago (this controller read none)", *key,
                 claim.scanned_end, time.time() - (claim.scanned_at or 0.0))
        return max(segment.phys_start, claim.scanned_end)

    def read_settled_ends(self, wanted: dict[str, set[tuple[str, int]]], bootstrap: dict[str, str],
                          sealing: set[tuple[str, str, int]], timeout: float | None = None) -> dict:
        """`read_ends`, once no partition in `sealing` has a write above its high watermark (MoveFailed when not
        within `timeout` s, `seal_timeout` by default; an operator's publish of a held move waits alike).

        Every write a proxy forwarded is answered by now (the drain), but one the broker answered with an
        error (acks=all timed out) or whose answer the proxy gave up on may sit in the leader's log above the
        high watermark, not replicated yet. Sealed below it, it would be served by no one, yet the leader's
        producer state counts it (a retry would be answered as a duplicate: lost). Frozen, nothing new comes:
        the followers catch up (or leave the ISR) and the high watermark reaches the log end; then read. A log
        end that cannot be read is no proof of that: waited for too. Read again by `read_until`, as `settled_ends`
        (cut short once the controller stops)."""
        timeout = self.seal_timeout if timeout is None else timeout
        targets = {(cluster, *tp) for cluster, parts in wanted.items() for tp in parts}
        read: dict[tuple[str, str, int], int] = {}
        ends = self.settled_ends(targets, bootstrap, timeout, settling=sealing, read=read)
        unread, above = sorted(targets - read.keys()), sorted(read.keys() - ends.keys())
        if unread:
            raise MoveFailed(f"log end offsets not readable within {timeout:.0f} s: {unread[:5]}")
        if above:
            raise MoveFailed(f"writes above the high watermark not replicated (or the leader's log end not read) "
                             f"within {timeout:.0f} s: {above[:5]}")
        return ends

    def settled_ends(self, targets: set[tuple[str, str, int]], bootstrap: dict[str, str],
                     timeout: float | None = None, settling: set[tuple[str, str, int]] | None = None,
                     read: dict[tuple[str, str, int], int] | None = None) -> dict[tuple[str, str, int], int]:
        """The high watermark of each of `targets` once it reached its leader's log end (read after it: no record
        above it, every one below replicated), waited for at most `timeout` s (`seal_timeout` by default); one not
        settled by then (its log end above, or not read) is left out. `settling`: those of `targets` waited for so
        (all by default); the others are taken once read. `read`: filled with the high watermark of each target as
        its latest read found it, settled or not: one read once and not readable since is dropped again, so that the
        caller tells a partition that stopped answering (not readable) from one still unsettled."""
        def settled_now(left: set[tuple[str, str, int]]) -> dict[tuple[str, str, int], int]:
            ends = self._read_once(left, bootstrap)
            if read is not None:
                for unread in left - ends.keys():
                    read.pop(unread, None)
                read.update(ends)
            check = set(ends) if settling is None else set(ends) & settling
            above = {(c, t, p) for c, t, p, *_ in self._above_high_watermark(ends, bootstrap, check)}
            if above or ends.keys() < left:
                log.info("waiting for the high watermarks of %s to reach their log ends", sorted(left))
            return {target: end for target, end in ends.items() if target not in above}

        return read_until(settled_now, targets, self.seal_timeout if timeout is None else timeout,
                          self.ctl.wait_stopping)

    def _above_high_watermark(self, ends: dict, bootstrap: dict[str, str], sealing: set[tuple[str, str, int]]):
        """(cluster, topic, partition, high watermark, log end) of each partition whose log end is above, or
        could not be read (log end None): a leader too loaded to answer may hold exactly the unreplicated write
        the wait is for, so an unread log end is waited for like one above (then the move is rolled back)."""
        log_ends = self._leader_log_ends(sealing, bootstrap, "read again before the seal")
        above = []
        for cluster, t, p in sorted(sealing):
            high_watermark, log_end = ends[(cluster, t, p)], log_ends.get((cluster, t, p))
            if log_end is None or log_end > high_watermark:
                above.append((cluster, t, p, high_watermark, log_end))
        return above

    def _leader_log_ends(self, partitions: set[tuple[str, str, int]], bootstrap: dict[str, str],
                         if_unread: str) -> dict[tuple[str, str, int], int]:
        """The leader's log end of each of `partitions` (cluster, physical topic, partition), one call per cluster; a
        cluster that does not answer is logged (`if_unread`: what its caller does then) and left out, as is a
        partition its answer lacks."""
        found: dict[tuple[str, str, int], int] = {}
        for cluster in sorted({c for c, _, _ in partitions}):
            parts = sorted((t, p) for c, t, p in partitions if c == cluster)
            try:
                read = self.ctl.kafka.log_end_offsets(cluster, bootstrap[cluster], parts)
            except Exception as e:
                log.warning("log end offsets of %s not read (%s): %s", cluster, if_unread, e)
                continue
            found.update({(cluster, t, p): end for (t, p), end in read.items() if end is not None})
        return found

    def read_ends(self, wanted: dict[str, set[tuple[str, int]]], bootstrap: dict[str, str],
                  timeout: float | None = None) -> dict:
        """Log end offset of every wanted physical partition; retried (a new partition needs a leader first) for
        `timeout` s (`seal_timeout` by default)."""
        timeout = self.seal_timeout if timeout is None else timeout
        targets = {(cluster, *tp) for cluster, parts in wanted.items() for tp in parts}
        # an unreachable cluster, or a partition without a leader yet: read again until the deadline
        found = read_until(lambda left: self._read_once(left, bootstrap), targets, timeout, self.ctl.wait_stopping)
        missing = [(c, tp) for c, parts in wanted.items() for tp in parts if (c, *tp) not in found]
        if missing:
            raise MoveFailed(f"log end offsets not readable within {timeout:.0f} s: {missing[:5]}")
        return found

    def _publish(self, ids: list[int]) -> None:
        """Seal the segment each move froze where its seal says, and append the new active segment. A move whose
        partition is not as it froze it (`frozen_segment`: the topic deleted, or created again) is rolled back."""
        with self.ctl.topology_change() as s:
            for row in self._rows(s, ids, "sealed"):
                old = frozen_segment(s, row)
                if isinstance(old, str):
                    self.roll_back_one(s, row, old)
                    continue
                chain = s.get_one(ChainRow, (row.topic, row.partition))
                assert row.seal is not None  # a sealed move has its seal
                old.phys_end = row.seal
                s.add(SegmentRow(topic=row.topic, partition=row.partition, seq=old.seq + 1, cluster=row.to_cluster,
                                 physical_topic=row.to_topic, physical_partition=row.to_partition,
                                 phys_start=row.phys_start, phys_end=None,
                                 logical_base=old.logical_base + (row.seal - old.phys_start) + (row.gap or 0)))
                chain.leader_epoch += 1
                chain.frozen = False
                self._enter(row, "done")
            self.ctl.check_leader(s)
            s.commit()
        self.ctl.compose()

    def roll_back_one(self, s, row: MoveRow, reason: str) -> None:
        """Roll back one move (a move whose partition is not as it froze it, a held one whose target took nothing
        under a lost publish: `recheck_held`, an operator's `held.HeldMoves.roll_back`); its chain is unfrozen only if
        it is of the incarnation the move froze (one of a topic created again was never frozen by it)."""
        chain = s.get(ChainRow, (row.topic, row.partition))
        if chain is not None and _incarnation(s, row.topic) == row.topic_id:
            chain.frozen = False
        log.warning("move %d of %s/%s rolled back: %s", row.id, row.topic, row.partition, reason)
        row.error = reason
        self._enter(row, "rolled_back")

    def _roll_back(self, ids: list[int], reason: str, retry_s: float | None = None) -> None:
        """Unfreeze the moves of `ids` not sealed yet; a frozen (or planned) one whose target took writes under a
        publish the database lost is held instead (`_lost_publish`): rolled back, writes would go on at the source's
        log end, logical offsets the lost publish handed out already (docs/DESIGN.md §3.3, "Lost commits"). A
        returning target's leader log end is read again for up to `retry_s` (`seal_timeout` by default: a failed
        run's rollback; the sweeper and a rollback of an unsettled target pass 0, read once) while it is not answered,
        as the seal's wait does: one refused read holds no move (§6.3 point 4)."""
        ends = self.current_target_ends(ids, ("frozen", "planned"), self.seal_timeout if retry_s is None else retry_s)
        if ends:
            self._hold(ids, ends)
        log.warning("rolling back moves %s: %s", ids, reason)
        with self.ctl.topology_change() as s:
            for row in s.scalars(select(MoveRow).where(MoveRow.id.in_(ids), MoveRow.state.in_(("frozen", "planned")))):
                chain = s.get(ChainRow, (row.topic, row.partition))
                if chain is not None:
                    chain.frozen = False
                row.error = reason
                self._enter(row, "rolled_back")
            self.ctl.check_leader(s)
            s.commit()
        self.ctl.compose()


def unfinished_moves_to(s, cluster: str) -> list[MoveRow]:
    """The unfinished moves (planned, frozen, sealed, held) whose target is on `cluster`, oldest first: a cluster they
    target is not drained or removed under them (a held one stays until an operator repairs it)."""
    return list(s.scalars(select(MoveRow).where(MoveRow.to_cluster == cluster, MoveRow.state.not_in(FINISHED))
                          .order_by(MoveRow.id)))


def may_still_write(now: float, roles: tuple[str, ...] | None = None):
    """SQL condition on `proxies`: a row a move still waits for at wall time `now`, because its process's fence or
    the fence of a previous process of its member (taken over, `predecessor_fence_expires`) has not passed with the
    grace (docs/DESIGN.md §4.9 F4). Both, not the row's own fence alone: a deregistration ends the row's fence at
    once, and the process that deregisters vouches only for its own writes, not for a predecessor cut off and
    still writing on its deadline. `roles`: its own fence counts only for a row of one of them (`still_fenced`)."""
    return or_(*still_fenced(now, roles))


def still_fenced(now: float, roles: tuple[str, ...] | None = None):
    """The two fences `may_still_write` joins, as SQL conditions on `proxies` at wall time `now`: the row's process's
    fence not passed with the grace (and, given `roles`, the row of one of them), and its member's previous
    process's. A predecessor counts whatever the row's role: the previous process may have had another."""
    since = now - FENCE_GRACE_S
    own = ProxyRow.fence_expires > since
    if roles is not None:
        own = own & ProxyRow.role.in_(roles)
    return own, ProxyRow.predecessor_fence_expires > since


def moves_named(rows: Iterable[MoveRow], limit: int = 10) -> str:
    """`rows` named for an operator: "move 3 of t/0 (held target_grew), ..." (at most `limit` of them)."""
    rows = list(rows)
    named = [f"move {r.id} of {r.topic}/{r.partition} ({r.state}{f' {r.held_for}' if r.state == 'held' else ''})"
             for r in rows[:limit]]
    return ", ".join(named) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def freeze_planned(s) -> list[int]:
    """Freeze, in session `s` (not committed), the chain of every planned move: what the compose that numbers its view
    past views the config database lost does before it builds that view (`Controller.compose`, docs/DESIGN.md §3.3,
    "Lost commits"). The database may have kept such a move's plan and lost its freeze and publish, under which
    proxies wrote to the target from the seal's logical offset up; built from the database, that view (the first the
    proxies take, numbered past theirs) has the partition active and writable on the source at those same offsets,
    until the resumed run or the sweeper held the move (after up to `seal_timeout` of reads of a target that does not
    answer). Frozen in the view's own transaction, no view from then on has it writable. Nothing else changes: the
    resumed run freezes it anyway, and a rollback (a failed run's, the sweeper's) unfreezes it as it would any
    planned move, or holds it when its target shows, or cannot rule out, a lost publish. A move `_freeze` would roll
    back without touching the chain (its topic or its active segment changed) is left alone. Returns the moves."""
    frozen = []
    for row in s.scalars(select(MoveRow).where(MoveRow.state == "planned").order_by(MoveRow.id)):
        chain = s.get(ChainRow, (row.topic, row.partition))
        active = _active_segment(s, row.topic, row.partition)
        if chain is None or chain.frozen or active is None or active.cluster != row.from_cluster:
            continue
        if _incarnation(s, row.topic) == row.topic_id:
            chain.frozen = True
            frozen.append(row.id)
    if frozen:
        s.flush()
        log.warning("planned moves %s: their partitions frozen in the view composed past the lost views (their "
                    "publish may be among the lost commits); settled by their run or the sweeper", frozen)
    return frozen


def _member_name(row) -> str:
    """A proxy as operators know it: its node id, and which worker for a proxy run with --workers N."""
    return f"{row.worker_of}/w{row.worker}" if row.worker_of is not None else str(row.node_id)


def _froze_before_loss(row: MoveRow, regression: dict) -> bool:
    """Whether frozen move `row` may have frozen before the database lost the commits `regression` describes. Its
    `frozen_version` is committed after that view: a freeze the database kept from before the loss names a view it
    holds, at most `db_version`; a move frozen since names a view composed past it. None (the view's compose or its
    commit failed): it may have."""
    return row.frozen_version is None or row.frozen_version <= regression["db_version"]


def _active_segment(s, topic: str, partition: int) -> SegmentRow | None:
    return s.scalar(select(SegmentRow).where(SegmentRow.topic == topic, SegmentRow.partition == partition,
                                             SegmentRow.phys_end.is_(None)))


def _incarnation(s, topic: str) -> str | None:
    """The topic id of the topic named `topic` now (None: no such topic): a name deleted and created again is
    another topic, with another id."""
    return s.scalar(select(TopicRow.topic_id).where(TopicRow.name == topic))


def frozen_segment(s, row: MoveRow) -> SegmentRow | str:
    """The segment move `row` froze, or why the partition is not as the move froze it. It is the active segment
    of the move's partition, on its from_cluster, of the topic incarnation it was planned for, with the chain still
    frozen: a chain is frozen only by a move, one unfinished move per partition at a time (the unique index), and
    a topic deleted during a move takes its chains with it, so nothing else changed that segment since."""
    topic_id = _incarnation(s, row.topic)
    if topic_id is None:
        return f"{TOPIC_GONE} during the move"
    if topic_id != row.topic_id:
        return f"{TOPIC_GONE} and created again during the move (topic id {row.topic_id} is now {topic_id})"
    chain = s.get(ChainRow, (row.topic, row.partition))
    active = _active_segment(s, row.topic, row.partition)
    if chain is None or active is None:
        return "partition gone during the move"
    if not chain.frozen:
        return "partition no longer frozen"
    if active.cluster != row.from_cluster:
        return "active segment no longer on " + row.from_cluster
    return active


def check_start_past_older_segments(s, row: MoveRow) -> None:
    """MoveFailed when move `row`'s new segment would start (`row.phys_start`, its target's log end) below the seal
    of an older segment of its chain on the same physical partition (`older_seal_above`)."""
    if row.phys_start is not None and (older := older_seal_above(s, row, row.phys_start)) is not None:
        target = f"{row.to_cluster}/{row.to_topic}/{row.to_partition}"
        raise MoveFailed(f"{row.topic}/{row.partition}: the log end {row.phys_start} of {target} is below the seal "
                         f"{older} of an older segment of the partition there (did {row.to_cluster} lose its data, "
                         f"or was the physical topic re-created?): a new segment from there would give its records "
                         f"a second logical offset; plan the move again (it takes another physical partition)")


def older_seal_above(s, row: MoveRow, start: int) -> int | None:
    """The highest seal of an older segment of move `row`'s chain on its target physical partition when it is above
    `start`, where the move's new segment would start (the target's log end at the seal; an operator's
    `target_start` for a held move, `held.HeldMoves.publish`), else None. A partition moving back onto its old
    physical partition whose log end went back (A -> B -> A; its cluster lost its data and the physical topic was
    created again, or it was deleted behind the federation's back) would start inside that older segment: one record
    at two logical offsets, and offsets handed out for the older segment naming records written after the move
    (docs/DESIGN.md §4.5). A partition moving back onto an intact one starts at its log end, at or past that seal."""
    older = s.scalar(select(func.max(SegmentRow.phys_end)).where(
        SegmentRow.topic == row.topic, SegmentRow.partition == row.partition, SegmentRow.cluster == row.to_cluster,
        SegmentRow.physical_topic == row.to_topic, SegmentRow.physical_partition == row.to_partition))
    return older if older is not None and start < older else None


def returning_targets(s, moves: Iterable[Move]) -> set[tuple[str, str, int]]:
    """The targets of planned `moves` claimed for their move's logical partition already (§4.13): a move back onto
    its chain (A -> B -> A; `_Slots.move` reuses the partition's claim), whether or not a segment on it still exists
    (a drain drops segments, not their records nor their claims). Only such a target may hold records of the chain
    above its high watermark: an older segment's unclean tail (docs/DESIGN.md §9.2), acked, though the high watermark
    trails them after a restart (§6.3, "A move back onto its chain"). Any other target is claimed for its logical
    partition by this move's plan: it holds nothing of the chain. Read before the plan's own claims: `Mover._record`
    records the answer on the move (`returning_rows`)."""
    found = set()
    for m in moves:
        target = (m.to_cluster, m.to_topic, m.to_partition)
        claim = s.get(PhysicalPartitionRow, target)
        if claim is not None and (claim.topic, claim.partition) == (m.topic, m.partition):
            found.add(target)
    return found


def _recorded_end(row: MoveRow) -> int | None:
    """The target end move `row` recorded last: at its plan while planned, else at its freeze."""
    return row.planned_target_end if row.state == "planned" else row.target_end


def lost_publish_shown(row: MoveRow, end: int | None) -> str | None:
    """Whether move `row`'s target may hold records acked under a publish the config database lost, by `end`, read of
    it now (`Mover.current_target_ends`: a returning target's leader log end, any other's high watermark), against
    the end the move recorded (`_recorded_end`: settled, for a returning target): HELD_GREW above it (a write since,
    which before its publish only a lost publish makes); HELD_UNREAD when it may (`end` not read); HELD_NO_END when
    nothing was recorded; None when not (at it; or below it: the target lost records since, and none lies above it,
    since Kafka answers no high watermark below the start of its leader's epoch, OFFSET_NOT_AVAILABLE). The one rule
    a rollback (`Mover._lost_publish`), the sweeper's `recheck_held` and an operator's roll-back (`held.HeldMoves`)
    judge a target by; an operator's publish checks its target_start against the same read (docs/DESIGN.md §6.3
    point 4)."""
    recorded = _recorded_end(row)
    if recorded is None:
        return HELD_NO_END
    if end is None:
        return HELD_UNREAD
    return HELD_GREW if end > recorded else None


def end_said(row: MoveRow, end: int, same: str = "unchanged") -> str:
    """`end`, read of move `row`'s target and not above the end it recorded, said for its reason: "8, unchanged"
    (`same`), or below it (the target lost records since: an unclean election)."""
    recorded = _recorded_end(row)
    if recorded is None or end >= recorded:
        return f"{end}, {same}"
    return f"{end}, below its target_end {recorded}: its cluster lost records since (an unclean election?), none above"


def returning_rows(rows: Iterable[MoveRow]) -> dict[int, tuple[str, str, int]]:
    """Move id -> target of each of `rows` whose plan found its target returning (`returning_targets`, recorded:
    a drain dropping the older segment later changes nothing); one planned before revision 0021 (None) is taken as
    returning, the reading that never starts a segment at a trailing high watermark."""
    return {row.id: (row.to_cluster, row.to_topic, row.to_partition) for row in rows
            if row.returning_target is not False}


def below_recorded_end(row: MoveRow, start: int) -> str | None:
    """Why move `row` must not start its new segment at `start` (its target's settled end at the seal), or None: a
    returning target's ends only grow (settled ends, §6.3), so one below the end its plan or freeze recorded lost
    records since (an unclean election on the target's cluster): started there, a record of the older segment's tail
    read inside the gap could leave it and be read again as the new segment's. Rolled back alone."""
    recorded = [end for end in (row.planned_target_end, row.target_end) if end is not None]
    if row.returning_target is False or not recorded or start >= max(recorded):
        return None
    return (f"the settled end {start} of its returning target {row.to_cluster}/{row.to_topic}/{row.to_partition} is "
            f"below the end {max(recorded)} recorded at its plan or freeze: not started below it (docs/DESIGN.md §6.3)")


def _seal_reads(rows: list[MoveRow], olds: dict[int, SegmentRow], returning: dict[int, tuple[str, str, int]]):
    """(cluster -> physical partitions whose log ends the seal reads, partitions whose high watermark it waits to
    reach their leader's log end) for `rows`: the sources (their seals), and the targets not in `returning`
    (`returning_rows`: those are read apart, each for its settled end, `Mover._returning_ends`)."""
    wanted: dict[str, set[tuple[str, int]]] = {}
    sealing: set[tuple[str, str, int]] = set()
    for row in rows:
        old = olds[row.id]
        if not row.gap:
            wanted.setdefault(old.cluster, set()).add((old.physical_topic, old.physical_partition))
            sealing.add((old.cluster, old.physical_topic, old.physical_partition))
        if row.id not in returning:
            wanted.setdefault(row.to_cluster, set()).add((row.to_topic, row.to_partition))
    return wanted, sealing


def read_until(read: Callable[[set], dict], wanted: set, timeout: float,
               wait_stopping: Callable[[float], bool]) -> dict:
    """What `read(left)` answers for `wanted`, each one left out of an answer read again (every 0.2 s) until every one
    was answered or `timeout` s passed, or the controller stops (`wait_stopping`: `Controller.wait_stopping`, True
    once stopping: its stop() joins its threads for kafka_timeout + 5 s only); those never answered are left out. The
    one retry of every Kafka read that a partition without a leader, a broker restarting, or one refusing a request a
    moment may leave unanswered."""
    deadline = time.monotonic() + timeout
    found: dict = {}
    while True:
        found.update(read(wanted - found.keys()))
        if found.keys() >= wanted or time.monotonic() > deadline or wait_stopping(0.2):
            return found


class InjectedFault(RuntimeError):
    pass


def _fault_point(state: str) -> None:
    if os.environ.get(FAULT_RAISE) == state:
        raise InjectedFault(f"fault injection: error after move state {state}")
    if os.environ.get(FAULT_PAUSE) == state:
        log.warning("fault injection: pausing after move state %s", state)
        while True:
            time.sleep(3600)
