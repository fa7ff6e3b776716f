"""Pure operations on segment chains and views that keep the invariants of docs/DESIGN.md §4.

`freeze` and `move_active` are the two halves of a seal (docs/DESIGN.md §6); the workflow engine drives
them, the controller records each step in its database. `next_version` is how every new view is
made: the version grows only when the content changed.
"""

from __future__ import annotations

from dataclasses import replace

from fedkafka.view.model import PartitionChain, Segment, View

UNCLEAN_GAP = 1 << 40  # offsets reserved for an unreachable cluster's unsealed tail (docs/DESIGN.md §2)


def freeze(chain: PartitionChain) -> PartitionChain:
    return replace(chain, frozen=True)


def move_active(chain: PartitionChain, seal: int | None, cluster: str, topic: str, partition: int,
                phys_start: int, *, unclean: bool = False) -> PartitionChain:
    """Seal the active segment at physical offset `seal` and append a new active segment.

    `unclean` (a failover, docs/DESIGN.md §9): `seal` is only the last log end the controller knew of a
    cluster that no longer answers (`None`: not even that, the segment's start), so the new segment starts
    `UNCLEAN_GAP` offsets after it, leaving room for the tail written before the cluster died.
    The leader epoch grows so requests carrying the old epoch are fenced. The chain is unfrozen.
    """
    old = chain.active
    if seal is None:
        seal, unclean = old.phys_start, True
    if seal < old.phys_start:
        raise ValueError(f"seal {seal} is below the active segment's start {old.phys_start}")
    sealed = replace(old, phys_end=seal)
    new_base = sealed.sealed_end() + (UNCLEAN_GAP if unclean else 0)
    if phys_start < 0:
        raise ValueError("phys_start must be >= 0")
    tail = Segment(cluster, topic, partition, phys_start, None, new_base)
    return PartitionChain(segments=(*chain.segments[:-1], sealed, tail), leader_epoch=chain.leader_epoch + 1,
                          frozen=False)


def is_contiguous(chain: PartitionChain) -> bool:
    """Each segment starts where the previous one ended in logical space (an unclean gap aside)."""
    for prev, nxt in zip(chain.segments, chain.segments[1:], strict=False):
        end = prev.logical_end
        if end is None or nxt.logical_base not in (end, end + UNCLEAN_GAP):
            return False
    return True


def same_content(a: View, b: View) -> bool:
    return a.with_version(0) == b.with_version(0)


def next_version(current: View, candidate: View) -> View:
    """`current` itself when nothing changed; else the candidate numbered current.version + 1."""
    if same_content(current, candidate):
        return current
    return candidate.with_version(current.version + 1)
