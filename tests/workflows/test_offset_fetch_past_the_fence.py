"""A consumer assigned partitions while its coordinating proxy is past its fence consumes them once the proxy is
renewed, without a rebalance (docs/DESIGN.md §4.9 F2).

Past its fence the proxy refuses committed offsets; an OffsetFetch waits for the renewal up to 3 s
(`groups.FENCE_RENEWAL_ROUNDS`), then is refused. The old code refused it NOT_COORDINATOR, which librdkafka does
not retry for its assignment's OffsetFetch (rd_kafka_handle_OffsetFetch: REFRESH, no RETRY;
rd_kafka_assignment_apply_offsets does nothing for a request-level error): the partitions stayed assigned and were
never fetched, for as long as the group did not rebalance (a Stable group: forever), the proxy renewed or not."""

from __future__ import annotations

import re

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from .support import Federation, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a Kafka cluster, a controller stopped and started

PARTITIONS = 3


def _offset_fetch_errors(admin_port: int) -> float:
    """How many OffsetFetch answers (group or partition) the proxy gave an error code, whatever the code."""
    text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=10).text
    return sum(float(m[1]) for m in re.finditer(
        r'^fedkafka_proxy_errors_total\{api="OffsetFetch",error="[a-z_]+"\} (\S+)$', text, re.M))


def _produce_one_to_each(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for partition in range(PARTITIONS):
        producer.produce(topic, value, partition=partition)
    assert producer.flush(60) == 0, "records not acked"


@pytest.mark.timeout(400)
def test_partitions_assigned_past_the_fence_are_consumed_once_it_is_renewed_without_a_rebalance(
        make_clusters, tmp_path, unique_name):
    from fedkafka.kafka.cluster import free_port

    (cluster,) = make_clusters("f1")
    admin_port = free_port()
    fed = Federation(tmp_path, lease_ms=2000)  # the fence runs out 2 s after the controller is gone
    consumer = None
    try:
        fed.start_controller()
        fed.setup({"f1": cluster.bootstrap}, unique_name, PARTITIONS, coordination="f1")
        fed.start_proxies(1, extra=("--admin-listen", f"127.0.0.1:{admin_port}"))

        def lease_valid():
            return fed.api.get(f"http://127.0.0.1:{admin_port}/readyz").json()["lease_valid"]

        # within the fence: records on every partition, and the coordination cluster's __consumer_offsets made (by
        # another group's commit), so that past the fence nothing but the fence holds the group up
        _produce_one_to_each(fed.bootstrap, unique_name, b"before")
        warm = Consumer({"bootstrap.servers": fed.bootstrap, "group.id": f"{unique_name}-warm"})
        try:
            def committed() -> bool:
                try:
                    warm.commit(offsets=[TopicPartition(unique_name, 0, 0)], asynchronous=False)
                    return True
                except KafkaException as e:  # the coordinator being created: asked again
                    print("warm-up commit:", e)
                    return False
            wait_for(committed, 60, what="a commit within the fence")
        finally:
            warm.close()

        fed.kill_controller()
        wait_for(lambda: lease_valid() is False, 60, what="the proxy's fence run out")
        refused_before = _offset_fetch_errors(admin_port)
        assignments: list[list[int]] = []
        revocations: list[list[int]] = []
        consumer = Consumer({"bootstrap.servers": fed.bootstrap, "group.id": unique_name,
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([unique_name],
                           on_assign=lambda _c, ps: assignments.append(sorted(p.partition for p in ps)),
                           on_revoke=lambda _c, ps: revocations.append(sorted(p.partition for p in ps)))
        seen: dict[int, list[bytes]] = {}

        def poll_until(done) -> bool:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.setdefault(msg.partition(), []).append(msg.value())
            elif msg is not None:
                print("consumer:", msg.error())
            return done()

        # the assignment's OffsetFetch came past the fence and was answered with an error once its wait for the
        # renewal (3 s) was over: the fence stayed out longer than the proxy waits
        wait_for(lambda: poll_until(lambda: _offset_fetch_errors(admin_port) > refused_before), 120,
                 what="the assignment's OffsetFetch refused past the fence", interval=0)
        assert assignments == [list(range(PARTITIONS))] and seen == {}, (assignments, seen)

        fed.start_controller()
        wait_for(lambda: poll_until(lease_valid), 180, what="the proxy registered again", interval=0)
        _produce_one_to_each(fed.bootstrap, unique_name, b"after")
        try:
            wait_for(lambda: poll_until(lambda: all(b"after" in seen.get(p, ()) for p in range(PARTITIONS))), 90,
                     what="records produced after the renewal consumed on every partition", interval=0)
        except AssertionError as e:
            raise AssertionError(f"{e}: consumed {seen} (assigned {assignments}): partitions stalled") from None
        assert assignments == [list(range(PARTITIONS))] and revocations == [], "the group rebalanced"
        assert all(seen[p] == [b"before", b"after"] for p in range(PARTITIONS)), seen  # from its start: no commit
    finally:
        if consumer is not None:
            consumer.close()
        fed.stop()
