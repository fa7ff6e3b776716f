"""Logical offsets over segment chains (pure): property tests over random contiguous chains."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedkafka.view.chains import UNCLEAN_GAP, move_active
from fedkafka.view.model import PartitionChain, Segment
from fedkafka.view.offsets import (
    FetchTarget,
    OffsetProblem,
    batch_in_segment,
    earliest_offset,
    end_offset_for_epoch,
    latest_offset,
    logical_high_watermark,
    offset_for_timestamp,
    resolve_fetch,
)


@st.composite
def chains(draw) -> PartitionChain:
    """A contiguous chain: identity first segment, then moves to clusters with arbitrary physical starts."""
    n = draw(st.integers(1, 5))
    segments = []
    base = 0
    phys_start = 0
    for i in range(n):
        length = draw(st.integers(0, 1000))
        last = i == n - 1
        segments.append(Segment(f"c{i % 3 + 1}", "t", draw(st.integers(0, 7)), phys_start,
                                None if last else phys_start + length, base))
        base += length
        phys_start = draw(st.integers(0, 10_000))
    return PartitionChain(tuple(segments), leader_epoch=n - 1)


@given(chains(), st.integers(0, 6000))
def test_resolve_fetch_round_trips_and_lands_in_the_right_segment(chain, offset):
    target = resolve_fetch(chain, offset)
    assert isinstance(target, FetchTarget)
    seg = target.segment
    assert seg.to_logical(target.physical_offset) == offset
    assert seg.contains_logical(offset)
    # the first segment that could hold the offset wins: empty sealed segments are skipped
    for earlier in chain.segments[: chain.segments.index(seg)]:
        assert not earlier.contains_logical(offset)


@given(chains())
def test_a_position_at_a_seal_moves_to_the_next_segment(chain):
    for seg in chain.segments[:-1]:
        target = resolve_fetch(chain, seg.logical_end)
        assert target.segment is not seg
        assert target.segment.logical_base == seg.logical_end


def test_offset_before_the_chain_and_in_a_gap():
    chain = PartitionChain((Segment("c1", "t", 0, 100, 150, 100), Segment("c2", "t", 0, 0, None, 1_000_000)))
    assert resolve_fetch(chain, 99) is OffsetProblem.BEFORE_CHAIN
    # inside the gap: the dead cluster's tail past the last known end (150) is read there, up to the gap's end
    target = resolve_fetch(chain, 500)
    assert target == FetchTarget(chain.segments[0], 500, limit=1_000_000, gap_end=1_000_000)
    assert target.in_gap and target.stop_before == 1_000_000
    # below the known end the segment reads as usual, but its batches may run on into the tail
    below = resolve_fetch(chain, 120)
    assert not below.in_gap and below.stop_before == 1_000_000 and below.gap_end == 1_000_000
    assert resolve_fetch(chain, 1_000_005) == FetchTarget(chain.active, 5)


def test_an_unclean_move_leaves_the_tail_readable_inside_the_gap():
    chain = move_active(PartitionChain((Segment("c1", "t", 0, 0, None, 0),)), 40, "c2", "t", 0, 7, unclean=True)
    old, new = chain.segments
    assert old.phys_end == 40 and new.logical_base == 40 + UNCLEAN_GAP
    assert chain.gap_after(old) == (40, 40 + UNCLEAN_GAP) and chain.gap_after(new) is None
    assert chain.readable_end(old) == 40 + UNCLEAN_GAP
    # the tail c1 holds (up to 55 here) counts in the high watermark; the gap's end is where readers land
    assert logical_high_watermark(chain, old, physical_hw=55) == 55
    assert logical_high_watermark(chain, old, physical_hw=30) == 40
    # a timestamp found in the tail is an offset inside the gap, in order before the next segment
    assert offset_for_timestamp(chain, [50, None]) == 50
    # back to c1's same physical partition later (A -> B -> A): the tail stops where that segment starts
    back = move_active(chain, 9, "c1", "t", 0, 60)
    assert back.readable_end(back.segments[0]) == 60
    assert resolve_fetch(back, 70).stop_before == 60
    assert offset_for_timestamp(back, [65, None, 65]) == back.segments[2].to_logical(65)


@given(chains(), st.integers(0, 5000), st.integers(0, 10**6))
def test_every_gap_position_resolves_into_the_segment_before_it(chain, seal_delta, offset):
    moved = move_active(chain, chain.active.phys_start + seal_delta, "c9", "t", 0, 0, unclean=True)
    sealed = moved.segments[-2]
    first, end = moved.gap_after(sealed)
    logical = first + offset
    target = resolve_fetch(moved, logical)
    assert target.segment == sealed and target.in_gap and target.gap_end == end
    assert sealed.to_logical(target.physical_offset) == logical
    assert resolve_fetch(moved, end).segment == moved.active


def test_high_watermark_is_the_seal_on_sealed_segments():
    sealed = Segment("c1", "t", 0, 0, 40, 0)
    active = Segment("c2", "t", 3, 7, None, 40)
    chain = PartitionChain((sealed, active))
    assert logical_high_watermark(chain, sealed, physical_hw=99) == 40
    assert logical_high_watermark(chain, active, physical_hw=17) == 50
    assert logical_high_watermark(chain, active, physical_hw=0) == 40  # cluster has less than phys_start: empty
    assert latest_offset(chain, 17) == 50


def test_earliest_keeps_a_failed_over_segment_whose_records_are_all_in_the_gap():
    # sealed at its own start (no scan read a high watermark above it before c1 died): every record c1 holds
    # is in the gap. c1 back with log start 0: earliest is 0, where they are read, not the next segment
    chain = move_active(PartitionChain((Segment("c1", "t", 0, 0, None, 0),)), 0, "c2", "t", 0, 7, unclean=True)
    old, new = chain.segments
    assert old.phys_end == 0 and new.logical_base == UNCLEAN_GAP
    assert earliest_offset(chain, {old: 0, new: 7}.get) == 0
    # retention removed some of the tail: earliest is the first record left, inside the gap
    assert earliest_offset(chain, {old: 25, new: 7}.get) == 25
    # back to c1's same physical partition later (A -> B -> A): what lies past that segment's start is not
    # the tail
    back = move_active(chain, 9, "c1", "t", 0, 60)
    assert earliest_offset(back, {back.segments[0]: 60, back.segments[1]: 7, back.segments[2]: 60}.get) == \
        back.segments[1].logical_base


def test_earliest_skips_a_sealed_segment_whose_partition_lost_its_data():
    """Its cluster came back without its data (docs/DESIGN.md §9.3): the partition's log end is at or below the
    segment's start; a log end not known (None) skips nothing, nor does one of the active segment."""
    chain = move_active(PartitionChain((Segment("c1", "t", 0, 0, None, 0),)), 30, "c2", "t", 0, 4, unclean=True)
    old, new = chain.segments
    starts = {old: 0, new: 4}
    assert earliest_offset(chain, starts.get, {old: 0}.get) == new.logical_base
    assert earliest_offset(chain, starts.get, {old: 30}.get) == 0
    assert earliest_offset(chain, starts.get, {old: 1}.get) == 0  # the tail holds a record
    assert earliest_offset(chain, starts.get) == 0
    moved = move_active(PartitionChain((Segment("c1", "t", 0, 10, None, 0),)), 50, "c2", "t", 0, 0)
    assert earliest_offset(moved, {moved.segments[0]: 0, moved.segments[1]: 0}.get, {moved.segments[0]: 10}.get) \
        == 40
    assert earliest_offset(moved, {moved.segments[0]: 0, moved.segments[1]: 0}.get, lambda s: 0) == 40


