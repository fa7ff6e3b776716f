"""Pure planning of segment moves: fair share, evacuation, physical partition ownership, drained prefixes."""

from __future__ import annotations

from collections import Counter

import pytest

from fedkafka.view.chains import UNCLEAN_GAP
from fedkafka.view.model import PartitionChain, Segment
from fedkafka.view.offsets import FetchTarget, resolve_fetch
from fedkafka.view.rebalance import LogRange, droppable_prefix, evacuate, rebalance, reused_below_seal


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



def test_the_planners_send_no_partition_to_a_physical_topic_its_cluster_lost_with_its_data():
    """`lost` (cluster, physical topic): created again there it would be empty (docs/DESIGN.md §9.3). Every other
    topic moves as usual; a topic lost on every other cluster stays where it is (the caller says why)."""
    chains = {"t": blocks("t", 6, ["c1", "c2", "c3"]), "u": blocks("u", 3, ["c1", "c2", "c3"])}
    moves = evacuate(chains, ["c2", "c3", "c1"], "c1", lost={("c2", "u")})
    assert {(m.topic, m.partition) for m in moves} == {("t", 0), ("t", 1), ("u", 0)}
    assert {m.to_cluster for m in moves if m.topic == "u"} == {"c3"}
    assert {m.to_cluster for m in moves if m.topic == "t"} == {"c2", "c3"}
    moves = evacuate(chains, ["c2", "c3", "c1"], "c1", lost={("c2", "u"), ("c3", "u")})
    assert {m.topic for m in moves} == {"t"}
    chains = {"t": blocks("t", 8, ["c1", "c2"]), "u": blocks("u", 8, ["c1", "c2"])}
    assert {m.topic for m in rebalance(chains, ["c1", "c2", "c3"], "c3", lost={("c3", "t")})} == {"u"}

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

    def emptied(s):
        return LogRange(s.phys_end, s.phys_end)

    assert droppable_prefix(chain, "c1", emptied, None) == 1
    assert droppable_prefix(chain, "c1", lambda s: LogRange(0, 100), None) == 0
    assert droppable_prefix(chain, "c1", lambda s: None, None) == 0  # c1 not read
    empty = [Segment("c1", "t", 0, 7, 7, 0), Segment("c3", "t", 0, 0, None, 0)]
    assert droppable_prefix(empty, "c1", lambda s: None, None) == 1  # empty, no gap after it: nothing to read
    assert droppable_prefix(chain, "c1", lambda s: None, 99) == 0
    assert droppable_prefix(chain, "c1", lambda s: None, 100) == 1
    assert droppable_prefix(chain, "c2", lambda s: emptied(s) if s is old else None, None) == 0  # the prefix goes whole
    assert droppable_prefix(chain, "c2", emptied, None) == 2
    assert droppable_prefix(chain, "c9", emptied, None) == 0
    assert droppable_prefix([Segment("c1", "t", 0, 0, None, 0)], "c1", emptied, 10**9) == 0  # active


def test_a_segment_sealed_at_its_own_start_by_a_failover_waits_for_its_tail():
    """Failover of c1 by a controller that never scanned it: sealed at its own start, so every record c1 holds of
    the segment is in the unclean gap (docs/DESIGN.md §9.3). The drain used to drop it at once as "empty"."""
    s = Segment("c1", "t", 0, 0, 0, 0)
    t = Segment("c2", "t", 0, 0, None, UNCLEAN_GAP)
    target = resolve_fetch(PartitionChain((s, t), leader_epoch=1), 5)
    assert isinstance(target, FetchTarget) and target.segment is s  # logical 5 is read on c1 (the tail)
    assert droppable_prefix([s, t], "c1", lambda seg: None, None) == 0  # c1 not answering: not drained
    assert droppable_prefix([s, t], "c1", lambda seg: LogRange(0, None), None) == 0  # its log end not read
    assert droppable_prefix([s, t], "c1", lambda seg: LogRange(0, 5), None) == 0  # 5 records in the tail
    assert droppable_prefix([s, t], "c1", lambda seg: LogRange(3, 5), None) == 0  # 2 of them still there
    assert droppable_prefix([s, t], "c1", lambda seg: LogRange(5, 5), None) == 1  # retention removed them all
    assert droppable_prefix([s, t], "c1", lambda seg: LogRange(0, 0), None) == 1  # c1 never held any


def test_retention_counts_the_tail_past_a_real_seal():
    """Sealed at 100 (the last high watermark a scan read), c1 holds records up to 120: a log start at the seal
    is not enough, the tail must be gone too."""
    s = Segment("c1", "t", 0, 0, 100, 0)
    t = Segment("c2", "t", 0, 0, None, 100 + UNCLEAN_GAP)
    assert droppable_prefix([s, t], "c1", lambda seg: LogRange(100, 120), None) == 0
    assert droppable_prefix([s, t], "c1", lambda seg: LogRange(119, 120), None) == 0
    assert droppable_prefix([s, t], "c1", lambda seg: LogRange(120, 120), None) == 1


def test_a_tail_ends_where_a_later_segment_of_its_physical_partition_starts():
    """c1 -> c2 -> c1 -> c3 after a failover of c1: the first segment's tail on c1's partition ends where the
    second c1 segment starts (30); what follows belongs to that one (docs/DESIGN.md §2 rule 4)."""
    first = Segment("c1", "t", 0, 0, 10, 0)
    on_c2 = Segment("c2", "t", 0, 0, 5, 10 + UNCLEAN_GAP)
    again = Segment("c1", "t", 0, 30, 50, 15 + UNCLEAN_GAP)
    tail = Segment("c3", "t", 0, 0, None, 35 + UNCLEAN_GAP)
    chain = [first, on_c2, again, tail]
    ranges = {"c1": LogRange(30, 50), "c2": LogRange(5, 5)}
    assert droppable_prefix(chain, "c1", lambda seg: ranges[seg.cluster], None) == 0  # 30..50 is `again`'s
    ranges["c1"] = LogRange(50, 50)
    assert droppable_prefix(chain, "c1", lambda seg: ranges[seg.cluster], None) == 3
    ranges["c1"] = LogRange(29, 50)
    assert droppable_prefix(chain, "c1", lambda seg: ranges[seg.cluster], None) == 0  # 29 is in `first`'s tail


