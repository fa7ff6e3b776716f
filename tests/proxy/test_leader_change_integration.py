"""A partition leader dies under an idempotent producer writing through the proxy (issue #12, hole 5), on a
real three-broker cluster: every acked record is on the surviving replicas, once, in the order sent."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from three_brokers import started_three_brokers

from .support import ProxyProcess, read_partition, split_view

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6


def _leaders(admin: AdminClient, topic: str) -> dict[int, int]:
    meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    found = {} if meta is None else {p: m.leader for p, m in meta.partitions.items()}
    return {p: found.get(p, -1) for p in range(PARTITIONS)}  # a topic created a moment ago: maybe no partitions


@pytest.mark.timeout(600)
def test_a_dead_partition_leader_loses_nothing_and_keeps_the_order(tmp_path, unique_name):
    with started_three_brokers(tmp_path, **{"broker.session.timeout.ms": "6000"}) as nodes:
        bootstrap = ",".join(n.bootstrap for n in nodes)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("phys", PARTITIONS, 3, config={"min.insync.replicas": "2"})])["phys"].result(60)
        deadline = time.monotonic() + 60
        while min(_leaders(admin, "phys").values()) < 0:
            assert time.monotonic() < deadline, "no leaders"
            time.sleep(0.2)
        view = split_view({"trio": bootstrap}, unique_name, [("trio", "phys", p) for p in range(PARTITIONS)])
        with ProxyProcess(tmp_path, view) as proxy:
            acked: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
            failed = []

            def on_delivery(err, msg):
                if err is None:
                    acked[msg.partition()].append((msg.offset(), msg.value()))
                else:
                    failed.append((msg.partition(), err))

            producer = Producer({"bootstrap.servers": proxy.bootstrap, "acks": "all", "enable.idempotence": True,
                                 "linger.ms": 5, "message.timeout.ms": 240000, "retry.backoff.max.ms": 500})
            sent = {p: [] for p in range(PARTITIONS)}

            def send(label: str, n: int) -> None:
                for i in range(n):
                    value = b"%s-%d" % (label.encode(), i)
                    sent[i % PARTITIONS].append(value)
                    producer.produce(unique_name, value=value, partition=i % PARTITIONS, on_delivery=on_delivery)

            send("before", 300)
            assert producer.flush(60) == 0
            leaders = _leaders(admin, "phys")
            victim = next(n for n in nodes[1:] if n.node_id in leaders.values())  # node 1 is the controller
            moved = [p for p, leader in leaders.items() if leader == victim.node_id]
            victim.kill()
            send("during", 300)
            assert producer.flush(180) == 0
            assert failed == []
            after = _leaders(admin, "phys")
            assert all(after[p] not in (victim.node_id, -1) for p in moved), after
            survivor = nodes[0].bootstrap
            for p in range(PARTITIONS):
                on_disk = read_partition(survivor, "phys", p)
                values = [v for _, _, v in on_disk]
                assert len(values) == len(set(values)), f"partition {p}: a record written twice"
                assert values == sent[p], f"partition {p}: records lost or out of order"
                offsets = {off: v for off, _, v in on_disk}
                assert all(offsets.get(off) == v for off, v in acked[p]), f"partition {p}: an ack points elsewhere"
            assert proxy.alive()
