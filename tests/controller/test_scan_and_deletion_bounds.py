"""Bounds on the controller's work under its write lock, and on what a cluster state or a topic deletion leaves.

- a cluster that stops answering costs the scan's creations, and a deletion round, one Kafka timeout under the write
  lock, not one per topic (docs/DESIGN.md §9, §5.8);
- `draining` is refused while an unfinished move targets the cluster, so a held move targeting it can still be
  repaired (docs/DESIGN.md §7);
- a topic deleted during a coordination move leaves no shadow topic on the move's target that no pending deletion
  names (docs/DESIGN.md §4.5, §5.8).

They drive the controller with the fake Kafka of tests/controller/conftest.py, as test_held_review.py does.
"""

from __future__ import annotations

from sqlalchemy import update

from controller.test_lost_commits import frozen_move, lossy  # noqa: F401 (fixtures)
from fedkafka.controller.kafka_admin import KafkaUnavailable
from fedkafka.controller.models import MoveRow
from fedkafka.view.model import shadow_topic


def _six_topics_on_two_clusters(make_api, kafka):
    """A controller over `kafka` (which records its calls made under the write lock), clusters c1 and c2, and topics
    t0..t5 of 2 partitions each placed in blocks (one partition on each cluster)."""
    api = make_api(kafka=kafka)
    kafka.ctl = api.controller
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    names = [f"t{i}" for i in range(6)]
    for name in names:
        api.put(f"/v1/topics/{name}", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    return api, names


def test_a_cluster_that_stops_answering_after_its_listing_costs_one_timeout_under_the_write_lock_not_one_per_topic(
        make_api, recording_kafka_class):
    """c2 was wiped (its physical topics gone, none held data: not lost, so the scan creates them again) and stops
    answering right after the scan listed it. `_create_needed` runs under the controller's write lock: were it to go
    on asking c2 for every missing topic after the first KafkaUnavailable, each put_topic / delete_topic / cluster
    state change would wait kafka_timeout x N. Checked: the first KafkaUnavailable on a cluster ends its creations
    for this scan (the next scan retries), so at most one call to c2 is made under the lock."""
    class Kafka(recording_kafka_class):
        def __init__(self):
            super().__init__()
            self.dead_after_listing: set[str] = set()
            self.calls_under_lock: list[tuple[str, str]] = []
            self.ctl = None

        def ensure_topic(self, cluster, bootstrap, name, partitions, config=None):
            if cluster in self.dead_after_listing:
                if self.ctl is not None and self.ctl._write_lock.locked():
                    self.calls_under_lock.append((cluster, name))
                raise KafkaUnavailable(f"cluster {cluster} unavailable: timed out")  # after kafka_timeout
            return super().ensure_topic(cluster, bootstrap, name, partitions, config)

    kafka = Kafka()
    api, names = _six_topics_on_two_clusters(make_api, kafka)
    on_c2 = sorted(t for (c, t) in kafka.created if c == "c2")
    assert on_c2 == names, kafka.created
    for name in names:
        del kafka.created[("c2", name)]  # wiped: empty, so not lost; the scan creates them again
    kafka.dead_after_listing = {"c2"}
    api.controller.scan_once()
    assert len(kafka.calls_under_lock) <= 1, kafka.calls_under_lock


def test_a_cluster_is_not_set_draining_while_a_held_move_targets_it(frozen_move):  # noqa: F811
    """A move of t/0 to c2 is held target_grew (c2/t/0 took 50 records under the lost publish). The operator sets c2
    read_only, then asks for draining. Allowed, nothing would get out: the decommission stops on the held move and
    advises `fedkafka cluster activate c2`, refused (draining never goes back to active); the held move's publish is
    refused (its target is not active); its roll-back is refused (held target_grew); `removed` is refused (a held move
    targets c2). So `draining` is refused (409, naming the move) while an unfinished move targets the cluster, like
    `removed`, and the documented repair stays open: c2 goes back to active."""
    api, _mover, ids, _member, ends, _keep, _fail_over = frozen_move
    ctl = api.controller
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == ids[0]).values(state="held", held_for="target_grew"))
        s.commit()
    ends[("c2", "t", 0)] = 50
    api.post("/v1/clusters/c2/state", json={"state": "read_only"}).raise_for_status()
    drained = api.post("/v1/clusters/c2/state", json={"state": "draining"})
    assert drained.status_code == 409 and f"move {ids[0]}" in drained.text, drained.text
    assert ctl.get_cluster("c2")["state"] == "read_only"
    api.post("/v1/clusters/c2/state", json={"state": "active"}).raise_for_status()
    assert ctl.get_cluster("c2")["state"] == "active"


