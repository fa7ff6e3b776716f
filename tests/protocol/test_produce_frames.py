"""records.py's Produce frame walk and writers against kio, which the rest of the proxy reads and writes with:
the same fields read from every frame kio reads, MalformedFrame for every frame kio refuses (never another
exception), the same bytes written, and the records never copied; under the pure-Python code and under its
compiled fast path (fedkafka_speedups, where built)."""

from __future__ import annotations

import dataclasses
import itertools
import re
import struct
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec

pytestmark = pytest.mark.usefixtures("records_implementation")

VERSIONS = range(3, 13)
FLEXIBLE = range(9, 13)

# -- what a frame says, read by kio or by records.py ---------------------------------------------------------------


def kio_fields(frame: bytes) -> tuple[Any, ...] | None:
    """The fields kio reads from a request frame (no size prefix), or None when it refuses it."""
    try:
        header, body = codec.decode_request(frame)
    except codec.DecodeError:
        return None
    topics = tuple((t.name, tuple((p.index, None if p.records is None else bytes(p.records)) for p in t.partition_data))
                   for t in body.topic_data)
    return (header.request_api_version, header.correlation_id, header.client_id, body.transactional_id, body.acks,
            body.timeout // timedelta(milliseconds=1), topics)


def our_fields(frame: bytes | bytearray | memoryview) -> tuple[Any, ...] | None:
    """The same from read_produce_request; None for MalformedFrame (any other exception fails the test)."""
    try:
        f = rec.read_produce_request(frame)
    except rec.MalformedFrame:
        return None
    topics = tuple((t.name, tuple((p.index, None if p.records is None else bytes(p.records)) for p in t.partition_data))
                   for t in f.topic_data)
    return f.version, f.correlation_id, f.client_id, f.transactional_id, f.acks, f.timeout_ms, topics


def read_as_kio_does(frame: bytes) -> None:
    """records.py reads what kio reads from `frame`, and refuses what kio refuses. kio is asked only about Produce
    v3..12 frames (any other api_key or version must be refused without it)."""
    ours = our_fields(frame)
    api_key, version = struct.unpack_from(">hh", frame) if len(frame) >= 4 else (0, 0)
    if api_key != 0 or version not in VERSIONS:
        assert ours is None
        return
    assert ours == kio_fields(frame)


# -- frames built by kio -------------------------------------------------------------------------------------------


def kio_request(version: int, transactional_id: str | None, acks: int, timeout_ms: int, topics) -> Any:
    request_t = codec.request_schema(0, version)
    schema = sys.modules[request_t.__module__]
    return request_t(transactional_id=transactional_id, acks=acks, timeout=timedelta(milliseconds=timeout_ms),
                     topic_data=tuple(schema.TopicProduceData(name=name, partition_data=tuple(
                         schema.PartitionProduceData(index=index, records=None if r is None else bytes(r))
                         for index, r in partitions)) for name, partitions in topics))


def kio_response(version: int, topics, throttle_time_ms: int) -> Any:
    response_t = codec.response_schema(0, version)
    schema = sys.modules[response_t.__module__]

    def answer(a: rec.ProducePartitionAnswer) -> Any:
        appended = None if a.log_append_time_ms == -1 else datetime.fromtimestamp(a.log_append_time_ms / 1000, UTC)
        fields: dict[str, Any] = {"index": a.index, "error_code": ErrorCode(a.error_code),
                                  "base_offset": a.base_offset, "log_append_time": appended}
        if version >= 5:
            fields["log_start_offset"] = a.log_start_offset
        if version >= 8:
            fields["record_errors"] = tuple(schema.BatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=m)
                                            for i, m in a.record_errors)
            fields["error_message"] = a.error_message
        return schema.PartitionProduceResponse(**fields)

    responses = tuple(schema.TopicProduceResponse(name=name, partition_responses=tuple(answer(a) for a in answers))
                      for name, answers in topics)
    return response_t(responses=responses, throttle_time=timedelta(milliseconds=throttle_time_ms))


