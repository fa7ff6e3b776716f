"""A planned coordination move makes the target's committed offsets of this federation's shadow partitions equal to
the old cluster's before it switches (docs/DESIGN.md §10.1): what the target holds and the old cluster does not (a
group, or a partition's offset, deleted on the old cluster since an earlier attempt wrote it, or since the target
last held the groups) is deleted there under the freeze; what is not the federation's stays. Driven with the fake
Kafka of tests/controller/conftest.py (no broker)."""

from __future__ import annotations

import pytest

from controller.test_deleted_topic_offsets import _group_g_on_c1, _kafka_with_commits_class
from fedkafka.controller.coordination import FreezeLost
from fedkafka.controller.errors import Conflict, Unavailable
from fedkafka.controller.kafka_admin import KafkaRefused
from fedkafka.controller.models import ClusterRow
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.model import shadow_topic


def _deleting_kafka(recording_kafka_class, ctl_box: list):
    """The fake Kafka with groups, recording each OffsetDelete with the coordination cluster and the freeze of the
    moment it is sent, and refusing those of `refused` groups with `refusal` (by default GROUP_SUBSCRIBED_TO_TOPIC: a
    live member subscribed)."""

    class Kafka(_kafka_with_commits_class(recording_kafka_class)):
        def __init__(self):
            super().__init__()
            self.deletions: list[tuple[str, str, list, str, bool]] = []
            self.refused: set[str] = set()
            self.refusal = "GROUP_SUBSCRIBED_TO_TOPIC"  # Kafka's code for each partition of a refused group

        def delete_offsets(self, cluster, bootstrap, group, partitions):
            ctl = ctl_box[0]
            with ctl.session() as s:
                frozen = s.get_one(ClusterRow, "c1").commits_frozen
            self.deletions.append((cluster, group, list(partitions), ctl.view.coordination_cluster, frozen))
            if group in self.refused:
                return {tuple(p): self.refusal for p in partitions}
            return super().delete_offsets(cluster, bootstrap, group, partitions)

    kafka = Kafka()
    kafka.commits = {}
    return kafka


def _federation(make_api, recording_kafka_class, **offsets: int):
    box: list = []
    kafka = _deleting_kafka(recording_kafka_class, box)
    api = _group_g_on_c1(make_api, kafka, **offsets)
    box.append(api.controller)
    return api, kafka, WorkflowEngine(api.controller).coordination


def test_a_group_on_the_target_absent_on_the_old_cluster_is_deleted_before_the_switch(make_api,
                                                                                       recording_kafka_class):
    """c2 holds h at 3 on a's shadow partition (an earlier attempt of the move wrote it; c1 deleted h since). The move
    c1 -> c2 deletes h's offsets on c2 while c1 still holds the groups and its commits are frozen; after the switch
    c2 holds g at 5 and no h. Before, h was back on c2 at 3 (its consumers resumed there, not at their reset)."""
    api, kafka, move = _federation(make_api, recording_kafka_class, a=5)
    kafka.commits[("c2", "h")] = {(shadow_topic("a"), 0): 3}
    move.run("c2", False, lambda *_: None)
    assert api.controller.view.coordination_cluster == "c2"
    assert kafka.deletions == [("c2", "h", [(shadow_topic("a"), 0)], "c1", True)]
    assert not kafka.commits.get(("c2", "h"))
    assert kafka.commits[("c2", "g")] == {(shadow_topic("a"), 0): 5}


def test_a_partition_offset_on_the_target_absent_on_the_old_cluster_is_deleted(make_api, recording_kafka_class):
    """g's offset of b was deleted on c1 (OffsetDelete: b's consumers of g are to start over) after an earlier attempt
    wrote it to c2. Expected after the move: g on c2 at a's 5 only; before, b's 7 was back."""
    api, kafka, move = _federation(make_api, recording_kafka_class, a=5, b=7)
    kafka.commits[("c2", "g")] = {(shadow_topic("a"), 0): 4, (shadow_topic("b"), 0): 7}
    del kafka.commits[("c1", "g")][(shadow_topic("b"), 0)]
    move.run("c2", False, lambda *_: None)
    assert api.controller.view.coordination_cluster == "c2"
    assert kafka.deletions == [("c2", "g", [(shadow_topic("b"), 0)], "c1", True)]
    assert kafka.commits[("c2", "g")] == {(shadow_topic("a"), 0): 5}


def test_what_the_federation_does_not_own_on_the_target_is_left_alone(make_api, recording_kafka_class):
    """c2 is shared: group `app` commits its own topic there, group h (absent on c1) holds offsets of a topic of c2's
    own besides a's shadow partition, and group `other-fed` holds a shadow topic of a topic this federation does not
    have. Only h's offset of a's shadow partition is deleted; every other offset stays."""
    api, kafka, move = _federation(make_api, recording_kafka_class, a=5)
    kafka.commits[("c2", "app")] = {("orders", 0): 11}
    kafka.commits[("c2", "h")] = {("orders", 1): 12, (shadow_topic("a"), 0): 3}
    kafka.commits[("c2", "other-fed")] = {(shadow_topic("zz"), 0): 13}
    move.run("c2", False, lambda *_: None)
    assert api.controller.view.coordination_cluster == "c2"
    assert [(group, parts) for _c, group, parts, _v, _f in kafka.deletions] == [("h", [(shadow_topic("a"), 0)])]
    assert kafka.commits[("c2", "app")] == {("orders", 0): 11}
    assert kafka.commits[("c2", "h")] == {("orders", 1): 12}
    assert kafka.commits[("c2", "other-fed")] == {(shadow_topic("zz"), 0): 13}


