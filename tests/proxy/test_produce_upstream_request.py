"""The upstream Produce request is built from the client's decoded entities (no `build()`): for every served
version it must be the frame `build()` made, with physical names, acks=all and the capped timeout."""

from __future__ import annotations

import datetime

import pytest
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.proxy.handlers import produce
from fedkafka.view.model import PartitionChain, Segment


def _request(version: int, timeout_ms: int):
    return build(codec.request_schema(0, version), {
        "transactional_id": None, "acks": 1, "timeout": i32Timedelta.parse(datetime.timedelta(milliseconds=timeout_ms)),
        "topic_data": [{"name": "empty", "partition_data": []},
                       {"name": "orders", "partition_data": [{"index": 0, "records": b"a" * 70},
                                                             {"index": 3, "records": b"b" * 20_000}]}]})


def _part(topic: str, partition: int, seg: Segment, records: bytes) -> produce._Part:
    return produce._Part(topic, partition, PartitionChain(segments=(seg,)), seg, records)


def _as_build_made_it(request, parts):
    """What the proxy sent before: the same request through `build()`."""
    by_topic: dict[str, list[dict]] = {}
    for part in parts:
        by_topic.setdefault(part.seg.topic, []).append({"index": part.seg.partition, "records": part.records})
    timeout = min(request.timeout, datetime.timedelta(milliseconds=produce.MAX_UPSTREAM_PRODUCE_TIMEOUT_MS))
    return build(codec.request_schema(0, type(request).__version__), {
        "transactional_id": None, "acks": produce.UPSTREAM_ACKS, "timeout": timeout,
        "topic_data": [{"name": n, "partition_data": pd} for n, pd in by_topic.items()]})


@pytest.mark.parametrize("version", range(3, 13))
@pytest.mark.parametrize("timeout_ms", [0, 1500, 3_600_000])
def test_the_upstream_request_is_the_frame_build_made(version, timeout_ms):
    request = _request(version, timeout_ms)
    parts = [_part("orders", 0, Segment("c1", "orders-phys", 7, 100, None, 0), b"a" * 70),
             _part("orders", 3, Segment("c1", "orders-phys", 2, 0, None, 0), bytearray(b"b" * 20_000)),
             _part("audit", 1, Segment("c1", "audit", 1, 0, None, 0), b"c" * 5)]
    upstream = produce._upstream_request(request, parts)
    expected = _as_build_made_it(request, parts)
    assert codec.encode_request(upstream, 5, "p") == codec.encode_request(expected, 5, "p")
    assert upstream.acks == -1 and upstream.transactional_id is None
    assert upstream.timeout <= datetime.timedelta(milliseconds=produce.MAX_UPSTREAM_PRODUCE_TIMEOUT_MS)
    assert [(t.name, [p.index for p in t.partition_data]) for t in upstream.topic_data] == [
        ("orders-phys", [7, 2]), ("audit", [1])]
