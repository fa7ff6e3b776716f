"""Review of s36-seal (a move back onto a physical partition of its chain takes the target's settled end, docs/DESIGN.md
§6.3 "A move back onto its chain"), driven with the fake Kafka of tests/controller/test_failover.py (no broker).

`moves.returning_targets` decides from the chain's segments *now* whether a target may hold an older segment's
unclean tail above a trailing high watermark. A decommission's drain drops a chain's head segments, those on other
clusters too, up to its last one on the drained cluster (`WorkflowEngine._drop_judged`), while the dropped segments'
records stay on their physical partitions and so do their claims (claims.py), and `_Slots.move` sends a partition
back onto a physical partition it claimed whose segment was dropped (rebalance.py: "or a segment of p dropped
since"). Such a target is read as a fresh one: its high watermark only."""

from __future__ import annotations

import contextlib

from controller.test_failover import kill, setup  # noqa: F401 (setup: the failover tests' fixture)
from controller.test_move_back_onto_its_chain import (
    T0_ON_C1,
    _c1_back_with_its_tail,
    _catching_up_at_next_read,
    _later_starts_on_c1_t0,
    _move_back,
    _moves_to_c1,
)
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.rebalance import Move


def _via_another_cluster(api, now_on: str) -> str:
    """t/0 moved (cleanly) from `now_on` to the third cluster: its chain is c1 (sealed, unclean tail) -> `now_on` ->
    the third one (active). Returns the third one."""
    other = ({"c2", "c3"} - {now_on}).pop()
    mover = Mover(api.controller, seal_timeout=1.0)
    assert mover.run(mover.plan(None, [Move("t", 0, now_on, other, "t", 9)])) == {"done": 1}
    return other


def _drain_drops_up_to(api, drained: str) -> None:
    """What a decommission's drain of `drained` drops (by groups, none consuming t): t/0's head segments up to its
    last one on `drained`, c1's among them (`_chains_on`, `_drop_judged`, as `_drop_drained` calls them)."""
    engine = WorkflowEngine(api.controller)
    rows = engine._chains_on(drained)[("t", 0)]
    engine._drop_judged({("t", 0): rows[:-1]})
    assert api.controller.view.topics["t"].partitions[0].segments[0].cluster != "c1"


def test_a_move_back_onto_a_partition_whose_older_segment_was_dropped_starts_past_its_tail(setup):  # noqa: F811
    """c1/t/0 holds 8 records (the unclean tail of t/0's first segment, read inside the gap), its high watermark 5
    (followers behind: its leader's log end stays 8). t/0 moved on to a third cluster, and a groups drain of the
    second dropped both older segments. A move back onto c1/t/0 (its claim: `_Slots.move` reuses it) must not start
    at 5: made from 8 or not made there (rolled back, or onto a new partition)."""
    api, _kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    other = _via_another_cluster(api, now_on)
    _drain_drops_up_to(api, now_on)
    api.post(f"/v1/clusters/{now_on}/state", json={"state": "read_only"}).raise_for_status()  # decommissioned
    planned = [(m.to_cluster, m.to_topic, m.to_partition)
               for m in WorkflowEngine(api.controller)._evacuate_plan(other) if (m.topic, m.partition) == ("t", 0)]
    assert planned == [T0_ON_C1]  # `_Slots.move` sends t/0 back onto its claim, whose segment was dropped
    mover, ids = _move_back(api, other, seal_timeout=0.5)
    with contextlib.suppress(MoveFailed):  # rolled back is fine: where it starts if made is the point
        mover.run(ids)
    assert _later_starts_on_c1_t0(api.controller.view.topics["t"].partitions[0]) in ([], [8])


def test_a_drain_between_the_plan_and_the_seal_does_not_start_the_move_inside_the_tail(
        setup, monkeypatch):  # noqa: F811
    """As the branch's test of a target restarting before the seal, with a groups drain (nothing waits for moves of
    the chains it drops) dropping t/0's older segments, c1's among them, while the proxies ack the freeze. Reachable:
    a failover runs outside the run lock, so its moves run while a decommission drains (`WorkflowEngine._run`)."""
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    kafka.ends[T0_ON_C1] = 8  # caught up before the plan
    other = _via_another_cluster(api, now_on)
    mover, ids = _move_back(api, other)
    assert _moves_to_c1(api.controller) == [("planned", 8, None, None)]
    acked = mover._await_acks

    def drained_and_restarted_while_acking(move_ids, progress):
        acked(move_ids, progress)
        _drain_drops_up_to(api, now_on)
        kafka.ends[T0_ON_C1] = 5
        kafka.log_end_offsets = _catching_up_at_next_read(kafka, kafka.log_end_offsets)

    monkeypatch.setattr(mover, "_await_acks", drained_and_restarted_while_acking)
    with contextlib.suppress(MoveFailed):  # rolled back is fine: where it starts if made is the point
        mover.run(ids)
    assert _later_starts_on_c1_t0(api.controller.view.topics["t"].partitions[0]) in ([], [8])


def test_a_failover_is_not_rolled_back_for_a_returning_target_that_does_not_settle_at_the_freeze(setup):  # noqa: F811
    """c1 is back (c1/t/0 settled at 8: high watermark and leader log end), the cluster t/0 failed over to dies in
    turn, the third one is read_only: the failover sends t/0 back onto c1/t/0 (returning) and the dead cluster's
    own partitions onto fresh ones of c1, in one batch. The plan reads c1/t/0's leader log end (8: settled); after
    it, c1's leader log ends are not read (a leader moving, a broker timing out the debugging ListOffsets) for the
    seal timeout. Expected: the moves onto fresh partitions are made (they need no leader log end, DESIGN §6.3
    point 4: "a failover is not rolled back for it"); t/0 is made from 8 or left for a later round."""
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8 if read == 1 else None)
    kafka.ends[T0_ON_C1] = 8  # settled before the failover
    ctl = api.controller
    other = ({"c2", "c3"} - {now_on}).pop()
    api.post(f"/v1/clusters/{other}/state", json={"state": "read_only"}).raise_for_status()
    own = [p for p, chain in enumerate(ctl.view.topics["t"].partitions) if chain.active.cluster == now_on and p != 0]
    assert own  # partitions of the dying cluster moving onto fresh partitions of c1 with t/0
    kill(api, kafka, now_on)
    engine = WorkflowEngine(ctl)
    engine.mover.seal_timeout = 0.5
    engine.wait(engine.start("failover", now_on)["id"], timeout=60)
    assert {p: ctl.view.topics["t"].partitions[p].active.cluster for p in own} == dict.fromkeys(own, "c1")
    assert _later_starts_on_c1_t0(ctl.view.topics["t"].partitions[0]) in ([], [8])
