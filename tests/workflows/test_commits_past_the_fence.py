"""A real client's group offset commit past the proxy's fence (docs/DESIGN.md §4.9 F2, §10.1): refused with
NOT_COORDINATOR, nothing written at the coordination cluster, and taken again once a controller renews the proxy.

Past its fence the controller no longer waits for the proxy's acks, so a coordination move may have switched the
groups to another cluster without it: a commit it still sent to the one its view names would be lost. The old
code committed it there."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from .support import Federation, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a controller and a proxy, stopped and started


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "socket.timeout.ms": 10_000})


def _commit(consumer: Consumer, topic: str, offset: int) -> KafkaError | None:
    """The commit's error (None: committed)."""
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    except KafkaException as e:
        print(f"commit {offset}:", e)
        return e.args[0]
    return None


def _committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The group's committed offset of partition 0 (None: not read this time, e.g. the coordinator being looked up)."""
    reader = _consumer(bootstrap, group)
    try:
        (tp,) = reader.committed([TopicPartition(topic, 0)], timeout=30)
        return None if tp.error is not None else tp.offset
    except KafkaException as e:
        print("committed():", e)
        return None
    finally:
        reader.close()


@pytest.mark.timeout(400)
def test_a_commit_past_the_fence_is_refused_and_lands_once_the_proxy_is_renewed(kafka_clusters, tmp_path,
                                                                              unique_name):
    from fedkafka.kafka.cluster import free_port

    c1, c2 = kafka_clusters[:2]
    admin_port = free_port()
    fed = Federation(tmp_path, lease_ms=2000, fence_ms=6000)
    consumer = None
    try:
        fed.start_controller()
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 2, coordination="c1")
        fed.start_proxies(1, extra=("--admin-listen", f"127.0.0.1:{admin_port}"))

        def lease_valid():
            return fed.api.get(f"http://127.0.0.1:{admin_port}/readyz").json()["lease_valid"]

        consumer = _consumer(fed.bootstrap, unique_name)
        # within the fence: committed (a shadow topic just created may have no leader yet: asked again meanwhile)
        wait_for(lambda: _commit(consumer, unique_name, 3) is None, 60, what="a commit within the fence")
        fed.kill_controller()
        wait_for(lambda: lease_valid() is False, 60, what="the proxy's fence run out")
        refused = _commit(consumer, unique_name, 7)
        assert refused is not None, "committed past the fence, where the groups may no longer be"
        assert refused.code() == KafkaError.NOT_COORDINATOR, refused
        fed.start_controller()
        wait_for(lease_valid, 120, what="the proxy registered again")
        # the refused commit wrote nothing
        assert wait_for(lambda: _committed(fed.bootstrap, unique_name, unique_name), 60, what="offsets read") == 3
        # the client's next commit (librdkafka looks the coordinator up again after NOT_COORDINATOR) lands
        wait_for(lambda: _commit(consumer, unique_name, 9) is None, 60, what="a commit taken again")
        assert wait_for(lambda: _committed(fed.bootstrap, unique_name, unique_name), 60, what="offsets read") == 9
    finally:
        if consumer is not None:
            consumer.close()
        fed.stop()
