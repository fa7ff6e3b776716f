"""Placement, chain operations and view deltas (pure): examples from the article plus hypothesis properties."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.view.chains import UNCLEAN_GAP, freeze, is_contiguous, move_active, next_version
from fedkafka.view.delta import DeltaMismatch, apply_delta, view_delta
from fedkafka.view.model import Cluster, ClusterState, LogicalTopic, PartitionChain, ProxyInfo, Segment, View
from fedkafka.view.placement import Placement, Slot, identity_chains, physical_partition_counts, place


def test_blocks_is_the_articles_layout():
    slots = place(8, ["c1", "c2"], "blocks")
    assert slots == [Slot("c1", i) for i in range(4)] + [Slot("c2", i) for i in range(4)]
    assert physical_partition_counts(slots) == {"c1": 4, "c2": 4}


def test_balanced_round_robins_with_explicit_physical_partitions():
    slots = place(5, ["c1", "c2"], Placement.BALANCED)
    assert slots == [Slot("c1", 0), Slot("c2", 0), Slot("c1", 1), Slot("c2", 1), Slot("c1", 2)]


def test_growing_takes_the_next_free_physical_partitions():
    old = place(4, ["c1", "c2"], "balanced")
    new = place(2, ["c1", "c2", "c3"], "balanced", first=4, existing=old)
    assert new == [Slot("c2", 2), Slot("c3", 0)]


def test_bad_placement_input_is_refused():
    with pytest.raises(ValueError, match="no active cluster"):
        place(4, [], "blocks")
    with pytest.raises(ValueError):
        place(4, ["c1"], "zigzag")
    with pytest.raises(ValueError):
        place(-1, ["c1"], "blocks")


@given(p=st.integers(1, 300), n=st.integers(1, 20), strategy=st.sampled_from(list(Placement)))
def test_placement_uses_each_physical_partition_exactly_once(p, n, strategy):
    clusters = [f"c{i}" for i in range(n)]
    slots = place(p, clusters, strategy)
    assert len(slots) == p and len(set(slots)) == p
    counts = physical_partition_counts(slots)
    assert sum(counts.values()) == p  # no holes: physical partitions 0..count-1 all used
    assert max(counts.values()) - min(counts.values()) <= (1 if strategy == "balanced" else -(-p // n))
    for chain in identity_chains("t", slots):
        assert chain.active.identity and len(chain.segments) == 1


@st.composite
def moved_chains(draw) -> PartitionChain:
    """A chain grown by random clean and unclean moves from an identity segment."""
    chain = identity_chains("t", [Slot("c0", 0)])[0]
    for _ in range(draw(st.integers(0, 6))):
        active = chain.active
        if draw(st.booleans()):
            chain = freeze(chain)
        seal = None if draw(st.integers(0, 9)) == 0 else active.phys_start + draw(st.integers(0, 10_000))
        chain = move_active(chain, seal, draw(st.sampled_from(["c0", "c1", "c2"])), "t",
                            draw(st.integers(0, 7)), draw(st.integers(0, 10**9)))
    return chain


@given(moved_chains())
def test_moves_keep_chains_contiguous_with_one_active_segment(chain):
    assert is_contiguous(chain)
    assert sum(s.active for s in chain.segments) == 1 and chain.segments[-1].active
    assert chain.leader_epoch == len(chain.segments) - 1  # one epoch bump per move
    assert not chain.frozen


@given(moved_chains(), st.integers(0, 10**6))
def test_translation_round_trips(chain, delta):
    for seg in chain.segments:
        logical = seg.logical_base + delta
        if seg.contains_logical(logical):
            assert seg.to_logical(seg.to_physical(logical)) == logical
            assert chain.segment_for(logical) == seg
        assert seg.to_physical(seg.to_logical(seg.phys_start + delta)) == seg.phys_start + delta


@given(moved_chains(), st.integers(0, 3), st.integers(0, 10**6))
def test_epochs_only_grow(chain, partition, phys_start):
    moved = move_active(chain, chain.active.phys_start, "c9", "t", partition, phys_start)
    assert moved.leader_epoch > chain.leader_epoch
    assert moved.segments[:-2] == chain.segments[:-1]  # history never rewritten
    assert moved.active.logical_base == moved.segments[-2].logical_end


def test_unclean_move_leaves_the_documented_gap_and_bad_seals_are_refused():
    chain = identity_chains("t", [Slot("c0", 0)])[0]
    moved = move_active(chain, None, "c1", "t", 0, 50)
    assert moved.active.logical_base == UNCLEAN_GAP and is_contiguous(moved)
    with pytest.raises(ValueError, match="below"):
        move_active(move_active(chain, 10, "c1", "t", 0, 100), 99, "c2", "t", 0, 0)


def _view(version: int, topics: dict, proxies=(), states=None, given_up=None) -> View:
    states, given_up = states or {}, given_up or {}
    clusters = {c: Cluster(c, f"{c}:9092", states.get(c, ClusterState.ACTIVE), given_up=given_up.get(c))
                for c in ("c0", "c1", "c2")}
    return View(version=version, clusters=clusters, coordination_cluster="c0", proxies=tuple(proxies),
                topics={n: LogicalTopic(n, f"{i:032x}", ch) for i, (n, ch) in enumerate(sorted(topics.items()))})


@st.composite
def views(draw, version=st.integers(1, 10**6)):
    names = draw(st.sets(st.sampled_from([f"t{i}" for i in range(8)]), max_size=6))
    topics = {n: tuple(draw(st.lists(moved_chains(), min_size=1, max_size=3))) for n in names}
    proxies = [ProxyInfo(i, "127.0.0.1", 9000 + i) for i in sorted(draw(st.sets(st.integers(1, 9), max_size=4)))]
    states = {c: draw(st.sampled_from(list(ClusterState))) for c in ("c1", "c2")}
    given_up = {c: draw(st.sampled_from([None, False, True])) for c in ("c1", "c2")}  # None: a view from before it
    return _view(draw(version), topics, proxies, states, given_up)


@settings(max_examples=examples(60))
@given(views(), views())
def test_delta_round_trips_and_is_json(old, new):
    import json

    delta = json.loads(json.dumps(view_delta(old, new)))
    assert apply_delta(old, delta) == new


@given(views())
def test_delta_of_one_changed_topic_carries_only_that_topic(view):
    chain = identity_chains("x", [Slot("c1", 0)])[0]
    changed = View(version=view.version + 1, clusters=view.clusters, proxies=view.proxies,
                   coordination_cluster=view.coordination_cluster,
                   topics={**view.topics, "x": LogicalTopic("x", "f" * 32, (chain,))})
    delta = view_delta(view, changed)
    assert set(delta) == {"from_version", "version", "topics"}
    assert [t["name"] for t in delta["topics"]["upsert"]] == ["x"]


def test_delta_refuses_the_wrong_base_view():
    a, b = _view(3, {}), _view(4, {"t": identity_chains("t", [Slot("c0", 0)])})
    with pytest.raises(DeltaMismatch):
        apply_delta(_view(2, {}), view_delta(a, b))


@given(views(), views())
def test_versions_only_grow_and_only_on_change(current, candidate):
    nxt = next_version(current, candidate.with_version(0))
    if nxt is current:
        assert candidate.with_version(0) == current.with_version(0)
    else:
        assert nxt.version == current.version + 1
    assert next_version(nxt, nxt.with_version(0)) is nxt


def test_topic_ids_are_parsed_once_per_view_object_and_are_not_part_of_its_value():
    chain = PartitionChain(segments=(Segment("c1", "t", 0, 0, None, 0),))
    view = View(version=1, topics={"a": LogicalTopic("a", uuid.UUID(int=1).hex, (chain,))})
    ids = view.topic_ids()
    assert ids == {"a": uuid.UUID(int=1)} and view.topic_ids() is ids
    assert view.topics_by_id() == {uuid.UUID(int=1): "a"}
    grown = dataclasses.replace(view, topics={**view.topics, "b": LogicalTopic("b", uuid.UUID(int=2).hex, (chain,))})
    assert grown.topic_ids() == {"a": uuid.UUID(int=1), "b": uuid.UUID(int=2)}  # its own, not the old view's
    assert view.topic_ids() == {"a": uuid.UUID(int=1)}
    assert view == View.from_dict(view.to_dict()) and "_derived" not in repr(view)
    assert apply_delta(view, view_delta(view, grown)) == grown
