"""An operator's roll-back of a held move that takes long (a slow target read, a busy lock) gets an answer that tells
the truth, as a publish does (test_held_publish_timeout.py): the admin client waits longer than the controller may
take before it commits (`held.REPAIR_DEADLINE_S`, past it the roll-back is refused, nothing changed), and a roll-back
repeated after a lost answer answers the move it rolled back, 200; a roll-back of a published move, or a publish of a
rolled-back one, is refused naming what happened (docs/DESIGN.md §3.3; docs/OPERATIONS.md "A held move").

Time is the controller's injected clock (`held.monotonic`, the `held_clock` fixture), moved by the fakes: no
test waits for real."""

from __future__ import annotations

import pytest

from controller.test_held_publish_timeout import _admin_through, _held_at_its_freeze, _move
from fedkafka.controller.client import AdminError
from fedkafka.controller.errors import Conflict
from fedkafka.controller.held import HeldMoves
from fedkafka.controller.models import MoveRow
from fedkafka.controller.moves import HELD_UNREAD, Mover

TARGET = ("c2", "t", 1)


def _held_unread(api, kafka) -> int:
    """Move t/0 c1 -> c2/t/1 held as one whose target could not be read (`target_unread`, its row rewritten: the
    fake Kafka holds a move only for a grown target), its target read again at its recorded end: rolled back, nothing
    is lost."""
    move_id = _held_at_its_freeze(api, kafka)
    with api.controller.session() as s:
        row = s.get_one(MoveRow, move_id)
        row.held_for = HELD_UNREAD
        kafka.ends[TARGET] = row.target_end
        s.commit()
    return move_id


def _slow_target(kafka, clock: list[float], read_s: float) -> None:
    """Each read of the target cluster c2's log ends takes `read_s` on `clock`."""
    real_offsets = type(kafka).log_offsets

    def slow_offsets(cluster, bootstrap, partitions):
        clock[0] += read_s if cluster == "c2" else 0.0
        return real_offsets(kafka, cluster, bootstrap, partitions)

    kafka.log_offsets = slow_offsets


def test_a_slow_roll_back_is_answered_and_a_repeated_one_answers_the_rolled_back_move(t_on_c1_c2, held_clock):
    """The target read in 35 s (a cluster slow to answer): the roll-back commits 35 s in, within its deadline. The
    admin client used to give up at 30 s (an error for a move that was rolled back) and the roll-back repeated then
    was refused (409: rolled_back, not held). Now the client waits past the deadline and gets the rolled-back move,
    and the same roll-back repeated (after a lost answer) answers that move, 200, changing nothing."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    move_id = _held_unread(api, kafka)
    _slow_target(kafka, held_clock, read_s=35.0)
    with _admin_through(api, held_clock) as admin:
        answer = admin.roll_back_move(move_id)
        assert (answer["id"], answer["state"]) == (move_id, "rolled_back")
        assert answer["error"].startswith("rolled back by an operator: its target's log end is 0")
        again = admin.roll_back_move(move_id)
        assert (again["id"], again["state"], again["error"]) == (move_id, "rolled_back", answer["error"])
        assert again["checks"] == [f"already rolled back ({answer['error']}): this repeat changed nothing"]
        assert admin.roll_back_move(move_id, nothing_was_published=True)["state"] == "rolled_back"
    assert _move(ctl, move_id) == ("rolled_back", None, None)
    chain = ctl.view.chain("t", 0)
    assert not chain.frozen and [(g.cluster, g.phys_start, g.phys_end) for g in chain.segments] == [("c1", 0, None)]


def test_a_roll_back_past_its_deadline_is_refused_and_changes_nothing(t_on_c1_c2, held_clock):
    """The target read in 65 s: past `REPAIR_DEADLINE_S` the roll-back is refused under the lock that would have
    committed it (409, nothing changed, the move still held and its partition frozen), so an answer the client gave
    up on is never a roll-back that happened after it; rolled back again, faster, it goes through."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    move_id = _held_unread(api, kafka)
    _slow_target(kafka, held_clock, read_s=65.0)
    with _admin_through(api, held_clock) as admin:
        with pytest.raises(AdminError, match=r"HTTP 409.*not rolled back, nothing was changed \(it stays held\)") as e:
            admin.roll_back_move(move_id)
        assert e.value.status == 409 and _move(ctl, move_id) == ("held", None, None)
        assert ctl.view.chain("t", 0).frozen
        _slow_target(kafka, held_clock, read_s=1.0)
        assert admin.roll_back_move(move_id)["state"] == "rolled_back"
    assert not ctl.view.chain("t", 0).frozen