int16s = st.integers(-2**15, 2**15 - 1)
int32s = st.integers(-2**31, 2**31 - 1)
int64s = st.integers(-2**63, 2**63 - 1)
names = st.text(max_size=12)  # non-ASCII included; the empty name is one kio reads too
records_values = st.one_of(st.none(), st.just(b""), st.binary(min_size=1, max_size=300))
topic_lists = st.lists(st.tuples(names, st.lists(st.tuples(int32s, records_values), max_size=4)), max_size=4)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.one_of(st.none(), names), st.one_of(st.none(), names), int16s, int32s,
       topic_lists)
def test_a_request_kio_writes_is_read_with_the_same_fields_and_records_inside_the_frame(
        version, correlation_id, client_id, transactional_id, acks, timeout_ms, topics):
    frame = codec.encode_request(kio_request(version, transactional_id, acks, timeout_ms, topics), correlation_id,
                                 client_id)[4:]
    assert our_fields(frame) == kio_fields(frame) == (version, correlation_id, client_id, transactional_id, acks,
                                                      timeout_ms, tuple((n, tuple(p)) for n, p in topics))
    read = rec.read_produce_request(frame)
    for topic in read.topic_data:
        for partition in topic.partition_data:
            assert partition.records is None or partition.records.obj is frame  # a view of the frame, not a copy


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.one_of(st.none(), names), int16s, int32s, topic_lists,
       st.sampled_from([bytes, bytearray, memoryview]), st.sampled_from([1, 8, rec.BY_REFERENCE_BYTES]))
def test_request_parts_join_to_kio_s_frame_and_reference_each_large_records_buffer(
        version, correlation_id, client_id, acks, timeout_ms, topics, buffer_type, by_reference):
    topics = [(n, [(i, None if r is None else buffer_type(r)) for i, r in parts]) for n, parts in topics]
    parts = rec.produce_request_parts(version, correlation_id, client_id, acks, timeout_ms, topics,
                                      by_reference=by_reference)
    assert b"".join(parts) == codec.encode_request(kio_request(version, None, acks, timeout_ms, topics),
                                                   correlation_id, client_id)
    # a records buffer below the threshold is copied among the small fields (one TLS record, not one per part)
    referenced = [r for _, partitions in topics for _, r in partitions if r is not None and len(r) >= by_reference]
    by_reference = [any(p is r for r in referenced) for p in parts]
    assert [p for p, ref in zip(parts, by_reference, strict=True) if ref] == referenced  # in order, never copied
    # the fields between two records buffers are gathered into one buffer: never two in a row, none empty
    assert not by_reference[0] and all(a or b for a, b in itertools.pairwise(by_reference))
    assert all(len(p) > 0 for p in parts)


answers = st.builds(
    rec.ProducePartitionAnswer, int32s, st.sampled_from([e.value for e in ErrorCode]), int64s,
    st.one_of(st.just(-1), st.integers(0, 2**41)), int64s,
    st.lists(st.tuples(int32s, st.one_of(st.none(), names)), max_size=3).map(tuple), st.one_of(st.none(), names))


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.lists(st.tuples(names, st.lists(answers, max_size=4)), max_size=4),
       st.integers(0, 2**31 - 1))
def test_a_response_frame_is_kio_s_byte_for_byte(version, correlation_id, topics, throttle_time_ms):
    expected = codec.encode_response(kio_response(version, topics, throttle_time_ms), correlation_id)
    assert rec.produce_response_frame(version, correlation_id, topics, throttle_time_ms) == expected


def test_the_common_answer_is_kio_s_in_every_version():
    """The answer the proxy gives most (one partition, no record errors), error codes passed as kio's IntEnum."""
    topics = [("orders", [rec.ProducePartitionAnswer(0, ErrorCode.none, 41, -1, 0)]),
              ("ü", [rec.ProducePartitionAnswer(7, ErrorCode.not_leader_or_follower)])]
    for version in VERSIONS:
        assert rec.produce_response_frame(version, 9, topics) == codec.encode_response(kio_response(version, topics, 0),
                                                                                       9)


def test_the_writers_refuse_a_version_outside_3_to_12():
    for version in (2, 13):
        with pytest.raises(ValueError, match=r"outside 3\.\.12"):
            rec.produce_request_parts(version, 1, None, 1, 100, [])
        with pytest.raises(ValueError, match=r"outside 3\.\.12"):
            rec.produce_response_frame(version, 1, [])


