"""Second review of 7eea12f8 (clusters.freeze_generation, the write's freeze check, the bounded unfreeze;
docs/DESIGN.md §10.1), fixed on s38-fixfreezegen2. Driven with the fake Kafka of tests/controller/conftest.py."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from controller.test_deleted_topic_offsets import driven_coordination_move
from fedkafka.controller.coordination import CoordinationMove, FreezeLost
from fedkafka.controller.errors import Conflict, Unavailable
from fedkafka.controller.models import ClusterRow
from fedkafka.view.model import shadow_topic


def test_a_stale_write_landing_before_the_resumed_read_back_over_a_lower_commit(make_api, recording_kafka_class,
                                                                                monkeypatch):
    """X's thread passed its check under its freeze (g at 5) and its OffsetCommit is held on the way past its lease.
    Y's thread of the run fails and clears the freeze, Y loses its row; g's offsets are reset to 2 on c1 (unfrozen);
    the sweeper resumes the run, which freezes again and writes 2 to c2. X's commit of 5 arrives now, before the
    resumed run's read back, which finds 5 >= 2 and passes; its switch finds its own freeze. Expected (as §10.1
    states for this landing): the resumed run fails (c1 keeps g at 2), or switches with g at 2."""
    kafka, ctl, engine, run = driven_coordination_move(make_api, recording_kafka_class, monkeypatch)
    move, commit = engine.coordination, kafka.commit_offsets
    key = (shadow_topic("a"), 0)
    resumed = []

    def resumed_run_writes_then_stale_commit_lands(cluster, bootstrap, group, parts):
        if resumed:
            return commit(cluster, bootstrap, group, parts)
        move.unfreeze_after_failure()  # Y's thread of the run failed, then Y lost its row: the run still running
        kafka.commits[("c1", "g")][key] = 2  # g's offsets reset on c1, unfrozen
        resumed.append(move._freeze("c1"))  # the sweeper resumed the run: its new thread froze again
        fresh, ids = move.read_tagged("c1")
        move.write("c2", fresh, topic_ids=ids, freeze=resumed[0])  # the resumed run writes 2
        resumed.append((fresh, ids))
        return commit(cluster, bootstrap, group, parts)  # X's commit of 5 lands, before the resumed read back

    monkeypatch.setattr(kafka, "commit_offsets", resumed_run_writes_then_stale_commit_lands)
    with pytest.raises(FreezeLost, match="frozen again since"):
        move.run("c2", False, lambda *_: None, run["id"])  # X's old thread: its own switch refuses
    fresh, ids = resumed[1]
    try:  # the resumed thread: read back, switch
        move._verify("c2", fresh, ids)
        move._switch("c1", "c2", {"a"}, freeze=resumed[0], run_id=run["id"])
    except Conflict:
        pass  # its read back refused: c1 keeps the groups
    assert kafka.commits[(ctl.view.coordination_cluster, "g")][key] == 2


def test_a_failed_threads_unfreeze_does_not_clear_a_freeze_set_again_after_its_read(make_api, recording_kafka_class,
                                                                                     monkeypatch):
    """X's thread froze c1 (generation n) and its read back fails; its unfreeze reads c1 frozen at n, then pauses
    before its leader check while Y takes over, resumes the run and freezes c1 again (n + 1), and X leads again.
    Expected: X's unfreeze clears nothing (n is gone); c1 stays frozen by the resumed run."""
    _, ctl, engine, run = driven_coordination_move(make_api, recording_kafka_class, monkeypatch)
    move = engine.coordination
    real_check, armed = ctl.check_leader, []

    def check_leader(s):
        if armed and armed.pop():  # the unfreeze's leader check, after its read of the frozen clusters
            with ctl.engine.begin() as other:  # Y's resumed thread freezes c1 again, committed meanwhile
                other.execute(text("UPDATE clusters SET commits_frozen = true, "
                                   "freeze_generation = freeze_generation + 1 WHERE id = 'c1'"))
        return real_check(s)

    def read_back_fails(*_args):
        armed.append(True)
        raise Unavailable("committed offsets of c2 not read: timed out")

    monkeypatch.setattr(ctl, "check_leader", check_leader)
    monkeypatch.setattr(move, "_verify", read_back_fails)
    with pytest.raises(Unavailable, match="c2 not read"):
        move.run("c2", False, lambda *_: None, run["id"])
    with ctl.session() as s:
        row = s.get_one(ClusterRow, "c1")
        assert row.freeze_generation == 2
        assert row.commits_frozen is True  # the resumed run's freeze, not X's to clear


def test_the_read_back_refuses_the_copied_offset_with_another_leader_epoch_or_metadata():
    """A stale write of the same offset still carries its own commit's leader epoch and metadata (the application's):
    the read back takes only the copy exactly, normalised as it is read (-1 and "" come back as None)."""
    move = CoordinationMove(controller=None, mover=None)
    ids = {shadow_topic("a"): "id-a"}
    copied = {"g": [(shadow_topic("a"), 0, 5, 3, "app-state-2")]}

    move._groups_of = lambda cluster: ["g"]  # type: ignore[method-assign]

    def c2_holds(*part):
        return lambda cluster, groups, **_kw: ({"g": [(shadow_topic("a"), 0, *part)]}, ids)

    for stale in [(5, 2, "app-state-2"), (5, 3, "app-state-1"), (5, None, None), (6, 3, "app-state-2")]:
        move.read_tagged = c2_holds(*stale)  # type: ignore[method-assign]
        with pytest.raises(Conflict, match="not on c2 as copied"):
            move._verify("c2", copied, ids)
    move.read_tagged = c2_holds(5, 3, "app-state-2")  # type: ignore[method-assign]
    move._verify("c2", copied, ids)
    move.read_tagged = c2_holds(5, None, None)  # type: ignore[method-assign]
    move._verify("c2", {"g": [(shadow_topic("a"), 0, 5, -1, "")]}, ids)
