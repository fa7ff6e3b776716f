"""An idempotent producer's retry across a seal, on the wire against a real proxy and real brokers.

The client's answer for a written batch was lost (here: never read), the partition moved to another
cluster, and the client retries the batch with its old sequence. The proxy asks the sealed segment's
broker (DescribeProducers) how far the producer got there and answers DUPLICATE_SEQUENCE_NUMBER, which
clients count as written: the batch is not written a second time (docs/DESIGN.md §5.3).
"""

from __future__ import annotations

import dataclasses
import datetime
import time

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import i16, i32Timedelta, i64

from fedkafka.protocol import codec
from fedkafka.view.model import PartitionChain, Segment

from .support import ProxyProcess, create_topic, read_partition, split_view
from .test_bad_input import connect, recv_frame

pytestmark = pytest.mark.integration


def call(sock, request, correlation_id: int):
    sock.sendall(codec.encode_request(request, correlation_id, client_id="seal-test"))
    _, body = codec.decode_response(codec.response_type(request.__api_key__, request.__version__), recv_frame(sock))
    return body


def batch(producer_id: int, epoch: int, seq: int, values: list[bytes]) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
                                  producer_epoch=epoch, base_sequence=seq, batch_size=1 << 20)
    for i, value in enumerate(values):
        b.append(i, timestamp=None, key=None, value=value, headers=[])
    return bytes(b.build())


def produce(sock, topic: str, records: bytes, correlation_id: int) -> tuple[ErrorCode, int]:
    req = ProduceRequest(transactional_id=None, acks=-1, timeout=i32Timedelta.parse(datetime.timedelta(seconds=10)),
                         topic_data=(TopicProduceData(name=topic, partition_data=(
                             PartitionProduceData(index=0, records=records),)),))
    (pr,) = call(sock, req, correlation_id).responses[0].partition_responses
    return pr.error_code, pr.base_offset


def leader_epoch(sock, topic: str, correlation_id: int) -> int:
    body = call(sock, MetadataRequest(topics=(MetadataRequestTopic(topic_id=None, name=topic),),
                                      allow_auto_topic_creation=False, include_topic_authorized_operations=False),
                correlation_id)
    return body.topics[0].partitions[0].leader_epoch


def test_retry_of_a_written_batch_after_a_move_is_a_duplicate_not_a_second_write(kafka_clusters, unique_name,
                                                                                  tmp_path):
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 1)
    create_topic(c2.bootstrap, physical, 1)
    clusters = {"c1": c1.bootstrap, "c2": c2.bootstrap}
    view = split_view(clusters, unique_name, [("c1", physical, 0)])
    with ProxyProcess(tmp_path, view) as proxy, connect(proxy) as sock:
        init = call(sock, InitProducerIdRequest(
            transactional_id=None, transaction_timeout=i32Timedelta.parse(datetime.timedelta(seconds=60)),
            producer_id=i64(-1), producer_epoch=i16(-1)), 1)
        assert init.error_code == ErrorCode.none, init
        pid, epoch = init.producer_id, init.producer_epoch
        first = batch(pid, epoch, 0, [b"a0", b"a1"])
        second = batch(pid, epoch, 2, [b"b0", b"b1"])  # its answer is the one the client "lost"
        assert produce(sock, unique_name, first, 2) == (ErrorCode.none, 0)
        assert produce(sock, unique_name, second, 3) == (ErrorCode.none, 2)

        sealed = PartitionChain(segments=(Segment("c1", physical, 0, 0, 4, 0), Segment("c2", physical, 0, 0, None, 4)),
                                leader_epoch=1)
        topic = view.topics[unique_name]
        proxy.write_view(dataclasses.replace(view, version=2, topics={
            unique_name: dataclasses.replace(topic, partitions=(sealed,))}))
        deadline = time.monotonic() + 20
        while leader_epoch(sock, unique_name, 4) != 1:
            assert time.monotonic() < deadline, "the proxy did not apply the moved view"
            time.sleep(0.2)

        assert produce(sock, unique_name, second, 5)[0] == ErrorCode.duplicate_sequence_number  # counted written
        # (a batch at 6 here would now be written: everything this proxy forwarded to c1 landed, so a real client
        # sending 6 wrote 4-5 through another process; the gap check below the proxy's own end is in
        # test_sealed_floor_elsewhere.py)
        assert produce(sock, unique_name, batch(pid, epoch, 4, [b"c0", b"c1"]), 7) == (ErrorCode.none, 4)

    assert [v for _, _, v in read_partition(c1.bootstrap, physical, 0)] == [b"a0", b"a1", b"b0", b"b1"]
    assert [v for _, _, v in read_partition(c2.bootstrap, physical, 0)] == [b"c0", b"c1"]  # b0, b1 not again
