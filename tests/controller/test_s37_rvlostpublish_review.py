"""Review of s37-lostpublish (docs/DESIGN.md §6.3 point 4, §3.3; docs/OPERATIONS.md "A held move"): a frozen move back
onto its chain whose returning target's leader log end is unread is now held `target_unread`, loss seen or not, and
the sweeper's `recheck_held` settles it. The findings, fixed on s37-fixlostpublish (each test failed before). Fake
Kafka (tests/controller/test_failover.py's `setup`): c1/t/0 holds an older segment of t/0 (the returning target),
settled at 8 at the plan and the freeze."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.test_failover import setup  # noqa: F401 (the failover tests' fixture)
from controller.test_move_back_onto_its_chain import T0_ON_C1, _c1_back_with_its_tail, _move_back, _moves_to_c1
from fedkafka.controller.errors import Conflict
from fedkafka.controller.held import HeldMoves
from fedkafka.controller.models import MoveRow
from fedkafka.controller.moves import HELD_UNREAD, MoveFailed, MoveHeld

RULES = Path(__file__).resolve().parents[2] / "monitoring/prometheus/fedkafka-rules.yml"


def _held_unread(setup_, high_watermark: int):
    """(api, kafka, mover, move id, the leader log end answer: {"now": int | None}): the move of t/0 back onto c1/t/0,
    frozen at 8, held `target_unread` by the resumed run (no loss of commits seen): c1 restarted, its high watermark
    `high_watermark` (from its checkpoint), its leader's log end not answered."""
    leader_log_end: dict[str, int | None] = {"now": 8}
    api, kafka, now_on = _c1_back_with_its_tail(setup_, lambda read: leader_log_end["now"])
    kafka.ends[T0_ON_C1] = 8
    mover, ids = _move_back(api, now_on, seal_timeout=0.3)
    mover._freeze(ids)
    leader_log_end["now"], kafka.ends[T0_ON_C1] = None, high_watermark
    with pytest.raises(MoveHeld, match="was not read"):
        mover.run(ids)
    with api.controller.session() as s:
        assert s.get_one(MoveRow, ids[0]).held_for == HELD_UNREAD
    assert api.controller.db_regression is None
    return api, kafka, mover, ids[0], leader_log_end


@pytest.mark.parametrize("leader_answer", [None, 11], ids=["leader_unread", "leader_reads_11"])
def test_an_operator_roll_back_is_refused_while_the_returning_target_may_hold_a_lost_publish(
        setup, leader_answer):  # noqa: F811
    """Under a publish the database lost, proxies acked 3 records on c1/t/0 at 8..10 and died; c1 restarted with its
    high watermark back at 8 (its checkpoint). The resumed run holds the move `target_unread`. The operator runs
    `fedkafka moves roll-back <id>` (no `--nothing-was-published`) before the sweeper's next round: the leader's log
    end is still unread, or answers 11. `_check_roll_back` reads the high watermark, 8 = target_end, and rolls the
    move back "as when it was held": t/0 writes on at the source's log end, at the logical offsets the lost publish
    handed out for 8..10, which become unreachable. Expected: refused (unread: nothing shows no write; 11: it grew)."""
    api, _kafka, mover, move_id, leader_log_end = _held_unread(setup, high_watermark=8)
    leader_log_end["now"] = leader_answer
    with pytest.raises(Conflict):
        HeldMoves(api.controller, mover).roll_back(move_id)
    assert [state for state, *_ in _moves_to_c1(api.controller)] == ["held"]
    assert api.controller.view.topics["t"].partitions[0].frozen


@pytest.mark.parametrize("leader_answer, vouched", [(8, False), (None, True)],
                         ids=["leader_reads_target_end", "unread_nothing_was_published"])
def test_an_operator_can_roll_back_a_held_move_back_whose_high_watermark_trails(
        setup, leader_answer, vouched):  # noqa: F811
    """Held `target_unread` (no loss of commits, nothing written under any publish), c1's high watermark 5 after a
    restart (its followers catching up), target_end 8. (a) The leader's log end now reads 8, unchanged: what
    `recheck_held` rolls back on; the operator's roll-back reads 5 != 8 and refuses, saying the target holds records
    of a lost publish ("publish the move instead"). (b) The leader's debugging ListOffsets stays refused: the
    operator checked every proxy's view.json and passes nothing_was_published; refused the same way (the 5 != 8
    check comes before the flag). Expected: rolled back, t/0 writable again."""
    api, _kafka, mover, move_id, leader_log_end = _held_unread(setup, high_watermark=5)
    leader_log_end["now"] = leader_answer
    answer = HeldMoves(api.controller, mover).roll_back(move_id, nothing_was_published=vouched)
    assert answer["state"] == "rolled_back"
    assert not api.controller.view.topics["t"].partitions[0].frozen


