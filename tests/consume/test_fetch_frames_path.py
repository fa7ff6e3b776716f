"""Fetch's way through the handler without kio entities: the broker's answer read by `UpstreamFetch.read_response`
(records.py), the client's written by `FetchAnswer.response_frame` (records.py). An identity segment's record sets
go from the broker's frame to the client's parts without a copy; a moved segment's are rewritten once; a broker
answer that lies about a length fails its call (the core answers NOT_LEADER_OR_FOLLOWER)."""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
from datetime import timedelta

import crc32c
import pytest
from kio.schema.errors import ErrorCode

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.proxy.core import observe
from fedkafka.proxy.core.connection import _InFlight
from fedkafka.proxy.core.limits import ByteBudget
from fedkafka.proxy.core.upstream import UpstreamConnection
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import UpstreamError

from .test_handlers_unit import ctx, fetch_request

pytestmark = pytest.mark.usefixtures("records_implementation")
GUARD_S = 20.0  # only against a hang


def batch(base_offset: int, count: int, size: int) -> bytes:
    body = struct.pack(">hiqqqhii", 0, count - 1, 0, 0, -1, -1, -1, count) + b"r" * size
    return struct.pack(">qiibI", base_offset, 9 + len(body), 0, 2, crc32c.crc32c(body)) + body


RECORDS = b"".join(batch(i * 16, 16, 64 * 1024) for i in range(64))  # 4 MiB of batches


def broker_frame(topic: str, partition: int, records: bytes, hw: int) -> memoryview:
    """The broker's v12 answer as the upstream reader delivers a large one: a read-only view of its own buffer."""
    parts = rec.fetch_response_parts(12, 1, 0, 0, [(topic, [rec.FetchPartitionData(partition, 0, hw, hw, 0, None, -1,
                                                                                  records)])])
    return memoryview(bytearray(b"".join(parts)[4:])).toreadonly()


def client_view(parts: bytes | list) -> tuple:
    """What a client reads from the answer (a small one is one bytes object): (topic, partition, error, high
    watermark, record set) per partition, by kio."""
    frame = parts if isinstance(parts, bytes) else b"".join(parts)
    _, body = codec.decode_response(codec.response_schema(1, 12), frame[4:])
    return tuple((t.topic, p.partition_index, p.error_code, p.high_watermark, p.records)
                 for t in body.responses for p in t.partitions)


def test_an_identity_segment_s_record_set_goes_from_the_broker_s_frame_to_the_client_s_parts_uncopied():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 1, 0)))  # ("log", 1): identity segment c1/t/1
    (call,) = plan.calls
    frame = broker_frame("t", 1, RECORDS, hw=1024)
    tracemalloc.start()
    try:
        answer = plan.finish([call.request.read_response(frame)])
        parts = answer.response_frame(9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # 4 MiB of records, and not one copy of them
    (records,) = [p for p in parts if len(p) == len(RECORDS)]
    assert isinstance(records, memoryview) and records.obj is frame.obj  # the broker's buffer itself
    assert client_view(parts) == (("log", 1, ErrorCode.none, 1024, RECORDS),)


def test_a_moved_segment_s_record_set_is_rewritten_to_logical_offsets():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 40)))  # c2/t/0 from physical 5 = logical 30
    (call,) = plan.calls
    records = batch(15, 10, 100) + batch(25, 20, 100) + batch(45, 3, 100)  # the last one is past the seal at 45
    frame = broker_frame("t", 0, records, hw=48)
    parts = plan.finish([call.request.read_response(frame)]).response_frame(3)
    ((_, _, error, hw, client_records),) = client_view(parts)
    assert (error, hw) == (ErrorCode.none, 70)
    assert [h.base_offset for h in rec.iter_batches(client_records)] == [40, 50]
    assert bytes(frame) == bytes(broker_frame("t", 0, records, hw=48))  # the broker's frame is left as it came


def test_a_moved_segment_s_large_batches_reach_the_client_s_parts_uncopied_but_for_their_heads():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 40)))
    (call,) = plan.calls
    records = b"".join(batch(15 + 10 * i, 10, 256 * 1024) for i in range(3)) + batch(45, 3, 100)  # 768 KiB kept
    frame = broker_frame("t", 0, records, hw=48)
    tracemalloc.start()
    try:
        answer = plan.finish([call.request.read_response(frame)])
        parts = answer.response_frame(3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # not one copy of the 768 KiB
    in_frame = sum(len(p) for p in parts if isinstance(p, memoryview) and p.obj is frame.obj)
    assert in_frame == 3 * (len(batch(0, 10, 256 * 1024)) - 16)  # each large batch but for its rewritten head
    ((_, _, error, hw, client_records),) = client_view(parts)
    assert (error, hw) == (ErrorCode.none, 70)
    assert [h.base_offset for h in rec.iter_batches(client_records)] == [40, 50, 60]
    assert client_records == bytes(rec.fit_to_segment(records, phys_end=45, delta=25, max_epoch=2))


def test_the_answer_is_kio_s_frame_and_counts_its_errors_as_kio_s_entity_would():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 1, 0), ("nope", 0, 0)))
    (call,) = plan.calls
    answer = plan.finish([call.request.read_response(broker_frame("t", 1, batch(0, 3, 10), hw=3))])
    frame = bytes(codec.encode_response_chunks(answer, 4))
    _, body = codec.decode_response(codec.response_schema(1, 12), frame[4:])
    assert codec.encode_response(body, 4) == frame
    counts: dict = {}
    answer.count_errors(counts)
    assert counts == observe.error_counts(body) == {ErrorCode.unknown_topic_or_partition: 1}


