"""Codecs (kio), generic error/response builders, framing limits and the version table."""

from __future__ import annotations

import asyncio
import datetime
import struct

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec, versions
from fedkafka.protocol.build import build
from fedkafka.protocol.errors import error_response
from fedkafka.protocol.framing import FrameError, read_frame


def produce(records: bytes = b"abc") -> ProduceRequest:
    return ProduceRequest(transactional_id=None, acks=1, timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)),
                          topic_data=(TopicProduceData(name="t", partition_data=(
                              PartitionProduceData(index=3, records=records),)),))


def test_request_round_trip_and_header_peek():
    frame = codec.encode_request(produce(), 42, client_id="me")
    assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
    assert codec.peek_header(frame[4:]) == (0, 9, 42)
    header, body = codec.decode_request(frame[4:])
    assert header.client_id == "me" and body == produce()


def test_trailing_bytes_are_ignored_like_kafka_does():
    frame = codec.encode_request(produce(), 1)[4:]
    assert codec.decode_request(frame + b"\0")[1] == produce()
    # librdkafka 2.16's all-topics Metadata v13, captured on the wire: 3 bytes after the tagged fields
    librdkafka = bytes.fromhex("0003000d00000003000772646b61666b610000000000010000")
    header, body = codec.decode_request(librdkafka)
    assert header.client_id == "rdkafka" and body.topics is None


def test_decode_refuses_truncation_and_unknown_schemas():
    frame = codec.encode_request(produce(), 1)[4:]
    with pytest.raises(codec.DecodeError):
        codec.decode_request(frame[:-3])
    with pytest.raises(codec.DecodeError, match="no schema"):
        codec.decode_request(struct.pack(">hhi", 9999, 0, 1))
    with pytest.raises(codec.DecodeError, match="shorter"):
        codec.peek_header(b"\0\0")


@pytest.mark.parametrize(("key", "version"), [(0, 3), (0, 12), (3, 1), (3, 12), (18, 0), (18, 4), (22, 0),
                                              (32, 4), (60, 0), (1, 12)])
def test_error_response_encodes_for_every_served_version(key, version):
    resp_t = codec.response_type(key, version)
    body = error_response(resp_t, ErrorCode.unsupported_version)
    _, back = codec.decode_response(resp_t, codec.encode_response(body, 9)[4:])
    assert back == body


# A request for a version the proxy does not advertise is answered UNSUPPORTED_VERSION in that version's own
# schema, for any api kio knows: each must have an error answer (CreateDelegationToken v1+ carries TZAware
# timestamps, which had no zero value: the fuzz's api_key=38 v2 closed the connection as an internal error).
KNOWN_RESPONSES = [(k, v) for k in range(100) for v in range(20) if codec.response_type(k, v) is not None]


@pytest.mark.parametrize(("key", "version"), KNOWN_RESPONSES)
def test_an_unsupported_version_answer_exists_for_every_known_api(key, version):
    resp_t = codec.response_type(key, version)
    frame = codec.encode_response(error_response(resp_t, ErrorCode.unsupported_version), 9)
    _, back = codec.decode_response(resp_t, frame[4:])
    assert getattr(back, "error_code", ErrorCode.unsupported_version) == ErrorCode.unsupported_version


def test_build_drops_fields_a_version_lacks():
    data = {"responses": [{"name": "t", "partition_responses": [
        {"index": 0, "error_code": ErrorCode.none, "base_offset": 5, "log_start_offset": 2, "error_message": "x"}]}]}
    old = build(codec.response_type(0, 3), data)
    new = build(codec.response_type(0, 12), data)
    assert old.responses[0].partition_responses[0].base_offset == 5
    assert not hasattr(old.responses[0].partition_responses[0], "log_start_offset")
    assert new.responses[0].partition_responses[0].log_start_offset == 2


def read(data: bytes, limit: int = 1000):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, limit)
    return asyncio.run(go())


def test_framing_limits():
    assert read(b"") is None
    assert read(struct.pack(">i", 3) + b"abc") == b"abc"
    with pytest.raises(FrameError, match="outside"):
        read(struct.pack(">i", 0x7FFFFFFF))  # a 2 GB claim is refused before reading anything
    with pytest.raises(FrameError, match="outside"):
        read(struct.pack(">i", -1))
    with pytest.raises(FrameError, match="truncated frame"):
        read(struct.pack(">i", 10) + b"abc")
    with pytest.raises(FrameError, match="prefix"):
        read(b"\0\0")


def test_version_intersection_and_produce_rules():
    implemented = {0: (3, 13), 3: (1, 12), 18: (0, 4), 22: (0, 5)}
    cluster_a = {0: (0, 12), 3: (0, 13), 18: (0, 4), 22: (0, 6)}
    cluster_b = {0: (0, 11), 3: (0, 12), 18: (0, 3)}  # no InitProducerId at all
    adv = versions.intersect(implemented, [cluster_a, cluster_b])
    assert adv == {0: (0, 11), 3: (1, 12), 18: (0, 3)}  # Produce capped, advertised from 0
    assert not versions.accepts(adv, 0, 2) and versions.accepts(adv, 0, 3)
    assert not versions.accepts(adv, 22, 0) and not versions.accepts(adv, 0, 12)


def _fetch_answer(version: int, record_sets: list[bytes]):
    return build(codec.response_schema(1, version), {"error_code": ErrorCode.none, "session_id": 0, "responses": [
        {"topic": "t", "partitions": [{"partition_index": i, "high_watermark": 5, "records": r}
                                      for i, r in enumerate(record_sets)]}]})


@pytest.mark.parametrize("version", [4, 11, 12])
@pytest.mark.parametrize("sizes", [[0], [10, 200], [codec.BY_REFERENCE_BYTES], [70_000, 3, 1 << 20, 0, 20_000]])
def test_a_chunked_answer_is_the_same_frame_with_its_record_sets_by_reference(version, sizes):
    record_sets = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    body = _fetch_answer(version, record_sets)
    chunked = codec.encode_response_chunks(body, 77)
    whole = codec.encode_response(body, 77)
    assert bytes(chunked) == whole and len(chunked) == len(whole)
    large = [r for r in record_sets if len(r) >= codec.BY_REFERENCE_BYTES]
    if large:
        assert isinstance(chunked, codec.Chunks)
        assert [p for p in chunked.parts if any(p is r for r in large)] == large  # not copied
    else:
        assert type(chunked) is bytes


@pytest.mark.parametrize("sizes", [[5], [codec.BY_REFERENCE_BYTES, 7, 100_000]])
def test_a_chunked_request_is_the_same_frame_with_its_record_sets_by_reference(sizes):
    records = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    request = ProduceRequest(transactional_id=None, acks=-1, timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
                             topic_data=(TopicProduceData(name="t", partition_data=tuple(
                                 PartitionProduceData(index=i, records=r) for i, r in enumerate(records))),))
    chunked = codec.encode_request_chunks(request, 9, "me")
    whole = codec.encode_request(request, 9, "me")
    assert bytes(chunked) == whole and len(chunked) == len(whole)
    assert codec.decode_request(whole[4:])[1] == request
    assert isinstance(chunked, codec.Chunks) == (max(sizes) >= codec.BY_REFERENCE_BYTES)
