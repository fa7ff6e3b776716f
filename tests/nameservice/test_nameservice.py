"""Name service: client.id routing and the byte relay, against a real broker and real clients."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading
import time

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from kio.schema.metadata.v12.request import MetadataRequest
from kio.serial import entity_writer
from kio.static.primitive import i16, i32

from fedkafka.demo import ensure_topic
from fedkafka.kafka.cluster import free_port
from fedkafka.nameservice.app import serve, split_hostport
from fedkafka.nameservice.resolver import ProxyAddress, StaticResolver
from fedkafka.nameservice.server import client_id_of, order_candidates
from fedkafka.protocol.framing import FrameError


def _header_frame(client_id: str | None) -> bytes:
    """A real flexible (v2) request header written by kio, as a Java client would send it."""
    header_type = MetadataRequest.__header_schema__
    buf = io.BytesIO()
    entity_writer(header_type)(buf, header_type(request_api_key=i16(3), request_api_version=i16(12),
                                                correlation_id=i32(7), client_id=client_id))
    return buf.getvalue() + b"\x00" * 8


@pytest.mark.parametrize("client_id", ["producer-1", "", "ünïcode-id"])
def test_client_id_is_read_from_a_real_request_header(client_id):
    assert client_id_of(_header_frame(client_id)) == client_id


def test_null_client_id_and_truncated_headers():
    assert client_id_of(_header_frame(None)) == ""
    with pytest.raises(FrameError):
        client_id_of(b"\x00\x03\x00")
    with pytest.raises(FrameError, match="past the end"):
        client_id_of(struct.pack(">hhih", 3, 12, 1, 50) + b"abc")


def test_candidate_order_is_stable_per_client_and_spreads_clients():
    proxies = tuple(ProxyAddress(i, "127.0.0.1", 9000 + i) for i in range(4))
    assert order_candidates("a", proxies) == order_candidates("a", proxies)
    firsts = {order_candidates(f"client-{i}", proxies)[0].node_id for i in range(50)}
    assert len(firsts) > 1


def test_split_hostport_rejects_garbage():
    assert split_hostport("127.0.0.1:9092") == ("127.0.0.1", 9092)
    for bad in ("9092", "host:", ":1", "host:port"):
        with pytest.raises(ValueError):
            split_hostport(bad)


@pytest.fixture
def nameservice_for(request):
    """Run a name service in a thread, relaying to the given addresses; yields (kafka, http) addresses."""
    started = []

    def _start(targets: list[tuple[str, int]]):
        resolver = StaticResolver([ProxyAddress(i, h, p) for i, (h, p) in enumerate(targets)], pool="test-pool")
        kafka, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        thread = threading.Thread(target=loop.run_until_complete, args=(serve(resolver, kafka, http, stop),),
                                  daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://{http}/healthz", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        started.append((loop, thread, stop))
        return kafka, http

    yield _start
    for loop, thread, stop in started:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        assert not thread.is_alive(), "the name service did not stop"
        loop.close()


@pytest.mark.integration
def test_clients_bootstrapped_at_the_name_service_produce_and_consume(kafka_clusters, unique_name, nameservice_for):
    broker = kafka_clusters[2]
    kafka, http = nameservice_for([split_hostport(broker.bootstrap)])
    assert httpx.get(f"http://{http}/v1/proxies", params={"client_id": "x"}).json() == {
        "pool": "test-pool", "proxies": [{"node_id": 0, "host": "127.0.0.1", "port": broker.port, "role": "both",
                                          "listeners": [["PLAINTEXT", "127.0.0.1", broker.port]]}]}
    ensure_topic(broker.bootstrap, unique_name, partitions=2)
    producer = Producer({"bootstrap.servers": kafka, "client.id": "ns-producer"})
    for i in range(100):
        producer.produce(unique_name, key=str(i).encode(), value=b"v")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": unique_name, "auto.offset.reset": "earliest"})
    consumer.subscribe([unique_name])
    got = 0
    deadline = time.monotonic() + 30
    while got < 100 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        got += msg is not None and not msg.error()
    consumer.close()
    assert got == 100


@pytest.mark.integration
def test_bad_first_frames_close_only_that_connection(kafka_clusters, nameservice_for):
    broker = kafka_clusters[2]
    kafka, _http = nameservice_for([split_hostport(broker.bootstrap)])
    host, port = split_hostport(kafka)
    for garbage in (struct.pack(">i", 2_000_000_000), struct.pack(">i", 5) + b"\x00\x03", struct.pack(">i", -1),
                    struct.pack(">i", 10) + struct.pack(">hhih", 3, 12, 1, 500)):
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""  # closed without an answer
    # and the service still relays a real client afterwards
    md = Producer({"bootstrap.servers": kafka}).list_topics(timeout=10)
    assert list(md.brokers) == [1]


@pytest.mark.integration
def test_dead_pool_member_is_skipped(kafka_clusters, nameservice_for):
    broker = kafka_clusters[2]
    dead = ("127.0.0.1", free_port())
    kafka, _http = nameservice_for([dead, split_hostport(broker.bootstrap)])
    for i in range(5):  # whichever order the client hashes to, it reaches the live one
        md = Producer({"bootstrap.servers": kafka, "client.id": f"c{i}"}).list_topics(timeout=10)
        assert md.brokers
