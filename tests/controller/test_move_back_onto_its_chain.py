"""A move back onto a physical partition that holds an older segment of its chain (docs/DESIGN.md §6.3, "A move back
onto its chain"): its plan, freeze and seal take the target's settled end (its high watermark once it reached its
leader's log end), so its new segment starts past every record of an older segment's unclean tail, and a target whose
high watermark trails after a restart neither holds the move nor hides records of a lost publish. Other targets are
read as before: nothing waits for their leaders' log ends. Fake Kafka (tests/controller/test_failover.py's `setup`),
SQLite and PostgreSQL (`db_url`)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controller.test_failover import finished, kill, setup  # noqa: F401 (setup: the failover tests' fixture)
from controller.test_s35_rvfixworkflows_review import _c1_back_restarting
from fedkafka.controller.models import ChainRow, MoveRow
from fedkafka.controller.moves import MoveHeld, Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.rebalance import Move

T0_ON_C1 = ("c1", "t", 0)


def _c1_back_with_its_tail(failover_setup, leader_log_end):
    """(api, kafka, the cluster t/0 failed over to): c1 died holding t/0 (sealed at 0, unscanned: its records are an
    unclean tail, read inside the gap, DESIGN §9.2), was failed over, and is back and active with c1/t/0's high
    watermark at 5 (restarted from its checkpoint). `leader_log_end(read)` answers c1/t/0's leader log end at the
    `read`-th read of it (1, 2, ...; None: left out, no leader known)."""
    api, kafka = failover_setup
    kill(api, kafka, "c1")
    run = finished(api, api.post("/v1/workflows", json={"kind": "failover", "cluster": "c1"}).json())
    assert run["state"] == "done", run["error"]
    chain = api.controller.view.topics["t"].partitions[0]
    assert (chain.segments[0].cluster, chain.segments[0].phys_end) == ("c1", 0)
    kafka.down.discard("c1")
    kafka.ends[T0_ON_C1] = 5
    api.controller.scan_once()
    api.post("/v1/clusters/c1/state", json={"state": "active"}).raise_for_status()
    served, reads = kafka.log_end_offsets, []

    def leader_log_ends(cluster, bootstrap, parts):
        answered = served(cluster, bootstrap, parts)
        if cluster == "c1" and ("t", 0) in answered:
            reads.append(parts)
            end = leader_log_end(len(reads))
            if end is None:
                del answered[("t", 0)]
            else:
                answered[("t", 0)] = end
        return answered

    kafka.log_end_offsets = leader_log_ends
    return api, kafka, chain.active.cluster


def _move_back(api, now_on: str, seal_timeout: float = 1.0) -> tuple[Mover, list[int]]:
    mover = Mover(api.controller, seal_timeout=seal_timeout)
    return mover, mover.plan(None, [Move("t", 0, now_on, "c1", "t", 0)])


def _moves_to_c1(ctl) -> list[tuple[str, int | None, int | None, int | None]]:
    with ctl.session() as s:
        return [(r.state, r.planned_target_end, r.target_end, r.phys_start)
                for r in s.scalars(select(MoveRow).where(MoveRow.to_cluster == "c1").order_by(MoveRow.id))]


def _later_starts_on_c1_t0(chain) -> list[int]:
    return [seg.phys_start for seg in chain.segments[1:] if (seg.cluster, seg.partition) == ("c1", 0)]


def test_a_move_back_waits_for_the_high_watermark_and_starts_past_the_unclean_tail(setup):  # noqa: F811
    """c1/t/0 holds 8 records (0..7, acked before c1 died), its high watermark 5 while its followers catch up
    (at the second read of its leader's log end). The plan waits for the high watermark to reach the log end and
    records 8; the freeze and the seal read 8 again: the move is made, not held (nothing wrote), its new segment
    starts at 8, and the old segment's tail keeps every record it had, read at the offsets acked for them."""
    api, now_on = _c1_back_restarting(setup, leader_end_unread_once=False)
    ctl = api.controller
    mover, ids = _move_back(api, now_on)
    assert _moves_to_c1(ctl) == [("planned", 8, None, None)]
    assert mover.run(ids) == {"done": 1}
    assert _moves_to_c1(ctl) == [("done", 8, 8, 8)]
    chain = ctl.view.topics["t"].partitions[0]
    assert _later_starts_on_c1_t0(chain) == [8]
    assert chain.readable_end(chain.segments[0]) == 8


def test_a_move_back_whose_leader_log_end_is_unread_at_the_plan_is_made_past_the_tail(setup):  # noqa: F811
    """Review s35-rvfixworkflows finding 1's scenario (c1/t/0's leader log end not read once, then caught up): the
    plan waits past the failed read, the move is made from 8, never held."""
    api, now_on = _c1_back_restarting(setup, leader_end_unread_once=True)
    mover, ids = _move_back(api, now_on)
    assert mover.run(ids) == {"done": 1}
    assert _moves_to_c1(api.controller) == [("done", 8, 8, 8)]


@pytest.mark.parametrize("leader_log_end", [8, None], ids=["followers_behind", "log_end_unread"])
def test_a_move_back_onto_a_target_that_does_not_settle_is_rolled_back_not_held(setup, leader_log_end):  # noqa: F811
    """The high watermark of c1/t/0 never reaches its leader's log end (or that log end is never read) within the
    seal timeout: the plan records no end (none proven), the freeze's wait fails and the move is rolled back (alone,
    the run goes on): t/0 goes on writing where it was, unfrozen, and the old segment's tail keeps every record."""
    api, _kafka, now_on = _c1_back_with_its_tail(setup, lambda read: leader_log_end)
    ctl = api.controller
    mover, ids = _move_back(api, now_on, seal_timeout=0.5)
    assert _moves_to_c1(ctl) == [("planned", None, None, None)]
    assert mover.run(ids) == {"rolled_back": 1}
    assert [state for state, *_ in _moves_to_c1(ctl)] == ["rolled_back"]
    chain = ctl.view.topics["t"].partitions[0]
    assert chain.active.cluster == now_on and not chain.frozen and _later_starts_on_c1_t0(chain) == []
    assert chain.readable_end(chain.segments[0]) >= 8


def test_a_move_back_whose_target_restarts_again_before_the_seal_starts_at_its_log_end(
        setup, monkeypatch):  # noqa: F811
    """Settled at the plan and the freeze (8), c1 restarts again while the proxies ack the freeze: its high
    watermark is back at 5 when the seal reads it, and the followers catch up at the next read of the leader's log
    end. The seal waits: the new segment starts at 8, not 5, and the move is not held (8 is not above 8)."""
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    kafka.ends[T0_ON_C1] = 8  # caught up before the plan
    ctl = api.controller
    mover, ids = _move_back(api, now_on)
    _restart_c1_while_acking(monkeypatch, mover, kafka)
    assert mover.run(ids) == {"done": 1}
    assert _moves_to_c1(ctl) == [("done", 8, 8, 8)]
    assert _later_starts_on_c1_t0(ctl.view.topics["t"].partitions[0]) == [8]


def _restart_c1_while_acking(monkeypatch, mover: Mover, kafka) -> None:
    """c1 restarts while the proxies ack the freeze: c1/t/0's high watermark back at 5, at its log end (8) again once
    its leader's log end is read next."""
    acked = mover._await_acks

    def restarted_while_acking(move_ids, progress):
        acked(move_ids, progress)
        kafka.ends[T0_ON_C1] = 5
        kafka.log_end_offsets = _catching_up_at_next_read(kafka, kafka.log_end_offsets)

    monkeypatch.setattr(mover, "_await_acks", restarted_while_acking)


def _failing_over(api, kafka, now_on: str):
    """The controller and a workflow engine (seal timeout 0.5 s) with `now_on` killed and the third cluster read_only:
    a failover of `now_on` can only send its partitions to c1."""
    ctl = api.controller
    other = ({"c2", "c3"} - {now_on}).pop()
    api.post(f"/v1/clusters/{other}/state", json={"state": "read_only"}).raise_for_status()
    kill(api, kafka, now_on)
    engine = WorkflowEngine(ctl)
    engine.mover.seal_timeout = 0.5
    return ctl, engine


def _catching_up_at_next_read(kafka, leader_log_ends):
    """`leader_log_ends`, c1/t/0's high watermark raised to its log end (8) once it is read."""
    def read(cluster, bootstrap, parts):
        answered = leader_log_ends(cluster, bootstrap, parts)
        if cluster == "c1" and ("t", 0) in answered:
            kafka.ends[T0_ON_C1] = 8
        return answered
    return read


def test_records_a_lost_publish_wrote_on_a_returning_target_are_not_masked(setup):  # noqa: F811
    """c1/t/0 holds 3 unreplicated records above its high watermark 5 when the move back is planned (leader log end
    8: writes whose acks=all timed out). The plan waits; a leader change truncates them (log end 5 = high
    watermark): the plan records 5, provably replicated, never the 8 of records that were never acked. Records
    acked under a publish the database lost land at 5..7 (high watermark and log end 8): the freeze finds 8 above
    5 and holds the move (DESIGN §3.3), so they stay readable where their offsets were handed out."""
    log_ends = {1: 8}
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: log_ends.get(read, kafka.ends[T0_ON_C1]))
    ctl = api.controller
    mover, ids = _move_back(api, now_on)
    assert _moves_to_c1(ctl) == [("planned", 5, None, None)]
    kafka.ends[T0_ON_C1] = 8  # written under the lost publish, replicated
    with pytest.raises(MoveHeld, match="5 when it was planned"):
        mover.run(ids)
    with ctl.session() as s:
        assert s.get_one(ChainRow, ("t", 0)).frozen
    assert _moves_to_c1(ctl) == [("held", 5, 5, None)]