# -- frames written by hand: unknown tagged fields, hostile bytes --------------------------------------------------


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def compact(data: bytes | None) -> bytes:
    return b"\x00" if data is None else uvarint(len(data) + 1) + data


def tag_section(fields: list[tuple[int, bytes]]) -> bytes:
    return uvarint(len(fields)) + b"".join(uvarint(tag) + uvarint(len(data)) + data for tag, data in fields)


def flexible_frame(version: int, topics, tags=lambda where: b"\x00", client_id: bytes | None = b"app",
                   transactional_id: str | None = None) -> bytes:
    """A v9..12 request (no size prefix) with `tags(where)` as each tagged-fields section."""
    out = struct.pack(">hhi", 0, version, 5)
    out += struct.pack(">h", -1) if client_id is None else struct.pack(">h", len(client_id)) + client_id
    out += tags("header") + compact(None if transactional_id is None else transactional_id.encode())
    out += struct.pack(">hi", -1, 3000) + uvarint(len(topics) + 1)
    for name, partitions in topics:
        out += compact(name.encode()) + uvarint(len(partitions) + 1)
        for index, records in partitions:
            out += struct.pack(">i", index) + compact(records) + tags("partition")
        out += tags("topic")
    return out + tags("body")


TOPICS = [("orders", [(0, b"r" * 70), (1, None), (2, b"")]), ("é", [(5, b"x" * 3)])]


def test_the_hand_written_frame_is_kio_s_when_it_carries_no_tags():
    for version in FLEXIBLE:
        assert flexible_frame(version, TOPICS) == codec.encode_request(kio_request(version, None, -1, 3000, TOPICS),
                                                                       5, "app")[4:]


tag_fields = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=140)), max_size=3)


@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from(FLEXIBLE), st.data())
def test_unknown_tagged_fields_in_the_header_body_topic_and_partition_are_skipped_as_kio_skips_them(version, data):
    sections = {where: data.draw(tag_fields, label=where) for where in ("header", "body", "topic", "partition")}
    frame = flexible_frame(version, TOPICS, lambda where: tag_section(sections[where]))
    assert our_fields(frame) == kio_fields(frame) == our_fields(flexible_frame(version, TOPICS))


def test_a_tag_past_the_end_and_a_tag_count_the_frame_cannot_hold_are_refused():
    lies = {"tagged field 7 of 1000 bytes": tag_section([]) [:0] + uvarint(1) + uvarint(7) + uvarint(1000),
            "100 tagged fields": uvarint(100)}
    for message, section in lies.items():
        frame = flexible_frame(12, TOPICS, lambda where, s=section: s if where == "partition" else b"\x00")
        assert kio_fields(frame) is None
        with pytest.raises(rec.MalformedFrame, match=re.escape(message)):
            rec.read_produce_request(frame)


def sample_frames() -> dict[str, bytes]:
    """Valid frames of v3, v8, v9 and v12, the flexible ones with tags in every section."""
    some_tags = {"header": [(3, b"h")], "body": [(1000, b"")], "topic": [], "partition": [(0, b"pp")]}
    frames = {f"v{v}": codec.encode_request(kio_request(v, "tx", 1, 1000, TOPICS), 11, "c")[4:] for v in (3, 8)}
    for v in (9, 12):
        frames[f"v{v}"] = flexible_frame(v, TOPICS, lambda where: tag_section(some_tags[where]), transactional_id="tx")
    return frames


@pytest.mark.parametrize("name", ["v3", "v8", "v9", "v12"])
def test_every_truncation_of_a_frame_is_read_as_kio_reads_it_or_refused_as_kio_refuses_it(name):
    frame = sample_frames()[name]
    assert our_fields(frame) is not None
    for cut in range(len(frame)):
        read_as_kio_does(frame[:cut])


