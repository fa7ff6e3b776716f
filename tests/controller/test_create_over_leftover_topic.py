"""A new logical topic never serves records it did not accept (docs/DESIGN.md §4.13, "A new topic's physical
topics"): its identity segments start at physical offset 0 of physical topics carrying its name, so a physical topic
of that name already on a target cluster that holds records (a deleted topic's, left on a cluster that was removed
and registered again under a new id) refuses the creation: 409 TOPIC_ALREADY_EXISTS naming the cluster and the
physical topic, nothing committed, until the operator deletes it. An existing empty one (the controller's own
half-done creation) is used, and a topic's own physical topics never refuse its growth or their re-creation by the
scan. Driven with the fake Kafka of tests/controller/conftest.py (no broker)."""

from __future__ import annotations

import pytest

from fedkafka.controller.errors import Conflict
from fedkafka.controller.kafka_admin import KafkaUnavailable, Scan
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.model import shadow_topic


def _kafka_by_bootstrap(recording_kafka_class):
    """The fake Kafka keyed by bootstrap (a Kafka cluster is where its brokers are, whatever id it is registered
    under): `created`, `ends` and `down` hold bootstraps, not cluster ids."""

    class Kafka(recording_kafka_class):
        def scan(self, cluster, bootstrap):
            if bootstrap in self.down:
                return Scan(cluster, False, "connection refused")
            return Scan(cluster, True, None, {t: n for (b, t), n in self.created.items() if b == bootstrap})

        def ensure_topic(self, cluster, bootstrap, name, partitions, config=None):
            return super().ensure_topic(bootstrap, bootstrap, name, partitions, config)

        def log_offsets(self, cluster, bootstrap, partitions):
            return super().log_offsets(bootstrap, bootstrap, partitions)

        def delete_topic(self, cluster, bootstrap, name):
            if bootstrap in self.down:
                raise KafkaUnavailable(f"cluster {cluster} unavailable: connection refused")
            super().delete_topic(bootstrap, bootstrap, name)

        def topic_ids(self, cluster, bootstrap, names):
            return super().topic_ids(bootstrap, bootstrap, names)

        def delete_topic_by_id(self, cluster, bootstrap, name, topic_id):
            return super().delete_topic_by_id(bootstrap, bootstrap, name, topic_id)

    return Kafka()


def _refused_over_leftover(response, cluster: str, physical_topic: str, kafka_error: str) -> None:
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["kafka_error"] == kafka_error, body
    assert f"physical topic {physical_topic} on cluster {cluster} already holds records" in body["detail"], body
    assert "delete it" in body["detail"], body


def test_a_topic_created_again_on_a_removed_clusters_kafka_registered_anew_holds_no_old_record(
        make_api, recording_kafka_class):
    """a has a partition on c2 (Kafka at c2:9092) holding 5 records; c2 is down when a is deleted, so its physical
    topic is a pending deletion. The operator sets c2 removed: its rows are dropped ("no topic is ever placed there
    again"). c2's Kafka comes back and is registered again under a new id, c3. Creating a again, with a partition on
    c3, is refused while the old physical topic a is there (nothing committed); once the operator deleted it, a is
    created and its partition on c3 starts on an empty physical topic."""
    kafka = _kafka_by_bootstrap(recording_kafka_class)
    api = make_api(kafka=kafka)
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/a", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    assert api.get("/v1/topics/a").json()["chains"][1]["segments"][0]["cluster"] == "c2"
    kafka.ends[("c2:9092", "a", 0)] = 5  # produced through the federation
    kafka.down = {"c2:9092"}
    api.controller.scan_once()
    api.delete("/v1/topics/a").raise_for_status()
    # and its shadow topic: c2 may have held the groups (docs/DESIGN.md §10.3)
    assert api.get("/v1/status").json()["pending_deletions"] == {"c2": [shadow_topic("a"), "a"]}
    for state in ("read_only", "draining", "removed"):
        api.post("/v1/clusters/c2/state", json={"state": state}).raise_for_status()
    assert api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).status_code == 409  # a new id, c3

    kafka.down = set()
    api.put("/v1/clusters/c3", json={"bootstrap": "c2:9092"}).raise_for_status()
    api.controller.scan_once()
    assert api.get("/v1/status").json()["pending_deletions"] == {}
    _refused_over_leftover(api.put("/v1/topics/a", json={"partitions": 2, "placement": "blocks"}), "c3", "a",
                           "TOPIC_ALREADY_EXISTS")
    assert api.get("/v1/topics/a").status_code == 404
    assert kafka.ends[("c2:9092", "a", 0)] == 5

    kafka.delete_topic("c3", "c2:9092", "a")  # the operator deletes the leftover
    api.put("/v1/topics/a", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    segment = api.get("/v1/topics/a").json()["chains"][1]["segments"][0]
    assert (segment["cluster"], segment["topic"], segment["phys_start"]) == ("c3", "a", 0)
    assert kafka.ends.get(("c2:9092", "a", 0), 0) == 0


def test_registering_a_removed_cluster_again_says_to_delete_its_leftover_physical_topics_first(make_api):
    api = make_api()
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    for state in ("read_only", "draining", "removed"):
        api.post("/v1/clusters/c2/state", json={"state": state}).raise_for_status()
    refused = api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"})
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "first delete there the leftover physical topics of deleted topics" in detail, detail
    assert "register it under a new id" in detail, detail


def test_an_existing_empty_physical_topic_is_used_by_a_new_topic(make_api):
    """The controller's own half-done creation (physical topics created, the database write lost) left physical
    topic t with 3 empty partitions on c2: creating t uses it."""
    api = make_api()
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.kafka.created[("c2", "t")] = 3
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    segments = [c["segments"][0] for c in api.get("/v1/topics/t").json()["chains"]]
    assert [(g["cluster"], g["partition"], g["phys_start"]) for g in segments] == [("c1", 0, 0), ("c2", 0, 0)]
    assert api.kafka.created[("c2", "t")] == 3


def test_a_non_empty_physical_topic_refuses_a_new_topic_and_nothing_is_committed(make_api):
    """Physical topic t on c2 holds records in partition 1 (no partition of the new t would start there, but a
    later one would): CreateTopics is refused with TOPIC_ALREADY_EXISTS naming c2 and t, and nothing is committed
    or created, not even the shadow topic; the physical topic keeps its records."""
    api = make_api()
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.kafka.created[("c2", "t")] = 2
    api.kafka.ends[("c2", "t", 1)] = 4
    before = api.get("/v1/status").json()
    for create in (lambda: api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}),
                   lambda: api.post("/v1/admin/topics", json={"name": "t", "partitions": 2})):
        _refused_over_leftover(create(), "c2", "t", "TOPIC_ALREADY_EXISTS")
    assert api.get("/v1/topics/t").status_code == 404
    assert [t["name"] for t in api.get("/v1/topics").json()] == []
    assert api.get("/v1/status").json()["view_version"] == before["view_version"]
    assert ("c1", "t") not in api.kafka.created and ("c1", shadow_topic("t")) not in api.kafka.created
    assert api.kafka.created[("c2", "t")] == 2 and api.kafka.ends[("c2", "t", 1)] == 4


