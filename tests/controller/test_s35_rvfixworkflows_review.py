"""Review of s35-fixworkflows (the fixes of s35-rvworkflows' findings), driven with the fake Kafka of
tests/controller/conftest.py (no broker). Findings 1-3 were against the fix of defect 1 (the seal waiting for the
target's high watermark, leader log ends recorded as the target's ends), withdrawn since; their tests stay as
behaviour its fix (s36-seal: settled ends for a target holding an older segment of the chain only, docs/DESIGN.md
§6.3 "A move back onto its chain") keeps. Finding 4 (a
coordination move switching after its freeze was cleared) is fixed: the switch checks the freeze is still its run's."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controller.test_deleted_topic_offsets import _group_g_on_c1, _kafka_with_commits_class
from controller.test_failover import finished, kill, setup  # noqa: F401 (setup: the failover tests' fixture)
from fedkafka.controller.coordination import FreezeLost
from fedkafka.controller.models import ChainRow, ClusterRow, MoveRow, WorkflowRow
from fedkafka.controller.moves import MoveFailed, MoveHeld, Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.chains import UNCLEAN_GAP
from fedkafka.view.model import shadow_topic
from fedkafka.view.rebalance import Move


def _c1_back_restarting(failover_setup, leader_end_unread_once: bool):
    """(api, the cluster t/0 failed over to): c1 died holding t/0, was failed over, and is back and active
    with t/0's leader at log end 8 (records acked before it died) and its high watermark at 5 while its followers
    catch up; they catch up (high watermark 8) at the second read of c1's leader log ends. With
    `leader_end_unread_once`, the first read of them leaves t/0 out: its leader not known yet, or answering
    NOT_LEADER, as `KafkaAdmin.log_end_offsets` does for a partition whose leadership moves (brokers restarting:
    preferred leaders elected back)."""
    api, kafka = failover_setup
    ctl = api.controller
    kill(api, kafka, "c1")
    run = finished(api, api.post("/v1/workflows", json={"kind": "failover", "cluster": "c1"}).json())
    assert run["state"] == "done", run["error"]
    now_on = ctl.view.topics["t"].partitions[0].active.cluster
    kafka.down.discard("c1")
    kafka.ends[("c1", "t", 0)] = 5
    ctl.scan_once()
    api.post("/v1/clusters/c1/state", json={"state": "active"}).raise_for_status()
    served, reads = kafka.log_end_offsets, []

    def leader_log_ends(cluster, bootstrap, parts):
        answered = {tp: 8 if (cluster, *tp) == ("c1", "t", 0) else end
                    for tp, end in served(cluster, bootstrap, parts).items()}
        if cluster == "c1" and ("t", 0) in answered:
            reads.append(parts)
            if len(reads) == 1 and leader_end_unread_once:
                del answered[("t", 0)]  # no leader in the metadata yet: left out
            if len(reads) == 2:
                kafka.ends[("c1", "t", 0)] = 8  # the followers caught up: no write, the high watermark rose
        return answered

    kafka.log_end_offsets = leader_log_ends
    return api, now_on


def test_a_move_onto_a_restarting_partition_is_not_held_when_one_leader_log_end_read_fails(setup):  # noqa: F811
    """The withdrawn fix of defect 1 recorded the leader's log end as `planned_target_end` and `target_end`, so that
    a high watermark rising to the log end between the plan and the seal (no write) held no move. It fell back to
    the high watermark when the log end was not read, and the next read (the freeze's) compared a log end with it:
    the same rise with no write held the move (end 8 > planned 5), the partition frozen (every Produce to it
    refused) until an operator published or rolled it back. The trigger is the scenario that fix was for: a cluster
    restarting, whose leaders move while followers catch up (a partition without a known leader is left out by
    `log_end_offsets`). Expected: the move is made or rolled back, never held: nothing wrote to the target. (Where
    a made move starts is defect 1's test in test_s35_rvworkflows_review.py; made from 8 here:
    test_move_back_onto_its_chain.py.)"""
    api, now_on = _c1_back_restarting(setup, leader_end_unread_once=True)
    ctl = api.controller
    mover = Mover(ctl, seal_timeout=1.0)
    try:
        mover.run(mover.plan(None, [Move("t", 0, now_on, "c1", "t", 0)]))
    except MoveHeld as e:
        with ctl.session() as s:
            frozen = s.get_one(ChainRow, ("t", 0)).frozen
            held = [(r.state, r.held_for, r.planned_target_end)
                    for r in s.scalars(select(MoveRow).where(MoveRow.to_cluster == "c1"))]
        pytest.fail(f"held for a high watermark rising with no write: {e}; chain frozen={frozen}; {held}")
    except MoveFailed:  # rolled back: writes go on where they were
        assert ctl.view.topics["t"].partitions[0].active.cluster == now_on


def test_a_failover_is_not_rolled_back_when_a_surviving_clusters_leader_log_ends_cannot_be_read(setup):  # noqa: F811
    """c1 dies; its partition t/0 fails over to c2 (or c3), a fresh physical partition there (no older segment of the
    chain on it: no unclean tail to start inside, the only reason the withdrawn fix had to wait on a target). c2 answers
    its high watermarks (ListOffsets as a consumer) but not the leader log ends (`log_end_offsets`: ListOffsets with
    the debugging replica id sent to each leader directly, which a loaded broker may time out, or a listener or ACL
    set-up may refuse). A failover reads no log end (its source is dead, and targets are not waited for): the move
    is made. The withdrawn fix of defect 1 waited for c2's log end, never read, and after `seal_timeout` rolled the
    move back: t/0 kept writing to the dead c1, unavailable, however often the failover was run again. Expected:
    the failover moves t/0 (a target that holds no older segment of its chain needs no such wait, or a target's
    unreadable log end is not taken as records above its high watermark)."""
    api, kafka = setup
    ctl = api.controller
    chain = ctl.view.topics["t"].partitions[0]
    assert chain.active.cluster == "c1" and len(chain.segments) == 1
    kill(api, kafka, "c1")

    def no_leader_log_ends(cluster, bootstrap, parts):
        raise OSError(f"{cluster}: ListOffsets (debugging replica id) timed out")

    kafka.log_end_offsets = no_leader_log_ends
    mover = Mover(ctl, seal_timeout=0.5)
    plans = [m for m in WorkflowEngine(ctl)._failover_plan("c1") if (m.topic, m.partition) == ("t", 0)]
    assert plans and plans[0].gap == UNCLEAN_GAP and not any(  # a fresh physical partition: no tail on it
        (seg.cluster, seg.partition) == (plans[0].to_cluster, plans[0].to_partition) for seg in chain.segments)
    assert mover.run(mover.plan(None, plans)) == {"done": 1}
    assert ctl.view.topics["t"].partitions[0].active.cluster == plans[0].to_cluster


def test_records_a_lost_publish_wrote_are_not_masked_by_an_unreplicated_tail_truncated_since_the_plan(
        setup):  # noqa: F811
    """DESIGN §3.3: nothing writes to a move's target between its plan and its publish, so a target whose end grew
    past `planned_target_end` holds records of a publish the database lost, and the move is held (sealed above them,
    they would be unreachable and their offsets handed out again). The withdrawn fix of defect 1 recorded the
    leader's log end there when the high watermark trailed it. Records above the high watermark are not all acked: a
    write whose acks=all timed out sits on the leader alone, and a leader change truncates it. Here the target
    c2/t/9 is at high watermark 5 with 3 such records on its leader (log end 8) when the move is planned (the
    withdrawn fix's planned_target_end: 8). Its leader changes (truncated to 5), and 3 records acked under a lost
    publish land at 5..7: high watermark and log end 8. With the high watermark recorded (planned_target_end 5) the
    freeze finds 8 > 5 and holds the move; with the leader's log end, 8 is not above 8: the move was sealed, its new
    segment started at 8, and the acked records 5..7 were read by no one."""
    api, kafka = setup
    ctl = api.controller
    assert ctl.view.topics["t"].partitions[0].active.cluster == "c1"
    kafka.ends[("c2", "t", 9)] = 5
    high_watermarks, leader_log_ends_of, reads = kafka.log_offsets, kafka.log_end_offsets, []

    def log_offsets(cluster, bootstrap, parts):
        if cluster == "c2" and ("t", 9) in parts:
            reads.append(parts)
            if len(reads) == 2:  # after the plan, before the freeze's read: truncated to 5, then 5..7 written
                kafka.ends[("c2", "t", 9)] = 8
        return high_watermarks(cluster, bootstrap, parts)

    def leader_log_ends(cluster, bootstrap, parts):  # 8 all along: 3 unreplicated records, then 3 written ones
        return {tp: 8 if (cluster, *tp) == ("c2", "t", 9) else end
                for tp, end in leader_log_ends_of(cluster, bootstrap, parts).items()}

    kafka.log_offsets = log_offsets
    kafka.log_end_offsets = leader_log_ends
    mover = Mover(ctl, seal_timeout=1.0)
    with pytest.raises(MoveHeld, match="5 when it was planned"):
        mover.run(mover.plan(None, [Move("t", 0, "c1", "c2", "t", 9)]))


def test_a_coordination_move_does_not_switch_after_its_freeze_was_cleared_under_it(
        make_api, recording_kafka_class, monkeypatch):
    """Controller A runs a planned coordination move c1 -> c2 and has copied g's offset (5) to c2 when it pauses past
    its lease. Controller B takes over, resumes the run, which fails there (the branch's `run` clears every freeze on
    any failure), or records it failed: B's sweeper (`clear_orphaned_freeze`) then clears the freeze no running move
    owns. Commits go on on c1: g commits 9. A leads again (B paused in turn) and its thread, never told, goes on:
    `_verify` compares c2 with its own copy, and `_switch` checks only the leader row and that c2 is active. c2 holds
    the groups with g at 5: the commit of 9 is lost (g re-reads 5..8) and the run's record says `failed` while the
    role moved. Expected: the switch refuses when the freeze it copied under is gone (or the copy is newer than every
    commit on c1): g's position is 9 wherever the groups are."""
    api, move, run_id = _coordination_move_taken_over_after_its_copy(make_api, recording_kafka_class, monkeypatch,
                                                                     frozen_again=False)
    with pytest.raises(FreezeLost, match="unfrozen since this move froze them"):
        move.run("c2", False, lambda *_: None, run_id)  # A's thread, leading again
    ctl, kafka = api.controller, api.controller.kafka
    assert ctl.view.coordination_cluster == "c1"
    assert kafka.commits[("c1", "g")][(shadow_topic("a"), 0)] == 9


def test_a_coordination_move_does_not_switch_under_a_freeze_another_run_set_again(
        make_api, recording_kafka_class, monkeypatch):
    """The test above, a new coordination move (another run) having frozen c1's commits again when A's thread comes
    to its switch: the freeze is on, but not A's run's (recorded failed), and A's copy predates the commit of 9. The
    switch refuses, and leaves the other run's freeze on (A clears nothing it does not own)."""
    api, move, run_id = _coordination_move_taken_over_after_its_copy(make_api, recording_kafka_class, monkeypatch,
                                                                     frozen_again=True)
    with pytest.raises(FreezeLost, match="is failed"):
        move.run("c2", False, lambda *_: None, run_id)  # A's thread, leading again
    ctl, kafka = api.controller, api.controller.kafka
    assert ctl.view.coordination_cluster == "c1"
    assert kafka.commits[("c1", "g")][(shadow_topic("a"), 0)] == 9
    with ctl.session() as s:
        assert s.get_one(ClusterRow, "c1").commits_frozen is True  # the other run's freeze


def _coordination_move_taken_over_after_its_copy(make_api, recording_kafka_class, monkeypatch, frozen_again: bool):
    """(api, the move, its run id): controller A's planned coordination move c1 -> c2 (g at 5 on c1), its thread
    driven by the caller, whose copy to c2 is followed by a takeover: B records the run failed, B's sweeper clears the
    freeze, g commits 9 on c1, and with `frozen_again` another run freezes c1's commits again."""
    kafka = _kafka_with_commits_class(recording_kafka_class)()
    kafka.commits = {}
    api = _group_g_on_c1(make_api, kafka, a=5)
    ctl = api.controller
    engine = WorkflowEngine(ctl)
    monkeypatch.setattr(engine, "_spawn", lambda run_id: None)  # A's thread is driven by the caller
    run = engine.start("coordination_move", "c2")
    move, copied = engine.coordination, engine.coordination.write

    def copied_then_taken_over(cluster, offsets, **kwargs):
        copied(cluster, offsets, **kwargs)
        with ctl.session() as s:  # B resumed the run and it failed there
            s.get_one(WorkflowRow, run["id"]).state = "failed"
            s.commit()
        assert move.clear_orphaned_freeze() == ["c1"]  # B's sweeper: no coordination move running
        kafka.commits[("c1", "g")][(shadow_topic("a"), 0)] = 9  # g commits on c1, unfrozen
        if frozen_again:
            move._freeze("c1")  # a new coordination move, copying under its own freeze

    monkeypatch.setattr(move, "write", copied_then_taken_over)
    return api, move, run["id"]
