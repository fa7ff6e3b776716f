"""A stale DeleteTopics of a deleted topic's physical topic reaches a real broker after the name was created again
(docs/DESIGN.md §5.8, "A stale deletion deletes nothing created since"): the new physical topic and its acked
records stay, because the controller deletes physical topics by the Kafka topic id it recorded, never by name."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from proxy.support import read_partition

from fedkafka.controller.kafka_admin import KafkaAdmin

pytestmark = pytest.mark.integration


class PausedBeforeDeleting(KafkaAdmin):
    """The stale controller's Kafka: `meanwhile` runs once, just before its DeleteTopics of `pause_at` goes out
    (what the controller that took over does while this one is paused with the request in hand)."""

    pause_at: str | None = None
    meanwhile = None
    answers: list[tuple[str, bool]] = []  # (physical topic, deleted) of each deletion by id

    def _paused(self, name: str) -> None:
        if name == self.pause_at and self.meanwhile is not None:
            hook, self.meanwhile = self.meanwhile, None
            hook()

    def delete_topic(self, cluster, bootstrap, name):  # the by-name deletion (before topic ids)
        self._paused(name)
        return super().delete_topic(cluster, bootstrap, name)

    def delete_topic_by_id(self, cluster, bootstrap, name, topic_id):
        self._paused(name)
        deleted = super().delete_topic_by_id(cluster, bootstrap, name, topic_id)
        self.answers.append((name, deleted))
        return deleted


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(60) == 0  # acked


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)  # the database is not what this is about
def test_a_stale_deletion_leaves_the_topic_created_again_under_its_name_and_its_acked_records(
        make_api, make_clusters, unique_name):
    """Topic t (records old-0..2) is deleted by controller A, whose DeleteTopics of physical topic t is held back
    (A paused) until controller B, sharing A's database, has finished the deletion on its scan, t was created again
    and new-0, new-1 were acked on its new physical topic t. Then A's request reaches the broker. Expected: the new
    physical topic t and both records are intact (A's request named the old topic, which is gone)."""
    (cluster,) = make_clusters("k1")
    name = unique_name
    stale_kafka = PausedBeforeDeleting(5.0)
    stale, taken_over = make_api(kafka=stale_kafka), make_api(kafka=KafkaAdmin(5.0))
    stale.put("/v1/clusters/k1", json={"bootstrap": cluster.bootstrap}).raise_for_status()
    stale.put(f"/v1/topics/{name}", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    _produce(cluster.bootstrap, name, [b"old-%d" % i for i in range(3)])
    stale.controller.scan_once()  # k1 reachable

    def meanwhile() -> None:
        taken_over.controller.scan_once()  # deletes physical topic t and removes its row
        assert taken_over.get("/v1/status").json()["pending_deletions"] == {}
        taken_over.put(f"/v1/topics/{name}", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
        _produce(cluster.bootstrap, name, [b"new-0", b"new-1"])

    stale_kafka.pause_at, stale_kafka.meanwhile, stale_kafka.answers = name, meanwhile, []
    stale.delete(f"/v1/topics/{name}").raise_for_status()
    assert stale_kafka.meanwhile is None  # the pause happened

    assert name in AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=30).topics
    assert [value for _o, _k, value in read_partition(cluster.bootstrap, name, 0)] == [b"new-0", b"new-1"]
    assert (name, False) in stale_kafka.answers  # Kafka answered UNKNOWN_TOPIC_ID: no topic of the old id left


def test_a_deletion_by_a_topic_id_deletes_only_the_topic_of_that_id(make_clusters, unique_name, monkeypatch):
    """KafkaAdmin on a real broker: physical topic t (id X) is deleted by X, created again (id Y) and records are
    acked on it. Expected: a deletion by X then finds no topic (False) and leaves t, Y and its records; a name the
    cluster does not have has no id, but one its broker's metadata does not list while the cluster has it (a lagging
    broker) is not taken as absent; the deletion by Y deletes t."""
    from confluent_kafka.admin import NewTopic
    from workflows.support import wait_for

    from fedkafka.controller import topic_ids
    from fedkafka.controller.kafka_admin import KafkaUnavailable

    (cluster,) = make_clusters("k1")
    kafka, name, admin = KafkaAdmin(5.0), unique_name, AdminClient({"bootstrap.servers": cluster.bootstrap})
    kafka.ensure_topic("k1", cluster.bootstrap, name, 1)
    wait_for(lambda: _ids_or_none(kafka, cluster.bootstrap, [name]), 60, "the new topic's id")
    (old_id,) = kafka.topic_ids("k1", cluster.bootstrap, [name]).values()
    assert kafka.delete_topic_by_id("k1", cluster.bootstrap, name, old_id) is True
    admin.create_topics([NewTopic(name, 1)])[name].result(60)
    _produce(cluster.bootstrap, name, [b"new-0", b"new-1"])
    wait_for(lambda: _ids_or_none(kafka, cluster.bootstrap, [name]), 60, "the topic's id")
    new_ids = kafka.topic_ids("k1", cluster.bootstrap, [name, f"{name}-never"])
    assert list(new_ids) == [name] and new_ids[name] != old_id

    assert kafka.delete_topic_by_id("k1", cluster.bootstrap, name, old_id) is False
    assert kafka.topic_ids("k1", cluster.bootstrap, [name]) == new_ids
    assert [value for _o, _k, value in read_partition(cluster.bootstrap, name, 0)] == [b"new-0", b"new-1"]
    with monkeypatch.context() as lagging:  # the broker asked lists none of them
        lagging.setattr(topic_ids, "topic_ids", lambda *_args: {})
        with pytest.raises(KafkaUnavailable, match="does not list it yet"):
            kafka.topic_ids("k1", cluster.bootstrap, [name])
        assert kafka.topic_ids("k1", cluster.bootstrap, [f"{name}-never"]) == {}
    assert kafka.delete_topic_by_id("k1", cluster.bootstrap, name, new_ids[name]) is True


def _ids_or_none(kafka: KafkaAdmin, bootstrap: str, names: list[str]) -> dict[str, str] | None:
    """The ids, or None while the broker's metadata does not list a topic its controller has yet."""
    from fedkafka.controller.kafka_admin import KafkaUnavailable

    try:
        return kafka.topic_ids("k1", bootstrap, names)
    except KafkaUnavailable:
        return None