def test_a_refused_deletion_fails_the_move_retriably_and_nothing_switches(make_api, recording_kafka_class):
    """h, deleted on c1, has a live member on c2 subscribed to a (GROUP_SUBSCRIBED_TO_TOPIC). Expected: the move fails
    with a retriable error naming h, c1 keeps the groups and its commits unfrozen, h untouched on c2; once h's member
    left, the move run again switches without h."""
    api, kafka, move = _federation(make_api, recording_kafka_class, a=5)
    kafka.commits[("c2", "h")] = {(shadow_topic("a"), 0): 3}
    kafka.refused = {"h"}
    with pytest.raises(Unavailable, match=r"group 'h' on c2 .*GROUP_SUBSCRIBED_TO_TOPIC") as refused:
        move.run("c2", False, lambda *_: None)
    assert refused.value.status == 503
    ctl = api.controller
    assert ctl.view.coordination_cluster == "c1"
    with ctl.session() as s:
        assert s.get_one(ClusterRow, "c1").commits_frozen is False
    assert kafka.commits[("c2", "h")] == {(shadow_topic("a"), 0): 3}
    kafka.refused = set()
    move.run("c2", False, lambda *_: None)
    assert ctl.view.coordination_cluster == "c2"
    assert not kafka.commits.get(("c2", "h"))


def test_a_deletion_is_refused_once_the_freeze_is_not_the_moves_own(make_api, recording_kafka_class, monkeypatch):
    """The move's freeze is cleared and set again (its run taken over and resumed elsewhere) while it reads c2's
    groups, before it deletes h there. Expected: FreezeLost, nothing deleted (the resumed run's copy decides what c2
    holds), no switch."""
    api, kafka, move = _federation(make_api, recording_kafka_class, a=5)
    kafka.commits[("c2", "h")] = {(shadow_topic("a"), 0): 3}
    listed = kafka.consumer_groups

    def frozen_again_while_listing(cluster, bootstrap):
        if cluster == "c2":
            move.unfreeze_after_failure()
            move._freeze("c1")
        return listed(cluster, bootstrap)

    monkeypatch.setattr(kafka, "consumer_groups", frozen_again_while_listing)
    with pytest.raises(FreezeLost, match="frozen again since"):
        move.run("c2", False, lambda *_: None)
    assert kafka.deletions == []
    assert kafka.commits[("c2", "h")] == {(shadow_topic("a"), 0): 3}
    assert api.controller.view.coordination_cluster == "c1"


def test_the_read_back_fails_when_the_target_holds_an_offset_the_copy_does_not(make_api, recording_kafka_class,
                                                                             monkeypatch):
    """An offset of h on c2 that c1 does not hold lands there after the deletion (a stale write on its way). The read
    back finds it: the move fails retriably and switches nothing. Before, the read back looked only at the copied
    groups."""
    api, kafka, move = _federation(make_api, recording_kafka_class, a=5)
    write = move.write

    def written_then_a_stale_offset(cluster, offsets, **kwargs):
        write(cluster, offsets, **kwargs)
        kafka.commits[("c2", "h")] = {(shadow_topic("a"), 0): 3}

    monkeypatch.setattr(move, "write", written_then_a_stale_offset)
    with pytest.raises(Conflict, match=r"group 'h': offsets of .* which the copy does not hold") as failed:
        move.run("c2", False, lambda *_: None)
    assert failed.value.status == 503
    assert api.controller.view.coordination_cluster == "c1"


def test_a_deletion_refused_with_another_code_is_reported_with_that_code(make_api, recording_kafka_class):
    """c2 refuses h's OffsetDelete with TOPIC_AUTHORIZATION_FAILED (no live member). Expected: the move fails
    retriably naming the code Kafka answered; before, the message always said GROUP_SUBSCRIBED_TO_TOPIC."""
    api, kafka, move = _federation(make_api, recording_kafka_class, a=5)
    kafka.commits[("c2", "h")] = {(shadow_topic("a"), 0): 3}
    kafka.refused, kafka.refusal = {"h"}, "TOPIC_AUTHORIZATION_FAILED"
    with pytest.raises(Unavailable, match=r"group 'h' on c2 .*TOPIC_AUTHORIZATION_FAILED") as refused:
        move.run("c2", False, lambda *_: None)
    assert "GROUP_SUBSCRIBED_TO_TOPIC" not in str(refused.value)
    assert api.controller.view.coordination_cluster == "c1"


def test_a_group_of_the_federation_on_the_target_that_cannot_be_read_still_fails_the_move(make_api,
                                                                                          recording_kafka_class,
                                                                                          monkeypatch):
    """g, which c1 holds, is on c2 too and the controller may not read it there (GROUP_AUTHORIZATION_FAILED).
    Expected: the move fails retriably and switches nothing: only a group that is none of the copy's is skipped."""
    api, kafka, move = _federation(make_api, recording_kafka_class, a=5)
    kafka.commits[("c2", "g")] = {(shadow_topic("a"), 0): 2}
    deny_reading(monkeypatch, kafka, "c2", "g")
    with pytest.raises(Unavailable, match="GROUP_AUTHORIZATION_FAILED"):
        move.run("c2", False, lambda *_: None)
    assert api.controller.view.coordination_cluster == "c1"


def deny_reading(monkeypatch, kafka, cluster: str, group: str) -> None:
    """`kafka` refuses this controller the committed offsets of `group` on `cluster` (GROUP_AUTHORIZATION_FAILED, as
    Kafka answers an OffsetFetch without READ on the group); every other read as before."""
    committed = kafka.committed_offsets

    def denied(on, bootstrap, groups):
        if on == cluster and group in groups:
            raise KafkaRefused(f"offsets of group {group!r}: GROUP_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED")
        return committed(on, bootstrap, groups)

    monkeypatch.setattr(kafka, "committed_offsets", denied)