def mutated(sample: bytes, data, cuts: bool = False) -> bytes:
    """`sample` with 1 to 4 bytes flipped, inserted, deleted or set (with `cuts`, or the rest cut off from one), as
    Hypothesis draws them."""
    frame = bytearray(sample)
    changes = ["xor", "insert", "delete", "set"] + (["cut"] if cuts else [])
    for _ in range(data.draw(st.integers(1, 4), label="changes")):
        at = data.draw(st.integers(0, len(frame) - 1), label="at")
        change = data.draw(st.sampled_from(changes), label="change")
        value = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255), label="value")
        if change == "xor":
            frame[at] ^= value or 1
        elif change == "insert":
            frame.insert(at, value)
        elif change == "delete" and len(frame) > 1:
            del frame[at]
        elif change == "cut":
            del frame[at:]
            if not frame:
                break
        else:
            frame[at] = value
    return bytes(frame)


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(["v3", "v8", "v9", "v12"]), st.data())
def test_mutated_bytes_are_read_as_kio_reads_them_or_refused_as_kio_refuses_them(name, data):
    read_as_kio_does(mutated(sample_frames()[name], data))


def test_bytes_after_the_last_field_are_ignored_as_kio_ignores_them():
    for frame in sample_frames().values():
        assert our_fields(frame + b"\x01\x02\x03") == kio_fields(frame + b"\x01\x02\x03") == our_fields(frame)


def legacy_frame(*, api_key=0, version=3, client_id=struct.pack(">h", -1), transactional_id=struct.pack(">h", -1),
                 topics_count=struct.pack(">i", 1), name=struct.pack(">h", 1) + b"t",
                 partitions_count=struct.pack(">i", 1), records=struct.pack(">i", 3) + b"abc") -> bytes:
    """A v3..8 request with one topic and one partition, any field replaced by raw bytes."""
    return (struct.pack(">hhi", api_key, version, 9) + client_id + transactional_id + struct.pack(">hi", 1, 100)
            + topics_count + name + partitions_count + struct.pack(">i", 0) + records)


HOSTILE = {
    "api_key 1 is not Produce": legacy_frame(api_key=1),
    "Produce version 2 outside 3..12": legacy_frame(version=2),
    "Produce version 13 outside 3..12": legacy_frame(version=13),
    "shorter than its header": legacy_frame()[:9],
    "client_id of 32767 bytes": legacy_frame(client_id=struct.pack(">h", 2**15 - 1)),
    "negative length -2 of client_id": legacy_frame(client_id=struct.pack(">h", -2)),
    "negative length -32768 of transactional_id": legacy_frame(transactional_id=struct.pack(">h", -2**15)),
    "2147483647 topics": legacy_frame(topics_count=struct.pack(">i", 2**31 - 1)),
    "null topics array": legacy_frame(topics_count=struct.pack(">i", -1)),
    "null topic name": legacy_frame(name=struct.pack(">h", -1)),
    "topic name of 200 bytes": legacy_frame(name=struct.pack(">h", 200) + b"t"),
    "2147483647 partitions": legacy_frame(partitions_count=struct.pack(">i", 2**31 - 1)),
    "records of 2147483647 bytes": legacy_frame(records=struct.pack(">i", 2**31 - 1) + b"abc"),
    "negative records length -2": legacy_frame(records=struct.pack(">i", -2) + b"abc"),
    "a string that is not UTF-8": legacy_frame(name=struct.pack(">h", 2) + b"\xc3\x28"),
    "v3 request truncated: a field runs past its end": legacy_frame()[:16],  # inside acks, timeout_ms
    "v9 request truncated: a field runs past its end": flexible_frame(9, TOPICS)[:-1],  # the body's tags
    "a varint longer than 5 bytes": flexible_frame(9, TOPICS, client_id=None)[:10] + b"\x80" * 5 + b"\x00",
    "a varint cut by the end of the frame": flexible_frame(9, TOPICS, client_id=None)[:10] + b"\x80\x80",
    "34359738366 topics": flexible_frame(9, [])[:-2] + b"\xff\xff\xff\xff\x7f",
    "records of 34359738366 bytes": flexible_frame(12, [("t", [(0, None)])])[:-4] + b"\xff\xff\xff\xff\x7f\x00",
    "transactional_id of 99 bytes": flexible_frame(12, [], client_id=None)[:10] + b"\x00" + uvarint(100) + b"tx",
    "topic name of 40 bytes": flexible_frame(12, [])[:-2] + b"\x02" + uvarint(41) + b"t" * 39,
    "null partitions array": flexible_frame(12, [("t", [])])[:-3] + b"\x00\x00\x00",
    "null topic name at byte": flexible_frame(12, [("t", [])])[:-5] + b"\x00\x01\x00\x00",
}


