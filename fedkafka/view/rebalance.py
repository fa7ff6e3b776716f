"""Which active segments move where (pure planning for scale-up and decommission; no I/O).

A chain is described by its segments (oldest first); its active segment is the last one. Moves keep
one rule that placement also keeps: a physical partition belongs to one logical partition only, forever
(docs/DESIGN.md §4.13). A partition returning to a cluster it lived on reuses its own old physical partition
there, unless the caller found its log end below an older segment's seal there (`avoid`, `reused_below_seal`);
otherwise it takes the next index of that cluster's physical topic past every one in use or ever
claimed (`claims`: the controller's record, which also holds dropped segments and unfinished moves' targets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import NamedTuple

from fedkafka.view.model import PartitionChain, Segment


@dataclass(frozen=True, slots=True)
class Move:
    """One active segment to move: what the planners here return and what the controller's mover records."""
    topic: str
    partition: int
    from_cluster: str
    to_cluster: str
    to_topic: str
    to_partition: int
    gap: int = 0  # UNCLEAN_GAP for a failover: sealed at the last known end, the new segment after the gap


Chains = Mapping[str, Sequence[Sequence[Segment]]]  # logical topic -> per partition, its segments
# (cluster, physical topic) -> physical partition -> the logical (topic, partition) that claimed it
Claims = Mapping[tuple[str, str], Mapping[int, tuple[str, int]]]
Physical = tuple[str, str, int]  # (cluster, physical topic, physical partition)


def rebalance(chains: Chains, active: Sequence[str], target: str, claims: Claims | None = None,
              avoid: AbstractSet[Physical] = frozenset(), lost: AbstractSet[tuple[str, str]] = frozenset()
              ) -> list[Move]:
    """Moves that give `target` a fair share (floor(P / clusters)) of every topic's active segments,
    taken from the clusters holding the most. Idempotent: nothing when `target` has its share. A partition is never
    sent back to one of its old physical partitions in `avoid` (`reused_below_seal`): it takes a new one. A topic
    whose physical topic `target` lost with its data (`lost`: (cluster, physical topic)) is left where it is."""
    if target not in active:
        raise ValueError(f"{target} is not an active cluster")
    moves: list[Move] = []
    for topic, parts in sorted(chains.items()):
        if (target, topic) in lost:
            continue
        owner = {p: segs[-1].cluster for p, segs in enumerate(parts)}
        counts = Counter({c: 0 for c in active}) + Counter(c for c in owner.values() if c in active)
        counts.setdefault(target, 0)
        want = len(parts) // len(active)
        planned = _Slots(topic, parts, claims or {}, avoid)
        while counts[target] < want:
            donor = max((c for c in active if c != target), key=lambda c: (counts[c], -active.index(c)))
            if counts[donor] <= want:
                break
            p = max(p for p, c in owner.items() if c == donor)  # the highest index: deterministic
            moves.append(planned.move(p, donor, target))
            owner[p] = target
            counts[donor] -= 1
            counts[target] += 1
    return moves


def evacuate(chains: Chains, active: Sequence[str], leaving: str, claims: Claims | None = None,
             avoid: AbstractSet[Physical] = frozenset(), lost: AbstractSet[tuple[str, str]] = frozenset()
             ) -> list[Move]:
    """Moves that take every active segment off `leaving`, each to the active cluster holding the fewest
    of that topic's partitions (ties: registration order); `avoid` and `lost` as in `rebalance`: a topic lost on
    every other active cluster stays on `leaving`."""
    targets = [c for c in active if c != leaving]
    if not targets:
        raise ValueError(f"{leaving} is the last active cluster: there is nowhere to move its writes")
    moves: list[Move] = []
    for topic, parts in sorted(chains.items()):
        counts = Counter({c: 0 for c in targets}) + Counter(segs[-1].cluster for segs in parts)
        planned = _Slots(topic, parts, claims or {}, avoid)
        to_topic = [c for c in targets if (c, topic) not in lost]
        for p, segs in enumerate(parts):
            if segs[-1].cluster != leaving or not to_topic:
                continue
            to = min(to_topic, key=lambda c: (counts[c], to_topic.index(c)))
            moves.append(planned.move(p, leaving, to))
            counts[to] += 1
    return moves


def reused_below_seal(chains: Chains, moves: Sequence[Move], ends: Mapping[Physical, int]) -> set[Physical]:
    """The targets of `moves` that send a partition back onto a physical partition of its chain whose log end
    (`ends`) is below the seal of an older segment there: its cluster lost its data and the physical topic was created
    again, empty (or it was deleted behind the federation's back). A new segment from that end would give records a
    second logical offset (docs/DESIGN.md §4.5); the mover refuses it, so the planners are asked again with these in
    `avoid`, and take a new physical partition."""
    found = set()
    for m in moves:
        target = (m.to_cluster, m.to_topic, m.to_partition)
        seals = [s.phys_end for s in chains[m.topic][m.partition]
                 if (s.cluster, s.topic, s.partition) == target and s.phys_end is not None]
        end = ends.get(target)
        if seals and end is not None and end < max(seals):
            found.add(target)
    return found


