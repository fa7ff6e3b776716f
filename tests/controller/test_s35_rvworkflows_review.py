"""Review s35-rvworkflows: the controller's workflows (scale-up, decommission, failover, coordination moves) driven
with the fake Kafka of tests/controller/conftest.py (no broker). Each test failed on main for the reason it names;
all pass since s35-fixworkflows, defect 1's since s36-seal (a move back onto a partition of its chain takes the
target's settled end: docs/DESIGN.md §6.3, "A move back onto its chain")."""

from __future__ import annotations

import contextlib
import threading

from sqlalchemy import select

from controller.test_deleted_topic_offsets import _group_g_on_c1, _kafka_with_commits_class
from controller.test_failover import finished, kill, setup  # noqa: F401 (setup: the failover tests' fixture)
from fedkafka.controller.models import ClusterRow, WorkflowRow
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.model import shadow_topic
from fedkafka.view.offsets import OffsetProblem, resolve_fetch
from fedkafka.view.rebalance import Move


def _commits_frozen(ctl) -> dict[str, bool]:
    with ctl.session() as s:
        return {c.id: c.commits_frozen for c in s.scalars(select(ClusterRow))}


def _t1_on_c2_groups_on_c1(make_api, recording_kafka_class):
    """(api, kafka): c1 holds the groups, t/0 lives on c1 and t/1 on c2 (log end 10), c3 is empty; group g committed
    0 and 3 on c1, and the periodic offsets copy (`copy_now`) took them."""
    kafka = _kafka_with_commits_class(recording_kafka_class)()
    kafka.commits = {}
    api = make_api(kafka=kafka)
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092", "coordination": True}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    api.put("/v1/clusters/c3", json={"bootstrap": "c3:9092"}).raise_for_status()
    on_c2 = api.controller.view.topics["t"].partitions[1].active
    assert on_c2.cluster == "c2"
    kafka.ends[("c2", on_c2.topic, on_c2.partition)] = 10
    kafka.commits[("c1", "g")] = {(shadow_topic("t"), 0): 0, (shadow_topic("t"), 1): 3}
    assert WorkflowEngine(api.controller).coordination.copy_now() == 1
    return api, kafka


def test_a_resumed_coordination_move_that_fails_its_check_unfreezes_the_commits(
        make_api, recording_kafka_class, monkeypatch):
    """A coordination move c1 -> c2 froze c1's commits (`_freeze`, committed) and its controller was killed (kill -9)
    while waiting for the proxies' acks: the run stays `running`. c2 stops answering meanwhile. The next controller
    resumes the run (`_respawn`): `CoordinationMove.run` calls `check` first, outside the try block whose except
    unfreezes, so the run fails with "c2 is active and unreachable" and c1's `commits_frozen` stays set. Nothing else
    ever clears it (only `_switch` and that except do; the sweeper settles moves, not freezes), and a move "back" to
    c1 is a no-op (`check` returns at once when the target holds the groups). Every proxy then answers every
    OffsetCommit, DeleteGroups and OffsetDelete COORDINATOR_LOAD_IN_PROGRESS for good. Expected: the failed run
    leaves commits unfrozen (commits go on where they were), as a fresh run that fails does."""
    kafka = _kafka_with_commits_class(recording_kafka_class)()
    api = _group_g_on_c1(make_api, kafka, a=5)
    ctl = api.controller
    engine = WorkflowEngine(ctl)
    monkeypatch.setattr(engine, "_spawn", lambda run_id: None)  # recorded, its thread "killed" before it ran
    run = engine.start("coordination_move", "c2")
    engine.coordination._freeze("c1")  # what the killed thread committed before it died
    monkeypatch.undo()
    kafka.down = {"c2"}
    ctl.scan_once()

    assert engine._respawn() == [run["id"]]  # the next controller (or the sweeper) resumes it
    ended = engine.wait(run["id"], timeout=30)
    assert ended["state"] == "failed", ended
    assert ctl.view.coordination_cluster == "c1"
    assert _commits_frozen(ctl)["c1"] is False and ctl.view.commits_frozen is False, _commits_frozen(ctl)


