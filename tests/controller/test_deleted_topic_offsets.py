"""No committed offset of a deleted logical topic reaches a topic created again under its name (docs/DESIGN.md
§4.13, §10): not through a shadow topic a former coordination cluster keeps, nor through the controller's offsets
copy an unclean coordination move writes. Driven with the fake Kafka of tests/controller/conftest.py (no broker)."""

from __future__ import annotations

from types import SimpleNamespace

from fedkafka.controller.coordination import CoordinationMove
from fedkafka.controller.kafka_admin import KafkaUnavailable
from fedkafka.controller.moves import Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.model import shadow_topic


def _kafka_with_commits_class(recording_kafka_class):
    """The fake Kafka's class with consumer groups: `commits[(cluster, group)]` maps (shadow topic, partition) to an
    offset (OffsetDelete removes them); deleting a topic deletes its commits, as Kafka's group coordinator does."""

    class Kafka(recording_kafka_class):
        commits: dict[tuple[str, str], dict[tuple[str, int], int]] = {}

        def consumer_groups(self, cluster, bootstrap):
            if cluster in self.down:
                raise KafkaUnavailable(f"cluster {cluster} unavailable: connection refused")
            return sorted(g for c, g in self.commits if c == cluster)

        def committed_offsets(self, cluster, bootstrap, groups):
            return {g: [(t, p, o, None, None) for (t, p), o in sorted(self.commits.get((cluster, g), {}).items())]
                    for g in groups}

        def commit_offsets(self, cluster, bootstrap, group, offsets):
            for t, p, o, _epoch, _meta in offsets:
                self.commits.setdefault((cluster, group), {})[(t, p)] = o
            return {}

        def delete_offsets(self, cluster, bootstrap, group, partitions):
            parts = self.commits.get((cluster, group), {})
            for key in partitions:
                parts.pop(key, None)
            return {}

        def delete_topic(self, cluster, bootstrap, name):
            super().delete_topic(cluster, bootstrap, name)
            for (c, _g), parts in self.commits.items():
                for key in [k for k in parts if c == cluster and k[0] == name]:
                    del parts[key]

    return Kafka


def _refusing_unknown_topics(kafka_class):
    """Kafka refuses an OffsetCommit of a topic that does not exist (UNKNOWN_TOPIC_OR_PARTITION)."""

    class Kafka(kafka_class):
        def commit_offsets(self, cluster, bootstrap, group, offsets):
            refused = {(t, p): "UNKNOWN_TOPIC_OR_PARTITION" for t, p, *_ in offsets if (cluster, t) not in self.created}
            super().commit_offsets(cluster, bootstrap, group, [o for o in offsets if (o[0], o[1]) not in refused])
            return refused

    return Kafka


def _reading_with_a_hook(kafka_class):
    """`meanwhile`, when set, runs once right after the next read of committed offsets (what happens between the
    read and what the controller does with it)."""

    class Kafka(kafka_class):
        meanwhile = None

        def committed_offsets(self, cluster, bootstrap, groups):
            read = super().committed_offsets(cluster, bootstrap, groups)
            hook, self.meanwhile = self.meanwhile, None
            if hook is not None:
                hook()
            return read

    return Kafka