def _t_on_c1_and_a_leftover_t_on_c2(make_api, placement: str):
    """Topic t of one partition on c1; c2, registered after it, holds a physical topic t with 9 records."""
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 1, "placement": placement}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()
    api.kafka.created[("c2", "t")] = 1
    api.kafka.ends[("c2", "t", 0)] = 9
    return api


def test_a_topic_grown_onto_a_cluster_holding_a_leftover_physical_topic_is_refused(make_api):
    """t lives on c1; c2, registered since, holds a physical topic t with records fedkafka does not know: growing t
    onto c2 (CreatePartitions) is refused with POLICY_VIOLATION, the topic keeps its partitions; once the operator
    deleted it, t grows onto c2."""
    api = _t_on_c1_and_a_leftover_t_on_c2(make_api, "balanced")
    _refused_over_leftover(api.post("/v1/admin/topics/t/partitions", json={"count": 2}), "c2", "t",
                           "POLICY_VIOLATION")
    assert api.get("/v1/topics/t").json()["partitions"] == 1
    api.kafka.delete_topic("c2", "c2:9092", "t")  # the operator deletes the leftover
    api.post("/v1/admin/topics/t/partitions", json={"count": 2}).raise_for_status()
    assert api.get("/v1/topics/t").json()["chains"][1]["segments"][0]["cluster"] == "c2"


def test_a_topics_own_records_never_refuse_its_growth_or_its_re_creation_by_the_scan(make_api):
    """t's own physical topics hold its records (claimed partitions): growing t onto them, changing its config,
    and the scan re-creating a partition of t that Kafka lacks (`_create_needed`) are not refused."""
    api = make_api()
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    api.kafka.ends[("c1", "t", 0)] = 7
    api.kafka.ends[("c2", "t", 0)] = 3
    api.controller.scan_once()
    api.put("/v1/topics/t", json={"partitions": 4, "placement": "blocks"}).raise_for_status()
    chains = api.get("/v1/topics/t").json()["chains"]
    assert sorted((c["segments"][0]["cluster"], c["segments"][0]["partition"]) for c in chains) == [
        ("c1", 0), ("c1", 1), ("c2", 0), ("c2", 1)]
    api.put("/v1/topics/t", json={"partitions": 4, "placement": "blocks", "config": {"retention.ms": "60000"}}
            ).raise_for_status()
    api.kafka.created[("c2", "t")] = 1  # partition 1 (never written) is gone from c2's Kafka
    api.controller.scan_once()
    assert api.kafka.created[("c2", "t")] == 2
    assert api.controller.lost_topics.get("c2", []) == []


def test_an_expansion_onto_a_cluster_holding_a_leftover_physical_topic_adds_no_partition(make_api):
    """A scale-up's `expand` adds identity segments on the new cluster's physical topic of the name, from offset 0:
    one there holding records refuses it (the run fails), the topic keeps its partitions and Kafka is not changed."""
    api = _t_on_c1_and_a_leftover_t_on_c2(make_api, "blocks")
    with pytest.raises(Conflict, match="physical topic t on cluster c2 already holds records") as refused:
        WorkflowEngine(api.controller)._add_partitions("t", 1, 1, "c2")
    assert refused.value.kafka_error == "POLICY_VIOLATION"
    assert len(api.controller.view.topics["t"].partitions) == 1
    assert api.kafka.created[("c2", "t")] == 1 and api.kafka.created[("c1", shadow_topic("t"))] == 1
