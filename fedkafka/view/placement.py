"""Where the logical partitions of a new topic live: explicit (cluster, physical partition) per partition.

Pure functions. Two strategies:
- `blocks`: the article's layout. Consecutive blocks of logical partitions per cluster, in the
  clusters' registration order: P=8 over c1, c2 gives p0-p3 -> c1/p0-p3, p4-p7 -> c2/p0-p3.
- `balanced`: round robin, p -> clusters[p % n] / physical partition p // n, so every cluster holds
  an equal share of every topic (better spread when topics have few partitions).
Either way a physical topic's partition count is the number of logical partitions it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from fedkafka.view.model import PartitionChain, Segment


class Placement(StrEnum):
    BLOCKS = "blocks"
    BALANCED = "balanced"


@dataclass(frozen=True, slots=True)
class Slot:
    cluster: str
    partition: int  # physical partition index on that cluster's physical topic


def place(partitions: int, clusters: Sequence[str], strategy: Placement | str,
          first: int = 0, existing: Sequence[Slot] = ()) -> list[Slot]:
    """Slots for logical partitions `first .. first+partitions-1` over `clusters` (registration order).

    `existing` are the slots already used by lower logical partitions (growing a topic): new slots
    take the next free physical partition on their cluster, so physical indexes never collide.
    """
    if partitions < 0:
        raise ValueError("partitions must be >= 0")
    if not clusters:
        raise ValueError("no active cluster to place partitions on")
    strategy = Placement(strategy)
    n = len(clusters)
    if strategy is Placement.BLOCKS:
        block = -(-partitions // n)  # ceil: the last clusters may get a smaller block
        owners = [clusters[i // block] for i in range(partitions)] if partitions else []
    else:
        owners = [clusters[(first + i) % n] for i in range(partitions)]
    next_free = physical_partition_counts(existing)
    slots = []
    for owner in owners:
        slots.append(Slot(owner, next_free.get(owner, 0)))
        next_free[owner] = slots[-1].partition + 1
    return slots


def physical_partition_counts(slots: Sequence[Slot]) -> dict[str, int]:
    """Partitions each cluster's physical topic needs to hold these slots."""
    counts: dict[str, int] = {}
    for s in slots:
        counts[s.cluster] = max(counts.get(s.cluster, 0), s.partition + 1)
    return counts


def identity_chains(physical_topic: str, slots: Sequence[Slot]) -> tuple[PartitionChain, ...]:
    """A new topic's chains: one identity segment each (offsets pass through untouched)."""
    return tuple(PartitionChain(segments=(Segment(s.cluster, physical_topic, s.partition, 0, None, 0),))
                 for s in slots)
