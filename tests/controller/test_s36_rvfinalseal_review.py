"""Review of s36-fixsealmerge (docs/DESIGN.md §6.3 "A move back onto its chain" points 4-5, §7). Finding 1 (a lost
publish no heartbeat reported, rolled back over on an unread log end) was a strict xfail, fixed in s37: a frozen move
is not rolled back on its returning target's unread log end. Fake Kafka (tests/controller/test_failover.py's
`setup`)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controller.test_failover import setup  # noqa: F401 (the failover tests' fixture)
from controller.test_move_back_onto_its_chain import T0_ON_C1, _c1_back_with_its_tail, _move_back, _moves_to_c1
from fedkafka.controller.models import ChainRow, MoveRow
from fedkafka.controller.moves import MoveHeld
from fedkafka.controller.workflows import WorkflowEngine


@pytest.mark.parametrize("who", ["run", "sweeper"])
def test_a_lost_publish_no_heartbeat_reported_is_not_rolled_back_over_on_an_unread_log_end(setup, who):  # noqa: F811
    """c1/t/0 settled at 8 at the plan and the freeze. Under a publish the config database lost, proxies wrote 3
    records there, acked at 8..10, and died (no heartbeat will ever report the lost view: the database's failover and
    the proxies' restart were one outage). c1 restarted: its high watermark is 5 from its checkpoint and its leader's
    log end is not answered (the debugging ListOffsets refused by a loaded broker, §6.3 point 4). The controller has
    not seen the database lose commits. `run`: the resumed seal does not settle and rolls the move back alone after
    the seal timeout; `sweeper`: the direct move's controller died, the sweeper settles it at once (no seal-timeout
    wait for a heartbeat either). Both rolled back before s37: writes went on at the source's log end, the logical
    offsets the lost publish handed out for 8..10 (§3.3), which became unreachable. Expected: held, its chain frozen
    (an unread log end is no proof that nothing was written: §6.3 point 4)."""
    leader_log_end: dict[str, int | None] = {"now": 8}
    api, kafka, now_on = _c1_back_with_its_tail(setup, lambda read: leader_log_end["now"])
    kafka.ends[T0_ON_C1] = 8
    ctl = api.controller
    mover, ids = _move_back(api, now_on, seal_timeout=0.5)
    mover._freeze(ids)
    assert _moves_to_c1(ctl) == [("frozen", 8, 8, None)]
    leader_log_end["now"] = None  # 11 on the broker, not answered
    kafka.ends[T0_ON_C1] = 5
    assert ctl.db_regression is None
    if who == "run":
        with pytest.raises(MoveHeld, match="was not read"):
            mover.run(ids)
    else:
        assert mover.sweep() == ids
    assert [state for state, *_ in _moves_to_c1(ctl)] == ["held"]
    with ctl.session() as s:
        assert s.get_one(ChainRow, ("t", 0)).frozen


def test_a_scale_up_is_not_failed_by_a_topic_deleted_during_it(setup, monkeypatch):  # noqa: F811
    """A scale-up onto c4 moves partitions of t and u; u is deleted by an operator while the moves freeze. The
    deletion rolls u's moves back itself (§6.3: nothing of u left to move); t's moves are made. Before s36-fixsealmerge
    the run was done; now `_moves` returns every rolled-back reason, and the scale-up fails with "moves rolled back,
    writes continue where they were: topic deleted during the move; run the scale-up again"."""
    api, _kafka = setup
    ctl = api.controller
    api.put("/v1/topics/u", json={"partitions": 6, "placement": "blocks"}).raise_for_status()
    api.put("/v1/clusters/c4", json={"bootstrap": "c4:9092"}).raise_for_status()
    engine = WorkflowEngine(ctl)
    froze = engine.mover._freeze

    def freeze(ids):
        if "u" in ctl.view.topics:
            api.delete("/v1/topics/u").raise_for_status()
        froze(ids)

    monkeypatch.setattr(engine.mover, "_freeze", freeze)
    run = engine.wait(engine.start("scale_up", "c4")["id"], timeout=60)
    with ctl.session() as s:
        moves = list(s.execute(select(MoveRow.topic, MoveRow.state).where(MoveRow.workflow_id == run["id"])))
    assert ("t", "done") in moves and ("u", "rolled_back") in moves, moves  # the deletion came mid-run
    assert run["state"] == "done", run.get("error")