def test_a_topic_deleted_during_a_coordination_move_leaves_no_unrecorded_shadow_topic(make_api, recording_kafka_class):
    """c1 holds the groups and dies; the operator moves the coordination cluster to c2 (`--unclean`, from the last
    offsets copy). `CoordinationMove._shadow_topics` lists the topics and creates each one's shadow topic on c2, with
    no lock; topic a is deleted right after its shadow topic was created there. Left there, c2's
    __fedkafka-shadow-a would be named by no pending deletion and never deleted; once c1 is removed the name could
    be created again and the new a's groups would live on that old shadow topic (consumers of the new a resuming at
    the old topic's offsets). Checked: after the move switches to c2, the shadow topic on c2 is deleted, or recorded
    as pending, like every other physical topic of a deleted topic (docs/DESIGN.md §4.5). (`delete_topic` records
    it on every cluster not removed, docs/DESIGN.md §10.3; the switch records it too, for a deletion whose attempt
    on c2 came before the creation there.)"""
    from fedkafka.controller.coordination import CoordinationMove
    from fedkafka.controller.moves import Mover

    class Kafka(recording_kafka_class):
        hook = None

        def ensure_topic(self, cluster, bootstrap, name, partitions, config=None):
            changed = super().ensure_topic(cluster, bootstrap, name, partitions, config)
            if self.hook is not None and (cluster, name) == ("c2", shadow_topic("a")):
                hook, self.hook = self.hook, None
                hook()
            return changed

    kafka = Kafka()
    api = make_api(kafka=kafka)
    ctl = api.controller
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092", "coordination": True}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()
    api.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    api.put("/v1/topics/b", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    kafka.down = {"c1"}
    ctl.scan_once()
    ctl.offsets_copy = {"cluster": "c1", "at": 0.0, "offsets": {}}  # the last copy (no group committed)

    def deleted_meanwhile():
        assert api.delete("/v1/topics/a").status_code in (200, 204)

    kafka.hook = deleted_meanwhile
    CoordinationMove(ctl, Mover(ctl)).run("c2", True, lambda *_: None)
    assert kafka.hook is None and ctl.view.coordination_cluster == "c2"
    ctl.scan_once()
    pending = api.get("/v1/status").json()["pending_deletions"]
    left = ("c2", shadow_topic("a")) in kafka.created
    assert not left or shadow_topic("a") in pending.get("c2", []), (kafka.created, pending)


def test_a_deletion_round_on_a_cluster_that_stops_answering_costs_one_timeout_under_the_write_lock(
        make_api, recording_kafka_class):
    """Six topics were deleted while c2 timed out on deletions (their c2 physical topics pending). c2 answers the
    next scan's listing, then times out again: `PhysicalDeletions.retry` runs under the write lock and asks c2 for
    every pending row it may ask, one kafka_timeout (+2 s, the future's) each: asking c2 for every row would make
    put_topic, delete_topic, cluster state changes wait (kafka_timeout + 2) x rows. Checked: the first
    KafkaUnavailable on a cluster ends that cluster's round (the next scan retries), one call under the lock."""
    class Kafka(recording_kafka_class):
        def __init__(self):
            super().__init__()
            self.deletes_time_out: set[str] = set()
            self.calls_under_lock: list[tuple[str, str]] = []
            self.ctl = None

        def delete_topic(self, cluster, bootstrap, name):
            if cluster in self.deletes_time_out:
                if self.ctl is not None and self.ctl._write_lock.locked():
                    self.calls_under_lock.append((cluster, name))
                raise KafkaUnavailable(f"cluster {cluster} unavailable: timed out")  # after kafka_timeout + 2
            super().delete_topic(cluster, bootstrap, name)

    kafka = Kafka()
    api, names = _six_topics_on_two_clusters(make_api, kafka)
    kafka.deletes_time_out = {"c2"}
    for name in names:
        assert api.delete(f"/v1/topics/{name}").status_code in (200, 204)
    # their shadow topics, recorded on c2 too (it may have held the groups, docs/DESIGN.md §10.3), are gone at once:
    # c2's metadata answer, asked for their topic ids, has none of them
    assert api.get("/v1/status").json()["pending_deletions"] == {"c2": sorted(names)}
    kafka.calls_under_lock.clear()
    api.controller.scan_once()  # c2 answers the listing, then times out on deletions again
    assert len(kafka.calls_under_lock) <= 1, kafka.calls_under_lock