@pytest.mark.parametrize("message", HOSTILE)
def test_a_hostile_frame_is_refused_with_a_clear_message_as_kio_refuses_it(message):
    frame = HOSTILE[message]
    with pytest.raises(rec.MalformedFrame, match=re.escape(message)):
        rec.read_produce_request(frame)
    if struct.unpack_from(">h", frame)[0] == 0 and len(frame) > 4 and struct.unpack_from(">h", frame, 2)[0] in VERSIONS:
        assert kio_fields(frame) is None


@pytest.mark.parametrize("version", VERSIONS)
def test_arrays_of_the_smallest_elements_the_frame_can_hold_are_read(version):
    """An array's count is checked against the bytes left with each element's true minimum size, so a frame of
    nothing but the smallest elements is not refused."""
    for topics in ([("", [])] * 5, [("", [(0, None)] * 5)], [("", [(0, b"")] * 3)] * 2):
        frame = codec.encode_request(kio_request(version, None, 0, 0, topics), 1, None)[4:]
        assert our_fields(frame) == kio_fields(frame) is not None


def test_no_allocation_is_sized_from_a_declared_length():
    """Frames of a few bytes declaring 2^31 topics, partitions, records bytes, tagged fields: read (and refused)
    with no more memory than a handful of small objects."""
    frames = [HOSTILE[m] for m in ("2147483647 topics", "2147483647 partitions", "records of 2147483647 bytes",
                                   "34359738366 topics", "records of 34359738366 bytes")]
    frames.append(flexible_frame(12, TOPICS, lambda where: uvarint(2**35 - 1) if where == "topic" else b"\x00"))
    tracemalloc.start()
    try:
        for frame in frames:
            tracemalloc.reset_peak()
            with pytest.raises(rec.MalformedFrame):
                rec.read_produce_request(frame)
            assert tracemalloc.get_traced_memory()[1] < 16_384
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("buffer_type", [bytearray, memoryview])
def test_a_frame_in_a_bytearray_or_a_view_of_a_larger_buffer_is_read_in_place(buffer_type):
    frame = sample_frames()["v12"]
    whole = bytearray(b"\x00\x00\x00\x00" + frame)  # as a reader's buffer holds it, size prefix first
    given_frame = memoryview(whole)[4:] if buffer_type is memoryview else bytearray(frame)
    read = rec.read_produce_request(given_frame)
    assert our_fields(given_frame) == kio_fields(frame)
    owner = whole if buffer_type is memoryview else given_frame
    assert all(p.records.obj is owner for t in read.topic_data for p in t.partition_data if p.records is not None)


# -- responses: a broker's answer read as kio reads it --------------------------------------------------------------


def kio_answers(frame: bytes, version: int) -> tuple[Any, ...] | None:
    """The answers kio reads from a response frame (no size prefix) in read_produce_response's shape, or None."""
    try:
        _, body = codec.decode_response(codec.response_schema(0, version), frame)
    except codec.DecodeError:
        return None

    def answer(p: Any) -> rec.ProducePartitionAnswer:
        appended, epoch = p.log_append_time, datetime(1970, 1, 1, tzinfo=UTC)
        return rec.ProducePartitionAnswer(
            p.index, int(p.error_code), p.base_offset,
            # kio goes through a float of seconds: its datetime may be a microsecond off the broker's milliseconds
            -1 if appended is None else round((appended - epoch) / timedelta(milliseconds=1)),
            getattr(p, "log_start_offset", -1),
            tuple((e.batch_index, e.batch_index_error_message) for e in getattr(p, "record_errors", ())),
            getattr(p, "error_message", None))

    return tuple((t.name, tuple(answer(p) for p in t.partition_responses)) for t in body.responses)


def our_answers(frame: bytes | bytearray | memoryview, version: int) -> tuple[Any, ...] | None:
    """The same from read_produce_response; None for MalformedFrame (any other exception fails the test)."""
    try:
        return rec.read_produce_response(frame, version)
    except rec.MalformedFrame:
        return None


