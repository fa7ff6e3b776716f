"""Consume-path test support: federations over real clusters with coordination cluster and shadow topics."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from proxy.support import create_topic

from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View, shadow_topic


def with_coordination(view: View, cluster: str, bootstrap: str) -> View:
    """`view` with `cluster` as coordination cluster; creates the shadow topics of its logical topics there."""
    for name, topic in view.topics.items():
        create_topic(bootstrap, shadow_topic(name), topic.partition_count)
    return dataclasses.replace(view, coordination_cluster=cluster)


def identity_and_moved_view(c1, c2, topic: str, skipped: int, base: int, epoch: int) -> View:
    """p0 an identity segment on c1; p1 moved to c2 from physical `skipped` (the records before it, written
    here, belong to nobody) at logical `base`, leader epoch `epoch`; c1 coordinates."""
    physical = f"phys-{topic}"
    create_topic(c1.bootstrap, physical, 1)
    create_topic(c2.bootstrap, physical, 1)
    produce_values(c2.bootstrap, physical, ["junk"] * skipped, partition=0)
    chains = (PartitionChain(segments=(Segment("c1", physical, 0, 0, None, 0),)),
              PartitionChain(segments=(Segment("c2", physical, 0, skipped, None, base),), leader_epoch=epoch))
    view = View(version=1, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2)},
                topics={topic: LogicalTopic(topic, uuid.uuid4().hex, chains)})
    return with_coordination(view, "c1", c1.bootstrap)


def produce_values(bootstrap: str, topic: str, values: list[str], partition: int | None = None) -> list:
    """Produce `values` (keyed by index), returning (partition, offset, value) of each ack."""
    acks = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})

    def on_delivery(err, msg):
        assert err is None, err
        acks.append((msg.partition(), msg.offset(), msg.value().decode()))

    for i, v in enumerate(values):
        kwargs = {} if partition is None else {"partition": partition}
        producer.produce(topic, key=f"k{i}".encode(), value=v.encode(), on_delivery=on_delivery, **kwargs)
        producer.poll(0)
    assert producer.flush(60) == 0
    return acks


def consumer(bootstrap: str, group: str | None = None, **conf) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group or f"g-{uuid.uuid4().hex[:6]}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000, **conf})


class GroupMember(threading.Thread):
    """A confluent-kafka group member polling in a thread; commits synchronously after each message."""

    def __init__(self, bootstrap: str, topic: str, group: str, **conf):
        super().__init__(daemon=True)
        self.consumer = consumer(bootstrap, group, **conf)
        self.topic = topic
        self.records: list[tuple[int, int, str]] = []
        self.errors: list[str] = []
        self.assignments: list[list[int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        def on_assign(_c, parts):
            self.assignments.append(sorted(p.partition for p in parts))

        self.consumer.subscribe([self.topic], on_assign=on_assign)
        try:
            while not self.stopping.is_set():
                msg = self.consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    self.errors.append(str(msg.error()))
                    continue
                self.records.append((msg.partition(), msg.offset(), msg.value().decode()))
                self.consumer.commit(message=msg, asynchronous=False)
        finally:
            self.consumer.close()  # LeaveGroup

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class CountingAuthorizer:
    """Allows everything and keeps the resource names it was asked about, in order."""

    def __init__(self):
        self.asked: list[str] = []

    def allowed(self, principal, host, operation, resource_type, name) -> bool:
        self.asked.append(name)
        return True