def _group_g_on_c1(make_api, kafka, **offsets: int):
    """c1 (the coordination cluster) and c2, a topic of one partition per keyword, group g on c1 at its offset."""
    api = make_api(kafka=kafka)
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092", "coordination": True}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()
    for name in offsets:
        api.put(f"/v1/topics/{name}", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    kafka.commits[("c1", "g")] = {(shadow_topic(name), 0): offset for name, offset in offsets.items()}
    return api


def test_a_deleted_topic_leaves_no_shadow_topic_on_a_former_coordination_cluster(make_api, recording_kafka_class):
    """c1 holds the groups and a's shadow topic (its groups' commits); the coordination cluster moves to c2
    (`--unclean`, c1 down). A move keeps the shadow topics on the old cluster ("it may hold them again one day"). c1
    answers again; a is deleted. Expected: a's shadow topic on c1 is deleted, or recorded as a pending deletion,
    like the one on c2: otherwise a topic created again under the name, once the groups move back to c1, finds the
    deleted topic's committed offsets there and its consumers resume at the old topic's offsets."""
    kafka = recording_kafka_class()
    api = make_api(kafka=kafka)
    ctl = api.controller
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092", "coordination": True}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()
    api.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    assert ("c1", shadow_topic("a")) in kafka.created
    kafka.down = {"c1"}
    ctl.scan_once()
    ctl.offsets_copy = {"cluster": "c1", "at": 0.0, "offsets": {}}
    CoordinationMove(ctl, Mover(ctl)).run("c2", True, lambda *_: None)
    assert ctl.view.coordination_cluster == "c2"
    kafka.down = set()
    ctl.scan_once()

    api.delete("/v1/topics/a").raise_for_status()
    ctl.scan_once()
    pending = api.get("/v1/status").json()["pending_deletions"]
    left = ("c1", shadow_topic("a")) in kafka.created
    assert not left or shadow_topic("a") in pending.get("c1", []), (sorted(kafka.created), pending)


def test_an_unclean_coordination_move_gives_a_topic_created_again_no_offset_of_the_deleted_one(
        make_api, recording_kafka_class):
    """Group g committed offset 5 of topic a on c1 (the coordination cluster); the periodic offsets copy took it.
    a is deleted (c1 answers: its shadow topic and g's commit go) and created again under the name. c1 dies before
    the next copy; the operator moves the groups to c2 with `--unclean`, from the last copy. Expected: g has no
    committed offset of the new a on c2 (Kafka deleted the old topic's commits with it); a copied 5 would have g
    resume the new a at the old topic's offset 5 and skip the new a's first records."""
    kafka = _kafka_with_commits_class(recording_kafka_class)()
    api = _group_g_on_c1(make_api, kafka, a=5)
    ctl = api.controller
    move = CoordinationMove(ctl, Mover(ctl))
    assert move.copy_now() == 1  # the periodic copy

    api.delete("/v1/topics/a").raise_for_status()
    assert api.get("/v1/status").json()["pending_deletions"] == {}
    api.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    assert kafka.commits[("c1", "g")] == {}  # the new a: g has committed nothing yet
    kafka.down = {"c1"}
    ctl.scan_once()
    move.run("c2", True, lambda *_: None)
    assert ctl.view.coordination_cluster == "c2"
    assert kafka.commits.get(("c2", "g"), {}).get((shadow_topic("a"), 0)) is None, kafka.commits


def test_an_unclean_coordination_move_succeeds_after_a_topic_of_the_last_offsets_copy_was_deleted(
        make_api, recording_kafka_class, monkeypatch):
    """Group g committed offsets of topics a and b on c1 (the coordination cluster); the periodic offsets copy took
    them. a is deleted (c1 answers: its shadow topic and g's commit of it go). c1 dies before the next copy (none can
    be taken from a dead cluster); the operator moves the groups to c2 with `--unclean`, from the last copy. Kafka
    refuses an OffsetCommit of a topic that does not exist (UNKNOWN_TOPIC_OR_PARTITION), and no shadow topic of a is
    created on c2 (a is gone). Expected: the move succeeds and g keeps its offset of b; the deleted topic's offsets
    are not written anywhere (they mean nothing since Kafka deleted them with the topic)."""

    clock = [0.0]  # the move's patience runs out without waiting for it

    def sleep(seconds):
        clock[0] += seconds

    monkeypatch.setattr("fedkafka.controller.coordination.time",
                        SimpleNamespace(monotonic=lambda: clock[0], sleep=sleep, time=lambda: 0.0))
    kafka = _refusing_unknown_topics(_kafka_with_commits_class(recording_kafka_class))()
    api = _group_g_on_c1(make_api, kafka, a=5, b=7)
    ctl = api.controller
    move = CoordinationMove(ctl, Mover(ctl))
    assert move.copy_now() == 1

    api.delete("/v1/topics/a").raise_for_status()
    kafka.down = {"c1"}
    ctl.scan_once()
    move.run("c2", True, lambda *_: None)
    assert ctl.view.coordination_cluster == "c2"
    assert kafka.commits[("c2", "g")] == {(shadow_topic("b"), 0): 7}


def test_a_former_coordination_cluster_down_at_the_deletion_holds_the_name_until_its_shadow_topic_is_gone(
        make_api, recording_kafka_class):
    """c1 holds the groups: g committed offset 5 of a there. The groups move to c2 (`--unclean`, c1 down), then a is
    deleted while c1 is still down (a's partition is on c0). Expected: a's shadow topic on c1 is a pending deletion,
    so creating a again is refused until c1 answers and the scan deleted it; a created again and the groups moved
    back to c1 (planned), g has no committed offset of the new a."""
    kafka = _kafka_with_commits_class(recording_kafka_class)()
    api = make_api(kafka=kafka)
    ctl = api.controller
    api.put("/v1/clusters/c0", json={"bootstrap": "c0:9092"}).raise_for_status()
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092", "coordination": True}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()
    api.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    assert api.get("/v1/topics/a").json()["chains"][0]["segments"][0]["cluster"] == "c0"
    kafka.commits[("c1", "g")] = {(shadow_topic("a"), 0): 5}
    move = CoordinationMove(ctl, Mover(ctl))
    assert move.copy_now() == 1
    kafka.down = {"c1"}
    ctl.scan_once()
    move.run("c2", True, lambda *_: None)
    assert kafka.commits[("c2", "g")] == {(shadow_topic("a"), 0): 5}

    api.delete("/v1/topics/a").raise_for_status()
    assert api.get("/v1/status").json()["pending_deletions"] == {"c1": [shadow_topic("a")]}
    refused = api.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"})
    assert refused.status_code == 409 and f"physical topic {shadow_topic('a')} on cluster c1" in refused.text
    kafka.down = set()
    ctl.scan_once()
    assert api.get("/v1/status").json()["pending_deletions"] == {}
    api.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    move.run("c1", False, lambda *_: None)
    assert ctl.view.coordination_cluster == "c1"
    assert (shadow_topic("a"), 0) not in kafka.commits.get(("c1", "g"), {}), kafka.commits


def test_an_offsets_copy_read_while_its_topic_was_deleted_and_created_again_gives_the_new_topic_no_offset(
        make_api, recording_kafka_class):
    """The periodic copy lists the topics, then asks c1 for g's commits: it gets offset 5 of a, and a is deleted and
    created again before the copy is stored. c1 dies; the groups move to c2 with `--unclean` from that copy.
    Expected: g has no committed offset of the new a on c2 (the copy's 5 is the deleted a's)."""

    kafka = _reading_with_a_hook(_kafka_with_commits_class(recording_kafka_class))()
    api = _group_g_on_c1(make_api, kafka, a=5)
    ctl = api.controller

    def deleted_and_created_again():
        api.delete("/v1/topics/a").raise_for_status()
        api.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}).raise_for_status()

    kafka.meanwhile = deleted_and_created_again
    move = CoordinationMove(ctl, Mover(ctl))
    assert move.copy_now() == 1 and kafka.meanwhile is None
    assert kafka.commits[("c1", "g")] == {}
    kafka.down = {"c1"}
    ctl.scan_once()
    move.run("c2", True, lambda *_: None)
    assert ctl.view.coordination_cluster == "c2"
    assert (shadow_topic("a"), 0) not in kafka.commits.get(("c2", "g"), {}), kafka.commits


