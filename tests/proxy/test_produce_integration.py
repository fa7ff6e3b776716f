"""Real producers through a real proxy into an 8-partition logical topic over two real clusters.

Layout (the article's picture): logical p0-3 -> c1/p0-3, p4-7 -> c2/p0-3, identity segments.
Every acked record is read back directly from the physical cluster and partition the view names.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import time

import pytest
from confluent_kafka import Producer

from fedkafka.kafka.tools import run_tool

from .support import ProxyProcess, create_topic, read_partition, split_view

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(kafka_clusters, unique_name, tmp_path):
    """(proxy, logical topic, {logical p: (bootstrap, physical topic, physical p)})."""
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 4)
    create_topic(c2.bootstrap, physical, 4)
    layout = [("c1", physical, p) for p in range(4)] + [("c2", physical, p) for p in range(4)]
    view = split_view({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, layout)
    where = {p: ({"c1": c1.bootstrap, "c2": c2.bootstrap}[c], t, pp) for p, (c, t, pp) in enumerate(layout)}
    with ProxyProcess(tmp_path, view) as proxy:
        yield proxy, unique_name, where
        assert proxy.alive(), proxy.output()[-3000:]


def produce(bootstrap: str, topic: str, n: int, **conf) -> list:
    """Send n keyed records; returns the delivery reports (err, partition, offset, key, value)."""
    reports = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})

    def on_delivery(err, msg):
        reports.append((err, msg.partition(), msg.offset(), msg.key(), msg.value()))

    for i in range(n):
        producer.produce(topic, key=f"key-{i % 37}".encode(), value=f"value-{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    return reports


def assert_on_physical(where, reports) -> None:
    """Each acked record sits at its logical offset (identity) on the physical partition the view names."""
    by_partition = collections.defaultdict(list)
    for err, p, offset, key, value in reports:
        assert err is None, err
        by_partition[p].append((offset, key, value))
    assert len(by_partition) > 1
    for p, records in by_partition.items():
        bootstrap, topic, pp = where[p]
        found = {off: (k, v) for off, k, v in read_partition(bootstrap, topic, pp)}
        for offset, key, value in records:
            assert found.get(offset) == (key, value), f"logical p{p} offset {offset} not on {bootstrap}/{topic}/{pp}"


def test_keys_land_on_the_partition_the_client_chose(federation):
    proxy, topic, where = federation
    reports = produce(proxy.bootstrap, topic, 300, acks="all", **{"enable.idempotence": True})
    assert_on_physical(where, reports)
    partition_of_key = {}
    for _, p, _, key, _ in reports:  # the client's partitioner (murmur2 over P=8) is stable per key
        assert partition_of_key.setdefault(key, p) == p
    assert len(set(partition_of_key.values())) == 8  # 37 keys spread over all 8 logical partitions


@pytest.mark.parametrize(("compression", "acks", "idempotence"), [
    ("none", "1", False), ("gzip", "all", True), ("lz4", "1", False), ("zstd", "all", False),
    ("snappy", "all", True), ("gzip", "1", False), ("none", "all", True),
])
def test_confluent_producer_acks_compression_idempotence(federation, compression, acks, idempotence):
    proxy, topic, where = federation
    reports = produce(proxy.bootstrap, topic, 400, acks=acks, **{"compression.type": compression,
                                                                 "enable.idempotence": idempotence})
    assert len(reports) == 400
    assert_on_physical(where, reports)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_acks_zero_reaches_the_right_partitions(federation, compression):
    proxy, topic, where = federation
    n = 300
    reports = produce(proxy.bootstrap, topic, n, acks="0", **{"compression.type": compression})
    expected = collections.Counter((p, v) for _, p, _, _, v in reports)
    deadline = time.time() + 20
    while True:  # acks=0: flush() returns once sent, the brokers append a little later
        found = collections.Counter()
        for p, (bootstrap, ptopic, pp) in where.items():
            for _, _, value in read_partition(bootstrap, ptopic, pp):
                found[(p, value)] += 1
        if found == expected or time.time() > deadline:
            break
        time.sleep(0.5)
    assert found == expected  # nothing lost, nothing on a wrong partition, no duplicates


def test_non_identity_segment_translates_offsets(kafka_clusters, unique_name, tmp_path):
    """Logical p0 -> c1 with logical_base 1000, phys_start 0: produce answers carry logical offsets."""
    c1 = kafka_clusters[0]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 2)
    view = split_view({"c1": c1.bootstrap}, unique_name, [("c1", physical, 1, 0, 1000), ("c1", physical, 0)])
    with ProxyProcess(tmp_path, view) as proxy:
        producer = Producer({"bootstrap.servers": proxy.bootstrap, "acks": "all"})
        reports = []
        for i in range(10):
            producer.produce(unique_name, value=b"v%d" % i, partition=0,
                             on_delivery=lambda err, msg: reports.append((err, msg.offset(), msg.value())))
        assert producer.flush(30) == 0
    assert [e for e, _, _ in reports] == [None] * 10
    assert [o for _, o, _ in reports] == list(range(1000, 1010))
    direct = read_partition(c1.bootstrap, physical, 1)
    assert [(o + 1000, v) for o, _, v in direct] == [(o, v) for _, o, v in reports]
    assert read_partition(c1.bootstrap, physical, 0) == []


def test_java_perf_and_console_producer(federation):
    proxy, topic, where = federation
    out = run_tool("kafka-producer-perf-test", "--topic", topic, "--num-records", "2000", "--record-size", "512",
                   "--throughput", "-1", "--producer-props", f"bootstrap.servers={proxy.bootstrap}", "acks=all",
                   timeout=180)
    assert "2000 records sent" in out.stdout, out.stdout + out.stderr
    lines = [f"console-{i}" for i in range(50)]
    run_tool("kafka-console-producer", "--bootstrap-server", proxy.bootstrap, "--topic", topic,
             input="\n".join(lines) + "\n", timeout=120)
    values = set()
    total = 0
    for bootstrap, ptopic, pp in where.values():
        records = read_partition(bootstrap, ptopic, pp)
        total += len(records)
        values.update(v for _, _, v in records)
    assert total == 2050
    assert {line.encode() for line in lines} <= values


@pytest.mark.timeout(180)
def test_aiokafka_producer(federation):
    """aiokafka, idempotent, acks=all."""
    from aiokafka import AIOKafkaProducer

    proxy, topic, where = federation

    async def send_all():
        producer = AIOKafkaProducer(bootstrap_servers=proxy.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            return [await producer.send_and_wait(topic, key=b"k%d" % i, value=b"aio-%d" % i) for i in range(100)]
        finally:
            await producer.stop()

    metas = asyncio.run(send_all())
    reports = [(None, m.partition, m.offset, b"k%d" % i, b"aio-%d" % i) for i, m in enumerate(metas)]
    assert_on_physical(where, reports)


def test_kafka_python_producer(federation):
    """kafka-python, idempotent, acks=all, gzip: its batches pass the proxy's batch checks and rewrite."""
    from kafka import KafkaProducer

    proxy, topic, where = federation
    producer = KafkaProducer(bootstrap_servers=proxy.bootstrap, acks="all", enable_idempotence=True,
                             compression_type="gzip", linger_ms=5)
    try:
        futures = [producer.send(topic, key=b"k%d" % i, value=b"kp-%d" % i) for i in range(100)]
        metas = [f.get(timeout=60) for f in futures]
    finally:
        producer.close(timeout=10)
    reports = [(None, m.partition, m.offset, b"k%d" % i, b"kp-%d" % i) for i, m in enumerate(metas)]
    assert_on_physical(where, reports)


