"""Physical topics a deleted logical topic must still lose (docs/DESIGN.md §4.5, "Deleting a topic").

`Controller.delete_topic` records every physical topic of the deleted topic (and its shadow topic) in
`pending_deletions`, in the transaction that deletes the topic, then asks each cluster to delete them. A row goes
once its cluster confirms the physical topic gone (deleted, or UNKNOWN_TOPIC_OR_PARTITION); the controller's scan
retries the others on the clusters that answer (`PhysicalDeletions.retry`). While a name has rows, creating a topic
of that name is refused (`refuse_pending`) with TOPIC_ALREADY_EXISTS, as Kafka refuses a name still marked for
deletion: a new topic's segments start at physical offset 0 of physical topics of the same names, and one left
behind would serve the deleted topic's records there.

Every deletion attempt runs under the controller's write lock and first reads its row again: a late attempt never
deletes the physical topic of a topic created again after another attempt removed the row. (Only the active
controller runs them: a standby runs no scan, and one that lost its leader row restarts, docs/DESIGN.md §3.6.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from fedkafka.controller.errors import Conflict
from fedkafka.controller.kafka_admin import KafkaAdmin, KafkaUnavailable
from fedkafka.controller.models import ClusterRow, PendingDeletionRow
from fedkafka.view.model import ClusterState

log = logging.getLogger(__name__)


def record(s: Session, topic: str, physical: Iterable[tuple[str, str]]) -> None:
    """Add the (cluster, physical topic) pairs `topic` leaves to delete, in the session deleting `topic`."""
    now = time.time()
    for cluster, name in sorted(set(physical)):
        s.merge(PendingDeletionRow(cluster=cluster, physical_topic=name, topic=topic, deleted_at=now, attempts=0,
                                   last_error=None))


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
    """Deletes the recorded physical topics on the clusters that answer; `lock` is the controller's write lock."""

    def __init__(self, session: sessionmaker[Session], kafka: KafkaAdmin, lock: Any) -> None:
        self.session, self.kafka, self.lock = session, kafka, lock

    def retry(self, bootstrap: Mapping[str, str]) -> None:
        """The scan's round: try every recorded deletion on the clusters of `bootstrap` (those that answered),
        drop those of removed clusters."""
        with self.lock:
            self._drop_removed()
            self.attempt(bootstrap)

    def attempt(self, bootstrap: Mapping[str, str], topic: str | None = None) -> None:
        """Try the recorded deletions on the clusters of `bootstrap` (of `topic` only, if given), each row read again
        just before: the caller holds the write lock. A cluster's first KafkaUnavailable ends its attempts (the next
        scan retries): one that stopped answering costs one timeout under the lock, not one per row."""
        query = select(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic).where(
            PendingDeletionRow.cluster.in_(list(bootstrap)))
        if topic is not None:
            query = query.where(PendingDeletionRow.topic == topic)
        with self.session() as s:
            rows = s.execute(query.order_by(PendingDeletionRow.cluster, PendingDeletionRow.physical_topic)).all()
        silent: set[str] = set()
        for cluster, name in rows:
            if cluster not in silent and not self._delete_one(cluster, bootstrap[cluster], name):
                silent.add(cluster)

    def _delete_one(self, cluster: str, bootstrap: str, name: str) -> bool:
        """False if `cluster` did not answer (KafkaUnavailable): its other rows wait for the next scan. A refusal
        (KafkaRefused) concerns this topic only: True."""
        key = (PendingDeletionRow.cluster == cluster, PendingDeletionRow.physical_topic == name)
        with self.session() as s:
            if s.get(PendingDeletionRow, (cluster, name)) is None:  # removed since it was listed
                return True
        try:
            self.kafka.delete_topic(cluster, bootstrap, name)
        except Exception as e:  # KafkaUnavailable, KafkaRefused, anything else: the row stays, retried
            log.warning("physical topic %s on %s of a deleted topic not yet removed (retried by the scan): %s",
                        name, cluster, e)
            with self.session() as s:
                s.execute(update(PendingDeletionRow).where(*key).values(
                    attempts=PendingDeletionRow.attempts + 1, last_error=str(e)[:1024]))
                s.commit()
            return not isinstance(e, KafkaUnavailable)  # no answer: the cluster's round ends
        with self.session() as s:
            if s.execute(delete(PendingDeletionRow).where(*key)).rowcount:  # type: ignore[attr-defined]
                log.info("physical topic %s on %s of a deleted topic removed", name, cluster)
            s.commit()
        return True

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
