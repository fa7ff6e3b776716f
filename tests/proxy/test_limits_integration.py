"""Limits against a real Kafka broker and real clients: a client's long Fetch max_wait is clamped and never
marks the cluster unreachable for other clients; the default frame cap passes a default client's largest
produce."""

from __future__ import annotations

import datetime
import socket
import struct
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.errors import ErrorCode

from fedkafka.kafka.cluster import start_clusters
from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.view.model import ProxyRole

from .support import ProxyProcess, create_topic, split_view

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    (c1,) = start_clusters(["c1"], tmp_path_factory.mktemp("limits-kafka"))
    yield c1
    c1.stop()


@pytest.fixture
def proxy(cluster, tmp_path):
    topic = f"limits-{uuid.uuid4().hex[:8]}"
    create_topic(cluster.bootstrap, topic, 2)
    view = split_view({"c1": cluster.bootstrap}, topic, [("c1", topic, 0), ("c1", topic, 1)])
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as px:
        yield px, topic


def long_poll_fetch(port: int, topic: str, max_wait_ms: int) -> tuple[float, ErrorCode]:
    """One raw Fetch v12 at the log end with min_bytes 1: (seconds until the answer, the partition's error)."""
    request = build(codec.request_type(1, 12), {
        "replica_id": -1, "max_wait": datetime.timedelta(milliseconds=max_wait_ms), "min_bytes": 1,
        "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1, "rack_id": "",
        "forgotten_topics_data": [], "topics": [{"topic": topic, "partitions": [
            {"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1,
             "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}]})
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        started = time.monotonic()
        s.sendall(codec.encode_request(request, 1))
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        frame = s.recv(size, socket.MSG_WAITALL)
    _, body = codec.decode_response(codec.response_type(1, 12), frame)
    return time.monotonic() - started, body.responses[0].partitions[0].error_code


@pytest.mark.timeout(300)
def test_a_fetch_asking_to_wait_longer_than_the_upstream_timeout_is_clamped_and_harms_no_one(proxy):
    """A client's max_wait of 60 s used to be forwarded as is; the proxy's 40 s upstream timeout then fired,
    answered NOT_LEADER_OR_FOLLOWER and marked the whole cluster unreachable for every client."""
    px, topic = proxy
    result: list = []
    poller = threading.Thread(target=lambda: result.append(long_poll_fetch(px.port, topic, 60_000)))
    poller.start()
    producer = Producer({"bootstrap.servers": px.bootstrap, "linger.ms": 0})
    errors: list = []
    while poller.is_alive():  # another client keeps producing (to the other partition) during the long poll
        producer.produce(topic, b"v", partition=1, on_delivery=lambda err, _m: err and errors.append(err))
        producer.flush(30)
        time.sleep(1.0)
    poller.join()
    (elapsed, error), = result
    assert error == ErrorCode.none
    assert errors == []
    assert "unreachable" not in px.output()
    # it answered no later than the clamp allows (30 s + the broker's own time), well before the client's 60 s
    assert elapsed < 59


@pytest.mark.timeout(300)
def test_a_default_clients_largest_produce_passes_the_default_frame_cap(proxy):
    px, topic = proxy
    value = b"x" * 990_000  # librdkafka's message.max.bytes is 1,000,000 including the batch overhead
    producer = Producer({"bootstrap.servers": px.bootstrap})
    errors: list = []
    producer.produce(topic, value, partition=0, on_delivery=lambda err, _m: err and errors.append(err))
    assert producer.flush(60) == 0 and errors == []
    consumer = Consumer({"bootstrap.servers": px.bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + 60
    msg = None
    while time.monotonic() < deadline and (msg is None or msg.error()):
        msg = consumer.poll(1.0)
    consumer.close()
    assert msg is not None and not msg.error() and msg.value() == value