def test_a_roll_back_of_a_published_move_is_refused_naming_the_publish(t_on_c1_c2):
    """What an operator published is not rolled back by a later roll-back (one sent after a publish whose answer was
    lost, say): 409 naming the publish, nothing changed, sealed and then done."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    held = HeldMoves(ctl, Mover(ctl, ack_timeout=1))
    move_id = _held_at_its_freeze(api, kafka)
    held.publish(move_id, seal=42, target_start=0, force=True)
    for state in ("sealed", "done"):
        with pytest.raises(Conflict, match=f"move {move_id} of t/0 was already published at seal 42 from 0 \\(it is "
                                           f"{state}\\): not rolled back, nothing was changed"):
            held.roll_back(move_id, nothing_was_published=True)
        assert _move(ctl, move_id) == (state, 42, 0)
        Mover(ctl).sweep()


def test_a_publish_of_a_rolled_back_move_is_refused_naming_the_roll_back(t_on_c1_c2):
    """What an operator rolled back is not published by a later publish: 409 naming the roll-back, nothing changed
    (the partition stays on c1, unfrozen)."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    held = HeldMoves(ctl, Mover(ctl, ack_timeout=1))
    move_id = _held_unread(api, kafka)
    held.roll_back(move_id)
    with pytest.raises(Conflict, match=f"move {move_id} of t/0 was already rolled back \\(rolled back by an operator: "
                                       f"its target's log end is 0, as when it was held\\): not published, nothing "
                                       f"was changed"):
        held.publish(move_id, seal=42, target_start=0, force=True)
    assert _move(ctl, move_id) == ("rolled_back", None, None)
    assert [(g.cluster, g.phys_end) for g in ctl.view.chain("t", 0).segments] == [("c1", None)]


def test_a_roll_back_that_waited_while_a_repeat_went_through_answers_the_move(t_on_c1_c2):
    """A repeat sent while the first roll-back still read its target (the operator's client gave up on it) rolls the
    move back; the first, under the lock, finds it rolled back and answers the move (it used to say 409: rolled_back,
    not held), changing nothing."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    held = HeldMoves(ctl, Mover(ctl, ack_timeout=1))
    move_id = _held_unread(api, kafka)
    real_offsets, repeats = type(kafka).log_offsets, []

    def repeat_meanwhile(cluster, bootstrap, partitions):
        kafka.log_offsets = lambda *args: real_offsets(kafka, *args)  # the repeat reads at once
        repeats.append(held.roll_back(move_id))
        return real_offsets(kafka, cluster, bootstrap, partitions)

    kafka.log_offsets = repeat_meanwhile
    first = held.roll_back(move_id)
    assert [r["state"] for r in repeats] == ["rolled_back"] and "checks" not in repeats[0]
    reason = repeats[0]["error"]
    assert (first["state"], first["error"], first["checks"]) == (
        "rolled_back", reason, [f"already rolled back ({reason}): this repeat changed nothing"])
    assert _move(ctl, move_id) == ("rolled_back", None, None) and not ctl.view.chain("t", 0).frozen


def test_a_roll_back_repeated_after_the_sweeper_rolled_the_move_back_says_who_did(t_on_c1_c2):
    """An operator's roll-back of a held move the sweeper's `recheck_held` rolled back meanwhile (its target read again
    at its recorded end) answers the move, 200, changing nothing, and names that roll-back's reason (`row.error`), as
    a refusal does: it used to say only "already rolled back", as if the operator had done it."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    mover = Mover(ctl, ack_timeout=1)
    move_id = _held_unread(api, kafka)
    assert mover.recheck_held() == [move_id]
    answer = HeldMoves(ctl, mover).roll_back(move_id)
    assert (answer["state"], answer["checks"]) == ("rolled_back", [
        "already rolled back (held while its target could not be read; its log end read again is 0, unchanged): this "
        "repeat changed nothing"])
    assert _move(ctl, move_id) == ("rolled_back", None, None) and not ctl.view.chain("t", 0).frozen