def test_a_planned_coordination_move_succeeds_when_a_topic_is_deleted_after_its_offsets_were_read(
        make_api, recording_kafka_class):
    """A planned move from c1 to c2 reads g's offsets of a and b on c1; a is deleted right after (its shadow topic
    on c2, created by the move, goes too). Expected: the move succeeds; g has its offset of b on c2 and none of a."""

    kafka = _reading_with_a_hook(_refusing_unknown_topics(_kafka_with_commits_class(recording_kafka_class)))()
    api = _group_g_on_c1(make_api, kafka, a=5, b=7)
    ctl = api.controller
    kafka.meanwhile = lambda: api.delete("/v1/topics/a").raise_for_status()
    CoordinationMove(ctl, Mover(ctl)).run("c2", False, lambda *_: None)
    assert kafka.meanwhile is None and ctl.view.coordination_cluster == "c2"
    assert kafka.commits[("c2", "g")] == {(shadow_topic("b"), 0): 7}


def driven_coordination_move(make_api, recording_kafka_class, monkeypatch, start: bool = True):
    """Group g at 5 on c1 behind a recording Kafka, and a WorkflowEngine whose threads the test drives (none is
    spawned): (kafka, controller, engine, the coordination_move to c2 started, or None)."""
    kafka = _kafka_with_commits_class(recording_kafka_class)()
    kafka.commits = {}
    ctl = _group_g_on_c1(make_api, kafka, a=5).controller
    engine = WorkflowEngine(ctl)
    monkeypatch.setattr(engine, "_spawn", lambda run_id: None)
    return kafka, ctl, engine, engine.start("coordination_move", "c2") if start else None
