"""Bad input against a real proxy: answered with a Kafka error or the connection closed, never a crash,
a hang, or a write; other connections keep being served (docs/DESIGN.md §4.8)."""

from __future__ import annotations

import datetime
import random
import socket
import struct
import time

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from confluent_kafka import Producer
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec

from .support import ProxyProcess, create_topic, read_partition, split_view

pytestmark = pytest.mark.integration


def connect(proxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_frame(s: socket.socket) -> bytes | None:
    """Next response frame, or None when the proxy closed the connection."""
    head = _recv_exact(s, 4)
    if head is None:
        return None
    return _recv_exact(s, struct.unpack(">i", head)[0])


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def api_versions_ok(proxy) -> bool:
    with connect(proxy) as s:
        s.sendall(codec.encode_request(ApiVersionsRequest(client_software_name="t", client_software_version="1"), 1))
        frame = recv_frame(s)
    _, body = codec.decode_response(codec.response_type(18, 3), frame)
    return body.error_code == ErrorCode.none and any(k.api_key == 0 for k in body.api_keys)


def produce_request(topic: str, records: bytes) -> ProduceRequest:
    return ProduceRequest(transactional_id=None, acks=-1, timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
                          topic_data=(TopicProduceData(name=topic, partition_data=(
                              PartitionProduceData(index=0, records=records),)),))


@pytest.fixture
def proxy(kafka_clusters, unique_name, tmp_path):
    c1 = kafka_clusters[0]
    create_topic(c1.bootstrap, unique_name, 1)
    view = split_view({"c1": c1.bootstrap}, unique_name, [("c1", unique_name, 0)])
    with ProxyProcess(tmp_path, view) as px:
        yield px, unique_name, c1


def test_oversize_negative_and_truncated_frames_close_only_that_connection(proxy):
    px, _, _ = proxy
    keeper = connect(px)  # an idle good connection that must survive everything below
    for prefix in (struct.pack(">i", 0x7FFFFFFF), struct.pack(">i", -5)):
        with connect(px) as s:
            s.sendall(prefix)
            assert recv_frame(s) is None
    with connect(px) as s:  # claims 100 bytes, sends 10, then half-closes
        s.sendall(struct.pack(">i", 100) + b"x" * 10)
        s.shutdown(socket.SHUT_WR)
        assert recv_frame(s) is None
    keeper.sendall(codec.encode_request(ApiVersionsRequest(client_software_name="t", client_software_version="1"), 7))
    assert codec.response_correlation_id(recv_frame(keeper)) == 7
    keeper.close()
    assert "frame size 2147483647 outside" in px.output()  # the log line
    assert px.alive()


def test_unknown_keys_and_versions(proxy):
    px, _, _ = proxy
    with connect(px) as s:  # ApiVersions at an unknown version: answered as v0 with UNSUPPORTED_VERSION
        s.sendall(struct.pack(">i", 10) + struct.pack(">hhih", 18, 99, 3, -1))
        _, body = codec.decode_response(codec.response_type(18, 0), recv_frame(s))
        assert body.error_code == ErrorCode.unsupported_version
        assert body.api_keys  # with the versions we do support, as Kafka does
    with connect(px) as s:  # a known request above our cap (Metadata v13): UNSUPPORTED_VERSION answer
        s.sendall(struct.pack(">i", 10) + struct.pack(">hhih", 3, 13, 4, -1))
        frame = recv_frame(s)
        assert codec.response_correlation_id(frame) == 4
        _, body = codec.decode_response(codec.response_type(3, 13), frame)
        assert body.error_code == ErrorCode.unsupported_version
    for api_key, version in ((9999, 0), (0, 1), (-3, 0)):  # no schema at all: closed
        with connect(px) as s:
            s.sendall(struct.pack(">i", 10) + struct.pack(">hhih", api_key, version, 5, -1))
            assert recv_frame(s) is None
    assert api_versions_ok(px)


def test_produce_to_unknown_topic_and_corrupt_records_writes_nothing(proxy):
    px, topic, c1 = proxy
    with connect(px) as s:
        s.sendall(codec.encode_request(produce_request("no-such-topic", b""), 11))
        _, body = codec.decode_response(codec.response_type(0, 9), recv_frame(s))
        assert body.responses[0].partition_responses[0].error_code == ErrorCode.unknown_topic_or_partition
        s.sendall(codec.encode_request(produce_request(topic, b"\x00" * 30), 12))  # truncated batch header
        _, body = codec.decode_response(codec.response_type(0, 9), recv_frame(s))
        assert body.responses[0].partition_responses[0].error_code == ErrorCode.corrupt_message
    assert read_partition(c1.bootstrap, topic, 0) == []


def record_batch(value: bytes) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=None, key=None, value=value, headers=[])
    return bytes(b.build())