class LogRange(NamedTuple):
    """What a physical partition holds: its log start and its leader's log end (None: not read). The end is the
    leader's own log end, not the high watermark, which may trail it on a leader that just restarted."""
    start: int
    end: int | None


def droppable_prefix(segments: Sequence[Segment], leaving: str, log_range: Callable[[Segment], LogRange | None],
                     committed: int | None) -> int:
    """How many of a chain's oldest segments can go so no segment references `leaving` (0: not yet).

    `segments` is the whole chain, oldest first. `log_range(segment)` is what the segment's physical partition
    holds now (None: its cluster did not answer); `committed` is the lowest logical offset every consumer group
    committed for the partition (None: drain by retention). The prefix goes as a whole, up to and including the
    chain's last segment on `leaving`, and only once no reader can find a record in it (docs/DESIGN.md §7.5):
    by retention, when each of its segments holds no record any more, its unclean tail included; by groups,
    when the commit is at or past the first offset after the prefix (the end of a gap that follows it).
    """
    last = max((i for i, s in enumerate(segments) if s.cluster == leaving), default=-1)
    if last < 0 or any(s.active for s in segments[: last + 1]):
        return 0
    chain = PartitionChain(tuple(segments))
    if committed is not None:
        return last + 1 if committed >= segments[last + 1].logical_base else 0
    return last + 1 if all(_emptied(chain, s, log_range(s)) for s in segments[: last + 1]) else 0


def _emptied(chain: PartitionChain, seg: Segment, held: LogRange | None) -> bool:
    """No reader can find a record of sealed `seg` any more. Without a gap after it: it was empty, or its physical
    log starts at or past its seal. With one: its records run to where its physical partition ends, up to the
    gap's end (`readable_end`), and a seal at its own start says nothing of them; the log start must have
    reached what the leader holds of that range (a read log end is needed, from a cluster that answers)."""
    if chain.gap_after(seg) is None:
        return seg.phys_end == seg.phys_start or (held is not None and held.start >= seg.sealed_phys_end())
    if held is None or held.end is None:
        return False
    limit = chain.readable_end(seg)  # (None only for the active segment, which is never asked)
    end = held.end if limit is None else min(held.end, limit)
    return max(held.start, seg.phys_start) >= end


class _Slots:
    """Physical partitions already used or claimed by a topic on each cluster, plus the ones planned here."""

    def __init__(self, topic: str, parts: Sequence[Sequence[Segment]], claims: Claims,
                 avoid: AbstractSet[Physical] = frozenset()):
        self.topic = topic
        self.parts = parts
        self.claims = claims
        self.avoid = avoid  # old physical partitions not to go back to (`reused_below_seal`)
        self.next_free: dict[tuple[str, str], int] = {}
        for key, owners in claims.items():
            if owners:
                self.next_free[key] = max(owners) + 1
        for segs in parts:
            for s in segs:
                key = (s.cluster, s.topic)
                self.next_free[key] = max(self.next_free.get(key, 0), s.partition + 1)

    def move(self, p: int, from_cluster: str, to_cluster: str) -> Move:
        own = [s for s in self.parts[p] if s.cluster == to_cluster and self._mine(s, p)
               and (s.cluster, s.topic, s.partition) not in self.avoid]
        if own:  # back where it lived: its own physical partition
            return Move(self.topic, p, from_cluster, to_cluster, own[-1].topic, own[-1].partition)
        key = (to_cluster, self.topic)
        claimed = [i for i, owner in self.claims.get(key, {}).items()
                   if owner == (self.topic, p) and (to_cluster, self.topic, i) not in self.avoid]
        if claimed:  # claimed by an earlier move of p that did not finish (or a segment of p dropped since)
            return Move(self.topic, p, from_cluster, to_cluster, self.topic, max(claimed))
        index = self.next_free.get(key, 0)
        self.next_free[key] = index + 1
        return Move(self.topic, p, from_cluster, to_cluster, self.topic, index)

    def _mine(self, seg: Segment, p: int) -> bool:
        """`seg`'s physical partition is claimed by p, or by no one: a database from before claims may hold two
        logical partitions' segments on one, claimed by one of them (docs/DESIGN.md §4.13); the other goes elsewhere."""
        owner = self.claims.get((seg.cluster, seg.topic), {}).get(seg.partition)
        return owner is None or owner == (self.topic, p)
