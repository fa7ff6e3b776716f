"""The upstream Produce request is written by records.py around the client's record sets (no kio entity): for
every served version its frame must be the one kio writes for the same request, with physical names, acks=all
and the capped timeout, and the record sets must go out by reference."""

from __future__ import annotations

import datetime

import pytest
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.proxy.handlers import produce
from fedkafka.view.model import PartitionChain, Segment


def _client_frame(version: int, timeout_ms: int) -> bytes:
    request = build(codec.request_schema(0, version), {
        "transactional_id": None, "acks": 1, "timeout": i32Timedelta.parse(datetime.timedelta(milliseconds=timeout_ms)),
        "topic_data": [{"name": "empty", "partition_data": []},
                       {"name": "orders", "partition_data": [{"index": 0, "records": b"a" * 70},
                                                             {"index": 3, "records": b"b" * 20_000}]}]})
    return codec.encode_request(request, 9, "client")


def _part(topic: str, partition: int, seg: Segment, records: bytes | bytearray | memoryview) -> produce._Part:
    return produce._Part(topic, partition, PartitionChain(segments=(seg,)), seg, records)


def _as_kio_writes_it(version: int, timeout_ms: int, parts) -> object:
    by_topic: dict[str, list[dict]] = {}
    for part in parts:
        by_topic.setdefault(part.seg.topic, []).append({"index": part.seg.partition, "records": bytes(part.records)})
    timeout = min(timeout_ms, produce.MAX_UPSTREAM_PRODUCE_TIMEOUT_MS)
    return build(codec.request_schema(0, version), {
        "transactional_id": None, "acks": produce.UPSTREAM_ACKS,
        "timeout": i32Timedelta.parse(datetime.timedelta(milliseconds=timeout)),
        "topic_data": [{"name": n, "partition_data": pd} for n, pd in by_topic.items()]})


@pytest.mark.parametrize("version", range(3, 13))
@pytest.mark.parametrize("timeout_ms", [0, 1500, 3_600_000])
def test_the_upstream_request_is_the_frame_kio_writes(version, timeout_ms):
    client = produce.read_request(_client_frame(version, timeout_ms)[4:])
    assert client.version == version and client.timeout_ms == timeout_ms and client.acks == 1
    orders = client.topic_data[1].partition_data
    parts = [_part("orders", 0, Segment("c1", "orders-phys", 7, 100, None, 0), orders[0].records),
             _part("orders", 3, Segment("c1", "orders-phys", 2, 0, None, 0), orders[1].records),
             _part("audit", 1, Segment("c1", "audit", 1, 0, None, 0), bytearray(b"c" * 5))]
    upstream = produce.UpstreamProduce.of(client.version, min(client.timeout_ms,
                                                               produce.MAX_UPSTREAM_PRODUCE_TIMEOUT_MS), parts)
    frame = codec.encode_request_chunks(upstream, 5, "p")
    assert bytes(frame) == codec.encode_request(_as_kio_writes_it(version, timeout_ms, parts), 5, "p")
    assert any(p is orders[1].records for p in frame.parts)  # the 20 KB record set is sent from the client's frame
    assert upstream.acks == -1 and upstream.timeout_ms <= produce.MAX_UPSTREAM_PRODUCE_TIMEOUT_MS
    assert [(t.name, [p.index for p in t.partition_data]) for t in upstream.topic_data] == [
        ("orders-phys", [7, 2]), ("audit", [1])]
