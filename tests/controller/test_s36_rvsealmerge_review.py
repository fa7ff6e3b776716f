"""Review of s36-sealmerge (a move back onto its chain: the plan's recorded `returning_target`, settled ends at the
plan, the freeze and the seal, a returning target not settling rolled back alone; docs/DESIGN.md §6.3 "A move back onto
its chain"), driven with the fake Kafka of tests/controller/test_failover.py (no broker).

Finding 1: the rollback of a move whose returning target did not settle (`Mover._roll_back(unsettled, UNSETTLED)`, at
the freeze or the seal) checks for a lost publish's writes (`_lost_publish`, §3.3) with the target's *high watermark*
(`current_target_ends`), read on the very partition that just failed to settle: its high watermark trails its log end
(a restart: §6.3 point 1's premise). Records acked there under a publish the database lost, above the end the plan
recorded, are then below nothing the check reads: the move is rolled back, not held, and the partition writes on at
the source, at the logical offsets the lost publish handed out already (DESIGN §3.3: they become unreadable).

Finding 2: a move planned before revision 0021 (NULL, read as returning) recorded its `planned_target_end` as main
read it, a plain high watermark, trailing after a restart of its target's cluster. Resumed after the upgrade, its
freeze takes the settled end, above that recorded end with no write since, and holds the move `target_grew` for
nothing (§6.3 point 4 holds only for ends that were settled both times). The held move cannot be rolled back
(`target_grew` refuses) and its documented repair publishes it at its `target_end`, the trailing high watermark: the
new segment starts inside the older segment's unclean tail, the defect the branch fixes.

Finding 3: a move rolled back alone for a returning target that did not settle no longer raises MoveFailed, and a
scale-up (the only caller that does not check where partitions ended up: a decommission counts the active segments
left on the cluster, a failover loops until none is) then records `done` though it moved nothing it planned."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import select

from controller.test_failover import setup  # noqa: F401 (setup: the failover tests' fixture)
from controller.test_move_back_onto_its_chain import (
    T0_ON_C1,
    _c1_back_with_its_tail,
    _later_starts_on_c1_t0,
    _move_back,
    _moves_to_c1,
)
from fedkafka.controller.models import ChainRow, MoveRow
from fedkafka.controller.moves import MoveHeld, Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.rebalance import Move


@pytest.mark.parametrize("where", ["freeze", "seal"])
def test_a_lost_publish_on_a_returning_target_that_does_not_settle_holds_the_move(setup, monkeypatch, where):  # noqa: F811
    """c1/t/0 settled at 8 when the move back was planned (and frozen, for the seal case). Under a publish the config
    database lost, proxies wrote 3 records there, acked (8..10); then c1 restarted: its leader's log end is 11, its
    high watermark back at 5 from its checkpoint, and the followers do not catch up within the seal timeout. The
    target does not settle, so the move is rolled back alone, after the lost-publish check: that check reads the high
    watermark, 5, not above 8, and rolls the move back. Expected: held, its chain frozen (DESIGN §3.3), as the same
    writes found by a settled target are (`test_records_a_lost_publish_wrote_on_a_returning_target_are_not_masked`)."""
    leader_log_end = {"now": 8}
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: leader_log_end["now"])
    kafka.ends[T0_ON_C1] = 8
    ctl = api.controller
    mover, ids = _move_back(api, now_on, seal_timeout=0.5)
    assert _moves_to_c1(ctl) == [("planned", 8, None, None)]

    def lost_publish_then_restart():
        leader_log_end["now"] = 11  # 8..10 acked under the lost publish
        kafka.ends[T0_ON_C1] = 5    # c1 restarted: its high watermark from its checkpoint, followers behind

    if where == "freeze":
        lost_publish_then_restart()
    else:
        acked = mover._await_acks

        def written_while_acking(move_ids, progress):
            acked(move_ids, progress)
            lost_publish_then_restart()

        monkeypatch.setattr(mover, "_await_acks", written_while_acking)
    with pytest.raises(MoveHeld):
        mover.run(ids)
    with ctl.session() as s:
        assert s.get_one(ChainRow, ("t", 0)).frozen
    assert [state for state, *_ in _moves_to_c1(ctl)] == ["held"]


def test_a_move_planned_before_the_upgrade_at_a_trailing_high_watermark_is_not_held_for_nothing(setup):  # noqa: F811
    """Planned before revision 0021 as main planned it: `returning_target` NULL, `planned_target_end` the high
    watermark 5 of c1/t/0 (c1 just restarted, its leader's log end 8). The controller is upgraded and the run resumed;
    the followers caught up (high watermark 8, nothing written). The freeze reads the settled end 8, above the
    recorded 5, and holds the move `target_grew`: nothing was written there, yet an operator can only publish it (at
    its target_end 5, inside the tail: records 5..7 read again as the new segment's) or force. Expected: not held,
    and no segment of t/0 on c1/t/0 starting below 8."""
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    ctl = api.controller
    kafka.ends[T0_ON_C1] = 8  # so that the plan below records; then rewritten as main's plan recorded it
    mover, ids = _move_back(api, now_on, seal_timeout=0.5)
    with ctl.session() as s:
        row = s.get_one(MoveRow, ids[0])
        row.returning_target, row.planned_target_end = None, 5
        s.commit()
    with contextlib.suppress(MoveHeld):  # held is what the assertion below refuses
        mover.run(ids)
    with ctl.session() as s:
        states = list(s.scalars(select(MoveRow.state).where(MoveRow.id.in_(ids))))
    assert states != ["held"]
    assert all(start >= 8 for start in _later_starts_on_c1_t0(ctl.view.topics["t"].partitions[0]))


def test_a_scale_up_whose_moves_were_rolled_back_does_not_report_done(setup, monkeypatch):  # noqa: F811
    """c1 is back after its failover (its partitions' physical partitions claimed by their chains: every move of a
    scale-up onto c1 is a move back, returning). The plan reads c1's leader log ends (settled); from the freeze on
    they are not read (a leader moving, a broker timing out the debugging ListOffsets) for the seal timeout: every move
    is rolled back alone (`Mover._freeze`) and `Mover.run` returns {"rolled_back": n}, no MoveFailed; `_moves` reports
    only rolled-back moves a *resumed* run found, so the run records `done`, having moved nothing, and a caller (CLI,
    automation) proceeds as if c1 had its share. Expected: the run does not say `done` (as a resumed run finding its
    moves rolled back fails: "moves rolled back, writes continue where they were ... run the scale-up again"), or it
    moved what it planned."""
    api, kafka, _now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    kafka.ends[T0_ON_C1] = 8
    ctl = api.controller
    _been_on_c1(ctl)
    engine = WorkflowEngine(ctl)
    engine.mover.seal_timeout = 0.5
    served, froze = kafka.log_end_offsets, engine.mover._freeze
    frozen: list[list[int]] = []

    def c1_unread_from_the_freeze(cluster, bootstrap, parts):
        answered = served(cluster, bootstrap, parts)
        return {} if cluster == "c1" and frozen else answered

    def freeze(ids):
        frozen.append(ids)
        froze(ids)

    kafka.log_end_offsets = c1_unread_from_the_freeze
    monkeypatch.setattr(engine.mover, "_freeze", freeze)
    run = engine.wait(engine.start("scale_up", "c1")["id"], timeout=60)
    assert frozen and frozen[0]  # the scale-up planned moves onto c1
    with ctl.session() as s:
        states = list(s.scalars(select(MoveRow.state).where(MoveRow.workflow_id == run["id"])))
    assert run["state"] != "done" or set(states) == {"done"}, (run["state"], states)


def _been_on_c1(ctl) -> None:
    """The partitions a scale-up onto c1 takes (the highest of each donor) were on c1 before: moved there and back,
    so their physical partitions on c1 are claimed for them and a scale-up sends them back there (returning)."""
    mover = Mover(ctl, seal_timeout=0.5)
    donors = {p: chain.active.cluster for p, chain in enumerate(ctl.view.topics["t"].partitions)
              if chain.active.cluster != "c1"}
    taken = [max(p for p, c in donors.items() if c == donor) for donor in sorted(set(donors.values()))]
    there = [Move("t", p, donors[p], "c1", "t", 10 + i) for i, p in enumerate(taken)]
    assert mover.run(mover.plan(None, there)) == {"done": len(there)}
    back = [Move("t", p, "c1", donors[p], "t", 10 + i) for i, p in enumerate(taken)]
    assert mover.run(mover.plan(None, back)) == {"done": len(back)}