def test_earliest_skips_segments_that_retention_removed():
    s1 = Segment("c1", "t", 0, 0, 40, 0)
    s2 = Segment("c2", "t", 0, 10, 30, 40)
    s3 = Segment("c3", "t", 0, 0, None, 60)
    chain = PartitionChain((s1, s2, s3))
    starts = {s1: 40, s2: 12, s3: 0}
    assert earliest_offset(chain, starts.get) == 42
    starts = {s1: 40, s2: 30, s3: 5}
    assert earliest_offset(chain, starts.get) == 65
    assert earliest_offset(chain, {s1: 3}.get) == 3
    assert earliest_offset(chain, lambda s: None) == 0  # unknown: never skip data


def test_offset_for_timestamp_picks_the_first_segment_that_has_a_later_record():
    s1 = Segment("c1", "t", 0, 0, 40, 0)
    s2 = Segment("c2", "t", 0, 10, 30, 40)
    s3 = Segment("c3", "t", 0, 5, None, 60)
    chain = PartitionChain((s1, s2, s3))
    assert offset_for_timestamp(chain, [None, 15, 8]) == 45
    assert offset_for_timestamp(chain, [-1, 30, 8]) == 63  # 30 is past s2's seal: belongs elsewhere
    assert offset_for_timestamp(chain, [None, None, None]) is None
    assert offset_for_timestamp(chain, [None, 2, None]) == 40  # older data of the physical partition


def test_end_offset_for_epoch_never_reports_truncation():
    chain = PartitionChain((Segment("c1", "t", 0, 0, 10, 0), Segment("c2", "t", 0, 0, None, 10)), leader_epoch=3)
    assert end_offset_for_epoch(chain, 1, log_end=25) == (1, 25)
    assert end_offset_for_epoch(chain, 3, log_end=25) == (3, 25)
    assert end_offset_for_epoch(chain, 4, log_end=25) == (-1, -1)


def test_batches_belong_to_a_segment_by_their_range():
    seg = Segment("c1", "t", 0, 100, 200, 0)
    assert batch_in_segment(seg, 100, 120)
    assert batch_in_segment(seg, 90, 105)  # straddles the start: the client skips records below its position
    assert not batch_in_segment(seg, 80, 99)
    assert not batch_in_segment(seg, 200, 210)
    assert batch_in_segment(Segment("c1", "t", 0, 100, None, 0), 5000, 5001)


def test_a_target_in_an_unclean_gap_gives_its_physical_stop_and_landing_offset():
    """The typed accessors the fetch handler reads inside a gap; on the active segment they refuse."""
    chain = move_active(PartitionChain((Segment("c1", "t", 0, 0, None, 0),)), 40, "c2", "t", 0, 7, unclean=True)
    inside = resolve_fetch(chain, 45)
    assert isinstance(inside, FetchTarget) and inside.in_gap
    assert inside.sealed_stop_before() == 40 + UNCLEAN_GAP and inside.gap_end_offset() == 40 + UNCLEAN_GAP
    assert chain.segments[0].sealed_phys_end() == 40
    active = resolve_fetch(chain, 40 + UNCLEAN_GAP + 1)
    assert isinstance(active, FetchTarget) and not active.in_gap
    for refused in (active.sealed_stop_before, active.gap_end_offset, chain.active.sealed_phys_end):
        with pytest.raises(ValueError):
            refused()
