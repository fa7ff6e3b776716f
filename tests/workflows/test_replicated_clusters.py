"""A federation over physical clusters of 3 brokers: its topics get 3 replicas (2 in sync), and a broker killed
under acks=all load loses nothing acked through the proxy and rejoins when started again from its dir."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from fedkafka.view.model import shadow_topic

from .support import Federation, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(tmp_path, replicated_clusters, unique_name):
    """Controller + one proxy over r1 (coordination) and r2, with a 4-partition logical topic (2 on each)."""
    r1, r2 = replicated_clusters
    fed = Federation(tmp_path)
    fed.start_controller()
    fed.setup({"r1": r1.bootstrap, "r2": r2.bootstrap}, unique_name, 4, coordination="r1")
    yield fed
    fed.stop()


def partitions_of(bootstrap: str, topic: str) -> dict:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    return admin.list_topics(topic=topic, timeout=10).topics[topic].partitions


def min_insync(bootstrap: str, topic: str) -> str:
    """The topic's min.insync.replicas. A topic just created may not be in the metadata of the broker asked yet
    (UNKNOWN_TOPIC_OR_PART from one of three brokers): asked again until it is, for up to 30 s."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + 30
    while True:
        try:
            return admin.describe_configs([res])[res].result(timeout=10)["min.insync.replicas"].value
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def physical_segments(fed: Federation, topic: str) -> list[tuple[str, str, int]]:
    return [(s["cluster"], s["topic"], s["partition"]) for c in fed.chains(topic) for s in c["segments"]]


def test_federation_topics_get_three_replicas_and_two_in_sync(replicated_clusters, federation, unique_name):
    clusters = {c.name: c for c in replicated_clusters}
    segments = physical_segments(federation, unique_name)
    assert {cluster for cluster, _, _ in segments} == {"r1", "r2"}
    for cluster, topic in {(c, t) for c, t, _ in segments} | {("r1", shadow_topic(unique_name))}:
        bootstrap = clusters[cluster].bootstrap
        for p in partitions_of(bootstrap, topic).values():
            assert sorted(p.replicas) == [1, 2, 3], (cluster, topic, p.id, p.replicas)
        assert min_insync(bootstrap, topic) == "2", (cluster, topic)


@pytest.mark.timeout(400)
def test_a_killed_leader_loses_no_acked_record_and_rejoins_when_restarted(replicated_clusters, federation,
                                                                          unique_name):
    _, r2 = replicated_clusters
    fed = federation
    fed.start_proxies(1)
    _, topic, partition = next(s for s in physical_segments(fed, unique_name) if s[0] == "r2")
    acked: dict[int, dict[int, bytes]] = {p: {} for p in range(4)}
    failed = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.partition()][msg.offset()] = msg.value()
        else:
            failed.append((msg.partition(), err))

    producer = Producer({"bootstrap.servers": fed.bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "message.timeout.ms": 120000, "log_level": 0})

    def produce(label: str, n: int) -> None:
        for i in range(n):
            producer.produce(unique_name, value=f"{label}-{i}".encode(), partition=i % 4, on_delivery=on_delivery)
            producer.poll(0)
            time.sleep(0.005)  # spread over a while, so the kill lands between batches

    produce("before", 200)
    assert producer.flush(60) == 0
    victim = r2.leader_of(topic, partition)
    victim.kill()
    try:
        assert not victim.running
        produce("during", 400)
        assert producer.flush(150) == 0
        assert failed == []
        assert sum(len(v) for v in acked.values()) == 600
        new_leader = r2.leader_of(topic, partition)
        assert new_leader is not victim and new_leader.running
        assert read_back(fed.bootstrap, unique_name) == acked
    finally:
        victim.start()
        r2.wait_ready()
    # back in the in-sync set of the partition it led: it caught up from its own log dir
    wait_for(lambda: victim.node_id in partitions_of(r2.bootstrap, topic)[partition].isrs, 60,
             what=f"broker {victim.node_id} back in sync")


def read_back(bootstrap: str, topic: str) -> dict[int, dict[int, bytes]]:
    """Every record of the logical topic's 4 partitions, by (partition, offset), read through the proxy."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "log_level": 0})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(4)}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    seen: dict[int, dict[int, bytes]] = {p: {} for p in range(4)}
    deadline = time.time() + 60
    try:
        while time.time() < deadline and any(len(seen[p]) < ends[p] for p in range(4)):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen[msg.partition()][msg.offset()] = msg.value()
    finally:
        consumer.close()
    return seen
