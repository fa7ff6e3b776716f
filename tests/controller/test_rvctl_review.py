"""Review (rvctl) of today's controller changes: pending deletions, decommission vs moves, lost topics, freeze_planned.

These tests FAIL ON PURPOSE on main: each proves one bug (its docstring gives the scenario, what happens, and what
should). They drive the controller with the fake Kafka of tests/controller/conftest.py, as test_held_review.py does.
"""

from __future__ import annotations

from sqlalchemy import update

from controller.test_lost_commits import (  # noqa: F401 (fixtures)
    _move,
    frozen_move,
    lossy,
)
from fedkafka.controller.kafka_admin import KafkaUnavailable
from fedkafka.controller.models import MoveRow
from fedkafka.controller.workflows import WorkflowEngine


def test_a_cluster_that_stops_answering_after_its_listing_costs_one_timeout_under_the_write_lock_not_one_per_topic(
        make_api, recording_kafka_class):
    """c2 was wiped (its physical topics gone, none held data: not lost, so the scan creates them again) and stops
    answering right after the scan listed it. `_create_needed` now runs under the controller's write lock and, after
    the first KafkaUnavailable on c2, goes on asking c2 for every other missing topic: one kafka_timeout per topic
    with the write lock held, so every put_topic / delete_topic / cluster state change (and a deletion's retry) waits
    kafka_timeout x N. Expected: the first KafkaUnavailable on a cluster ends its creations for this scan (the next
    scan retries), as the scan itself costs a dead cluster one timeout."""
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
    api = make_api(kafka=kafka)
    kafka.ctl = api.controller
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    names = [f"t{i}" for i in range(6)]
    for name in names:
        api.put(f"/v1/topics/{name}", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    on_c2 = sorted(t for (c, t) in kafka.created if c == "c2")
    assert on_c2 == names, kafka.created
    for name in names:
        del kafka.created[("c2", name)]  # wiped: empty, so not lost; the scan creates them again
    kafka.dead_after_listing = {"c2"}
    api.controller.scan_once()
    # main: 6 calls, each a kafka_timeout with the write lock held
    assert len(kafka.calls_under_lock) <= 1, kafka.calls_under_lock


def test_a_held_move_targeting_a_draining_cluster_can_be_neither_repaired_nor_decommissioned(frozen_move):  # noqa: F811
    """A move of t/0 to c2 is held target_grew (c2/t/0 took 50 records under the lost publish). The operator sets c2
    read_only, then draining (allowed by hand: no segment is on c2; `set_cluster_state` checks unfinished moves only
    for `removed`). From there nothing gets out: the decommission stops on the held move and tells the operator to
    `fedkafka cluster activate c2`, which is refused (draining never goes back to active); the held move's publish is
    refused (its target cluster is not active); its roll-back is refused (held target_grew, whatever); `removed` is
    refused (a held move targets it). t/0 stays frozen and c2 draining for good. Expected: one way out, e.g.
    `draining` refused like `removed` while an unfinished move targets the cluster (or publish/activate allowed)."""
    api, _mover, ids, _member, ends, _keep, _fail_over = frozen_move
    ctl = api.controller
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == ids[0]).values(state="held", held_for="target_grew"))
        s.commit()
    ends[("c2", "t", 0)] = 50
    api.post("/v1/clusters/c2/state", json={"state": "read_only"}).raise_for_status()
    drained = api.post("/v1/clusters/c2/state", json={"state": "draining"})
    if drained.status_code == 409:  # the fix: draining refused while a move targets c2
        return
    assert ctl.get_cluster("c2")["state"] == "draining"
    engine = WorkflowEngine(ctl, drain_interval=0.1)
    run = engine.wait(engine.start("decommission", "c2")["id"], timeout=60)
    assert run["state"] == "failed" and "fedkafka cluster activate c2" in run["error"], run
    answers = {
        "activate": api.post("/v1/clusters/c2/state", json={"state": "active"}),
        "publish": api.post(f"/v1/moves/{ids[0]}/publish", json={"seal": 100, "target_start": 0, "force": True}),
        "roll_back": api.post(f"/v1/moves/{ids[0]}/roll-back", json={"nothing_was_published": True}),
        "removed": api.post("/v1/clusters/c2/state", json={"state": "removed"}),
    }
    codes = {k: a.status_code for k, a in answers.items()}
    # main: every way out refused (409), the move held, t/0 frozen, c2 draining for good
    assert any(code < 300 for code in codes.values()), ({k: a.text for k, a in answers.items()}, _move(ctl, ids[0]))