def kio_holds(answer: rec.ProducePartitionAnswer) -> bool:
    """Whether kio can hold the answer's error code and append time: it refuses a code it does not know and a time
    a datetime cannot hold (before 1970 but -1, after 9999), both of which Kafka's readers take as plain ints."""
    frame = struct.pack(">iih1sii hqqi", 1, 1, 1, b"t", 1, 0, answer.error_code, 0, answer.log_append_time_ms, 0)
    return kio_answers(frame.replace(b" ", b""), 3) is not None


def answers_as_kio_does(frame: bytes, version: int) -> None:
    """records.py reads the answers kio reads, and refuses what kio refuses, but for the values kio cannot hold."""
    ours, theirs = our_answers(frame, version), kio_answers(frame, version)
    if theirs is not None:
        assert ours == theirs
    elif ours is not None:
        assert not all(kio_holds(a) for _, answers in ours for a in answers)


leaders = st.one_of(st.none(), st.tuples(int32s, int32s))
endpoints = st.lists(st.tuples(int32s, names, int32s, st.one_of(st.none(), names)), max_size=3)


def kio_response_with_hints(version: int, topics, throttle_time_ms: int, leader, node_endpoints) -> Any:
    """kio_response, with v10+'s tagged hints set as a broker sets them on NOT_LEADER_OR_FOLLOWER."""
    response = kio_response(version, topics, throttle_time_ms)
    if version < 10:
        return response
    schema = sys.modules[type(response).__module__]
    if leader is not None:
        current = schema.LeaderIdAndEpoch(leader_id=leader[0], leader_epoch=leader[1])
        response = dataclasses.replace(response, responses=tuple(
            dataclasses.replace(t, partition_responses=tuple(dataclasses.replace(p, current_leader=current)
                                                             for p in t.partition_responses))
            for t in response.responses))
    return dataclasses.replace(response, node_endpoints=tuple(
        schema.NodeEndpoint(node_id=n, host=h, port=p, rack=r) for n, h, p, r in node_endpoints))


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.lists(st.tuples(names, st.lists(answers, max_size=4)), max_size=4),
       st.integers(0, 2**31 - 1), leaders, endpoints)
def test_a_response_kio_writes_is_read_with_kio_s_values(version, correlation_id, topics, throttle_time_ms, leader,
                                                         node_endpoints):
    response = kio_response_with_hints(version, topics, throttle_time_ms, leader, node_endpoints)
    frame = codec.encode_response(response, correlation_id)[4:]
    read = rec.read_produce_response(frame, version)
    assert read == kio_answers(frame, version)
    assert all(type(a.error_code) is int for _, answers in read for a in answers)  # plain ints, not kio's IntEnum


def test_a_response_written_by_records_py_is_read_back():
    topics = (("orders", (rec.ProducePartitionAnswer(0, 0, 41, 1_700_000_000_000, 3),
                          rec.ProducePartitionAnswer(1, 18, record_errors=((0, "bad"), (2, None)),
                                                     error_message="no"))),)
    for version in VERSIONS:
        read = rec.read_produce_response(rec.produce_response_frame(version, 9, topics)[4:], version)
        expected = [(n, [a if version >= 8 else dataclasses.replace(a, record_errors=(), error_message=None)
                         for a in answers]) for n, answers in topics]
        if version < 5:
            expected = [(n, [dataclasses.replace(a, log_start_offset=-1) for a in answers]) for n, answers in expected]
        assert read == tuple((n, tuple(answers)) for n, answers in expected)


def test_codes_and_times_kio_cannot_hold_are_read_as_kafka_reads_them():
    """A broker newer than kio may send an error code kio does not know; it stays an int for the proxy to pass on."""
    topics = [("t", [rec.ProducePartitionAnswer(0, 9999, 5, -2, 0), rec.ProducePartitionAnswer(1, 0, 6, 2**62, 0)])]
    for version in VERSIONS:
        frame = rec.produce_response_frame(version, 1, topics)[4:]
        assert kio_answers(frame, version) is None
        answers = rec.read_produce_response(frame, version)[0][1]
        assert [(a.error_code, a.log_append_time_ms) for a in answers] == [(9999, -2), (0, 2**62)]


