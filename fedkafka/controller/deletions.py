"""Physical topics a deleted logical topic must still lose (docs/DESIGN.md §4.5, "Deleting a topic").

`Controller.delete_topic` records every physical topic of the deleted topic (and its shadow topic) in
`pending_deletions`, in the transaction that deletes the topic, then asks each cluster to delete them. A row goes
once its cluster confirms the physical topic gone (deleted, or no topic of its id or name); the controller's scan
retries the others on the clusters that answer (`PhysicalDeletions.retry`). While a name has rows, creating a topic
of that name is refused (`refuse_pending`) with TOPIC_ALREADY_EXISTS, as Kafka refuses a name still marked for
deletion: a new topic's segments start at physical offset 0 of physical topics of the same names, and one left
behind would serve the deleted topic's records there.

A physical topic is deleted by its Kafka topic id, never by name (docs/DESIGN.md §5.8, "A stale deletion deletes
nothing created since"): a deletion that arrives late (a controller paused with its request in hand, or resuming a
round after losing its leader row) must not delete a physical topic of a topic created again under the name since.
The id is recorded with the row when the deletion learned it while the logical topic still existed (`learn_ids`,
`record`); else the attempt learns it and stores it, in a transaction that checks this controller still leads and
that the row is still the one it read (`record_id`), before it deletes by it. While a row is pending no topic of its
name can be created, so an id learned then is never one of a topic created since.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from fedkafka.controller.errors import Conflict
from fedkafka.controller.kafka_admin import KafkaAdmin, KafkaUnavailable
from fedkafka.controller.leadership import NotLeader
from fedkafka.controller.models import ClusterRow, PendingDeletionRow
from fedkafka.view.model import ClusterState

log = logging.getLogger(__name__)

PhysicalTopic = tuple[str, str]  # (cluster, physical topic)


def learn_ids(kafka: KafkaAdmin, bootstrap: Mapping[str, str], physical: Iterable[PhysicalTopic]) -> dict[
        PhysicalTopic, str]:
    """The Kafka topic ids of the `physical` topics that exist on the clusters of `bootstrap` (those the last scan
    reached), asked before the transaction that records their deletion: a cluster that does not answer gives none
    (its rows learn their ids at their attempts), nor does a physical topic it does not have."""
    names: dict[str, list[str]] = {}
    for cluster, name in sorted(set(physical)):
        if cluster in bootstrap:
            names.setdefault(cluster, []).append(name)
    found: dict[PhysicalTopic, str] = {}
    for cluster, wanted in names.items():
        try:
            ids = kafka.topic_ids(cluster, bootstrap[cluster], wanted)
        except Exception as e:  # KafkaUnavailable, KafkaRefused: learned at the attempts
            log.info("topic ids of %d physical topics on %s not read: %s", len(wanted), cluster, e)
            continue
        found.update({(cluster, name): topic_id for name, topic_id in ids.items()})
    return found


def record(s: Session, topic: str, physical: Iterable[PhysicalTopic],
           kafka_ids: Mapping[PhysicalTopic, str] | None = None) -> None:
    """Add the (cluster, physical topic) pairs `topic` leaves to delete, in the session deleting `topic`, each with
    its Kafka topic id when `kafka_ids` has it (learned while `topic` existed: `learn_ids`)."""
    now, kafka_ids = time.time(), kafka_ids or {}
    for cluster, name in sorted(set(physical)):
        s.merge(PendingDeletionRow(cluster=cluster, physical_topic=name, topic=topic, deleted_at=now, attempts=0,
                                   last_error=None, kafka_topic_id=kafka_ids.get((cluster, name)),
                                   record_id=uuid.uuid4().hex))


def refuse_pending(s: Session, topic: str) -> None:
    """Conflict (Kafka's TOPIC_ALREADY_EXISTS) while a physical topic of a deleted topic `topic` is not yet gone
    from a cluster that is not removed (a removed cluster is never placed on again)."""
    left = s.execute(select(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic)
                     .where(PendingDeletionRow.topic == topic, PendingDeletionRow.cluster.not_in(_removed_clusters()))
                     .order_by(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic)).all()
    if left:
        which = ", ".join(f"physical topic {t} on cluster {c}" for c, t in left)
        raise Conflict(f"Topic '{topic}' is marked for deletion ({which} not yet removed); it can be created again "
                       "once the controller's scan has removed it", kafka_error="TOPIC_ALREADY_EXISTS")


def pending_by_cluster(s: Session) -> dict[str, list[str]]:
    """Per cluster, the physical topics still to delete (for /v1/status)."""
    found: dict[str, list[str]] = {}
    for cluster, name in s.execute(select(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic)
                                   .order_by(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic)):
        found.setdefault(cluster, []).append(name)
    return found


class PhysicalDeletions:
    """Deletes the recorded physical topics on the clusters that answer; `lock` is the controller's write lock,
    `check_leader` raises NotLeader in a transaction of a controller that lost its leader row, `served_topics` the
    topics of the view served now (none: a deletion is tried as soon as it is recorded)."""

    def __init__(self, session: sessionmaker[Session], kafka: KafkaAdmin, lock: Any,
                 check_leader: Callable[[Session], None] = lambda _s: None,
                 served_topics: Callable[[], Collection[str]] = lambda: ()) -> None:
        self.session, self.kafka, self.lock, self.check_leader = session, kafka, lock, check_leader
        self.served_topics = served_topics

    def retry(self, bootstrap: Mapping[str, str]) -> None:
        """The scan's round: try every recorded deletion on the clusters of `bootstrap` (those that answered),
        drop those of removed clusters."""
        with self.lock:
            self._drop_removed()
            self.attempt(bootstrap)

    def attempt(self, bootstrap: Mapping[str, str], topic: str | None = None) -> None:
        """Try the recorded deletions on the clusters of `bootstrap` (of `topic` only, if given), each row read again
        just before: the caller holds the write lock. A cluster's first KafkaUnavailable ends its attempts (the next
        scan retries): one that stopped answering costs one timeout under the lock, not one per row. A controller
        that lost its leader row ends the round: it learns no id and deletes nothing more.
        A topic the view served still lists is left for a later round: its deletion was committed but not composed
        yet (a compose failing after the commit, docs/DESIGN.md §5.1), and proxies still route to its physical
        topics (no deletion commits meanwhile: the caller holds the write lock)."""
        query = select(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic, PendingDeletionRow.topic).where(
            PendingDeletionRow.cluster.in_(list(bootstrap)))
        if topic is not None:
            query = query.where(PendingDeletionRow.topic == topic)
        served = self.served_topics()
        with self.session() as s:
            rows = [(cluster, name) for cluster, name, of in
                    s.execute(query.order_by(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic))
                    if of not in served]
        silent: set[str] = set()
        try:
            for cluster, name in rows:
                if cluster not in silent and not self._delete_one(cluster, bootstrap[cluster], name):
                    silent.add(cluster)
        except NotLeader as e:
            log.warning("deletions of physical topics stopped: %s", e)

    def _delete_one(self, cluster: str, bootstrap: str, name: str) -> bool:
        """Delete the row's physical topic by its Kafka topic id, learned first if the row has none. False if
        `cluster` did not answer (KafkaUnavailable): its other rows wait for the next scan. A refusal (KafkaRefused)
        concerns this topic only: True."""
        with self.session() as s:
            row = s.get(PendingDeletionRow, (cluster, name))
            if row is None:  # removed since it was listed
                return True
            record_id, kafka_id = row.record_id, row.kafka_topic_id
        try:
            if kafka_id is None and (kafka_id := self._learn_id(cluster, bootstrap, name, record_id)) is None:
                return True  # gone, or the row changed since it was read
            deleted = self.kafka.delete_topic_by_id(cluster, bootstrap, name, kafka_id)
        except NotLeader:
            raise
        except Exception as e:  # KafkaUnavailable, KafkaRefused, anything else: the row stays, retried
            log.warning("physical topic %s on %s of a deleted topic not yet removed (retried by the scan): %s",
                        name, cluster, e)
            with self.session() as s:
                s.execute(update(PendingDeletionRow).where(*_same_row(cluster, name, record_id)).values(
                    attempts=PendingDeletionRow.attempts + 1, last_error=str(e)[:1024]))
                s.commit()
            return not isinstance(e, KafkaUnavailable)  # no answer: the cluster's round ends
        with self.session() as s:  # gone: deleted now, or no topic of its id was left (whatever has its name now)
            if s.execute(delete(PendingDeletionRow).where(  # type: ignore[attr-defined]
                    *_same_row(cluster, name, record_id), PendingDeletionRow.kafka_topic_id == kafka_id)).rowcount:
                log.info("physical topic %s on %s (topic id %s) of a deleted topic %s", name, cluster, kafka_id,
                         "removed" if deleted else "was gone already")
            s.commit()
        return True

    def _learn_id(self, cluster: str, bootstrap: str, name: str, record_id: str) -> str | None:
        """Learn the Kafka topic id of the row's physical topic and store it, in a transaction that commits only
        while this controller leads and the row is the one read (`record_id`, no id yet): the id it then deletes by.
        A cluster without the topic: the row goes (confirmed gone). None when nothing is left to delete by it."""
        learned = self.kafka.topic_ids(cluster, bootstrap, [name]).get(name)
        unchanged = (*_same_row(cluster, name, record_id), PendingDeletionRow.kafka_topic_id.is_(None))
        with self.session() as s:
            self.check_leader(s)
            if learned is None:
                if s.execute(delete(PendingDeletionRow).where(*unchanged)).rowcount:  # type: ignore[attr-defined]
                    log.info("physical topic %s on %s of a deleted topic is gone", name, cluster)
                s.commit()
                return None
            stored = s.execute(update(PendingDeletionRow).where(*unchanged).values(
                kafka_topic_id=learned)).rowcount  # type: ignore[attr-defined]
            s.commit()
        return learned if stored else None

    def _drop_removed(self) -> None:
        """A removed cluster is never placed on again (and may be switched off): its rows block nothing."""
        with self.session() as s:
            removed = _removed_clusters()
            gone = s.execute(select(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic)
                             .where(PendingDeletionRow.cluster.in_(removed))).all()
            for cluster, name in gone:
                log.warning("physical topic %s on removed cluster %s is not deleted by fedkafka any more", name,
                            cluster)
            if gone:
                s.execute(delete(PendingDeletionRow).where(PendingDeletionRow.cluster.in_(removed)))
                s.commit()


def _removed_clusters():
    """The ids of removed clusters, as a subquery: never placed on again, their rows block and are retried no more."""
    return select(ClusterRow.id).where(ClusterRow.state == ClusterState.REMOVED.value)


def _same_row(cluster: str, name: str, record_id: str) -> tuple:
    """The conditions naming the row of `name` on `cluster` recorded as `record_id` (not one recorded since)."""
    return (PendingDeletionRow.cluster == cluster, PendingDeletionRow.physical_topic == name,
            PendingDeletionRow.record_id == record_id)
