"""Review of s37-fixlostpublish (docs/DESIGN.md §6.3 point 4, §3.3): `moves.lost_publish_shown`, `moves.read_until`
and the rollback that now re-reads a returning target's leader log end for up to seal_timeout. The findings, fixed on
s37-fixlost2 (each test failed before): the sweep reads once, `read_until` stops with the controller, a fresh target
read below its target_end is rolled back."""

from __future__ import annotations

from controller.test_failover import setup  # noqa: F401 (the failover tests' fixture)
from controller.test_lost_commits import _frozen, _move, _report, lossy  # noqa: F401 (fixture)
from controller.test_move_back_onto_its_chain import T0_ON_C1, _c1_back_with_its_tail, _move_back, _moves_to_c1
from fedkafka.controller.models import MoveRow
from fedkafka.controller.moves import HELD_UNREAD, Mover
from fedkafka.controller.service import ANY_SECRET
from fedkafka.view.rebalance import Move


def _frozen_orphan_back_onto_c1(setup_, leader_answers: dict):
    """(api, mover, move id, reads): t/0's move back onto c1/t/0 planned and frozen at 8 by a direct move (no
    workflow: an orphan for the sweeper), c1's leader log end answered `leader_answers["now"]`; `reads` counts the
    reads of it."""
    reads = {"n": 0}

    def leader_log_end(_read):
        reads["n"] += 1
        return leader_answers["now"]

    api, kafka, now_on = _c1_back_with_its_tail(setup_, leader_log_end)
    kafka.ends[T0_ON_C1] = 8
    mover, ids = _move_back(api, now_on, seal_timeout=2.0)
    mover._freeze(ids)
    return api, mover, ids[0], reads


def test_the_sweep_holds_an_orphan_on_one_read_of_its_unread_leader_log_end(setup):  # noqa: F811
    """A frozen move back onto c1 that no workflow owns (a direct move whose controller died); c1's leader refuses
    the debugging ListOffsets from then on. The sweep (at a controller's activation, in the leadership thread, and
    every sweeper round) settles it: held `target_unread`, the sweeper reading it again next round (`recheck_held`).
    Expected: the sweep reads that log end once to hold it and once in `recheck_held` (2 reads), no retry loop;
    actual: ~seal_timeout / 0.2 s reads before the hold."""
    answers = {"now": 8}
    api, mover, move_id, reads = _frozen_orphan_back_onto_c1(setup, answers)
    answers["now"], reads["n"] = None, 0
    assert mover.sweep() == [move_id]
    with api.controller.session() as s:
        assert s.get_one(MoveRow, move_id).held_for == HELD_UNREAD
    assert reads["n"] <= 2, reads


def test_a_rollback_of_a_stopping_controller_reads_its_target_once(setup):  # noqa: F811
    """The same orphan, c1's leader refusing; the controller is stopping (stop() set its event). Expected: the
    rollback reads once and holds (as before the fix); actual: it re-reads until seal_timeout."""
    answers = {"now": 8}
    api, mover, move_id, reads = _frozen_orphan_back_onto_c1(setup, answers)
    answers["now"], reads["n"] = None, 0
    api.controller._stop.set()
    try:
        mover.settle([move_id], "the controller stops")
    finally:
        api.controller._stop.clear()
    assert _moves_to_c1(api.controller)[0][0] == "held"
    assert reads["n"] == 1, reads


def test_a_fresh_target_truncated_below_its_target_end_is_rolled_back_by_the_sweeper(lossy):  # noqa: F811
    """c2/t/0 held 10 records when t/0's move to it froze (`target_end` 10, a fresh target). The publish the database
    lost put nothing on c2 that survived: c2 was down at the sweep after the loss (held `target_unread`), then came
    back from an unclean election, its log truncated to 4 (high watermark and log end 4: no record above it on any
    replica). Expected: the sweeper rolls the move back, as it does a returning target whose leader log end reads
    below its target_end ("below its target_end"); actual: held `target_unread` every round, the partition frozen
    until an operator passes nothing_was_published."""
    api, member, ends, keep_replica, fail_over = lossy
    ends[("c2", "t", 0)] = 10
    mover = Mover(api.controller, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 0)])
    mover._freeze(ids)
    _report(api, member, api.controller.view.version)
    api.controller.flush_heartbeats()
    keep_replica()
    mover.run(ids)
    v_high = api.controller.view.version
    _report(api, member, v_high)
    ctl = fail_over()
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    ctl.kafka.down.add("c2")
    sweeper = Mover(ctl)
    assert sweeper.sweep() == ids
    assert (_move(ctl, ids[0]).state, _move(ctl, ids[0]).held_for) == ("held", HELD_UNREAD)
    ctl.kafka.down.discard("c2")
    ends[("c2", "t", 0)] = 4
    assert sweeper.recheck_held() == ids
    assert (_move(ctl, ids[0]).state, _frozen(ctl)) == ("rolled_back", False)