def test_a_move_onto_a_fresh_partition_reads_no_leader_log_end_of_its_target(setup):  # noqa: F811
    """A (clean) move onto a physical partition holding no segment of its chain waits for no target: its cluster's
    leader log ends failing (a loaded broker, a refused debugging ListOffsets) neither holds nor rolls it back; only
    the source's are read (its seal)."""
    api, kafka = setup
    ctl = api.controller
    served = kafka.log_end_offsets

    def only_c1(cluster, bootstrap, parts):
        if cluster != "c1":
            raise OSError(f"{cluster}: ListOffsets (debugging replica id) timed out")
        return served(cluster, bootstrap, parts)

    kafka.log_end_offsets = only_c1
    mover = Mover(ctl, seal_timeout=0.5)
    assert mover.run(mover.plan(None, [Move("t", 0, "c1", "c2", "t", 9)])) == {"done": 1}
    assert ctl.view.topics["t"].partitions[0].active.cluster == "c2"


@pytest.mark.parametrize("settles", [True, False], ids=["settles", "does_not_settle"])
def test_a_failover_back_onto_a_partition_of_the_chain(setup, settles):  # noqa: F811
    """The cluster t/0 failed over to dies in turn; c1 (back, c1/t/0's high watermark 5 below its log end 8) is the
    only live target. When the high watermark reaches the log end (at the next read) the failover sends t/0 back
    onto c1/t/0, from 8. When it does not within the seal timeout, the failover is not rolled back for it nor made
    inside the tail: the plan sends t/0 to a new physical partition of c1 instead (`WorkflowEngine._ready_plans`).
    Either way the old segment's tail keeps every record it had."""
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    if settles:
        kafka.log_end_offsets = _catching_up_at_next_read(kafka, kafka.log_end_offsets)
    ctl, engine = _failing_over(api, kafka, now_on)
    run = engine.wait(engine.start("failover", now_on)["id"], timeout=60)
    assert run["state"] == "done", run.get("error")

    chain = ctl.view.topics["t"].partitions[0]
    new = chain.segments[-1]
    assert new.cluster == "c1" and chain.readable_end(chain.segments[0]) >= 8
    if settles:
        assert (new.partition, new.phys_start) == (0, 8)
    else:
        assert new.partition != 0 and _later_starts_on_c1_t0(chain) == []


