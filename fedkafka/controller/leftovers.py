"""Physical topics a new identity segment would start on, already holding records (docs/DESIGN.md §4.13, "A new
topic's physical topics").

An identity segment (a new topic's, an added partition's: `put_topic`, `expand`) starts at physical offset 0 of a
physical partition of the topic's name, so it would serve whatever that partition already holds. The pending
deletions keep a deleted topic's physical topics from being met there (§5.8), but not one fedkafka no longer
tracks: a removed cluster's (its rows are dropped) whose Kafka is registered again under a new id, one left before
revision 0015, one made by hand. So before such a segment is committed, the physical topic of that name on each
cluster it goes to is asked: each of its partitions that no logical partition claims must be empty (log end 0). A
validate-only CreateTopics or CreatePartitions asks the same (`Controller.validate_new_partitions`).

Log end > 0, not log end > log start: a partition whose records retention removed still starts past 0, and an
identity segment numbers from physical offset 0. A partition the controller itself created for a creation that did
not commit was never written (nothing writes where no segment points, §4.13), so its log end is 0 and it is used.
Only a physical topic that exists is asked: a new one (the usual case) costs one listing, no offset read.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from confluent_kafka import KafkaException

from fedkafka.controller.errors import Conflict
from fedkafka.controller.kafka_admin import KafkaAdmin, KafkaUnavailable


def refuse_written(kafka: KafkaAdmin, name: str, clusters: Iterable[str], claimed: Mapping[str, Collection[int]],
                   bootstrap: Mapping[str, str], kafka_error: str) -> None:
    """Conflict (`kafka_error`) when physical topic `name` exists on one of `clusters` with records in a partition
    that `claimed` (cluster -> claimed physical partitions of `name`) does not list; KafkaUnavailable when a cluster
    does not answer, or does not tell the log end of such a partition. `claimed` must be read under the write lock
    the caller holds until it commits (`put_topic`); `expand` judges `unclaimed_written` under it instead."""
    for cluster in sorted(set(clusters)):
        written = unclaimed_written(kafka, cluster, bootstrap[cluster], name, set(claimed.get(cluster, ())))
        if written:
            raise leftover_conflict(name, cluster, written, kafka_error)


def leftover_conflict(name: str, cluster: str, written: Iterable[tuple[int, int]], kafka_error: str) -> Conflict:
    """The refusal of an identity segment on physical topic `name` of `cluster`, whose unclaimed partitions hold
    records (`written`: (partition, log end))."""
    ends = ", ".join(f"partition {p}: log end {end}" for p, end in written)
    return Conflict(f"physical topic {name} on cluster {cluster} already holds records ({ends}) that no "
                    f"partition of topic '{name}' accepted (left by a deleted topic, e.g. on a removed "
                    f"cluster's Kafka registered again, or made outside fedkafka): delete it on the cluster "
                    f"first; nothing was changed", kafka_error=kafka_error)


def unclaimed_written(kafka: KafkaAdmin, cluster: str, bootstrap: str, name: str,
                      claimed: set[int]) -> list[tuple[int, int]]:
    """(partition, log end) of the partitions of `name` on `cluster` that are not in `claimed` and hold records;
    KafkaUnavailable as `refuse_written`. Reads Kafka only: whether they are leftovers is decided against the claims
    read under the write lock."""
    scan = kafka.scan(cluster, bootstrap)
    if not scan.reachable:
        raise KafkaUnavailable(f"cluster {cluster} ({bootstrap}) did not answer: {scan.error}")
    unclaimed = [(name, p) for p in range(scan.topics.get(name, 0)) if p not in claimed]
    if not unclaimed:
        return []
    try:
        offsets = kafka.log_offsets(cluster, bootstrap, unclaimed)
    except KafkaException as e:
        raise KafkaUnavailable(f"cluster {cluster} ({bootstrap}): log ends of {name} not read: {e}") from None
    written = sorted((p, end) for (_t, p), (_start, end) in offsets.items() if end > 0)
    if not written and len(offsets) < len(unclaimed):
        silent = sorted(p for _t, p in set(unclaimed) - set(offsets))
        raise KafkaUnavailable(f"cluster {cluster} ({bootstrap}) did not tell the log end of existing physical "
                               f"topic {name}'s partitions {silent}")
    return written
