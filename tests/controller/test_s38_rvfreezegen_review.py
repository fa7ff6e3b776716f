"""Review of dee36ace (clusters.freeze_generation, docs/DESIGN.md §10.1): findings as strict xfails. Driven with the
fake Kafka of tests/controller/conftest.py (no broker)."""

from __future__ import annotations

import pytest

from controller.test_deleted_topic_offsets import driven_coordination_move
from fedkafka.controller.coordination import FreezeLost
from fedkafka.view.model import shadow_topic


def test_a_stale_thread_does_not_overwrite_the_copy_of_the_freeze_set_again(make_api, recording_kafka_class,
                                                                             monkeypatch):
    """X copied g at 5 (first freeze) and paused before writing it to c2. Y resumed the run: its thread failed and
    cleared the freeze, Y lost its row before recording `failed`; g committed 9 on c1; a sweeper resumed the run,
    which froze again (a new generation), copied 9 to c2 and verified it, then paused before its switch. X leads
    again: its old thread writes 5 to c2 (it leads; c2 does not hold the groups yet) and pauses before its switch.
    The resumed thread leads again and switches: its freeze is the cluster's. Expected: g at 9 where the groups end
    up (X's write refused: its freeze is not the cluster's any more)."""
    kafka, ctl, engine, run = driven_coordination_move(make_api, recording_kafka_class, monkeypatch)
    move, copied = engine.coordination, engine.coordination.write
    key = (shadow_topic("a"), 0)
    resumed_done = []

    def resumed_run_then_stale_write(cluster, offsets, **kwargs):
        monkeypatch.setattr(move, "write", copied)  # the resumed thread writes for real
        move.unfreeze_after_failure()  # Y's thread of the run failed, then Y lost its row: the run still running
        kafka.commits[("c1", "g")][key] = 9  # g commits on c1, unfrozen
        freeze = move._freeze("c1")  # the sweeper resumed the run: its new thread froze again
        fresh, ids = move.read_tagged("c1")
        copied("c2", fresh, topic_ids=ids)
        move._verify("c2", fresh, ids)
        try:
            copied(cluster, offsets, **kwargs)  # X's old thread, leading again, writes its copy (5)
        finally:  # X pauses before its switch; the resumed thread, leading again, switches
            move._switch("c1", "c2", {"a"}, freeze=freeze, run_id=run["id"])
            resumed_done.append(True)

    monkeypatch.setattr(move, "write", resumed_run_then_stale_write)
    with pytest.raises(FreezeLost, match="frozen again since"):  # X's write refused: its freeze is not c1's now
        move.run("c2", False, lambda *_: None, run["id"])  # X's old thread
    assert resumed_done
    holder = ctl.view.coordination_cluster
    assert kafka.commits[(holder, "g")][key] == 9