def test_a_group_reading_a_tail_holds_the_drain_until_it_committed_past_the_gap():
    s = Segment("c1", "t", 0, 0, 100, 0)
    t = Segment("c2", "t", 0, 0, None, 100 + UNCLEAN_GAP)
    # committed 105: inside the gap, reading c1's tail (records 100..) that came back with c1
    assert droppable_prefix([s, t], "c1", lambda seg: None, 100) == 0
    assert droppable_prefix([s, t], "c1", lambda seg: None, 105) == 0
    assert droppable_prefix([s, t], "c1", lambda seg: None, 100 + UNCLEAN_GAP) == 1


def test_new_targets_are_past_every_claimed_partition_and_a_partition_returns_to_its_own_claim():
    chains = {"t": blocks("t", 4, ["c1", "c2"])}  # c1/t/0-1, c2/t/0-1
    # c3/t/0 held a dropped segment of p1, c3/t/2 the target of a move of p2 rolled back, c3/t/4 a segment of p0
    claims = {("c3", "t"): {0: ("t", 1), 2: ("t", 2), 4: ("t", 0)}}
    moves = evacuate(chains, ["c3", "c1", "c2"], "c2", claims)
    assert [(m.partition, m.to_cluster, m.to_partition) for m in moves] == [(2, "c3", 2), (3, "c3", 5)]
    moves = rebalance(chains, ["c1", "c2", "c3"], "c3", claims)
    assert [(m.partition, m.to_partition) for m in moves] == [(1, 0)]  # its own: it is read from its new start


def test_a_partition_does_not_go_back_to_its_old_physical_partition_when_another_owns_it():
    """A database from before claims (revision 0010) may hold segments of two logical partitions on one physical
    partition; the migration gave it to one of them. Evacuating the other must not plan a move back onto it: the
    claim would be refused on every round (a failover used to plan it again and again)."""
    p0 = [Segment("x", "t", 0, 0, 10, 0), Segment("dead", "t", 0, 0, None, 10)]
    p1 = [Segment("x", "t", 0, 10, None, 0)]
    claims = {("x", "t"): {0: ("t", 1)}, ("dead", "t"): {0: ("t", 0)}}
    (move,) = evacuate({"t": [p0, p1]}, ["x", "dead"], "dead", claims)
    assert (move.partition, move.to_cluster, move.to_topic, move.to_partition) == (0, "x", "t", 1)
    claims[("x", "t")][0] = ("t", 0)  # its own: it goes back there
    (move,) = evacuate({"t": [p0, p1]}, ["x", "dead"], "dead", claims)
    assert (move.to_cluster, move.to_partition) == ("x", 0)


def test_a_partition_goes_back_to_its_old_physical_partition_only_if_its_log_end_is_past_the_seals_there():
    """t/0 lived on c1/t/0 (sealed at 100), then on c2. Back to c1, it reuses c1/t/0 while its log end is at or past
    100; one whose end went back (c1 lost its data, the physical topic created again) is a target the mover refuses
    (one record at two logical offsets), so it is found (`reused_below_seal`) and, avoided, the partition takes a new
    physical partition, past every claim, whether its planner is a scale-up's or an evacuation's."""
    p0 = [Segment("c1", "t", 0, 0, 100, 0), Segment("c2", "t", 2, 0, None, 100)]
    p1 = [Segment("c2", "t", 0, 0, None, 0)]
    p2 = [Segment("c2", "t", 1, 0, None, 0)]
    chains = {"t": [p0, p1, p2]}
    claims = {("c1", "t"): {0: ("t", 0), 1: ("t", 9)}, ("c2", "t"): {0: ("t", 1), 1: ("t", 2), 2: ("t", 0)}}
    (move,) = evacuate(chains, ["c1", "c2"], "c2", claims)[:1]
    assert (move.partition, move.to_cluster, move.to_partition) == (0, "c1", 0)  # its own old one
    assert reused_below_seal(chains, [move], {("c1", "t", 0): 100}) == set()  # intact: starts at 100
    assert reused_below_seal(chains, [move], {("c1", "t", 0): 0}) == {("c1", "t", 0)}
    assert reused_below_seal(chains, [move], {}) == set()  # not read: the mover's seal checks it
    avoid = {("c1", "t", 0)}
    (again,) = evacuate(chains, ["c1", "c2"], "c2", claims, avoid)[:1]
    assert (again.partition, again.to_cluster, again.to_partition) == (0, "c1", 2)  # past every claim
    # a scale-up onto c1 takes the highest partition on c2: the same chain as t/1 here
    claims = {("c1", "t"): {0: ("t", 1), 1: ("t", 9)}, ("c2", "t"): {0: ("t", 0), 2: ("t", 1)}}
    (up,) = rebalance({"t": [p1, p0]}, ["c1", "c2"], "c1", claims)
    assert (up.partition, up.to_partition) == (1, 0)
    (up,) = rebalance({"t": [p1, p0]}, ["c1", "c2"], "c1", claims, avoid)
    assert (up.partition, up.to_partition) == (1, 2)