def test_the_sweeper_clears_a_freeze_no_running_coordination_move_owns(make_api, recording_kafka_class, monkeypatch):
    """The backstop of the test above: a failed move whose unfreeze failed too (the database down a moment) leaves
    the freeze to the sweeper, which clears it once no coordination move is running, and never one a running move
    holds (docs/DESIGN.md §10.1)."""
    kafka = _kafka_with_commits_class(recording_kafka_class)()
    api = _group_g_on_c1(make_api, kafka, a=5)
    ctl = api.controller
    engine = WorkflowEngine(ctl)
    monkeypatch.setattr(engine, "_spawn", lambda run_id: None)  # a running move, its thread not started yet
    run = engine.start("coordination_move", "c2")
    engine.coordination._freeze("c1")
    engine.sweep_round()  # `_respawn` is a no-op here: `_spawn` is patched
    assert _commits_frozen(ctl)["c1"] is True  # its run is running: its freeze

    with ctl.session() as s:  # the run failed, its unfreeze did not commit
        s.get(WorkflowRow, run["id"]).state = "failed"
        s.commit()
    engine.sweep_round()
    assert _commits_frozen(ctl)["c1"] is False and ctl.view.commits_frozen is False


def test_a_move_back_onto_a_failed_over_partition_does_not_start_inside_its_unclean_tail(setup):  # noqa: F811
    """c1 dies holding t's partitions 0 and 1 (no scan read their ends: each is sealed at its start, 0, and every
    record of it is in the unclean tail, read inside the gap, docs/DESIGN.md §9.2). The failover moves them to c2/c3.
    c1 restarts with its logs: t/0's leader holds records 0..7 (all acked before c1 died: on every in-sync replica),
    but its high watermark restarted from its checkpoint at 5 and trails while the followers catch up (DESIGN §7.5
    says so for the drain). The operator activates c1 and moves t/0 back to its own physical partition c1/t/0
    (`_Slots.move` reuses it). The seal reads the target's start with `log_offsets`, the high watermark, and the
    target is not in `sealing` (only the source waits for its high watermark to reach the log end): the new segment
    starts at 5. `readable_end` caps the tail at a later segment on the same physical partition, so records 5..7 of
    the old segment are no longer read at the offsets acked for them (inside the gap) and are read instead as the
    new segment's first records, after every record of c2's segment: offsets reused and per-key order broken
    (§4.1, §4.5). Expected: the new segment starts at or past the leader's log end (8), or the move is not made
    (rolled back: writes go on where they were; never held, nothing wrote to the target). Fixed (s36-seal): the
    target holds an older segment of the chain, so the plan, the freeze and the seal wait for its high watermark to
    reach its log end; here it never does, and the move is rolled back (made from 8 when the followers catch up:
    tests/controller/test_move_back_onto_its_chain.py)."""
    api, kafka = setup
    ctl = api.controller
    kill(api, kafka, "c1")
    run = finished(api, api.post("/v1/workflows", json={"kind": "failover", "cluster": "c1"}).json())
    assert run["state"] == "done", run["error"]
    chain = ctl.view.topics["t"].partitions[0]
    old, now_on = chain.segments[0], chain.active.cluster
    assert (old.cluster, old.phys_start, old.phys_end) == ("c1", 0, 0) and now_on != "c1"

    kafka.down.discard("c1")  # back with its log: 8 records, its high watermark at 5 while followers catch up
    kafka.ends[("c1", "t", 0)] = 5
    leader_ends = {("c1", "t", 0): 8}
    served = kafka.log_end_offsets
    kafka.log_end_offsets = lambda cluster, bootstrap, parts: {
        tp: leader_ends.get((cluster, *tp), end) for tp, end in served(cluster, bootstrap, parts).items()}
    ctl.scan_once()
    api.post("/v1/clusters/c1/state", json={"state": "active"}).raise_for_status()
    mover = Mover(ctl, seal_timeout=1.0)
    with contextlib.suppress(MoveFailed):  # not made: rolled back (a held move is no answer: MoveHeld escapes)
        mover.run(mover.plan(None, [Move("t", 0, now_on, "c1", "t", 0)]))

    chain = ctl.view.topics["t"].partitions[0]
    later = [seg.phys_start for seg in chain.segments[1:] if (seg.cluster, seg.partition) == ("c1", 0)]
    assert all(start >= 8 for start in later), chain.segments
    assert chain.readable_end(chain.segments[0]) >= 8  # the old segment's tail still holds every record it had


