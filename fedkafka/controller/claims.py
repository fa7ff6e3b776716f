"""Physical partition claims (docs/DESIGN.md §4.13): one logical partition per physical partition, forever.

A physical partition is claimed in the transaction that first points anything at it (a topic's or an added
partition's identity segment, a move's target) and stays claimed while its logical topic exists, whether or not
a segment still names it (dropped segments leave their records behind). Planners take new indexes past every
claim; `claim` refuses one owned by another logical partition, and the table's primary key refuses the second
of two transactions that race for it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fedkafka.controller.models import PhysicalPartitionRow
from fedkafka.view.rebalance import Claims


class ClaimTaken(RuntimeError):
    """A physical partition was claimed by another logical partition meanwhile: plan again."""


def load(s, physical_topic: str | None = None) -> Claims:
    """(cluster, physical topic) -> physical partition -> (logical topic, partition), for one physical topic or all."""
    q = select(PhysicalPartitionRow)
    if physical_topic is not None:
        q = q.where(PhysicalPartitionRow.physical_topic == physical_topic)
    found: dict[tuple[str, str], dict[int, tuple[str, int]]] = {}
    for row in s.scalars(q):
        found.setdefault((row.cluster, row.physical_topic), {})[row.physical_partition] = (row.topic, row.partition)
    return found


def claim(s, cluster: str, physical_topic: str, physical_partition: int, topic: str, partition: int) -> None:
    """Claim a physical partition for logical partition `topic`/`partition` in session `s` (a no-op when it is
    its own already); ClaimTaken when another owns it. A concurrent claim fails the commit (IntegrityError)."""
    row = s.get(PhysicalPartitionRow, (cluster, physical_topic, physical_partition))
    if row is None:
        s.add(PhysicalPartitionRow(cluster=cluster, physical_topic=physical_topic,
                                   physical_partition=physical_partition, topic=topic, partition=partition))
        try:
            s.flush()  # the primary key refuses a claim another transaction made meanwhile, here
        except IntegrityError:
            raise ClaimTaken(f"{cluster}/{physical_topic}/{physical_partition} was claimed concurrently") from None
    elif (row.topic, row.partition) != (topic, partition):
        raise ClaimTaken(f"{cluster}/{physical_topic}/{physical_partition} belongs to {row.topic}/{row.partition}, "
                         f"not {topic}/{partition}")