def test_proxy_exits_nonzero_on_bad_arguments(tmp_path):
    proc = subprocess.run([*ProxyProcess(tmp_path, split_view({}, "t", [])).cmd[:4], "--role", "nope",
                           "--listen", "127.0.0.1:1", "--view-file", "/nonexistent"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "--role" in proc.stderr


def test_kafka_topics_describe_through_the_proxy(federation):
    """The admin reads a Kafka CLI needs: Metadata (P logical partitions, proxies as leaders) and DescribeConfigs."""
    proxy, topic, _ = federation
    out = run_tool("kafka-topics", "--bootstrap-server", proxy.bootstrap, "--describe", "--topic", topic,
                   timeout=120).stdout
    assert "PartitionCount: 8" in out, out
    assert out.count("Leader: 0") == 8, out  # static mode: the proxy itself (node 0) leads every partition
    configs = run_tool("kafka-configs", "--bootstrap-server", proxy.bootstrap, "--describe", "--entity-type",
                       "topics", "--entity-name", topic, "--all", timeout=120).stdout
    assert "retention.ms=" in configs, configs


def test_several_workers_share_the_port(kafka_clusters, unique_name, tmp_path):
    c1 = kafka_clusters[0]
    create_topic(c1.bootstrap, unique_name, 2)
    view = split_view({"c1": c1.bootstrap}, unique_name, [("c1", unique_name, 0), ("c1", unique_name, 1)])
    with ProxyProcess(tmp_path, view, workers=2) as proxy:
        reports = []
        for _ in range(6):  # separate clients: connections spread over the workers by the kernel
            reports += produce(proxy.bootstrap, unique_name, 20, acks="all")
        assert all(err is None for err, *_ in reports)
        # the first worker may serve everything before the second one logs: wait for its line, not a fixed time
        deadline = time.monotonic() + 30
        while proxy.output().count("listening on") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proxy.output().count("listening on") == 2
    assert proxy.proc.returncode == 0
    assert sum(len(read_partition(c1.bootstrap, unique_name, p)) for p in (0, 1)) == 120


# -- acks=0 with a refused partition: the connection is closed, as a broker closes it ---------------------------


def _batch(value: bytes) -> bytes:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=None, key=b"k", value=value, headers=[])
    return bytes(b.build())


def _acks_zero_produce(topics: dict[str, dict[int, bytes]], correlation_id: int, acks: int = 0) -> bytes:
    """A size-prefixed Produce v9 frame with acks=0 (or `acks`): {topic: {partition: record value}}."""
    import datetime

    from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
    from kio.static.primitive import i32Timedelta

    from fedkafka.protocol import codec

    timeout = i32Timedelta.parse(datetime.timedelta(seconds=5))
    request = ProduceRequest(transactional_id=None, acks=acks, timeout=timeout,
                             topic_data=tuple(TopicProduceData(name=name, partition_data=tuple(
                                 PartitionProduceData(index=p, records=_batch(v)) for p, v in parts.items()))
                                 for name, parts in topics.items()))
    return codec.encode_request(request, correlation_id, "acks0-test")


def _api_versions(correlation_id: int) -> bytes:
    from fedkafka.protocol import codec
    from fedkafka.protocol.build import build

    return codec.encode_request(build(codec.request_type(18, 3), {"client_software_name": "t",
                                                                 "client_software_version": "1"}), correlation_id)


def _next_answer(sock) -> int | None:
    """The correlation id of the next answer on `sock`, or None: the proxy closed the connection."""
    import struct

    frame = _next_frame(sock)
    return None if frame is None else struct.unpack(">i", frame[:4])[0]


def _next_frame(sock) -> bytes | None:
    """The next answer frame on `sock` (without its size), or None: the proxy closed the connection."""
    import struct

    def read(n: int) -> bytes | None:
        got = b""
        while len(got) < n:
            chunk = sock.recv(n - len(got))
            if not chunk:
                return None
            got += chunk
        return got

    size = read(4)
    return None if size is None else read(struct.unpack(">i", size)[0])


def _connect(proxy):
    import socket

    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    sock.sendall(_api_versions(1))
    assert _next_answer(sock) == 1, proxy.output()[-3000:]
    return sock


def _read_back(where, p: int, value: bytes) -> bool:
    bootstrap, ptopic, pp = where[p]
    deadline = time.time() + 20
    while time.time() < deadline:  # acks=0: the proxy forwards after the client moved on
        if any(v == value for _, _, v in read_partition(bootstrap, ptopic, pp)):
            return True
        time.sleep(0.3)
    return False


def test_acks_zero_with_a_refused_partition_closes_the_connection_after_the_good_parts(federation, unique_name):
    """A broker closes the connection after an acks=0 produce with any partition error (the client's sign to
    refresh metadata). Old code kept it open and dropped the refused records silently. The good parts of the
    mixed request are written all the same, and an answer due before it is written before the close."""
    proxy, topic, where = federation
    with _connect(proxy) as sock:
        sock.sendall(_acks_zero_produce({topic: {0: b"clean"}}, 2) + _api_versions(3))
        assert _next_answer(sock) == 3  # a clean acks=0 produce: no answer, the connection stays
        mixed = _acks_zero_produce({topic: {1: b"kept", 99: b"no such partition"},
                                    f"nope-{unique_name}": {0: b"no such topic"}}, 5)
        sock.sendall(_api_versions(4) + mixed + _api_versions(6))
        assert _next_answer(sock) == 4  # due before the produce: written
        assert _next_answer(sock) == 6  # read before the close was known (the produce's answers were awaited)
        assert _next_answer(sock) is None  # then closed
    assert _read_back(where, 0, b"clean")
    assert _read_back(where, 1, b"kept")
    log = proxy.output()
    assert "closing client" in log and "unknown_topic_or_partition" in log
    assert "Traceback" not in log and "ERROR" not in log


def test_a_produce_pipelined_behind_a_closing_acks_zero_produce_is_answered_before_the_close(federation, unique_name):
    """The acks=0 produce's close is known only once its good part's upstream answer is in; the acks=1 produce
    behind it was read and written to its broker meanwhile. Old code closed the connection without its answer: a
    producer resends a request it has no answer to, and a non-idempotent one writes it twice. Its answer is
    written, then the connection closes; the record is on its partition once."""
    from kio.schema.produce.v9.response import ProduceResponse

    from fedkafka.protocol import codec

    proxy, topic, where = federation
    with _connect(proxy) as sock:
        mixed = _acks_zero_produce({topic: {1: b"kept", 99: b"no such partition"}}, 2)
        sock.sendall(mixed + _acks_zero_produce({topic: {2: b"after"}}, 3, acks=1))
        frame = _next_frame(sock)
        assert frame is not None, "closed without the answer to the acks=1 produce written upstream"
        header, answer = codec.decode_response(ProduceResponse, frame)
        assert header.correlation_id == 3
        assert [(p.index, p.error_code) for t in answer.responses for p in t.partition_responses] == [(2, 0)]
        assert _next_answer(sock) is None  # then closed
    assert _read_back(where, 1, b"kept") and _read_back(where, 2, b"after")
    bootstrap, ptopic, pp = where[2]
    assert [v for _, _, v in read_partition(bootstrap, ptopic, pp)].count(b"after") == 1
    log = proxy.output()
    assert "closing client" in log and "Traceback" not in log and "ERROR" not in log


def test_acks_zero_to_a_draining_proxy_closes_the_connection(federation):
    """The drain case the fix is for: the proxy refuses every partition (NOT_LEADER_OR_FOLLOWER, "proxy
    draining"); an acks=0 producer learns it from the closed connection instead of writing into the void."""
    import dataclasses
    import json

    from fedkafka.view.model import View

    proxy, topic, _where = federation
    served = View.from_dict(json.loads(proxy.view_file.read_text()))
    proxy.write_view(dataclasses.replace(served, version=served.version + 1, draining=(0,)))  # static: node 0
    deadline = time.time() + 30
    closed = False
    while not closed and time.time() < deadline:  # until the proxy serves the new view
        with _connect(proxy) as sock:
            sock.sendall(_acks_zero_produce({topic: {0: b"dropped"}}, 2) + _api_versions(3))
            closed = _next_answer(sock) is None
        time.sleep(0.2)
    assert closed
    assert "proxy draining" in proxy.output()


def test_a_consumer_pointed_at_a_pproxy_fails_and_librdkafka_says_why(federation):
    """A pproxy serves FindCoordinator (transactional producers ask it first) but coordinates no group: the lookup
    is refused for good, naming the role. Java's consumer fails as when the key was not advertised (an exception
    from poll: then UnsupportedVersionException, now InvalidRequestException); librdkafka's reports our message
    (old code: no error at all, it waited for a coordinator and consumed nothing)."""
    from confluent_kafka import Consumer

    proxy, topic, _where = federation
    consumer = Consumer({"bootstrap.servers": proxy.bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    errors: list[str] = []
    try:
        for _ in range(20):
            msg = consumer.poll(1)
            if msg is not None and msg.error() is not None:
                errors.append(msg.error().str())
            if any("serves producers only" in e for e in errors):
                break
    finally:
        consumer.close()
    out = run_tool("kafka-console-consumer", "--bootstrap-server", proxy.bootstrap, "--topic", topic, "--group",
                   f"j-{topic}", "--timeout-ms", "30000", check=False, timeout=180)
    said = out.stdout + out.stderr
    assert any("serves producers only" in e for e in errors), errors
    assert "Exception" in said, said[-3000:]  # thrown from poll(); the console consumer then exits 0
