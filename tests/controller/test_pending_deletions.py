"""A topic deleted while one of its clusters is down leaves a physical topic holding its records behind: the
deletion is recorded (`pending_deletions`), each scan retries it on the clusters that answer, and until it is gone
creating a topic of that name is refused as Kafka refuses a name still being deleted (TOPIC_ALREADY_EXISTS), so a
topic created again never starts its segments at offset 0 of the old records (docs/DESIGN.md §4.5)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.view.model import shadow_topic


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(60) == 0


def _read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of partition 0 from offset 0 up to its high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    try:
        _low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        c.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        while len(got) < high:
            msg = c.poll(1.0)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
        return got
    finally:
        c.close()


def _refused(response, name: str, cluster: str) -> None:
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["kafka_error"] == "TOPIC_ALREADY_EXISTS"
    assert body["detail"].startswith(f"Topic '{name}' is marked for deletion (physical topic ")
    assert f"physical topic {name} on cluster {cluster}" in body["detail"] and "not yet removed)" in body["detail"]


@pytest.mark.integration
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)  # the database is not what this is about
def test_a_topic_deleted_while_a_cluster_is_down_is_created_again_only_once_its_old_records_are_gone(
        make_api, kafka_clusters, make_clusters, unique_name):
    shared, (down,) = kafka_clusters[0], make_clusters("d2")
    api = make_api(kafka=KafkaAdmin(2.0))
    ctl = api.controller
    for cid, cluster in (("c1", shared), ("d2", down)):  # c1 first: the coordination cluster (the shadow topic)
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": cluster.bootstrap}).raise_for_status()
    name = unique_name
    api.put(f"/v1/topics/{name}", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    segment = api.get(f"/v1/topics/{name}").json()["chains"][1]["segments"][0]
    assert (segment["cluster"], segment["topic"], segment["partition"]) == ("d2", name, 0)
    _produce(down.bootstrap, name, [b"old-%d" % i for i in range(5)])

    down.stop()
    api.delete(f"/v1/topics/{name}").raise_for_status()
    # and its shadow topic: d2 may have held the groups (docs/DESIGN.md §10.3)
    assert api.get("/v1/status").json()["pending_deletions"] == {"d2": [shadow_topic(name), name]}
    assert "fedkafka_pending_physical_deletions 2.0" in api.get("/metrics").text
    _refused(api.put(f"/v1/topics/{name}", json={"partitions": 2, "placement": "blocks"}), name, "d2")
    _refused(api.post("/v1/admin/topics", json={"name": name, "partitions": 2}), name, "d2")  # CreateTopics
    _refused(api.post("/v1/admin/topics", json={"name": name, "partitions": 2, "validate_only": True}), name, "d2")
    ctl.scan_once()  # d2 does not answer: still pending
    _refused(api.put(f"/v1/topics/{name}", json={"partitions": 2, "placement": "blocks"}), name, "d2")

    down.start()
    down.wait_ready()
    assert name in AdminClient({"bootstrap.servers": down.bootstrap}).list_topics(timeout=30).topics  # left behind
    ctl.scan_once()
    assert api.get("/v1/status").json()["pending_deletions"] == {}
    assert "fedkafka_pending_physical_deletions 0.0" in api.get("/metrics").text

    api.post("/v1/admin/topics", json={"name": name, "partitions": 2}).raise_for_status()
    segment = api.get(f"/v1/topics/{name}").json()["chains"][1]["segments"][0]
    assert (segment["cluster"], segment["topic"], segment["partition"], segment["phys_start"]) == ("d2", name, 0, 0)
    _produce(down.bootstrap, name, [b"new"])
    assert _read_all(down.bootstrap, name) == [b"new"]  # offset 0 is the new topic's first record, no old one


@pytest.fixture
def kafka(recording_kafka_class):
    return recording_kafka_class()


def test_a_pending_deletion_survives_a_restart_and_one_on_a_removed_cluster_blocks_nothing(make_api, kafka, db_url):
    """The rows are the database's: a controller started again refuses the name too, and its scan retries them. A
    cluster set `removed` is never placed on again: its rows are dropped and the name can be created again."""
    api = make_api(kafka=kafka)
    for cid in ("c1", "c2", "c3"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    for name in ("a", "b"):
        api.put(f"/v1/topics/{name}", json={"partitions": 3, "placement": "blocks"}).raise_for_status()
    kafka.down = {"c2", "c3"}
    for name in ("a", "b"):
        api.delete(f"/v1/topics/{name}").raise_for_status()
    left = [shadow_topic("a"), shadow_topic("b"), "a", "b"]  # the shadow topics too (docs/DESIGN.md §10.3)
    assert api.get("/v1/status").json()["pending_deletions"] == {"c2": left, "c3": left}
    assert ("c1", "a") not in kafka.created and ("c1", shadow_topic("a")) not in kafka.created

    again = make_api(kafka=kafka)  # another controller process on the same database
    _refused(again.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}), "a", "c2")
    kafka.down = {"c3"}
    again.controller.scan_once()
    assert again.get("/v1/status").json()["pending_deletions"] == {"c3": left}
    assert ("c2", "a") not in kafka.created and ("c2", "b") not in kafka.created
    _refused(again.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}), "a", "c3")

    for state in ("read_only", "draining", "removed"):
        again.post("/v1/clusters/c3/state", json={"state": state}).raise_for_status()
    again.put("/v1/topics/a", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    again.controller.scan_once()
    assert again.get("/v1/status").json()["pending_deletions"] == {}
