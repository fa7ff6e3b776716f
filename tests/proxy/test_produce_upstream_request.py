"""The upstream Produce request is written by records.py around the client's record sets (no kio entity): for
every served version its frame must be the one kio writes for the same request, with physical names, acks=all
and the capped timeout, and the record sets must go out by reference."""

from __future__ import annotations

import asyncio
import datetime
import struct

import pytest
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.proxy.core.upstream import UpstreamConnection
from fedkafka.proxy.handlers import produce
from fedkafka.view.model import PartitionChain, Segment

GUARD_S = 20.0  # only against a hang


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
    sent = rec.read_produce_request(bytes(frame)[4:])  # what the broker reads
    assert sent.acks == -1 and sent.timeout_ms <= produce.MAX_UPSTREAM_PRODUCE_TIMEOUT_MS
    assert [(t.name, [p.index for p in t.partition_data]) for t in upstream.topic_data] == [
        ("orders-phys", [7, 2]), ("audit", [1])]


def test_the_broker_s_answer_is_read_by_the_request_s_own_reader_and_a_malformed_one_fails_only_its_call():
    """Over a real socket: UpstreamConnection hands a Produce answer to UpstreamProduce.read_response (records.py,
    no kio entity); a malformed answer fails its call with codec.DecodeError, as a kio decode error does (the
    core answers REQUEST_TIMED_OUT), and the connection stays in step for the next request."""
    version = 9
    good = rec.produce_response_frame(version, 0, [("orders-phys", [rec.ProducePartitionAnswer(7, 0, 41, -1, 3)]),
                                                   ("audit", [rec.ProducePartitionAnswer(1, 9999)])])  # a newer code
    malformed = good[:4 + 4 + 1] + b"\x00"  # correlation id, header tags, then a null responses array

    async def main():
        answers = [malformed, good]

        async def broker(reader, writer):
            while answers:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                answer = bytearray(answers.pop(0))
                struct.pack_into(">ii", answer, 0, len(answer) - 4, struct.unpack_from(">i", request, 4)[0])
                writer.write(answer)
            await writer.drain()

        server = await asyncio.start_server(broker, "127.0.0.1", 0)
        conn = UpstreamConnection("127.0.0.1", server.sockets[0].getsockname()[1], "broker")
        await conn.connect()
        request = produce.UpstreamProduce(version, 1000, (rec.ProduceTopicData("orders-phys", (
            rec.ProducePartitionData(7, memoryview(b"r" * 70)),)),))
        first, second = conn.send(request), conn.send(request)
        assert conn.has_pending(0)  # a Produce in flight, as the drain asks (UpstreamPool.close_pending)
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert conn.has_pending(0) is False and not conn.closed
        conn.close()
        server.close()
        return results

    refused, read = asyncio.run(main())
    assert isinstance(refused, codec.DecodeError) and "null topics array" in str(refused)
    assert read.topics == (("orders-phys", (rec.ProducePartitionAnswer(7, 0, 41, -1, 3),)),
                           ("audit", (rec.ProducePartitionAnswer(1, 9999),)))


class _BuggyReader(produce.UpstreamProduce):
    def read_response(self, frame):
        raise RuntimeError("a reader's bug")


def test_a_reader_that_raises_fails_its_call_at_once_not_at_the_request_timeout():
    """The answer has left the pending list when its reader runs: any exception must fail the call then (the core
    answers REQUEST_TIMED_OUT), or the call would wait out its whole timeout with nothing left to answer it."""
    async def main():
        async def broker(reader, writer):
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            request = await reader.readexactly(size)
            answer = bytearray(rec.produce_response_frame(9, 0, []))
            struct.pack_into(">i", answer, 4, struct.unpack_from(">i", request, 4)[0])
            writer.write(answer)
            await writer.drain()

        server = await asyncio.start_server(broker, "127.0.0.1", 0)
        conn = UpstreamConnection("127.0.0.1", server.sockets[0].getsockname()[1], "broker")
        await conn.connect()
        future = conn.send(_BuggyReader(9, 1000, ()))
        done, _ = await asyncio.wait([future], timeout=GUARD_S)  # only against a hang
        conn.close()
        server.close()
        return done and future.exception()

    error = asyncio.run(main())
    assert isinstance(error, codec.DecodeError) and "a reader's bug" in str(error)
