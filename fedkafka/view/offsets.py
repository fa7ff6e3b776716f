"""Logical offsets over segment chains, for the consume path (Fetch, ListOffsets, OffsetForLeaderEpoch).

Pure functions: the proxy asks the physical brokers for physical facts (log start, log end, offset
for a timestamp) and these functions answer in logical space. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from fedkafka.view.model import PartitionChain, Segment

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class OffsetProblem(Enum):
    BEFORE_CHAIN = "before_chain"  # below the first segment: OFFSET_OUT_OF_RANGE


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """Where a logical fetch position is read physically.

    `limit`: the physical end of what this segment may hold when it differs from the seal (a segment
    followed by an unclean gap: `PartitionChain.readable_end`). `gap_end`: the logical offset a reader
    jumps to once the segment's physical partition has nothing more at or after the position (only for a
    segment followed by a gap)."""

    segment: Segment
    physical_offset: int
    limit: int | None = None
    gap_end: int | None = None

    @property
    def stop_before(self) -> int | None:
        """Physical offset at which batches stop belonging to this segment (the seal, or the gap's end)."""
        return self.limit if self.limit is not None else self.segment.phys_end

    @property
    def in_gap(self) -> bool:
        """At or past the last end the controller knew of a segment whose cluster failed over: only records
        written before that cluster died can be here, and when there are none the reader skips the gap."""
        return self.gap_end is not None and self.physical_offset >= self.segment.sealed_phys_end()

    def sealed_stop_before(self) -> int:
        """`stop_before` of a target the caller knows is on a sealed segment (ValueError on the active one)."""
        return self.limit if self.limit is not None else self.segment.sealed_phys_end()

    def gap_end_offset(self) -> int:
        """`gap_end` of a target in an unclean gap (ValueError otherwise): where its reader lands."""
        if self.gap_end is None:
            raise ValueError("not a segment followed by an unclean gap")
        return self.gap_end


def resolve_fetch(chain: PartitionChain, logical_offset: int) -> FetchTarget | OffsetProblem:
    """Map a consumer's logical position to the segment and physical offset to read.

    A position exactly at a sealed segment's end is the next segment's first offset, so a consumer
    that reached a seal moves on with its next fetch. Positions past the active segment's end map
    into the active segment; its broker answers OFFSET_OUT_OF_RANGE as Kafka would. A position inside
    an unclean gap maps into the segment before it (the tail its dead cluster may still hold).
    """
    segment = chain.covering(logical_offset)
    if segment is None:
        return OffsetProblem.BEFORE_CHAIN
    gap = chain.gap_after(segment)
    if gap is None:
        return FetchTarget(segment, segment.to_physical(logical_offset))
    return FetchTarget(segment, segment.to_physical(logical_offset), chain.readable_end(segment), gap[1])


def logical_high_watermark(chain: PartitionChain, segment: Segment, physical_hw: int) -> int:
    """The high watermark a client sees when reading `segment`.

    On a sealed segment it is the seal (a consumer reaching it moves to the next segment); on the
    active one the translated physical value; on a segment followed by an unclean gap, the end of the
    tail its cluster holds (within the gap).
    """
    if segment.phys_end is None:
        return segment.to_logical(max(physical_hw, segment.phys_start))
    limit = chain.readable_end(segment)
    if limit is None or limit == segment.phys_end:  # (None only for the active segment, handled above)
        return segment.sealed_end()
    # followed by an unclean gap: the tail its cluster holds past the last known end counts too
    return segment.to_logical(min(max(physical_hw, segment.phys_end), limit))


def earliest_offset(chain: PartitionChain, physical_log_start: Callable[[Segment], int | None],
                    physical_log_end: Callable[[Segment], int | None] = lambda _: None) -> int:
    """Logical log start: the first offset still readable, walking the chain oldest first.

    `physical_log_start(segment)` gives the physical partition's log start offset, or None when the
    cluster could not be asked (the segment is then assumed readable, so no data is skipped).
    A sealed segment whose data retention has removed entirely is skipped. A segment followed by an unclean gap
    ends where its tail may end (`readable_end`), not at its seal: sealed at its own start (no high watermark above
    it known before its cluster died), every record it has is in the gap, read there (docs/DESIGN.md §9.2).
    A sealed segment whose physical partition's log end (`physical_log_end`, None: not known) is at or below its
    start is skipped too: its data is gone (its cluster came back without it, §9.3), and a reader put there would
    find nothing and no error, for good. So is one whose partition's log start reached its log end: nothing is left
    in it (a tail in the gap that DeleteRecords emptied, which no seal bounds).
    """
    for segment in chain.segments:
        start = physical_log_start(segment)
        if start is None:
            return segment.logical_base
        end = chain.readable_end(segment)
        if end is not None and start >= end:
            continue
        log_end = physical_log_end(segment) if segment.phys_end is not None else None
        if log_end is not None and (log_end <= segment.phys_start or start >= log_end):
            continue
        return segment.to_logical(max(start, segment.phys_start))
    return chain.active.logical_base  # unreachable: the active segment always answers


def latest_offset(chain: PartitionChain, active_physical_end: int) -> int:
    """Logical log end (or last stable offset) from the active segment's physical one."""
    active = chain.active
    return active.to_logical(max(active_physical_end, active.phys_start))


def offset_for_timestamp(chain: PartitionChain,
                         physical_answers: Sequence[int | None]) -> int | None:
    """First logical offset whose timestamp is >= the requested one.

    `physical_answers[i]` is the broker's ListOffsets answer for segment i (None or -1: no such
    record on that physical partition). Answers outside a segment's own range belong to another
    segment of the same physical partition and are ignored. None: no record that late.
    """
    for segment, answer in zip(chain.segments, physical_answers, strict=True):
        if answer is None or answer < 0:
            continue
        if answer < segment.phys_start:
            answer = segment.phys_start  # the physical log holds older data of an earlier segment
        end = chain.readable_end(segment)
        if end is not None and answer >= end:
            continue
        return segment.to_logical(answer)
    return None


def end_offset_for_epoch(chain: PartitionChain, requested_epoch: int, log_end: int) -> tuple[int, int]:
    """OffsetForLeaderEpoch in logical space: (epoch, end offset).

    A fedkafka log never truncates acked data: a segment is sealed at the log end every proxy
    agreed on, and later segments only append. So every epoch up to the current one ends at the
    logical log end, which tells a client "no truncation". Epochs from the future are unknown
    (-1, -1), as Kafka answers them, and so is the undefined epoch -1 (`LeaderEpochFileCache.endOffsetFor`).
    """
    if requested_epoch == UNDEFINED_EPOCH or requested_epoch > chain.leader_epoch:
        return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
    return requested_epoch, log_end


def batch_in_segment(segment: Segment, batch_base: int, batch_last: int) -> bool:
    """Whether a physical record batch belongs to `segment` (batches are never split by a seal)."""
    if batch_last < segment.phys_start:
        return False
    return segment.phys_end is None or batch_base < segment.phys_end