def flexible_response(version: int, tags=lambda where: b"\x00", message: bytes | None = b"m") -> bytes:
    """A v9..12 response (no size prefix): one topic, one answer with one record error, `tags(where)` as each
    tagged-fields section."""
    out = struct.pack(">i", 7) + tags("header") + uvarint(2) + compact(b"orders") + uvarint(2)
    out += struct.pack(">ihqqq", 3, 0, 10, -1, 0) + uvarint(2) + struct.pack(">i", 0) + compact(b"e") + tags("error")
    out += compact(message) + tags("partition") + tags("topic") + struct.pack(">i", 0)
    return out + tags("body")


def test_the_hand_written_response_is_kio_s_when_it_carries_no_tags():
    topics = [("orders", [rec.ProducePartitionAnswer(3, 0, 10, -1, 0, ((0, "e"),), "m")])]
    for version in FLEXIBLE:
        assert flexible_response(version) == codec.encode_response(kio_response(version, topics, 0), 7)[4:]


unknown_tag_fields = st.lists(st.tuples(st.integers(1, 2**32 - 1), st.binary(max_size=140)), max_size=3)


@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from(FLEXIBLE), st.data())
def test_unknown_tagged_fields_of_a_response_are_skipped_as_kio_skips_them(version, data):
    where_all = ("header", "error", "partition", "topic", "body")
    fields = unknown_tag_fields if version >= 10 else tag_fields  # tag 0 is known in a v10+ answer and body
    sections = {where: data.draw(fields, label=where) for where in where_all}
    frame = flexible_response(version, lambda where: tag_section(sections[where]))
    assert our_answers(frame, version) == kio_answers(frame, version) == our_answers(flexible_response(version),
                                                                                     version)


def sample_responses() -> dict[str, tuple[bytes, int]]:
    """Valid responses of v3, v8, v9 and v12: record errors and messages, v12 with both hints and unknown tags."""
    topics = [("orders", [rec.ProducePartitionAnswer(0, 6, 41, 1_700_000_000_000, 0, ((1, "bad"), (2, None)), "m"),
                          rec.ProducePartitionAnswer(1, 0, 7)]), ("é", [rec.ProducePartitionAnswer(5, 0)])]
    frames = {f"v{v}": (codec.encode_response(kio_response(v, topics, 3), 11)[4:], v) for v in (3, 8, 9)}
    hinted = kio_response_with_hints(12, topics, 3, (4, 9), [(1, "broker-1", 9092, "r1"), (2, "b2", 9093, None)])
    frame = codec.encode_response(hinted, 11)[4:]
    frames["v12"] = (frame[:4] + tag_section([(5, b"hh")]) + frame[5:], 12)  # an unknown tag in the header
    return frames


@pytest.mark.parametrize("name", ["v3", "v8", "v9", "v12"])
def test_every_truncation_of_a_response_is_read_as_kio_reads_it_or_refused_as_kio_refuses_it(name):
    frame, version = sample_responses()[name]
    assert our_answers(frame, version) is not None
    for cut in range(len(frame)):
        answers_as_kio_does(frame[:cut], version)


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(["v3", "v8", "v9", "v12"]), st.data())
def test_mutated_response_bytes_are_read_as_kio_reads_them_or_refused_as_kio_refuses_them(name, data):
    sample, version = sample_responses()[name]
    answers_as_kio_does(mutated(sample, data), version)


def test_bytes_after_the_last_field_of_a_response_are_ignored_as_kio_ignores_them():
    for frame, version in sample_responses().values():
        extended = frame + b"\x01\x02\x03"
        assert our_answers(extended, version) == kio_answers(extended, version) == our_answers(frame, version)


def legacy_response(*, topics_count=struct.pack(">i", 1), name=struct.pack(">h", 1) + b"t",
                    partitions_count=struct.pack(">i", 1), record_errors=struct.pack(">i", 0),
                    message=struct.pack(">h", -1), throttle=struct.pack(">i", 0)) -> bytes:
    """A v8 response with one topic and one answer, any field replaced by raw bytes."""
    return (struct.pack(">i", 3) + topics_count + name + partitions_count + struct.pack(">ihqqq", 0, 0, 1, -1, 0)
            + record_errors + message + throttle)


def hinted(leader: bytes, endpoints: bytes) -> bytes:
    """A v12 response whose answer carries `leader` as tag 0 and whose body carries `endpoints` as tag 0."""
    return flexible_response(12, lambda where: {"partition": tag_section([(0, leader)]),
                                                "body": tag_section([(0, endpoints)])}.get(where, b"\x00"))