def test_bad_batches_are_answered_and_the_connection_keeps_working(proxy):
    """A truncated second batch used to raise out of the handler (the connection dropped, not answered); the
    proxy answers it CORRUPT_MESSAGE. A plain batch with a flipped record byte passes every check but its CRC,
    which is its broker's (docs/DESIGN.md §5.4, "The batch's CRC"): Kafka answers CORRUPT_MESSAGE through the
    proxy. Nothing of either is written; the same connection then writes a good batch."""
    px, topic, c1 = proxy
    flipped = bytearray(record_batch(b"flipped"))
    flipped[-3] ^= 0x01
    with connect(px) as s:
        for corr, records in ((21, record_batch(b"first") + record_batch(b"second")[:30]), (22, bytes(flipped))):
            s.sendall(codec.encode_request(produce_request(topic, records), corr))
            frame = recv_frame(s)
            assert frame is not None and codec.response_correlation_id(frame) == corr
            _, body = codec.decode_response(codec.response_type(0, 9), frame)
            answer = body.responses[0].partition_responses[0]
            assert answer.error_code == ErrorCode.corrupt_message
            by_proxy = answer.error_message is not None and "CRC-32C mismatch" in answer.error_message
            assert not by_proxy if corr == 22 else answer.error_message  # Kafka's answer; the proxy's says why
        s.sendall(codec.encode_request(produce_request(topic, record_batch(b"good")), 23))
        _, body = codec.decode_response(codec.response_type(0, 9), recv_frame(s))
        assert body.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert [v for _, _, v in read_partition(c1.bootstrap, topic, 0)] == [b"good"]


def test_fuzz_loop_then_a_real_producer_still_works(proxy):
    px, topic, c1 = proxy
    rng = random.Random(5)
    keys = [0, 1, 3, 18, 22, 32, 60, 9, 1000]
    deadline = time.monotonic() + 20
    answered = closed = 0
    for i in range(300):
        if time.monotonic() > deadline:
            break
        header = struct.pack(">hhi", rng.choice(keys), rng.randrange(-1, 15), i)
        body = rng.randbytes(rng.randrange(0, 200))
        if rng.random() < 0.3:  # a valid-looking prefix of a real request
            body = codec.encode_request(produce_request(topic, rng.randbytes(80)), i)[10:][: rng.randrange(0, 120)]
        with connect(px) as s:
            s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
            s.shutdown(socket.SHUT_WR)
            frame = recv_frame(s)
            if frame is None:
                closed += 1
            else:
                assert codec.response_correlation_id(frame) == i
                answered += 1
    assert answered + closed > 50
    assert px.alive(), px.output()[-3000:]
    assert api_versions_ok(px)
    producer = Producer({"bootstrap.servers": px.bootstrap, "acks": "all"})
    producer.produce(topic, b"after-fuzz")
    assert producer.flush(30) == 0
    assert [v for _, _, v in read_partition(c1.bootstrap, topic, 0)] == [b"after-fuzz"]