def _returning_recorded(ctl, ids: list[int]) -> dict[tuple[str, int], bool | None]:
    with ctl.session() as s:
        return {(r.to_cluster, r.to_partition): r.returning_target
                for r in s.scalars(select(MoveRow).where(MoveRow.id.in_(ids)))}


def test_the_plan_records_whether_its_target_was_claimed_for_the_partition_before(setup):  # noqa: F811
    """The plan decides once, from the claims before its own (DESIGN §4.13, §6.3), and records it: a move back onto
    c1/t/0 (claimed by t/0's first segment) is returning, a move onto a partition claimed by the plan itself is not."""
    api, _kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    ctl = api.controller
    mover = Mover(ctl, seal_timeout=0.5)
    fresh = mover.plan(None, [Move("t", 1, ctl.view.topics["t"].partitions[1].active.cluster, now_on, "t", 9)])
    _, back = _move_back(api, now_on)
    assert _returning_recorded(ctl, fresh + back) == {(now_on, 9): False, ("c1", 0): True}
    assert mover.run(fresh) == {"done": 1}  # claimed now, yet still the fresh move it was planned as
    assert _returning_recorded(ctl, fresh) == {(now_on, 9): False}


def test_a_move_planned_before_the_decision_was_recorded_is_taken_as_returning(setup, monkeypatch):  # noqa: F811
    """A move planned before revision 0021 (`returning_target` NULL) is read as returning: its seal takes the settled
    end 8 of c1/t/0, never the high watermark 5 it trails at after a restart of c1 before the seal."""
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    kafka.ends[T0_ON_C1] = 8
    ctl = api.controller
    mover, ids = _move_back(api, now_on)
    with ctl.session() as s:
        s.get_one(MoveRow, ids[0]).returning_target = None
        s.commit()
    _restart_c1_while_acking(monkeypatch, mover, kafka)
    assert mover.run(ids) == {"done": 1}
    assert _later_starts_on_c1_t0(ctl.view.topics["t"].partitions[0]) == [8]


