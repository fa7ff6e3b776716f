"""An operator's repair of a held move (docs/OPERATIONS.md, "A held move"; docs/DESIGN.md §3.3, "Lost commits").

A move is held when its target may hold records written under a publish the config database lost: its partition
stays frozen, and nothing but an operator settles it. `HeldMoves` lists moves (`GET /v1/moves?state=held`), publishes
a held one as the lost publish had (`POST /v1/moves/{id}/publish`: sealed at `seal`, its new segment at
`target_start`, in one transaction; the sweeper then publishes it like any sealed move) or rolls one back when
nothing was written under a lost publish (`POST /v1/moves/{id}/roll-back`, the mover's own rollback). What Kafka can
tell is checked first; a refusal says what is wrong and changes nothing. `fedkafka moves` is the command line.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

from sqlalchemy import select

from fedkafka.controller.errors import Conflict, Invalid, NotFound
from fedkafka.controller.models import ClusterRow, MoveRow, SegmentRow
from fedkafka.controller.moves import (
    FINISHED,
    HELD_GREW,
    HELD_NO_END,
    MOVE_ROLES,
    MoveFailed,
    Mover,
    end_said,
    frozen_segment,
    lost_publish_shown,
    older_seal_above,
)
from fedkafka.view.model import ClusterState

log = logging.getLogger(__name__)

# how long a publish waits for the proxies' acks of the frozen view before it refuses (retried by the operator);
# proxies that applied it long ago (the usual case) answer at once
PUBLISH_ACK_WAIT_S = 20.0
# then how long it waits for the source's high watermark to reach its log end (a write appended above it, answered
# with an error, replicated or truncated) before it refuses (retried by the operator); both within the deadline
PUBLISH_SETTLE_WAIT_S = 5.0
# past this, counted from the request, a publish or a roll-back is refused (nothing changed) under the lock that
# would commit it, so it never commits later: a publish's worst case is 20 s of acks, up to ~30 s of settle rounds and
# ~20 s of log-end reads (each Kafka read bounded by kafka_timeout, 3 s: ~10 s per cluster), a roll-back's one
# target read (~10 s), plus waits for the compose and write locks. The admin client waits longer for either
# (`client.REPAIR_TIMEOUT_S`): its answer is the outcome
REPAIR_DEADLINE_S = 60.0
# what an operator's repair of a held move did, by the request that does it
_REPAIRED = {"publish": "published", "roll-back": "rolled back"}
STATES = ("planned", "frozen", "sealed", "held", "done", "rolled_back")
FIELDS = ("id", "workflow_id", "topic", "partition", "from_cluster", "to_cluster", "to_topic", "to_partition", "state",
          "gap", "seal", "phys_start", "target_end", "planned_target_end", "held_for", "error", "updated_at")


def move_dict(row: MoveRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in FIELDS}


class HeldMoves:
    def __init__(self, controller, mover: Mover | None = None):
        self.ctl = controller
        self.mover = mover if mover is not None else Mover(controller)

    def listed(self, state: str | None = None) -> list[dict[str, Any]]:
        """The moves in `state`, or every unfinished one (planned, frozen, sealed, held) without it."""
        if state is not None and state not in STATES:
            raise Invalid(f"state must be one of {', '.join(STATES)}, got {state!r}")
        query = select(MoveRow).where(MoveRow.state == state if state else MoveRow.state.not_in(FINISHED))
        with self.ctl.session() as s:
            return [move_dict(r) for r in s.scalars(query.order_by(MoveRow.id))]

    def get(self, move_id: int) -> dict[str, Any]:
        with self.ctl.session() as s:
            row = s.get(MoveRow, move_id)
            if row is None:
                raise NotFound(f"unknown move {move_id}")
            return move_dict(row)

    def publish(self, move_id: int, seal: int, target_start: int, force: bool = False) -> dict[str, Any]:
        """Held move `move_id` to `sealed` at `seal` (the source's log end), its new segment on the target starting at
        `target_start` (its `target_end`): what the documented `UPDATE moves SET state = 'sealed' ...` did, in one
        transaction, for a held row only. Checked first: `seal` not below the source segment's start, and unless
        `force`, `target_start` equal to the move's `target_end` (when it has one), the source's log end (when it can
        be read) equal to `seal` (at least `seal` for a failover's move, `gap` > 0: the dead cluster's end is not what
        it sealed at), and the target's log end (when read) at least `target_start`. Whatever `force`, under the lock
        that publishes: `target_start` not below the seal of an older segment of the partition on the target physical
        partition (the seal's invariant, docs/DESIGN.md §4.5). Before any of those reads, whatever `force`: every live
        proxy applied a view with the partition frozen (`_await_frozen_view`), so no write lands on the source after
        it; then, unless it is a failover's move, the source's high watermark reached its log end (`_unsettled_source`:
        a write appended but not acked is replicated, or truncated, before the seal is checked; Conflict when not
        within PUBLISH_SETTLE_WAIT_S, unless `force`), as in a move's own seal (docs/DESIGN.md §4.1). Past
        REPAIR_DEADLINE_S, checked under the lock that seals, it is refused: it never commits after the admin client
        stopped waiting. Returns the move and what was checked; the sweeper publishes it (the partition unfrozen)
        within its next round. Repeated once it was published at the same `seal` and `target_start` (an answer lost
        to a timeout), it answers the move, changing nothing (`_repeat_answer`)."""
        started = monotonic()
        with self.ctl.session() as s:
            if (repeat := _repeat_answer(s, move_id, "publish", seal=seal, target_start=target_start)) is not None:
                return repeat
            row, source = self._held(s, move_id)
            _check_target_active(s, row)  # what the database refuses, before the wait (again in the transaction)
            _check_past_older_segments(s, row, target_start)
            s.expunge_all()
        acked = self._await_frozen_view(row)
        checks = [acked, *self._check_publish(row, source, seal, target_start, force)]
        with self.ctl.topology_change() as s:
            if (repeat := _repeat_answer(s, move_id, "publish", lock=True, seal=seal,
                                         target_start=target_start)) is not None:  # one sent while this one waited
                return repeat
            row, now = self._held(s, move_id, lock=True)
            if now.id != source.id:
                raise Conflict(f"move {move_id}: its partition's active segment changed since it was checked; again")
            _check_target_active(s, row)
            _check_past_older_segments(s, row, target_start)
            _check_deadline(move_id, "publish", started)
            self.mover.seal_held(row, seal, target_start)
            self.ctl.check_leader(s)
            s.commit()
        log.warning("move %d of %s/%s published by an operator: sealed at %d, its segment on %s/%s/%d from %d (%s)",
                    move_id, row.topic, row.partition, seal, row.to_cluster, row.to_topic, row.to_partition,
                    target_start, "; ".join(checks))
        return {**self.get(move_id), "checks": checks}

    def roll_back(self, move_id: int, nothing_was_published: bool = False) -> dict[str, Any]:
        """Roll held move `move_id` back (the mover's rollback: its partition unfrozen, writes go on at the source's
        log end) when nothing was written to its target under a lost publish: the target's log end read now is at or
        below the move's `target_end` (below: its cluster lost records since, none above). A move without one
        (`no_target_end`) or whose target cannot be read only with `nothing_was_published`: the operator checked that
        no proxy's view.json has a segment on its target. A target that grew is refused whatever the flag: it holds
        records of the lost publish (publish the move instead), and so is a move held `target_grew` whatever its
        target reads now (unreadable, or back at `target_end`). Past REPAIR_DEADLINE_S, checked under the lock, it is
        refused, as a publish is; repeated once it was rolled back (an answer lost to a timeout), it answers the
        move, changing nothing; a published move is not rolled back (`_repeat_answer`)."""
        started = monotonic()
        with self.ctl.session() as s:
            if (repeat := _repeat_answer(s, move_id, "roll-back")) is not None:
                return repeat
            row, _source = self._held(s, move_id, need_segment=False)
            s.expunge_all()
        reason = self._check_roll_back(row, nothing_was_published)
        with self.ctl.topology_change() as s:
            if (repeat := _repeat_answer(s, move_id, "roll-back", lock=True)) is not None:
                return repeat  # one sent while this one waited
            row, _ = self._held(s, move_id, lock=True, need_segment=False)
            _check_deadline(move_id, "roll-back", started)
            self.mover.roll_back_one(s, row, reason)
            self.ctl.check_leader(s)
            s.commit()
        self.ctl.compose_after_commit(f"held move {move_id} rolled back")
        return self.get(move_id)

    def _await_frozen_view(self, row: MoveRow) -> str:
        """Compose the view from the database, where held move `row`'s chain is frozen (a held move keeps it frozen),
        and wait until every live proxy applied it, as a move's ack wait does (`Mover.await_version`: a proxy whose
        fence and the grace ran out is not waited for). A move held at its freeze, or by a rollback while it was
        planned, never had that wait: a proxy still on an older view writes to the source, and a seal read now would
        leave its next acked records above the seal, their logical offsets handed out again by the new segment.
        Conflict (nothing changed, the move stays held; publish again) when they did not within
        PUBLISH_ACK_WAIT_S; returns what was checked."""
        view = self.ctl.compose()
        chain = view.chain(row.topic, row.partition)
        if chain is None or not chain.frozen:
            raise Conflict(f"move {row.id} of {row.topic}/{row.partition}: view {view.version} does not have the "
                           f"partition frozen; nothing was changed, publish again")
        try:
            self.mover.await_version(view.version, lambda *_: None, roles=MOVE_ROLES, timeout=PUBLISH_ACK_WAIT_S)
        except MoveFailed as e:
            raise Conflict(f"move {row.id} of {row.topic}/{row.partition} not published, nothing was changed (it stays "
                           f"held): {e}. A proxy that has not applied a view with the partition frozen may still "
                           f"write to the source above the seal (records lost once sealed). Publish again once every "
                           f"live proxy applied view {view.version} (or its fence ran out: a stopped proxy is "
                           f"waited for until then); force does not skip this") from None
        return f"every live proxy applied view {view.version}, the partition frozen"

    def _held(self, s, move_id: int, lock: bool = False, need_segment: bool = True) -> tuple[MoveRow, Any]:
        """Held move `move_id` and the segment it froze (None unless `need_segment`): NotFound, or Conflict when the
        move is not held, or its partition is not as it froze it (the topic deleted, another active segment)."""
        query = select(MoveRow).where(MoveRow.id == move_id)
        row = s.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise NotFound(f"unknown move {move_id}")
        if row.state != "held":
            raise Conflict(f"move {move_id} of {row.topic}/{row.partition} is {row.state}, not held: only a held move "
                           f"is repaired by hand")
        if not need_segment:
            return row, None
        old = frozen_segment(s, row)
        if isinstance(old, str):
            raise Conflict(f"move {move_id} of {row.topic}/{row.partition}: {old}; it cannot be published")
        return row, old

    def _check_publish(self, row: MoveRow, source: SegmentRow, seal: int, target_start: int, force: bool) -> list[str]:
        """What `publish` checks before it writes (Invalid naming the first thing wrong); returns what it checked."""
        src = (source.cluster, source.physical_topic, source.physical_partition)
        dst = (row.to_cluster, row.to_topic, row.to_partition)
        if seal < source.phys_start:
            raise Invalid(f"seal {seal} is below the start {source.phys_start} of the source segment {_name(src)}")
        refused: list[str] = []
        if row.target_end is not None and target_start != row.target_end:
            refused.append(f"target_start {target_start} is not the move's target_end {row.target_end} (its target's "
                           f"end before the records written under the lost publish)")
        unsettled = None if row.gap else self._unsettled_source(row, src)
        if unsettled is not None:
            if not force:
                raise Conflict(f"move {row.id} not published, nothing was changed (it stays held): {unsettled}. A "
                               f"write appended there but not acked (its answer an error, or given up on) may be "
                               f"replicated after the read, above the seal: served by no one, its retry answered as "
                               f"a duplicate. Publish again once the source answers and its followers caught up "
                               f"(force publishes past this, its log end read once)")
            refused.append(unsettled)
        # the target as a roll-back reads it: a returning one by its leader's log end (its high watermark trails after
        # a restart, and a lost publish's records may lie above it)
        read = self.mover.log_ends({src, dst})  # one read per cluster, both
        ends = {src: read.get(src), dst: self.mover.target_ends([row], read=read).get(row.id)}
        checks = []
        if (end := ends.get(src)) is None:
            checks.append(f"source {_name(src)} not read: the seal is not checked against its log end")
        elif end < seal or (end != seal and not row.gap):
            refused.append(f"the log end of the source {_name(src)} is {end}, not the seal {seal}"
                           + ("" if row.gap else " (frozen since the lost seal, its log end is that seal)"))
        else:
            checks.append(f"source {_name(src)} log end {end}")
        if (end := ends.get(dst)) is None:
            checks.append(f"target {_name(dst)} not read: target_start is not checked against its log end")
        elif end < target_start:
            refused.append(f"the log end of the target {_name(dst)} is {end}, below target_start {target_start}")
        else:
            checks.append(f"target {_name(dst)} log end {end}")
        if refused and not force:
            raise Invalid(f"move {row.id}: " + "; ".join(refused) + " (force: publish it anyway)")
        return checks + [f"forced: {why}" for why in refused]

    def _unsettled_source(self, row: MoveRow, src: tuple[str, str, int]) -> str | None:
        """None once held move `row`'s source partition has no write above its high watermark, waited for (at most
        PUBLISH_SETTLE_WAIT_S) as a move's own seal waits (`Mover.read_settled_ends`, docs/DESIGN.md §4.1 step 3);
        else why not (a write above it, or a log end not read). A failover's move (`gap` > 0) does not wait: its
        source is the dead cluster, whose end its seal is not (a move's own seal does not read it either)."""
        cluster, topic, partition = src
        with self.ctl.session() as s:
            bootstrap = {c.id: c.bootstrap for c in s.scalars(select(ClusterRow))}
        try:
            self.mover.read_settled_ends({cluster: {(topic, partition)}}, bootstrap, {src},
                                         timeout=PUBLISH_SETTLE_WAIT_S)
        except MoveFailed as e:
            return f"the source {_name(src)} is not settled: {e}"
        return None

    def _check_roll_back(self, row: MoveRow, nothing_was_published: bool) -> str:
        """Why held move `row` may be rolled back (the reason it records), or Conflict saying why not: its target read
        now (`Mover.target_ends`: a returning target's leader log end) and judged as the sweeper's
        `recheck_held` judges it (`lost_publish_shown`); `nothing_was_published` stands in for a read that shows
        nothing, never for one that shows writes."""
        dst = (row.to_cluster, row.to_topic, row.to_partition)
        end = self.mover.target_ends([row]).get(row.id)
        shown = lost_publish_shown(row, end)
        if shown == HELD_GREW:
            raise Conflict(f"move {row.id}: the log end of its target {_name(dst)} is {end}, {row.target_end} when "
                           f"it was held: it holds records written under a publish the config database lost; rolled "
                           f"back, their offsets would be handed out again. Publish the move instead")
        if row.held_for == HELD_GREW:  # seen grown: whatever it reads now (unread, rebuilt), whatever the flag says
            raise Conflict(f"move {row.id}: it is held {HELD_GREW}: the controller read its target {_name(dst)} past "
                           f"its target_end {row.target_end}, so records were acked there under a publish the config "
                           f"database lost; rolled back, their offsets would be handed out again (its target "
                           f"{'cannot be read' if end is None else f'reads {end} now'}; nothing_was_published does "
                           f"not override this). Publish the move instead")
        if shown is None:
            assert end is not None  # read, not above the recorded end
            return f"rolled back by an operator: its target's log end is {end_said(row, end, 'as when it was held')}"
        if not nothing_was_published:
            raise Conflict(f"move {row.id}: {_unchecked(row)}, so nothing shows that its target took no records "
                           f"under a publish the config database lost. {_views_advice(row)}, then pass "
                           f"nothing_was_published")
        return f"rolled back by an operator who found no publish of it in the proxies' views: {_unchecked(row)}"


def _unchecked(row: MoveRow) -> str:
    """Why held move `row`'s target cannot show whether it took writes under a lost publish (nothing recorded, or
    it cannot be read)."""
    dst = _name((row.to_cluster, row.to_topic, row.to_partition))
    if row.target_end is None:
        return f"it has no recorded target end ({HELD_NO_END})"
    return f"its target {dst} cannot be read" + (" (its leader's log end)" if row.returning_target else "")


def _views_advice(row: MoveRow) -> str:
    """What an operator checks in every proxy's view.json before vouching that nothing was published of held move
    `row`: a segment of its partition on its target. A returning target holds an older segment of the chain in every
    view (docs/DESIGN.md §6.3), so for one only a segment starting at its target_end or later is the lost publish's."""
    dst = _name((row.to_cluster, row.to_topic, row.to_partition))
    if row.returning_target is not False and row.target_end is not None:
        return (f"Check that no proxy's view.json has a segment of {row.topic}/{row.partition} on {dst} starting at "
                f"{row.target_end} or later (its older segments there start below it)")
    return f"Check that no proxy's view.json has a segment on {dst} for {row.topic}/{row.partition}"


def _repeat_answer(s, move_id: int, action: str, lock: bool = False, seal: int | None = None,
                   target_start: int | None = None) -> dict[str, Any] | None:
    """The answer to `action` ("publish" at `seal` from `target_start`, or "roll-back") of move `move_id` (read in
    session `s`, locked with `lock`) when it repeats the repair already done (an answer lost to a timeout or a
    connection): the move, saying this repeat changed nothing. None when the move was not repaired (still held, or
    never held: `_held` says what is wrong). Conflict naming what was done when it was repaired otherwise: rolled back
    rather than published or the reverse, or published at another seal or start."""
    query = select(MoveRow).where(MoveRow.id == move_id)
    row = s.scalar(query.with_for_update() if lock else query)
    done = _repair_of(row)
    if row is None or done is None:
        return None
    if done != action:
        raise Conflict(f"move {move_id} of {row.topic}/{row.partition} was already {_what_was_done(row)}: not "
                       f"{_REPAIRED[action]}, nothing was changed")
    if action == "publish" and (row.seal, row.phys_start) != (seal, target_start):
        raise Conflict(f"move {move_id} of {row.topic}/{row.partition} was already published at seal {row.seal} from "
                       f"{row.phys_start}, not at seal {seal} from {target_start} (it is {row.state}): nothing was "
                       f"changed")
    return {**move_dict(row), "checks": [f"already {_what_was_done(row)}: this repeat changed nothing"]}


def _repair_of(row: MoveRow | None) -> str | None:
    """The repair ("publish" or "roll-back") that took held move `row` out of held, None while it is held or when it
    never was. A move leaves held only so (`held_for` stays): sealed by `HeldMoves.publish`, then done; rolled back by
    `HeldMoves.roll_back`, the sweeper's `Mover.recheck_held` or its topic's deletion (its reason in `error`)."""
    if row is None or row.held_for is None:
        return None
    return {"sealed": "publish", "done": "publish", "rolled_back": "roll-back"}.get(row.state)


def _what_was_done(row: MoveRow) -> str:
    """Held move `row`'s repair, said: "published at seal 42 from 0 (it is done)", "rolled back (its reason)": the
    reason (`error`) says who rolled it back (an operator, the sweeper's `recheck_held`, the topic's deletion)."""
    if row.state == "rolled_back":
        return f"rolled back ({row.error})"
    return f"published at seal {row.seal} from {row.phys_start} (it is {row.state})"


def _check_deadline(move_id: int, action: str, started: float) -> None:
    """Conflict (nothing changed) when `action` of held move `move_id`, requested at `started` (`monotonic`), is past
    REPAIR_DEADLINE_S: called under the lock, just before the commit, so nothing commits after the admin client
    (`client.REPAIR_TIMEOUT_S`) may have stopped waiting for the answer."""
    if (took := monotonic() - started) > REPAIR_DEADLINE_S:
        raise Conflict(f"move {move_id} not {_REPAIRED[action]}, nothing was changed (it stays held): its checks took "
                       f"{took:.0f} s, past {REPAIR_DEADLINE_S:.0f} s (slow acks or a slow Kafka), and a {action} is "
                       f"not committed after the admin client may have stopped waiting. {action.capitalize()} again")


def _check_target_active(s, row: MoveRow) -> None:
    """Conflict when held move `row`'s target cluster is not active (read_only, draining, removed, or gone): a new
    segment there is one a decommission would not see coming, and one on a removed cluster takes no writes and is
    read by no proxy. The operator sets the cluster active again first (`fedkafka cluster activate`)."""
    cluster = s.get(ClusterRow, row.to_cluster)
    state = cluster.state if cluster is not None else "unknown"
    if state != ClusterState.ACTIVE.value:
        hint = ("" if state in ("removed", "unknown") else
                f"; set it active again first (`fedkafka cluster activate {row.to_cluster}`), then decommission it "
                f"again after the publish if you meant to")
        raise Conflict(f"move {row.id} of {row.topic}/{row.partition}: its target cluster {row.to_cluster} is "
                       f"{state}, not active: a new segment is published on an active cluster only{hint}")


def _check_past_older_segments(s, row: MoveRow, target_start: int) -> None:
    """Invalid when held move `row`'s new segment would start at `target_start` below the seal of an older segment of
    its chain on its target physical partition: the invariant the seal keeps (`moves.check_start_past_older_segments`,
    docs/DESIGN.md §4.5), which `force` does not override. A lost publish could not have started there (its seal
    checked the same), and a segment from there gives the records from `target_start` a second logical offset."""
    if (older := older_seal_above(s, row, target_start)) is not None:
        dst = _name((row.to_cluster, row.to_topic, row.to_partition))
        raise Invalid(f"move {row.id}: target_start {target_start} on {dst} is below the seal {older} of an older "
                      f"segment of {row.topic}/{row.partition} there: the new segment's records would have a second "
                      f"logical offset (force does not override this). Did {row.to_cluster} lose its data? Find "
                      f"where the lost publish started, at or past {older}, or roll the move back")


def _name(partition: tuple[str, str, int]) -> str:
    return "/".join(str(x) for x in partition)