def test_an_operator_can_publish_a_held_move_back_whose_high_watermark_trails(setup):  # noqa: F811
    """Finding 2's publish side: held `target_unread`, c1's high watermark 5 after a restart, its leader's log end
    reading 8 again. The operator publishes as the lost publish had (the source's log end, target_start 8, the
    move's target_end). The target is checked by its leader's log end, 8, not by its trailing high watermark (5,
    "below target_start": refused unless forced before). Expected: sealed at target_start 8, nothing forced."""
    api, kafka, mover, move_id, leader_log_end = _held_unread(setup, high_watermark=5)
    leader_log_end["now"] = 8
    with api.controller.session() as s:
        row = s.get_one(MoveRow, move_id)
        source = (row.from_cluster, "t", 0)
    seal = kafka.ends.get(source, 0)
    answer = HeldMoves(api.controller, mover).publish(move_id, seal=seal, target_start=8)
    assert (answer["state"], answer["seal"], answer["phys_start"]) == ("sealed", seal, 8)
    assert not [check for check in answer["checks"] if check.startswith("forced")], answer["checks"]
    assert "target c1/t/0 log end 8" in answer["checks"], answer["checks"]


def test_the_sweeper_says_a_log_end_read_below_target_end_is_below_it(setup, caplog):  # noqa: F811
    """The review's nit: held `target_unread`; the leader's log end then reads 6, below target_end 8 (c1 lost records
    since: an unclean election). `recheck_held` rolls the move back (a lost publish's acked records would lie above
    8) and says what it read: below its target_end, not "unchanged"."""
    api, _kafka, mover, move_id, leader_log_end = _held_unread(setup, high_watermark=5)
    leader_log_end["now"] = 6
    assert mover.recheck_held() == [move_id]
    with api.controller.session() as s:
        reason = s.get_one(MoveRow, move_id).error
    assert "unchanged" not in reason and "6, below its target_end 8" in reason, reason


def test_the_roll_back_advice_for_a_returning_target_that_never_answers_can_be_followed(setup):  # noqa: F811
    """Held `target_unread`; then c1 dies for good (every read of it fails). The only way out short of publishing is
    `roll-back --nothing-was-published`, whose refusal tells the operator to check that no proxy's view.json has a
    segment on c1/t/0 for t/0. Every proxy's view has one: t/0's first segment (the returning target's older
    segment, [c1, t, 0, 0, 0, ...]). An operator following the advice never passes the flag (or passes it against
    what they read). Expected: the advice names what a lost publish would have left (a segment on c1/t/0 starting
    at target_end 8), or no segment of the view is on c1/t/0."""
    api, kafka, mover, move_id, _leader = _held_unread(setup, high_watermark=5)
    kafka.down.add("c1")
    with pytest.raises(Conflict) as refused:
        HeldMoves(api.controller, mover).roll_back(move_id)
    advice = str(refused.value)
    assert "view.json" in advice
    on_target = [seg for seg in api.controller.view.topics["t"].partitions[0].segments
                 if (seg.cluster, seg.topic, seg.partition) == T0_ON_C1]
    assert not on_target or "8" in advice.split("view.json", 1)[1], advice


def test_a_failed_runs_rollback_does_not_hold_a_move_back_for_one_refused_read(setup, monkeypatch):  # noqa: F811
    """Settled at 8 at the plan and the freeze; the proxies do not ack the frozen view (MoveFailed at the ack wait),
    so the run rolls its moves back. c1's leader refuses the debugging ListOffsets once, at that rollback's read, and
    answers 8 (unchanged) from the next read on. Expected: rolled back (a quick read again, as the seal's wait does);
    actual: held `target_unread`, t/0 frozen until the sweeper's next round."""
    unread = {"left": 0}

    def leader_log_end(_read):
        if unread["left"]:
            unread["left"] -= 1
            return None
        return 8

    api, kafka, now_on = _c1_back_with_its_tail(setup, leader_log_end)
    kafka.ends[T0_ON_C1] = 8
    mover, ids = _move_back(api, now_on, seal_timeout=0.5)

    def no_acks(_ids, _progress):
        unread["left"] = 1
        raise MoveFailed("proxies p1 did not apply view N within 1 s while renewing their leases")

    monkeypatch.setattr(mover, "_await_acks", no_acks)
    with pytest.raises(MoveFailed):
        mover.run(ids)
    assert [state for state, *_ in _moves_to_c1(api.controller)] == ["rolled_back"]
    assert not api.controller.view.topics["t"].partitions[0].frozen


def test_the_held_move_alert_does_not_page_for_a_hold_the_sweeper_clears_within_a_round():
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    held = next(rule for rule in rules if rule.get("alert") == "FedkafkaMoveHeld")
    assert held.get("for") or "held_for" in held["expr"], held