def test_a_returning_target_that_lost_records_since_its_plan_is_not_started_below_its_planned_end(
        setup, monkeypatch):  # noqa: F811
    """Settled at 8 at the plan and the freeze, c1/t/0 is truncated to 5 while the proxies ack (an unclean election
    on c1: high watermark and log end 5, settled). The seal does not start the new segment at 5, below the end its
    plan recorded (records 5..7 of the older segment's tail, read inside the gap, would be read again as the new
    segment's): the move is rolled back alone, t/0 writes on where it was."""
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: kafka.ends[T0_ON_C1])
    kafka.ends[T0_ON_C1] = 8
    ctl = api.controller
    mover, ids = _move_back(api, now_on)
    acked = mover._await_acks

    def truncated_while_acking(move_ids, progress):
        acked(move_ids, progress)
        kafka.ends[T0_ON_C1] = 5

    monkeypatch.setattr(mover, "_await_acks", truncated_while_acking)
    assert mover.run(ids) == {"rolled_back": 1}
    assert _moves_to_c1(ctl) == [("rolled_back", 8, 8, None)]
    chain = ctl.view.topics["t"].partitions[0]
    assert chain.active.cluster == now_on and not chain.frozen and _later_starts_on_c1_t0(chain) == []


def test_a_failover_whose_returning_target_is_unread_at_the_seal_makes_the_others_and_holds_it_until_read(
        setup):  # noqa: F811
    """As the review's freeze case (tests/controller/test_s36_rvseal_review.py), c1/t/0 settled at the plan and the
    freeze (8), its leader log end not read at the seal (a broker refusing the debugging ListOffsets): the moves onto
    fresh partitions of c1 are sealed and made. t/0's move back, frozen, is not rolled back on an unread log end (a
    lost publish no proxy reported may have acked records above the trailing high watermark, DESIGN §6.3 point 4): it
    is held `target_unread`, its partition frozen, and the run fails naming it. Once the log end answers again (8,
    unchanged) the sweeper rolls it back, and the failover run again moves t/0 to c1: the old segment's tail keeps
    every record, and the new segment on c1/t/0 starts past it. (Until s37 the move was rolled back at the seal, a
    lost publish's records above the high watermark unchecked.)"""
    answering = {"now": False}
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8 if read <= 2 or answering["now"] else None)
    kafka.ends[T0_ON_C1] = 8
    own = [p for p, chain in enumerate(api.controller.view.topics["t"].partitions)
           if chain.active.cluster == now_on and p != 0]
    assert own
    ctl, engine = _failing_over(api, kafka, now_on)
    run = engine.wait(engine.start("failover", now_on)["id"], timeout=60)
    assert run["state"] == "failed" and "was not read" in run["error"], run
    assert {p: ctl.view.topics["t"].partitions[p].active.cluster for p in own} == dict.fromkeys(own, "c1")
    chain = ctl.view.topics["t"].partitions[0]
    assert chain.active.cluster == now_on and chain.frozen and _later_starts_on_c1_t0(chain) == []
    assert [(state, target_end) for state, _, target_end, _ in _moves_to_c1(ctl) if state != "done"] == [("held", 8)]

    answering["now"] = True
    engine.sweep_round()
    chain = ctl.view.topics["t"].partitions[0]
    assert [state for state, *_ in _moves_to_c1(ctl) if state != "done"] == ["rolled_back"] and not chain.frozen
    run = engine.wait(engine.start("failover", now_on)["id"], timeout=60)
    assert run["state"] == "done", run.get("error")
    chain = ctl.view.topics["t"].partitions[0]
    assert chain.active.cluster == "c1" and _later_starts_on_c1_t0(chain) == [8]  # back onto c1/t/0: it settles now
    assert chain.readable_end(chain.segments[0]) >= 8