ENDPOINT = struct.pack(">i", 1) + compact(b"h") + struct.pack(">i", 9092) + compact(None) + b"\x00"
HOSTILE_RESPONSES = {
    "2147483647 topics": (legacy_response(topics_count=struct.pack(">i", 2**31 - 1)), 8),
    "null topics array": (legacy_response(topics_count=struct.pack(">i", -1)), 8),
    "null topic name": (legacy_response(name=struct.pack(">h", -1)), 8),
    "2147483647 partition answers": (legacy_response(partitions_count=struct.pack(">i", 2**31 - 1)), 8),
    "null record errors array": (legacy_response(record_errors=struct.pack(">i", -1)), 8),
    "2147483647 record errors": (legacy_response(record_errors=struct.pack(">i", 2**31 - 1)), 8),
    "error_message of 300 bytes": (legacy_response(message=struct.pack(">h", 300) + b"m"), 8),
    "a string that is not UTF-8": (legacy_response(name=struct.pack(">h", 2) + b"\xc3\x28"), 8),
    "v8 response truncated: a field runs past its end": (legacy_response(throttle=b"\x00\x00"), 8),
    "v12 response truncated: a field runs past its end": (flexible_response(12)[:-1], 12),
    "34359738366 topics": (struct.pack(">i", 1) + b"\x00\xff\xff\xff\xff\x7f", 12),
    "null partition answers array": (struct.pack(">i", 1) + b"\x00\x02" + compact(b"t") + b"\x00" * 8, 12),
    "null topic name at byte": (struct.pack(">i", 1) + b"\x00\x02\x00\x01\x00" + b"\x00" * 8, 12),
    "34359738366 record errors": (flexible_response(12).replace(b"\x02\x00\x00\x00\x00\x02e", b"\xff\xff\xff\xff\x7f"),
                                  12),
    "tagged field 0 of 200 bytes": (flexible_response(12, lambda where: uvarint(1) + uvarint(0) + uvarint(200)
                                                      + struct.pack(">ii", 4, 9) if where == "partition" else b"\x00"),
                                    12),
    "v12 response truncated": (hinted(struct.pack(">ii", 4, 9), ENDPOINT), 12),  # current_leader without its tags
    "null host": (hinted(struct.pack(">ii", 4, 9) + b"\x00", uvarint(2) + ENDPOINT.replace(compact(b"h"), b"\x00")),
                  12),
    "1000 node endpoints": (hinted(struct.pack(">ii", 4, 9) + b"\x00", uvarint(1001) + ENDPOINT), 12),
}


@pytest.mark.parametrize("message", HOSTILE_RESPONSES)
def test_a_hostile_response_is_refused_with_a_clear_message_as_kio_refuses_it(message):
    frame, version = HOSTILE_RESPONSES[message]
    with pytest.raises(rec.MalformedFrame, match=re.escape(message)):
        rec.read_produce_response(frame, version)
    assert kio_answers(frame, version) is None


def test_no_allocation_is_sized_from_a_declared_length_in_a_response():
    frames = [HOSTILE_RESPONSES[m] for m in ("2147483647 topics", "2147483647 partition answers",
                                             "2147483647 record errors", "34359738366 topics",
                                             "34359738366 record errors", "1000 node endpoints")]
    tracemalloc.start()
    try:
        for frame, version in frames:
            tracemalloc.reset_peak()
            with pytest.raises(rec.MalformedFrame):
                rec.read_produce_response(frame, version)
            assert tracemalloc.get_traced_memory()[1] < 16_384
    finally:
        tracemalloc.stop()


def test_the_response_reader_refuses_a_version_outside_3_to_12():
    for version in (2, 13):
        with pytest.raises(ValueError, match=r"outside 3\.\.12"):
            rec.read_produce_response(b"\x00" * 16, version)


@pytest.mark.parametrize("buffer_type", [bytearray, memoryview])
def test_a_response_in_a_bytearray_or_a_read_only_view_is_read(buffer_type):
    frame, version = sample_responses()["v12"]
    given_frame = memoryview(b"\x00" * 4 + frame)[4:] if buffer_type is memoryview else bytearray(frame)
    assert our_answers(given_frame, version) == kio_answers(frame, version) is not None