def test_an_unclean_coordination_move_restores_no_offset_below_a_segment_a_groups_drain_dropped(
        make_api, recording_kafka_class):
    """c1 holds the groups; t/1 lives on c2. Group g has committed 3 on t/1 when the periodic offsets copy is taken
    (`copy_now`), then reads on and commits 12. c2 is decommissioned with `--drain groups`: t/1 moves off c2 sealed at
    10, and its c2 segment is dropped once every group committed past 10 (g at 12, read on c1): the chain now starts
    at 10. c1 dies before the next copy and the groups move to c3 with `--unclean`, from the copy: g gets 3 on c3, a
    position below the chain's first segment (`resolve_fetch` answers BEFORE_CHAIN, the proxy OFFSET_OUT_OF_RANGE).
    DESIGN §10.2 promises a group falls back to a copied offset and "skips none"; here it resets, and with
    auto.offset.reset=latest (Java's default) it skips every record past its real commit 12, never consumed.
    Expected: no restored offset below the chain's first logical offset (the records below it are gone: g had
    committed past them on c1)."""
    api, kafka = _t1_on_c2_groups_on_c1(make_api, recording_kafka_class)
    ctl, shadow = api.controller, shadow_topic("t")
    kafka.commits[("c1", "g")][(shadow, 1)] = 12

    run = finished(api, api.post("/v1/workflows", json={"kind": "decommission", "cluster": "c2",
                                                        "drain": "groups"}).json())
    assert run["state"] == "done", run["error"]
    head = ctl.view.topics["t"].partitions[1].segments[0]
    assert head.cluster != "c2" and head.logical_base == 10  # c2's segment [0, 10) dropped: g was past it

    kill(api, kafka, "c1")
    run = finished(api, api.post("/v1/workflows", json={"kind": "coordination_move", "cluster": "c3",
                                                        "unclean": True}).json())
    assert run["state"] == "done", run["error"]
    restored = kafka.commits[("c3", "g")][(shadow, 1)]
    chain = ctl.view.topics["t"].partitions[1]
    assert resolve_fetch(chain, restored) is not OffsetProblem.BEFORE_CHAIN, (restored, chain.segments)
    assert restored == 10  # the chain's first offset: g had committed past every record below it
    assert kafka.commits[("c3", "g")][(shadow, 0)] == 0  # an offset inside its chain is restored as copied


def test_an_unclean_coordination_move_does_not_wait_behind_a_decommissions_drain(
        make_api, recording_kafka_class, monkeypatch):
    """c2 is decommissioned by retention: t/1 moves off it (sealed at 10) and the drain waits for c2's log start to
    reach 10, as long as retention takes (days), holding the engine's run lock all along (`_run_locked`). Then c1, the
    coordination cluster, dies: no group has a coordinator, so no consumer group can join, commit or fetch its
    offsets. The operator runs the documented remedy, `fedkafka coordination move --to c3 --unclean` (DESIGN §10.2).
    `_run` takes the run lock for every coordination move, so it waits behind the drain and the groups stay down
    until retention ends it. A failover, the other emergency workflow, does not wait for the run lock for exactly
    this reason (DESIGN §9.1, "a decommission's drain may hold the run lock for hours"). Expected: the unclean move
    finishes while the drain still waits."""
    api, kafka = _t1_on_c2_groups_on_c1(make_api, recording_kafka_class)
    drain_waits = threading.Event()
    recorded = WorkflowEngine._waiting

    def waiting(engine, run_id, blockers):
        recorded(engine, run_id, blockers)
        if blockers and engine._records[run_id]["step"] == "drain":
            drain_waits.set()  # a round judged the drain not done: it sleeps, the run lock held, and goes on

    monkeypatch.setattr(WorkflowEngine, "_waiting", waiting)
    decommission = api.post("/v1/workflows", json={"kind": "decommission", "cluster": "c2"}).json()
    assert drain_waits.wait(timeout=30), api.get(f"/v1/workflows/{decommission['id']}").json()
    kill(api, kafka, "c1")

    run = api.post("/v1/workflows", json={"kind": "coordination_move", "cluster": "c3", "unclean": True}).json()
    run = finished(api, run, timeout=30.0)
    assert run["state"] == "done", run["error"]
    assert api.get(f"/v1/workflows/{decommission['id']}").json()["state"] == "running"  # still draining