def test_a_failover_does_not_send_a_partition_back_onto_a_target_that_settles_only_at_its_plans(
        setup, monkeypatch):  # noqa: F811
    """c1/t/0 settles (8) whenever a plan reads it and never while a freeze does (its leader log end unread then): the
    failover's move of t/0 back onto it is rolled back alone at the freeze. Its next round avoids c1/t/0 (DESIGN §6.3
    point 5) and sends t/0 to a new partition of c1: one rollback, not one per round without end (the run fails
    here at a fourth freeze, as it would loop)."""
    freezing = {"now": False, "count": 0}
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: None if freezing["now"] else 8)
    kafka.ends[T0_ON_C1] = 8
    ctl, engine = _failing_over(api, kafka, now_on)
    froze = engine.mover._freeze

    def freeze(ids):
        freezing["count"] += 1
        if freezing["count"] > 3:
            raise AssertionError("the failover planned t/0 back onto c1/t/0 again and again")
        freezing["now"] = True
        try:
            froze(ids)
        finally:
            freezing["now"] = False

    monkeypatch.setattr(engine.mover, "_freeze", freeze)
    run = engine.wait(engine.start("failover", now_on)["id"], timeout=60)
    assert run["state"] == "done", run.get("error")
    chain = ctl.view.topics["t"].partitions[0]
    assert chain.active.cluster == "c1" and chain.active.partition != 0 and _later_starts_on_c1_t0(chain) == []
    with ctl.session() as s:
        back = list(s.scalars(select(MoveRow.state).where(MoveRow.to_cluster == "c1", MoveRow.to_partition == 0)))
    assert back == ["rolled_back"]


