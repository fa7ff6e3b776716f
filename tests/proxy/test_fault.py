"""Kill one physical cluster during a produce run: only its partitions fail (retriable), nothing acked is lost."""

from __future__ import annotations

import datetime
import socket
import struct
import time

import pytest
from confluent_kafka import Producer
from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec

from .support import ProxyProcess, create_topic, read_partition, split_view

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def raw_produce_errors(port: int, topic: str, partitions: list[int], records: bytes) -> dict[int, ErrorCode]:
    req = ProduceRequest(transactional_id=None, acks=-1, timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
                         topic_data=(TopicProduceData(name=topic, partition_data=tuple(
                             PartitionProduceData(index=p, records=records) for p in partitions)),))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(codec.encode_request(req, 1))
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        frame = s.recv(size, socket.MSG_WAITALL)
    _, body = codec.decode_response(codec.response_type(0, 9), frame)
    return {pr.index: pr.error_code for pr in body.responses[0].partition_responses}


def one_batch() -> bytes:
    """A real v2 record batch built by aiokafka."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=None, key=b"k", value=b"raw", headers=[])
    return bytes(builder.build())


@pytest.mark.timeout(400)
def test_kill_one_cluster_mid_run(make_clusters, unique_name, tmp_path):
    f1, f2 = make_clusters("f1", "f2")
    physical = "phys"
    create_topic(f1.bootstrap, physical, 4)
    create_topic(f2.bootstrap, physical, 4)
    layout = [("f1", physical, p) for p in range(4)] + [("f2", physical, p) for p in range(4)]
    where = {p: ((f1 if c == "f1" else f2), t, pp) for p, (c, t, pp) in enumerate(layout)}
    view = split_view({"f1": f1.bootstrap, "f2": f2.bootstrap}, unique_name, layout)
    with ProxyProcess(tmp_path, view) as proxy:
        acked: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(8)}
        failed = []

        def on_delivery(err, msg):
            if err is None:
                acked[msg.partition()].append((msg.offset(), msg.value()))
            else:
                failed.append((msg.partition(), err))

        producer = Producer({"bootstrap.servers": proxy.bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 5, "message.timeout.ms": 240000, "retry.backoff.max.ms": 500})
        for i in range(400):
            producer.produce(unique_name, value=b"before-%d" % i, partition=i % 8, on_delivery=on_delivery)
        assert producer.flush(60) == 0

        f2.kill()
        for i in range(400):
            producer.produce(unique_name, value=b"during-%d" % i, partition=i % 8, on_delivery=on_delivery)
        deadline = time.time() + 60
        while time.time() < deadline and sum(len(v) for p, v in acked.items() if p < 4) < 400:
            producer.poll(0.2)
        # the live cluster's partitions kept taking writes while f2 is down ...
        assert all(len(acked[p]) == 100 for p in range(4)), {p: len(v) for p, v in acked.items()}
        assert all(len(acked[p]) == 50 for p in range(4, 8))  # ... the dead one's wait in the client
        errors = raw_produce_errors(proxy.port, unique_name, [0, 5], one_batch())
        assert errors[0] == ErrorCode.none
        assert errors[5] != ErrorCode.none and errors[5].retriable, errors

        f2.start()
        f2.wait_ready()
        assert producer.flush(180) == 0
        assert failed == []
        assert all(len(acked[p]) == 100 for p in range(4, 8)), {p: len(v) for p, v in acked.items()}
        for p, records in acked.items():
            cluster, topic, pp = where[p]
            on_disk = {off: v for off, _, v in read_partition(cluster.bootstrap, topic, pp)}
            for offset, value in records:
                assert on_disk.get(offset) == value, (p, offset)
        assert proxy.alive()
