"""Moving the coordination cluster (docs/DESIGN.md §10): every consumer group and its committed offsets go to
another cluster, with no commit lost or rolled back.

Planned (the old coordination cluster answers): the shadow topics are created on the new cluster; commits are
frozen (the view's `commits_frozen`: proxies answer OffsetCommit, DeleteGroups and OffsetDelete with a retriable
error) and every consume proxy acks that view, which it does only once every one of those it forwarded under an
older view is answered; then what the new cluster holds of the federation's shadow partitions and the old one
does not is deleted there, each group's committed offsets are copied, and the new cluster is read back (equal to
the old one's, absence included); then one transaction makes the new cluster the coordination
cluster and unfreezes. Groups rejoin on the new coordinator (a rebalance) and resume from the copied offsets.

Unclean (`--unclean`, the old one is dead): the offsets come from the controller's last periodic copy
(`copy_now`, every `--offsets-copy-interval` seconds), so a group can fall back by up to that interval plus one
copy's duration; it re-reads those records (at-least-once), never skips any.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, func, select, update

from fedkafka.controller import deletions
from fedkafka.controller.compose import coordination_cluster
from fedkafka.controller.errors import Conflict, NotFound, Unavailable
from fedkafka.controller.kafka_admin import Committed, KafkaRefused, KafkaUnavailable
from fedkafka.controller.models import ClusterRow, SegmentRow, TopicRow, WorkflowRow
from fedkafka.controller.moves import CONSUME_ROLES
from fedkafka.view.model import ClusterState, shadow_topic

log = logging.getLogger(__name__)
GROUP_AUTHORIZATION_FAILED = "GROUP_AUTHORIZATION_FAILED"  # Kafka's name of an OffsetFetch this controller may not make

# [(shadow topic, partition, offset, leader epoch, metadata)]
Parts = list[tuple[str, int, int, int | None, str | None]]
Offsets = dict[str, Parts]  # {group: its parts}
TopicIds = dict[str, str]  # {shadow topic: the id of the logical topic it was read for}


class FreezeLost(Conflict):
    """The switch, or a write of offsets to the target before it, found the move no longer owning what it copied
    under: its freeze of commits cleared (and maybe set again since, by another run or its own run resumed
    elsewhere), its run no longer running, or the role moved meanwhile (docs/DESIGN.md §10.1)."""


class Freeze(NamedTuple):
    """A freeze of commits `_freeze` set: the cluster frozen, the view version that carries it, and the cluster's
    freeze generation it counted (what every write made on the strength of this freeze checks is still the cluster's:
    `_still_frozen_by`)."""
    cluster: str
    version: int
    generation: int


def _unfrozen(cluster: str) -> FreezeLost:
    return FreezeLost(f"commits on {cluster} were unfrozen since this move froze them (its run failed or was taken "
                      "over meanwhile): the offsets copied may be older than its commits. Nothing was changed; run "
                      "the move again")


def _still_frozen_by(row: ClusterRow, freeze: Freeze) -> None:
    """FreezeLost unless `row` (the cluster `freeze` froze, as read now) is still frozen by `freeze`: its commits still
    frozen, and by the same freeze (its generation: a freeze cleared and set again since, by another run or by this
    run resumed elsewhere, counted another one)."""
    if not row.commits_frozen:
        raise _unfrozen(row.id)
    if row.freeze_generation != freeze.generation:
        raise FreezeLost(f"commits on {row.id} were unfrozen and frozen again since this move froze them (its run was "
                         "taken over meanwhile): the offsets copied may be older than its commits. Nothing was "
                         "changed; run the move again")


def _still_owned(s, old: str, freeze: Freeze | None, run_id: int | None) -> None:
    """FreezeLost unless `old` still holds the groups, its commits are still frozen by `freeze` (a planned move's:
    its copy is A's commits only while nothing could commit since), and the run `run_id` is still running. Read under
    the switch's write lock, which every freeze and unfreeze takes too. A controller that paused past its lease and
    leads again meanwhile (another one resumed the run, which failed there and cleared the freeze, or the sweeper
    did) would otherwise switch to a copy older than the commits made on `old` since; with the freeze set again by
    the same run (resumed by a sweeper, its failure never recorded) the flag and the run's state look as before: only
    the generation tells the two freezes apart."""
    row = s.get(ClusterRow, old)
    if row is None or not row.coordination:
        raise FreezeLost(f"cluster {old} no longer holds the groups: the role moved since this move began. "
                         "Nothing was changed")
    if freeze is not None and not row.commits_frozen:
        raise _unfrozen(old)
    state = None if run_id is None else s.scalar(select(WorkflowRow.state).where(WorkflowRow.id == run_id))
    if run_id is not None and state != "running":
        raise FreezeLost(f"the run of this move is {state or 'gone'} (another controller ended it meanwhile): its "
                         "freeze is not its own any more. Nothing was changed; run the move again")
    if freeze is not None:
        _still_frozen_by(row, freeze)


class CoordinationMove:
    def __init__(self, controller, mover) -> None:
        self.ctl = controller
        self.mover = mover

    def check(self, target: str, unclean: bool) -> str:
        """The current coordination cluster, or a clear error (nothing changed)."""
        with self.ctl.session() as s:
            rows = {c.id: c for c in s.scalars(select(ClusterRow))}
        row = rows.get(target)
        if row is None:
            raise NotFound(f"unknown cluster {target!r}")
        old = coordination_cluster(list(rows.values()))
        if old is None:  # every cluster removed (the target too, then)
            raise Conflict(f"cluster {target} is removed and no cluster holds the groups. Nothing was changed")
        if old == target:
            return old  # nothing to do: the run finishes at once, unchanged
        if row.state != ClusterState.ACTIVE or not row.reachable:
            raise Conflict(f"cluster {target} is {row.state}{'' if row.reachable else ' and unreachable'}: only an "
                           "active cluster that answers can hold the groups. Nothing was changed")
        if not unclean and not rows[old].reachable:
            raise Conflict(f"the coordination cluster {old} does not answer: its offsets cannot be copied now. "
                           f"`--unclean` moves the role with the controller's last copy of them. Nothing was changed")
        if unclean and rows[old].reachable:
            raise Conflict(f"the coordination cluster {old} answers: a planned move (without --unclean) loses no "
                           "commit. Nothing was changed")
        if unclean:
            self.stored_copy()
        return old

    def run(self, target: str, unclean: bool, progress, run_id: int | None = None) -> dict[str, Any]:
        """Move the groups to `target` (for the workflow run `run_id`). Whatever fails before the switch, `check` and
        the shadow topics of a run resumed after its controller died holding a freeze too, clears the freeze:
        commits go on where they were (docs/DESIGN.md §10.1). Once this thread froze, only its own freeze: one set
        again since (by another run, or this one resumed elsewhere) is left to that run's thread. A write or switch
        refused because the move no longer owns the freeze clears nothing: it is gone already, or another run's."""
        frozen: list[Freeze] = []  # the freeze this thread sets, once it has set it
        try:
            return self._run(target, unclean, progress, run_id, frozen)
        except FreezeLost:
            raise
        except Exception:
            self.unfreeze_after_failure(frozen[0] if frozen else None)
            raise

    def _run(self, target: str, unclean: bool, progress, run_id: int | None,
             frozen: list[Freeze]) -> dict[str, Any]:
        old = self.check(target, unclean)
        if old == target:
            return {"from": old, "groups": 0, "changed": False}
        shadowed = self._shadow_topics(target)
        progress("shadow_topics", 1, 1)
        freeze: Freeze | None = None  # an unclean move copies under no freeze: its old cluster is dead
        if unclean:
            copy = self.stored_copy()
            offsets = self._not_below_chains(copy["offsets"])
            progress("copy", 0, len(offsets))
            self.write(target, offsets, topic_ids=copy.get("topic_ids", {}))
        else:
            freeze = self._freeze(old)
            frozen.append(freeze)
            progress("freeze", 1, 1)
            self.mover.await_version(freeze.version, lambda _p, done, total: progress("acks", done, total),
                                     roles=CONSUME_ROLES)
            offsets, topic_ids = self.read_tagged(old)
            progress("copy", 0, len(offsets))
            self.remove_stale(target, offsets, freeze)
            self.write(target, offsets, topic_ids=topic_ids, freeze=freeze)
            self._verify(target, offsets, topic_ids)
        progress("copy", len(offsets), len(offsets))
        self._switch(old, target, shadowed, freeze=freeze, run_id=run_id)
        progress("switch", 1, 1)
        return {"from": old, "groups": len(offsets), "changed": True}

    def unfreeze_after_failure(self, own: Freeze | None = None) -> None:
        """Clear the freeze of commits after a failed move: `own`, the one the failed thread set, if it is still the
        cluster's; without one (the thread failed before it froze), every freeze (only a coordination move freezes,
        one at a time, and only the coordination cluster: what a killed predecessor of its run froze). An error here
        (the database does not answer, this controller lost its row) is logged: the sweeper clears a freeze no
        running coordination move owns (`clear_orphaned_freeze`), the run ending `failed` first."""
        try:
            self._clear_freezes(owned_by_a_run=False, only=own)
        except Exception:
            log.exception("commits left frozen after a failed coordination move: the sweeper clears them")

    def clear_orphaned_freeze(self) -> list[str]:
        """The sweeper's part (docs/DESIGN.md §10.1): clear the freeze of commits when no coordination move is
        running (its run failed and could not unfreeze). Returns the clusters unfrozen."""
        return self._clear_freezes(owned_by_a_run=True)

    def _clear_freezes(self, owned_by_a_run: bool, only: Freeze | None = None) -> list[str]:
        """Unfreeze every frozen cluster (with `only`, that freeze, if it is still its cluster's: same generation);
        with `owned_by_a_run`, only when no coordination move is running. Under the write lock, like `_freeze`: a run
        recorded after the check freezes after this commit, never before it, and a freeze set again after `only`
        counts another generation, never cleared here: the UPDATE itself asks for the generation, after the leader
        check in the same transaction (a freeze set again by another controller between the first read and the
        leader check, while this one had lost its row, is left alone)."""
        which: list[ColumnElement[bool]] = [ClusterRow.commits_frozen.is_(True)]
        if only is not None:
            which += [ClusterRow.id == only.cluster, ClusterRow.freeze_generation == only.generation]
        with self.ctl.topology_change() as s:
            if s.scalar(select(ClusterRow.id).where(*which).limit(1)) is None or (owned_by_a_run and s.scalar(
                    select(WorkflowRow.id).where(WorkflowRow.kind == "coordination_move",
                                                 WorkflowRow.state == "running").limit(1)) is not None):
                return []
            self.ctl.check_leader(s)
            frozen = sorted(s.scalars(update(ClusterRow).where(*which).values(commits_frozen=False)
                                      .returning(ClusterRow.id)))
            s.commit()
        if not frozen:
            return []
        log.warning("commits unfrozen on %s: the coordination move that froze them failed", ", ".join(frozen))
        self.ctl.compose()
        return frozen

    # -- steps ---------------------------------------------------------------------------------------
    def _shadow_topics(self, target: str) -> set[str]:
        """Create every topic's shadow topic on `target` (without the write lock); the topics they are of."""
        with self.ctl.session() as s:
            topics = [(t.name, t.partitions) for t in s.scalars(select(TopicRow))]
            bootstrap = s.get(ClusterRow, target).bootstrap
        for name, partitions in topics:
            self.ctl.kafka.ensure_topic(target, bootstrap, shadow_topic(name), partitions)
        return {name for name, _ in topics}

    def _freeze(self, cluster: str) -> Freeze:
        """Freeze commits on `cluster`; only while this controller is the active one (docs/DESIGN.md §3.6): a
        controller that lost its row must not freeze what the active one is moving. Each freeze counts one more
        generation, which the switch checks (`_still_owned`). Unfreezing is `_clear_freezes`' and the switch's."""
        with self.ctl.topology_change() as s:
            self.ctl.check_leader(s)
            s.execute(update(ClusterRow).where(ClusterRow.id == cluster).values(
                commits_frozen=True, freeze_generation=ClusterRow.freeze_generation + 1))
            generation = s.scalar(select(ClusterRow.freeze_generation).where(ClusterRow.id == cluster))
            s.commit()
        return Freeze(cluster, self.ctl.compose().version, generation or 0)

    def _switch(self, old: str, target: str, shadowed: frozenset[str] | set[str] = frozenset(),
                freeze: Freeze | None = None, run_id: int | None = None) -> None:
        """One transaction: the new cluster holds the groups, the old one nothing (commits unfrozen there, since
        it may hold them again one day). Only while this controller is the active one (docs/DESIGN.md §3.6), and
        only while the move still owns what it copied under (`_still_owned`: the freeze, a planned move's).
        A topic of `shadowed` deleted since its shadow topic was created on `target` had that shadow topic recorded
        for deletion on `old` only (`delete_topic`, on the coordination cluster of its time): the same transaction
        records the one on `target` (docs/DESIGN.md §5.8); a deletion after it records `target`'s itself."""
        with self.ctl.topology_change() as s:
            self.ctl.check_leader(s)
            _still_owned(s, old, freeze, run_id)
            row = s.get(ClusterRow, target)
            if row is None or row.state != ClusterState.ACTIVE:  # a decommission began meanwhile (no run lock)
                raise Conflict(f"cluster {target} is {row.state if row else 'gone'} since the move began: it cannot "
                               "hold the groups. Nothing was changed")
            for name in sorted(shadowed - set(s.scalars(select(TopicRow.name)))):
                log.info("topic %s was deleted during the coordination move: its shadow topic on %s is a pending "
                         "deletion", name, target)
                deletions.record(s, name, [(target, shadow_topic(name))])
            s.execute(update(ClusterRow).values(coordination=False, commits_frozen=False))
            s.execute(update(ClusterRow).where(ClusterRow.id == target).values(coordination=True))
            s.commit()
        self.ctl.compose()

    def _bootstrap(self, cluster: str) -> str:
        with self.ctl.session() as s:
            return s.get(ClusterRow, cluster).bootstrap

    def read(self, cluster: str, groups: list[str] | None = None,
             federation_groups: Collection[str] | None = None) -> Offsets:
        """Every group's (or `groups`') committed offsets of shadow topics on `cluster` (see `read_tagged`)."""
        return self.read_tagged(cluster, groups, federation_groups)[0]

    def read_tagged(self, cluster: str, groups: list[str] | None = None,
                    federation_groups: Collection[str] | None = None) -> tuple[Offsets, TopicIds]:
        """`read`, and the id of the logical topic of each shadow topic, listed before Kafka is asked: a commit read
        is of that topic or of one created after it, never of one deleted before (`write`, docs/DESIGN.md §10.3).
        With `federation_groups` (a target's read, the groups the copy holds), a group this controller may not read
        (GROUP_AUTHORIZATION_FAILED) that is not one of them is skipped (see `_readable_committed`)."""
        kafka, bootstrap = self.ctl.kafka, self._bootstrap(cluster)
        ours, topic_ids = self._shadow_partitions()
        try:
            if groups is None:
                groups = kafka.consumer_groups(cluster, bootstrap)
            if federation_groups is None:
                committed = kafka.committed_offsets(cluster, bootstrap, groups)
            else:
                committed = self._readable_committed(cluster, bootstrap, groups, federation_groups)
        except (KafkaUnavailable, KafkaRefused) as e:
            raise Unavailable(f"committed offsets of {cluster} not read: {e}") from None
        # only this federation's shadow partitions: a deleted topic's offsets, or another federation's on a
        # shared cluster, have no shadow topic on the new cluster and mean nothing to a group here
        found: Offsets = {}
        for group, parts in committed.items():
            kept = [(t, p, o, e, m) for t, p, o, e, m in parts if p < ours.get(t, 0) and o >= 0]
            if kept:
                found[group] = kept
        return found, topic_ids

    def _readable_committed(self, cluster: str, bootstrap: str, groups: list[str],
                            federation_groups: Collection[str]) -> dict[str, list[Committed]]:
        """The committed offsets of `groups` on a target, without those of a group the controller may not read
        that is not one of `federation_groups`: a group of another tenant of a shared cluster, which holds no
        offset of this federation's shadow partitions. Those reach a cluster by the controller's copy (OffsetCommit
        needs READ on the group, as OffsetFetch does) or by the groups' own commits while it held the groups, every
        one of which the move away from it read (a move reads every group there). A group denied now was denied then
        too, or an operator took the controller's access away since: left, with a log line, like a foreign group.
        A denied group of `federation_groups` raises as before: the copy could not be written nor read back."""
        kafka = self.ctl.kafka
        try:
            return kafka.committed_offsets(cluster, bootstrap, groups)
        except KafkaRefused as e:
            if e.code != GROUP_AUTHORIZATION_FAILED:
                raise
        committed: dict[str, list[Committed]] = {}
        for group in groups:  # one at a time: the refusal does not say which group was denied
            try:
                committed.update(kafka.committed_offsets(cluster, bootstrap, [group]))
            except KafkaRefused as e:
                if e.code != GROUP_AUTHORIZATION_FAILED or group in federation_groups:
                    raise
                log.info("group %r on %s skipped: this controller may not read its offsets (%s), and it is none of "
                         "the federation's", group, cluster, e.code)
        return committed

    def _not_below_chains(self, offsets: Offsets) -> Offsets:
        """`offsets` (the periodic copy), each raised to its partition's first logical offset (the chain's first
        segment's `logical_base`) where it is below: the records below were dropped from the chain since the copy,
        by a `groups` drain because every group had committed past them (on the live coordination cluster), or by
        retention. A position below the chain is answered OFFSET_OUT_OF_RANGE, and a group resetting to latest would
        skip every record still there; from the chain's first offset it skips none (docs/DESIGN.md §10.2). The leader
        epoch of a raised offset is dropped: it was the one of the record below. The chains are read under the
        coordination lock (workflows), so no drain round drops a head between this read and the switch."""
        with self.ctl.session() as s:
            firsts = {(shadow_topic(topic), partition): first for topic, partition, first in s.execute(
                select(SegmentRow.topic, SegmentRow.partition, func.min(SegmentRow.logical_base))
                .group_by(SegmentRow.topic, SegmentRow.partition))}
        raised: Offsets = {}
        for group, parts in offsets.items():
            raised[group] = []
            for t, p, o, e, m in parts:
                first = firsts.get((t, p), o)
                if o < first:
                    log.warning("group %r: %s/%d restored at %d, the first offset of its chain: its copied offset %d "
                                "is below (those records were dropped since the copy)", group, t, p, first, o)
                    o, e = first, None
                raised[group].append((t, p, o, e, m))
        return raised

    def _shadow_partitions(self) -> tuple[dict[str, int], TopicIds]:
        """Shadow topic -> partitions, and -> logical topic id, of every logical topic of the federation."""
        with self.ctl.session() as s:
            topics = list(s.scalars(select(TopicRow)))
        return {shadow_topic(t.name): t.partitions for t in topics}, {shadow_topic(t.name): t.topic_id for t in topics}

    def write(self, cluster: str, offsets: Offsets, patience_s: float = 30.0,
              topic_ids: TopicIds | None = None, freeze: Freeze | None = None) -> None:
        """Each group's offsets on `cluster`; a partition answering an error (a shadow topic created a moment ago
        has no leader yet) is written again until `patience_s` ran out. Every attempt, a retry too, is preceded by
        `_still_moving_to` (with `freeze`, a planned move's, the offsets were read under: still the old cluster's),
        and no retry starts past the deadline: a controller that paused between two attempts (past its lease:
        another took over, resumed the move and switched, or copied under a freeze of its own) writes nothing more.
        With `topic_ids` (what the offsets were read for), each attempt writes only the offsets of topics that still
        exist under that id: a deleted topic's offsets are written nowhere, and never into a topic created again
        under its name (docs/DESIGN.md §10.3)."""
        bootstrap = self._bootstrap(cluster)
        deadline = time.monotonic() + patience_s
        for group, parts in offsets.items():
            todo = list(parts)
            while True:
                current = self._still_moving_to(cluster, freeze)
                if topic_ids is not None:
                    todo = _of_topics_still_there(group, todo, topic_ids, current)
                    if not todo:
                        break
                todo, error = self._commit(cluster, bootstrap, group, todo)
                if not todo:
                    break
                if time.monotonic() <= deadline:
                    time.sleep(0.5)
                if time.monotonic() > deadline:  # also after the sleep: a pause there ends the retries
                    raise Unavailable(f"offsets of group {group!r} not written to {cluster}: {error}")

    def _commit(self, cluster: str, bootstrap: str, group: str, parts: Parts) -> tuple[Parts, str]:
        """One OffsetCommit of `parts`: the parts refused, and why."""
        try:
            failed = set(self.ctl.kafka.commit_offsets(cluster, bootstrap, group, parts))
            error = f"{len(failed)} partitions refused"
        except (KafkaUnavailable, KafkaRefused) as e:
            failed, error = {(t, p) for t, p, _o, _e, _m in parts}, str(e)
        return [part for part in parts if (part[0], part[1]) in failed], error

    def _still_moving_to(self, target: str, freeze: Freeze | None = None) -> TopicIds:
        """Before each attempt of a group's write (each retry too): this controller is still the active one, `target`
        does not hold the groups yet, and with `freeze` its cluster is still frozen by it (`_still_frozen_by`). A
        controller paused in `write` while another took over, resumed the move and switched would otherwise write its
        older copy over commits made on `target` since, and rewind the groups (docs/DESIGN.md §3.6); one paused while
        the freeze was cleared and set again, over the copy made under the new freeze, which that run's switch would
        then take (its generation matches). A pause between this check and the OffsetCommit's arrival is not covered:
        only Kafka could fence that write (docs/DESIGN.md §10.1). Returns each shadow topic's logical topic id, now."""
        with self.ctl.session() as s:
            self.ctl.check_leader(s)
            row = s.get(ClusterRow, target)
            if row is None:
                raise NotFound(f"cluster {target} was removed while its offsets were copied")
            if row.coordination:
                raise Conflict(f"{target} holds the consumer groups already: another run finished this move")
            if freeze is not None:
                source = s.get(ClusterRow, freeze.cluster)
                if source is None:
                    raise FreezeLost(f"cluster {freeze.cluster} was removed since this move froze its commits")
                _still_frozen_by(source, freeze)
            return {shadow_topic(name): topic_id for name, topic_id in s.execute(select(TopicRow.name,
                                                                                        TopicRow.topic_id))}

    def remove_stale(self, cluster: str, offsets: Offsets, freeze: Freeze) -> None:
        """Delete on `cluster` (the target) every committed offset of this federation's shadow partitions that a
        group holds there and not in `offsets` (the old cluster's, read under `freeze`): a group written there by an
        earlier failed attempt of the move, or held there since the cluster last held the groups, and deleted on the
        old cluster since (DeleteGroups, OffsetDelete) would otherwise be back at the switch at its old offsets, an
        acknowledged deletion undone (docs/DESIGN.md §10.1). OffsetDelete of those partitions only: a group's offsets
        of other topics (not this federation's) stay. Each deletion is preceded by `_still_moving_to` with `freeze`,
        like each write. Refused (a live member subscribed there): Unavailable, the run fails and switches nothing."""
        bootstrap = self._bootstrap(cluster)
        for group, parts in sorted(self.read(cluster, federation_groups=set(offsets)).items()):
            kept = {(t, p) for t, p, _o, _e, _m in offsets.get(group, [])}
            stale = sorted({(t, p) for t, p, _o, _e, _m in parts} - kept)
            if not stale:
                continue
            self._still_moving_to(cluster, freeze)
            log.info("group %r: offsets of %s on %s deleted: %s holds none of them (deleted there since)", group,
                     ", ".join(f"{t}/{p}" for t, p in stale[:5]), cluster, freeze.cluster)
            try:
                refused = self.ctl.kafka.delete_offsets(cluster, bootstrap, group, stale)
            except (KafkaUnavailable, KafkaRefused) as e:
                raise Unavailable(f"offsets of group {group!r} on {cluster} that {freeze.cluster} no longer holds "
                                  f"not deleted: {e}. Nothing was switched; run the move again") from None
            if refused:
                raise Unavailable(f"offsets of group {group!r} on {cluster} that {freeze.cluster} no longer holds "
                                  f"not deleted: {sorted(refused.items())[:3]} refused"
                                  f"{_why_refused(set(refused.values()), cluster)}. Nothing was switched; run the "
                                  "move again once that is resolved")

    def _verify(self, cluster: str, offsets: Offsets, topic_ids: TopicIds) -> None:
        """Read back: every group's offsets of this federation's shadow partitions on the new cluster are exactly
        as copied (a group that committed meanwhile on the new cluster is impossible: commits are frozen and the view
        still names the old coordinator), but those of topics deleted since they were read (`write` skipped them, or
        Kafka deleted them with the topic); and none is there that the copy does not hold (`remove_stale` deleted
        them). Exactly, not at least: anything else there is a write that was not this copy's, a stale thread's
        landing late (docs/DESIGN.md §10.1), and may be above a commit made lower since (a seek back,
        --reset-offsets). The leader epoch and the metadata too: they are the group's commit as much as its offset
        (the metadata is the application's, the epoch what the consumer checks truncation with), and both round-trip
        exactly (OffsetCommit and OffsetFetch v8 on every cluster, read through `committed_of` on both sides)."""
        listed = self._groups_of(cluster)
        got, current = self.read_tagged(cluster, sorted(set(listed) | set(offsets)), federation_groups=set(offsets))
        for group in sorted(set(got) | set(offsets)):
            want = {(t, p): _as_read_back(o, e, m) for t, p, o, e, m in offsets.get(group, [])
                    if current.get(t) == topic_ids.get(t)}
            have = {(t, p): (o, e, m) for t, p, o, e, m in got.get(group, [])}
            amiss = [(t, p, copied[0]) for (t, p), copied in sorted(want.items()) if have.get((t, p)) != copied]
            if amiss:
                raise Conflict(f"group {group!r}: offsets {amiss[:3]} not on {cluster} as copied", status=503)
            extra = sorted(set(have) - set(want))
            if extra:
                raise Conflict(f"group {group!r}: offsets of {extra[:3]} on {cluster} after the copy, which the copy "
                               "does not hold", status=503)

    def _groups_of(self, cluster: str) -> list[str]:
        try:
            return self.ctl.kafka.consumer_groups(cluster, self._bootstrap(cluster))
        except (KafkaUnavailable, KafkaRefused) as e:
            raise Unavailable(f"groups of {cluster} not listed: {e}") from None

    # -- the periodic copy (for --unclean) --------------------------------------------------------------
    def copy_now(self) -> int:
        """Read the coordination cluster's offsets and keep them (in this controller's memory: a restarted
        controller has a copy again after one interval); returns the groups copied."""
        with self.ctl.session() as s:
            old = coordination_cluster(list(s.scalars(select(ClusterRow))))
        if old is None:
            return 0
        offsets, topic_ids = self.read_tagged(old)
        self.ctl.offsets_copy = {"cluster": old, "at": time.time(), "offsets": offsets, "topic_ids": topic_ids}
        return len(offsets)

    def stored_copy(self) -> dict[str, Any]:
        """The last copy: "offsets", and "topic_ids" they were read for (a copy without them restores nothing)."""
        copy = getattr(self.ctl, "offsets_copy", None)
        if not copy:
            raise Conflict("no copy of the groups' offsets was taken since this controller started (see "
                           "--offsets-copy-interval): an unclean move has nothing to restore. Nothing was changed")
        return copy



def _why_refused(codes: set[str], cluster: str) -> str:
    """The reason of OffsetDelete's refusal, named by Kafka's codes; what the usual one means."""
    if codes == {"GROUP_SUBSCRIBED_TO_TOPIC"}:
        return f" (GROUP_SUBSCRIBED_TO_TOPIC: a member of the group is live on {cluster})"
    return f" ({', '.join(sorted(codes))})"


def _as_read_back(offset: int, epoch: int | None, metadata: str | None) -> tuple[int, int | None, str | None]:
    """A copied part as `committed_of` reads it back: no leader epoch (-1) as None, no metadata ("") as None."""
    return offset, epoch if epoch is not None and epoch >= 0 else None, metadata or None


def _of_topics_still_there(group: str, parts: Parts, read_for: TopicIds, current: TopicIds) -> Parts:
    """The parts of `parts` whose logical topic still exists under the id they were read for. The others are of a
    topic deleted since (Kafka deleted its commits with it; a topic created again under the name starts with none):
    written nowhere."""
    kept = [part for part in parts if read_for.get(part[0]) is not None and current.get(part[0]) == read_for[part[0]]]
    gone = sorted({part[0] for part in parts} - {part[0] for part in kept})
    if gone:
        log.info("group %r: offsets of %s not written: their topics were deleted since they were read", group,
                 ", ".join(gone))
    return kept