def test_a_returning_target_whose_log_end_is_unread_is_held_once_the_database_lost_commits(setup):  # noqa: F811
    """Settled at 8 at the plan, c1/t/0's leader log end is not read from then on, its high watermark 8: the move
    does not settle at the freeze. The controller saw the config database lose commits: whether a lost publish wrote
    above the high watermark cannot be checked without the log end, so the move is held (`target_unread`), not rolled
    back (DESIGN §3.3, §6.3 point 4). The sweeper reads the log end again: 8, nothing written, rolled back; had it
    been 11, held for the writes."""
    leader_log_end: dict[str, int | None] = {"now": 8}
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: leader_log_end["now"])
    kafka.ends[T0_ON_C1] = 8
    ctl = api.controller
    mover, ids = _move_back(api, now_on, seal_timeout=0.5)
    assert _moves_to_c1(ctl) == [("planned", 8, None, None)]
    leader_log_end["now"] = None
    ctl._regressed(1, 99, "a proxy")
    with pytest.raises(MoveHeld, match="not read"):
        mover.run(ids)
    assert _moves_to_c1(ctl) == [("held", 8, 8, None)]
    leader_log_end["now"] = 8
    assert mover.recheck_held() == ids
    assert [state for state, *_ in _moves_to_c1(ctl)] == ["rolled_back"]
    assert not ctl.view.topics["t"].partitions[0].frozen


@pytest.mark.parametrize("read_again", [8, 11], ids=["unchanged", "grew"])
def test_a_frozen_move_held_on_an_unread_log_end_is_settled_once_the_log_end_reads(setup, read_again):  # noqa: F811
    """Settled at 8 at the plan and the freeze, c1/t/0's leader log end is not read at the seal (its high watermark
    5: c1 restarted). The controller saw no loss of commits, yet the move is held (`target_unread`), its partition
    frozen (produce refused, retriable), not rolled back: a lost publish no proxy reported may have acked records
    above the high watermark (DESIGN §6.3 point 4). The log end answers again and the sweeper reads it: 8, nothing was
    written, so the move is rolled back and t/0 writes on where it was (nothing of c1/t/0 handed out); 11, records
    8..10 were acked under a lost publish, so it stays held (`target_grew`), frozen, their offsets not handed out."""
    leader_log_end: dict[str, int | None] = {"now": 8}
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: leader_log_end["now"])
    kafka.ends[T0_ON_C1] = 8
    ctl = api.controller
    mover, ids = _move_back(api, now_on, seal_timeout=0.5)
    mover._freeze(ids)
    leader_log_end["now"], kafka.ends[T0_ON_C1] = None, 5
    with pytest.raises(MoveHeld, match="was not read"):
        mover.run(ids)
    assert ctl.db_regression is None
    assert _moves_to_c1(ctl) == [("held", 8, 8, None)] and ctl.view.topics["t"].partitions[0].frozen
    assert mover.sweep() == [] and _moves_to_c1(ctl) == [("held", 8, 8, None)]  # still unread: read next round

    leader_log_end["now"] = read_again
    mover.sweep()
    with ctl.session() as s:
        row = s.get_one(MoveRow, ids[0])
        settled = (row.state, row.held_for)
    chain = ctl.view.topics["t"].partitions[0]
    assert chain.active.cluster == now_on and _later_starts_on_c1_t0(chain) == []
    if read_again == 8:
        assert settled == ("rolled_back", "target_unread") and not chain.frozen
    else:
        assert settled == ("held", "target_grew") and chain.frozen


def test_a_move_planned_before_the_upgrade_whose_target_grew_is_held_once_the_database_lost_commits(setup):  # noqa: F811
    """As tests/controller/test_s36_rvsealmerge_review.py's finding 2 (`returning_target` NULL, `planned_target_end`
    a trailing high watermark 5, the settled end 8 at the freeze), but the controller saw the config database lose
    commits: the growth may be a lost publish's writes, so the move is held (DESIGN §3.3, §6.3 point 4)."""
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: 8)
    ctl = api.controller
    kafka.ends[T0_ON_C1] = 8
    mover, ids = _move_back(api, now_on, seal_timeout=0.5)
    with ctl.session() as s:
        row = s.get_one(MoveRow, ids[0])
        row.returning_target, row.planned_target_end = None, 5
        s.commit()
    ctl._regressed(1, 99, "a proxy")
    with pytest.raises(MoveHeld, match="5 when it was planned"):
        mover.run(ids)
    assert [state for state, *_ in _moves_to_c1(ctl)] == ["held"]
