"""Pure planning of segment moves: fair share, evacuation, physical partition ownership, drained prefixes."""

from __future__ import annotations

from collections import Counter

import pytest

from fedkafka.view.model import Segment
from fedkafka.view.rebalance import droppable_prefix, evacuate, rebalance


def blocks(topic: str, partitions: int, clusters: list[str]):
    per = -(-partitions // len(clusters))
    return [[Segment(clusters[p // per], topic, p % per, 0, None, 0)] for p in range(partitions)]


def apply(chains, moves):
    out = {t: [list(segs) for segs in parts] for t, parts in chains.items()}
    for m in moves:
        segs = out[m.topic][m.partition]
        segs[-1] = Segment(*[getattr(segs[-1], f) for f in ("cluster", "topic", "partition", "phys_start")],
                           phys_end=10, logical_base=segs[-1].logical_base)
        segs.append(Segment(m.to_cluster, m.to_topic, m.to_partition, 0, None, segs[-1].logical_end))
    return out


def test_rebalance_gives_the_new_cluster_a_fair_share_and_is_idempotent():
    chains = {"t": blocks("t", 8, ["c1", "c2"]), "u": blocks("u", 3, ["c1", "c2"])}
    moves = rebalance(chains, ["c1", "c2", "c3"], "c3")
    by_topic = Counter(m.topic for m in moves)
    assert by_topic == {"t": 2, "u": 1}
    assert {m.from_cluster for m in moves if m.topic == "t"} == {"c1", "c2"}  # taken from both donors
    assert sorted(m.to_partition for m in moves if m.topic == "t") == [0, 1]  # fresh physical partitions on c3
    after = apply(chains, moves)
    assert rebalance(after, ["c1", "c2", "c3"], "c3") == []


def test_rebalance_refuses_an_inactive_target():
    with pytest.raises(ValueError, match="not an active"):
        rebalance({"t": blocks("t", 4, ["c1"])}, ["c1"], "c9")


def test_evacuate_moves_every_active_segment_and_reuses_a_partitions_own_slot():
    chains = {"t": blocks("t", 8, ["c1", "c2"])}
    to_c3 = rebalance(chains, ["c1", "c2", "c3"], "c3")
    chains = apply(chains, to_c3)
    moves = evacuate(chains, ["c1", "c2", "c3"], "c1")
    assert {m.from_cluster for m in moves} == {"c1"}
    assert len(moves) == sum(1 for segs in chains["t"] if segs[-1].cluster == "c1")
    after = apply(chains, moves)
    owners = Counter(segs[-1].cluster for segs in after["t"])
    assert owners["c1"] == 0 and abs(owners["c2"] - owners["c3"]) <= 1
    # a physical partition belongs to one logical partition only
    slots = Counter((s.cluster, s.topic, s.partition) for parts in after.values() for segs in parts
                    for s in {(x.cluster, x.topic, x.partition): x for x in segs}.values())
    assert max(slots.values()) == 1
    back = evacuate(after, ["c1", "c2", "c3"], "c3")
    returning = [m for m in back if m.to_cluster == "c1" and any(s.cluster == "c1" for s in after["t"][m.partition])]
    assert returning
    for m in returning:  # back on c1: its own old partition
        assert m.to_partition == next(s.partition for s in after["t"][m.partition] if s.cluster == "c1")


def test_evacuate_refuses_the_last_cluster():
    with pytest.raises(ValueError, match="last active cluster"):
        evacuate({"t": blocks("t", 2, ["c1"])}, ["c1"], "c1")


def test_droppable_prefix_by_retention_and_by_commits():
    old = Segment("c1", "t", 0, 0, 100, 0)
    mid = Segment("c2", "t", 0, 0, 50, 100)
    tail = Segment("c3", "t", 0, 0, None, 150)
    chain = [old, mid, tail]
    assert droppable_prefix(chain, "c1", lambda s: True, None) == 1
    assert droppable_prefix(chain, "c1", lambda s: False, None) == 0
    assert droppable_prefix([Segment("c1", "t", 0, 7, 7, 0), tail], "c1", lambda s: False, None) == 1  # empty
    assert droppable_prefix(chain, "c1", lambda s: False, 99) == 0
    assert droppable_prefix(chain, "c1", lambda s: False, 100) == 1
    assert droppable_prefix([mid, old, tail], "c1", lambda s: s is old, None) == 0  # the prefix goes whole
    assert droppable_prefix(chain, "c9", lambda s: True, None) == 0
    assert droppable_prefix([Segment("c1", "t", 0, 0, None, 0)], "c1", lambda s: True, 10**9) == 0  # active


def test_new_targets_are_past_every_claimed_partition_and_a_partition_returns_to_its_own_claim():
    chains = {"t": blocks("t", 4, ["c1", "c2"])}  # c1/t/0-1, c2/t/0-1
    # c3/t/0 held a dropped segment of p1, c3/t/2 the target of a move of p2 rolled back, c3/t/4 a segment of p0
    claims = {("c3", "t"): {0: ("t", 1), 2: ("t", 2), 4: ("t", 0)}}
    moves = evacuate(chains, ["c3", "c1", "c2"], "c2", claims)
    assert [(m.partition, m.to_cluster, m.to_partition) for m in moves] == [(2, "c3", 2), (3, "c3", 5)]
    moves = rebalance(chains, ["c1", "c2", "c3"], "c3", claims)
    assert [(m.partition, m.to_partition) for m in moves] == [(1, 0)]  # its own: it is read from its new start