def test_a_session_the_proxy_never_gave_is_refused_in_every_version():
    for version in range(4, 13):
        request = build(codec.request_schema(1, version), {
            "max_wait": timedelta(milliseconds=10), "min_bytes": 1, "session_id": 5, "forgotten_topics_data": [],
            "topics": [{"topic": "log", "partitions": [{"partition": 1, "fetch_offset": 0,
                                                         "partition_max_bytes": 9}]}]})
        reply = fetch.handle(ctx(), None, request)
        if version < 7:  # no session in the request: a plan as usual
            assert reply.calls
            continue
        _, body = codec.decode_response(codec.response_schema(1, version), codec.encode_response_chunks(reply, 1)[4:])
        assert body.error_code == ErrorCode.fetch_session_id_not_found and body.responses == ()


def test_the_request_goes_out_as_records_py_writes_it_and_a_lying_answer_fails_only_its_call():
    """Over a real socket: the broker reads kio's FetchRequest in physical names; an answer whose records length
    runs past its end fails that call with codec.DecodeError (finish answers NOT_LEADER_OR_FOLLOWER), and the
    connection stays in step: the next answer is read, its record set a view of the frame."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 1, 7)))
    (call,) = plan.calls
    records = batch(7, 2, 10)
    good = bytes(broker_frame("t", 1, records, hw=9))
    at = good.index(records) - 1  # the records length: one varint byte
    lying = good[:at] + rec.varint_bytes(2**31) + good[at + 1:]
    seen: list = []

    async def main():
        answers = [lying, good]

        async def broker(reader, writer):
            while answers:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                seen.append(codec.decode_request(request))
                answer = bytearray(struct.pack(">i", 0) + answers.pop(0))
                struct.pack_into(">ii", answer, 0, len(answer) - 4, struct.unpack_from(">i", request, 4)[0])
                writer.write(answer)
            await writer.drain()

        server = await asyncio.start_server(broker, "127.0.0.1", 0)
        conn = UpstreamConnection("127.0.0.1", server.sockets[0].getsockname()[1], "broker")
        await conn.connect()
        first, second = conn.send(call.request), conn.send(call.request)
        assert conn.has_pending(1)
        results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), GUARD_S)
        conn.close()
        server.close()
        return results

    refused, read = asyncio.run(main())
    header, request = seen[0]
    assert header.client_id == "fedkafka-proxy" and request.replica_id == -1 and request.session_id == 0
    asked = [(t.topic, [(p.partition, p.fetch_offset) for p in t.partitions]) for t in request.topics]
    assert asked == [("t", [(1, 7)])]
    assert isinstance(refused, codec.DecodeError) and "records of 2147483647 bytes" in str(refused)
    assert isinstance(read, rec.FetchResponseFrame)
    assert bytes(read.responses[0].partitions[0].records) == records
    failed = plan.finish([UpstreamError("c1", str(refused))])
    assert failed.responses[0].partitions[0].error_code == ErrorCode.not_leader_or_follower


def charged(answer) -> int:
    """The bytes a client connection holds in its budgets for this answer until it was written."""
    loop = asyncio.new_event_loop()
    try:
        written = loop.create_future()
        written.set_result(codec.encode_response_chunks(answer, 9))
        conn = type("Conn", (), {"held": ByteBudget(1 << 40), "budget": ByteBudget(1 << 40)})()
        _InFlight(conn, written, 0).charge()  # as the connection charges an answer that exists
        assert conn.held.used == conn.budget.used
        return int(conn.budget.used)
    finally:
        loop.close()


def test_an_answer_that_forwards_all_of_a_broker_frame_is_charged_that_frame_once():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 1, 0)))  # identity: the record set is the frame's
    (call,) = plan.calls
    frame = broker_frame("t", 1, RECORDS, hw=1024)
    assert len(frame) <= charged(plan.finish([call.request.read_response(frame)])) < len(frame) + 1024


def test_an_answer_that_forwards_a_little_of_a_large_broker_frame_is_charged_the_whole_frame():
    """A moved segment's answer cut at the seal: one 64 KiB batch forwarded, its body a view of a broker frame of
    4 MiB more (past the seal). The view keeps all of the frame alive until the client took the answer: all of it
    is charged, or slow clients could hold many such frames beyond --max-buffered-bytes."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 40)))  # c2/t/0, sealed at physical 45
    (call,) = plan.calls
    records = batch(15, 30, 64 * 1024) + b"".join(batch(45 + 10 * i, 10, 64 * 1024) for i in range(64))
    frame = broker_frame("t", 0, records, hw=48)
    answer = plan.finish([call.request.read_response(frame)])
    parts = answer.response_frame(9)
    forwarded = len(batch(15, 30, 64 * 1024))
    assert sum(len(p) for p in parts if isinstance(p, memoryview) and p.obj is frame.obj) == forwarded - 16
    assert charged(answer) >= len(frame) > 60 * forwarded


def test_a_cut_identity_record_set_is_copied_and_its_frame_not_charged():
    """An identity segment cut at its seal is copied out (`fit_to_segment`): the frame can go, and only the
    answer's own bytes are charged."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 10)))  # c1/t/0 up to its seal at logical 30
    (call,) = plan.calls
    records = batch(0, 30, 64 * 1024) + b"".join(batch(30 + 10 * i, 10, 64 * 1024) for i in range(64))
    frame = broker_frame("t", 0, records, hw=48)
    answer = plan.finish([call.request.read_response(frame)])
    assert not any(isinstance(p, memoryview) and p.obj is frame.obj for p in answer.response_frame(9))
    assert len(batch(0, 30, 64 * 1024)) <= charged(answer) < len(batch(0, 30, 64 * 1024)) + 1024
