"""A coordination move's switch checks that the freeze of commits is the one its own thread set (docs/DESIGN.md
§10.1): a freeze cleared and set again by the same run, still `running`, is another freeze, and the offsets copied
under the first one predate the commits made between the two. Driven with the fake Kafka of
tests/controller/conftest.py (no broker)."""

from __future__ import annotations

import pytest

from controller.test_deleted_topic_offsets import _group_g_on_c1, _kafka_with_commits_class
from fedkafka.controller.coordination import FreezeLost
from fedkafka.controller.models import ClusterRow, WorkflowRow
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.model import shadow_topic


def test_a_coordination_move_does_not_switch_under_a_freeze_its_own_resumed_run_set_again(
        make_api, recording_kafka_class, monkeypatch):
    """Controller X runs a planned coordination move c1 -> c2 and has copied g's offset (5) to c2 when it pauses past
    its lease. Y takes over and resumes the run; its thread fails and clears the freeze (`unfreeze_after_failure`),
    then Y loses the leader row before recording the run `failed`: the run stays `running`. g commits 9 on c1,
    unfrozen. A sweeper resumes the run, whose new thread freezes c1's commits again. X leads again and its old
    thread comes to its switch: c1 holds the groups, its commits are frozen, the run is running. Switched, c2 would
    hold g at 5: the commit of 9 lost (g re-reads 5..8), with nothing said. Expected: the switch refuses (the freeze
    is not the one X's thread copied under), c1 keeps the groups with g at 9, and the resumed run's freeze stays."""
    kafka = _kafka_with_commits_class(recording_kafka_class)()
    kafka.commits = {}
    api = _group_g_on_c1(make_api, kafka, a=5)
    ctl = api.controller
    engine = WorkflowEngine(ctl)
    monkeypatch.setattr(engine, "_spawn", lambda run_id: None)  # X's thread is driven by the test
    run = engine.start("coordination_move", "c2")
    move, copied = engine.coordination, engine.coordination.write

    def copied_then_cleared_and_frozen_again(cluster, offsets, **kwargs):
        copied(cluster, offsets, **kwargs)
        move.unfreeze_after_failure()  # Y's thread of the run failed, then Y lost its row: the run still running
        with ctl.session() as s:
            assert s.get_one(WorkflowRow, run["id"]).state == "running"
            assert s.get_one(ClusterRow, "c1").commits_frozen is False
        kafka.commits[("c1", "g")][(shadow_topic("a"), 0)] = 9  # g commits on c1, unfrozen
        move._freeze("c1", True)  # the sweeper resumed the run: its new thread froze again

    monkeypatch.setattr(move, "write", copied_then_cleared_and_frozen_again)
    with pytest.raises(FreezeLost, match="frozen again since"):
        move.run("c2", False, lambda *_: None, run["id"])  # X's old thread, leading again
    assert ctl.view.coordination_cluster == "c1"
    assert kafka.commits[("c1", "g")][(shadow_topic("a"), 0)] == 9
    with ctl.session() as s:
        assert s.get_one(ClusterRow, "c1").commits_frozen is True  # the resumed thread's freeze, not X's to clear
