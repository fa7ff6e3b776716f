"""records.py's FetchResponse reader and writer against kio, which read and wrote the consume path before: the same
values read from every answer kio reads, MalformedFrame for every answer kio refuses (never another exception, never
an allocation sized from a declared length), the same bytes written (the client's answer and the request to the
broker), and the record sets never copied."""

from __future__ import annotations

import io
import re
import struct
import sys
import tracemalloc
from datetime import timedelta
from typing import Any

import pytest
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.serial.writers import write_unsigned_varint
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build

from .test_produce_frames import compact, mutated, tag_section, uvarint

VERSIONS = range(4, 13)
KNOWN_CODES = {int(c) for c in ErrorCode}


def kio_response(version: int, topics, throttle_time_ms: int = 0, error_code: int = 0, session_id: int = 0,
                 tags: dict | None = None) -> Any:
    """kio's FetchResponse of `version` holding `topics`: (name, [FetchPartitionData]) pairs; `tags`: a v12
    partition's tagged structs by field name (diverging_epoch, current_leader, snapshot_id) as dicts."""
    response_t = codec.response_schema(1, version)
    schema = sys.modules[response_t.__module__]

    def partition(p: rec.FetchPartitionData) -> Any:
        fields: dict[str, Any] = {
            "partition_index": p.partition_index, "error_code": ErrorCode(p.error_code),
            "high_watermark": p.high_watermark, "last_stable_offset": p.last_stable_offset,
            "aborted_transactions": None if p.aborted_transactions is None else tuple(
                schema.AbortedTransaction(producer_id=a.producer_id, first_offset=a.first_offset)
                for a in p.aborted_transactions),
            "records": None if p.records is None else bytes(p.records)}
        if version >= 5:
            fields["log_start_offset"] = p.log_start_offset
        if version >= 11:
            fields["preferred_read_replica"] = p.preferred_read_replica
        kinds = {"diverging_epoch": "EpochEndOffset", "current_leader": "LeaderIdAndEpoch", "snapshot_id": "SnapshotId"}
        for name, values in (tags or {}).items():
            fields[name] = getattr(schema, kinds[name])(**values)
        return schema.PartitionData(**fields)

    body: dict[str, Any] = {"throttle_time": timedelta(milliseconds=throttle_time_ms), "responses": tuple(
        schema.FetchableTopicResponse(topic=name, partitions=tuple(partition(p) for p in ps)) for name, ps in topics)}
    if version >= 7:
        body |= {"error_code": ErrorCode(error_code), "session_id": session_id}
    return response_t(**body)


def as_values(answer: Any, version: int) -> tuple[Any, ...]:
    """What a FetchResponse says, kio's or records.py's, in one comparable shape (records as bytes)."""
    def aborted(p: Any) -> Any:
        txns = p.aborted_transactions
        return None if txns is None else tuple((a.producer_id, a.first_offset) for a in txns)

    throttle = answer.throttle_time // timedelta(milliseconds=1) if hasattr(answer, "throttle_time") \
        else answer.throttle_time_ms
    return (throttle, int(getattr(answer, "error_code", 0)), getattr(answer, "session_id", 0), tuple(
        (t.topic, tuple((p.partition_index, int(p.error_code), p.high_watermark, p.last_stable_offset,
                         getattr(p, "log_start_offset", -1), aborted(p), getattr(p, "preferred_read_replica", -1),
                         None if p.records is None else bytes(p.records)) for p in t.partitions))
        for t in answer.responses))


def kio_values(frame: bytes, version: int) -> tuple[Any, ...] | None:
    """The values kio reads from an answer (no size prefix), or None when it refuses it."""
    try:
        _, body = codec.decode_response(codec.response_schema(1, version), frame)
    except codec.DecodeError:
        return None
    return as_values(body, version)


def our_values(frame: bytes | bytearray | memoryview, version: int) -> tuple[Any, ...] | None:
    """The same from read_fetch_response; None for MalformedFrame (any other exception fails the test)."""
    try:
        return as_values(rec.read_fetch_response(frame, version), version)
    except rec.MalformedFrame:
        return None


def read_as_kio_does(frame: bytes, version: int) -> None:
    """records.py reads what kio reads and refuses what kio refuses, but for error codes kio does not know (a newer
    broker's: Kafka's readers take any int16, and so does records.py)."""
    ours, theirs = our_values(frame, version), kio_values(frame, version)
    if theirs is not None or ours is None:
        assert ours == theirs
        return
    codes = {ours[1]} | {p[1] for _, ps in ours[3] for p in ps}
    assert not codes <= KNOWN_CODES, "records.py read an answer kio refuses, with only error codes kio knows"


# -- answers kio writes ---------------------------------------------------------------------------------------------

int16s = st.integers(-2**15, 2**15 - 1)
int32s = st.integers(-2**31, 2**31 - 1)
int64s = st.integers(-2**63, 2**63 - 1)
names = st.text(max_size=12)
codes = st.sampled_from(sorted(KNOWN_CODES))
records_values = st.one_of(st.none(), st.just(b""), st.binary(min_size=1, max_size=300))
aborted_lists = st.one_of(st.none(), st.lists(st.builds(rec.AbortedTransaction, int64s, int64s), max_size=3)
                          .map(tuple))
partitions = st.builds(rec.FetchPartitionData, int32s, codes, int64s, int64s, int64s, aborted_lists, int32s,
                       records_values)
topic_lists = st.lists(st.tuples(names, st.lists(partitions, max_size=4)), max_size=4)


def expected(version: int, topics, throttle: int, error_code: int, session_id: int) -> tuple[Any, ...]:
    """What reading an answer written from these values gives: fields the version lacks at their defaults."""
    def p(x: rec.FetchPartitionData) -> rec.FetchPartitionData:
        return rec.FetchPartitionData(x.partition_index, x.error_code, x.high_watermark, x.last_stable_offset,
                                      x.log_start_offset if version >= 5 else -1, x.aborted_transactions,
                                      x.preferred_read_replica if version >= 11 else -1, x.records)

    values = as_values(rec.FetchResponseFrame(throttle, error_code, session_id,
                                              tuple(rec.FetchTopicData(n, tuple(map(p, ps))) for n, ps in topics)),
                       version)
    return values if version >= 7 else (values[0], 0, 0, values[3])


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, topic_lists, st.integers(0, 2**31 - 1), codes, int32s)
def test_an_answer_kio_writes_is_read_with_kio_s_values_and_records_inside_the_frame(
        version, correlation_id, topics, throttle, error_code, session_id):
    frame = codec.encode_response(kio_response(version, topics, throttle, error_code, session_id), correlation_id)[4:]
    assert our_values(frame, version) == kio_values(frame, version) == expected(version, topics, throttle, error_code,
                                                                                session_id)
    read = rec.read_fetch_response(frame, version)
    assert all(p.records is None or p.records.obj is frame for t in read.responses for p in t.partitions)
    assert all(type(p.error_code) is int for t in read.responses for p in t.partitions)  # not kio's IntEnum


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, topic_lists, codes, st.integers(1, 400))
def test_answer_parts_join_to_kio_s_frame_and_reference_each_large_record_set(version, correlation_id, topics,
                                                                              error_code, by_reference):
    """fetch_response_parts writes kio's bytes (v12: no tags, as the proxy sets none), and every record set of
    `by_reference` bytes or more is one of the parts itself, not a copy."""
    parts = rec.fetch_response_parts(version, correlation_id, error_code, 0,
                                     [(n, ps) for n, ps in topics], by_reference=by_reference)
    assert b"".join(parts) == codec.encode_response(kio_response(version, topics, 0, error_code), correlation_id)
    large = [p.records for _, ps in topics for p in ps if p.records is not None and len(p.records) >= by_reference]
    assert [id(r) for r in large] == [id(part) for part in parts if any(part is r for r in large)]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_record_set_in_parts_is_written_as_its_joined_bytes_its_large_pieces_by_reference(version):
    large = memoryview(b"L" * 20_000)
    pieces = rec.RecordParts([bytearray(b"head"), large, bytearray(b"tail"), memoryview(b"s" * 10)], 20_018)
    parts = rec.fetch_response_parts(version, 4, 0, 0, [("t", [rec.FetchPartitionData(0, 0, 5, 5, 0, None, -1,
                                                                                       pieces)])])
    joined = rec.FetchPartitionData(0, 0, 5, 5, 0, None, -1, bytes(pieces))
    assert b"".join(parts) == b"".join(rec.fetch_response_parts(version, 4, 0, 0, [("t", [joined])]))
    assert any(p is large for p in parts) and len(parts) == 3


@settings(max_examples=examples(40), deadline=None)
@given(st.sampled_from(VERSIONS), st.lists(st.tuples(st.integers(0, 3 << 20), aborted_lists), min_size=1,
                                           max_size=3))
def test_answers_of_large_record_sets_are_kio_s_bytes_and_read_back_as_written(version, sets):
    """Record sets of up to 3 MiB (records lengths of 1 to 4 varint bytes, v12) with and without aborted
    transactions (the one-pack head and the field-by-field one): fetch_response_parts writes kio's bytes, and
    read_fetch_response reads back what was written, each record set in the frame."""
    topics = [("t", [rec.FetchPartitionData(i, 0, 10 + i, 9, 0, aborted, 3, bytes([i]) * size)
                     for i, (size, aborted) in enumerate(sets)])]
    frame = b"".join(rec.fetch_response_parts(version, 7, 0, 0, topics))
    assert frame == codec.encode_response(kio_response(version, topics), 7)
    assert our_values(frame[4:], version) == expected(version, topics, 0, 0, 0)


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000,
                                                            0xFFFFFFF, 0x10000000, 2**32 - 1])))
def test_a_varint_is_written_as_kio_writes_it_and_read_back(value):
    """varint_bytes (unrolled up to 3 bytes) writes what kio writes, and records.py's reader reads it back."""
    kio_bytes = io.BytesIO()
    write_unsigned_varint(kio_bytes, value)
    written = rec.varint_bytes(value)
    assert written == kio_bytes.getvalue()
    assert rec._uvarint(memoryview(written), 0, len(written)) == (value, len(written))


def test_the_writer_and_the_reader_refuse_a_version_outside_4_to_12():
    for version in (3, 13):
        with pytest.raises(ValueError, match=r"outside 4\.\.12"):
            rec.fetch_response_parts(version, 1, 0, 0, [])
        with pytest.raises(ValueError, match=r"outside 4\.\.12"):
            rec.read_fetch_response(b"\x00" * 16, version)


def test_error_codes_kio_does_not_know_are_read_as_kafka_reads_them():
    """A broker newer than kio may send an error code kio does not know: it stays an int for the proxy to pass on."""
    topics = [("t", [rec.FetchPartitionData(0, 9999, 5, 5, 0, None, -1, b"x")])]
    for version in VERSIONS:
        frame = b"".join(rec.fetch_response_parts(version, 1, 0, 0, topics))[4:]
        assert kio_values(frame, version) is None
        assert rec.read_fetch_response(frame, version).responses[0].partitions[0].error_code == 9999


# -- v12's tagged fields ---------------------------------------------------------------------------------------------

TAGGED = {"diverging_epoch": {"epoch": 4, "end_offset": 77}, "current_leader": {"leader_id": 2, "leader_epoch": 9},
          "snapshot_id": {"end_offset": 5, "epoch": 3}}
ONE = [("orders", [rec.FetchPartitionData(3, 0, 10, 10, 0, (rec.AbortedTransaction(7, 8),), 1, b"batches")])]


def test_v12_s_known_tags_are_read_as_kio_reads_them_and_not_passed_on():
    for name, values in TAGGED.items():
        frame = codec.encode_response(kio_response(12, ONE, tags={name: values}), 5)[4:]
        assert frame != codec.encode_response(kio_response(12, ONE), 5)[4:]  # the tag is there
        assert our_values(frame, 12) == kio_values(frame, 12) == expected(12, ONE, 0, 0, 0)


def flexible_answer(tags=lambda where: b"\x00", records: bytes = b"batches") -> bytes:
    """A v12 answer (no size prefix): one topic, one partition with one aborted transaction, `tags(where)` as each
    tagged-fields section."""
    out = struct.pack(">i", 7) + tags("header") + struct.pack(">ihi", 0, 0, 0) + uvarint(2) + compact(b"orders")
    out += uvarint(2) + struct.pack(">ihqqq", 3, 0, 10, 10, 0) + uvarint(2) + struct.pack(">qq", 7, 8)
    out += tags("aborted") + struct.pack(">i", 1) + compact(records) + tags("partition") + tags("topic")
    return out + tags("body")


def test_the_hand_written_answer_is_kio_s_when_it_carries_no_tags():
    assert flexible_answer() == codec.encode_response(kio_response(12, ONE), 7)[4:]


tag_fields = st.lists(st.tuples(st.integers(3, 2**32 - 1), st.binary(max_size=140)), max_size=3)


@settings(max_examples=examples(150), deadline=None)
@given(st.data())
def test_unknown_tagged_fields_are_skipped_as_kio_skips_them(data):
    sections = {where: data.draw(tag_fields, label=where)
                for where in ("header", "aborted", "partition", "topic", "body")}
    frame = flexible_answer(lambda where: tag_section(sections[where]))
    assert our_values(frame, 12) == kio_values(frame, 12) == our_values(flexible_answer(), 12) is not None


# -- truncations, mutations, hostile answers --------------------------------------------------------------------------

def sample_answers() -> dict[str, tuple[bytes, int]]:
    """Valid answers of v4, v5, v7, v11 and v12 (the last with every known tag and unknown ones), each with two
    topics, aborted transactions, a null and an empty record set."""
    topics = [("orders", [rec.FetchPartitionData(0, 1, 41, 40, 2, (rec.AbortedTransaction(5, 6),), 2, b"rec" * 5),
                          rec.FetchPartitionData(1, 0, 7, 7, 0, None, -1, None)]),
              ("é", [rec.FetchPartitionData(5, 0, 1, 1, 0, (), -1, b"")])]
    frames = {f"v{v}": (codec.encode_response(kio_response(v, topics, 3, 0, 0), 11)[4:], v) for v in (4, 5, 7, 11)}
    frame = codec.encode_response(kio_response(12, topics, 3, 0, 0, TAGGED), 11)[4:]
    frames["v12"] = (frame[:4] + tag_section([(5, b"hh")]) + frame[5:], 12)  # an unknown tag in the header
    return frames


@pytest.mark.parametrize("name", ["v4", "v5", "v7", "v11", "v12"])
def test_every_truncation_is_read_as_kio_reads_it_or_refused_as_kio_refuses_it(name):
    frame, version = sample_answers()[name]
    assert our_values(frame, version) is not None
    for cut in range(len(frame)):
        read_as_kio_does(frame[:cut], version)


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(["v4", "v5", "v7", "v11", "v12"]), st.data())
def test_mutated_bytes_are_read_as_kio_reads_them_or_refused_as_kio_refuses_them(name, data):
    sample, version = sample_answers()[name]
    read_as_kio_does(mutated(sample, data), version)


def test_bytes_after_the_last_field_are_ignored_as_kio_ignores_them():
    for frame, version in sample_answers().values():
        extended = frame + b"\x01\x02\x03"
        assert our_values(extended, version) == kio_values(extended, version) == our_values(frame, version)


def legacy_answer(*, version=11, topics_count=struct.pack(">i", 1), name=struct.pack(">h", 1) + b"t",
                  partitions_count=struct.pack(">i", 1), aborted=struct.pack(">i", 1) + struct.pack(">qq", 1, 2),
                  records=struct.pack(">i", 3) + b"abc") -> bytes:
    """A v7..11 answer with one topic and one partition, any field replaced by raw bytes."""
    replica = struct.pack(">i", -1) if version >= 11 else b""
    return (struct.pack(">iihi", 3, 0, 0, 0) + topics_count + name + partitions_count
            + struct.pack(">ihqqq", 0, 0, 1, 1, 0) + aborted + replica + records)


HOSTILE = {
    "2147483647 topics": (legacy_answer(topics_count=struct.pack(">i", 2**31 - 1)), 11),
    "null topics array": (legacy_answer(topics_count=struct.pack(">i", -1)), 11),
    "null topic name": (legacy_answer(name=struct.pack(">h", -1)), 11),
    "topic name of 200 bytes": (legacy_answer(name=struct.pack(">h", 200) + b"t"), 11),
    "a string that is not UTF-8": (legacy_answer(name=struct.pack(">h", 2) + b"\xc3\x28"), 11),
    "2147483647 partition answers": (legacy_answer(partitions_count=struct.pack(">i", 2**31 - 1)), 11),
    "2147483647 aborted transactions": (legacy_answer(aborted=struct.pack(">i", 2**31 - 1)), 11),
    "negative aborted transactions count -2": (legacy_answer(aborted=struct.pack(">i", -2)), 11),
    "records of 2147483647 bytes": (legacy_answer(records=struct.pack(">i", 2**31 - 1) + b"abc"), 11),
    "negative records length -2": (legacy_answer(records=struct.pack(">i", -2) + b"abc"), 11),
    "v7 response truncated: a field runs past its end": (legacy_answer(version=7)[:-5], 7),
    "v12 response truncated: a field runs past its end": (flexible_answer()[:-1], 12),
    "34359738366 topics": (struct.pack(">i", 1) + b"\x00" + struct.pack(">ihi", 0, 0, 0) + b"\xff\xff\xff\xff\x7f", 12),
    "records of 34359738366 bytes": (flexible_answer().replace(compact(b"batches"), b"\xff\xff\xff\xff\x7f"), 12),
    "34359738366 aborted transactions": (flexible_answer().replace(uvarint(2) + struct.pack(">qq", 7, 8),
                                                                   b"\xff\xff\xff\xff\x7f"), 12),
    "null partition answers array": (flexible_answer().replace(compact(b"orders") + uvarint(2),
                                                              compact(b"orders") + b"\x00"), 12),
    "null topic name at byte": (flexible_answer().replace(compact(b"orders"), b"\x00"), 12),
    "a varint longer than 5 bytes": (flexible_answer().replace(compact(b"batches"), b"\x80" * 5 + b"\x01"), 12),
    "tagged field 1 of 200 bytes": (flexible_answer(lambda where: uvarint(1) + uvarint(1) + uvarint(200)
                                                    + struct.pack(">ii", 4, 9) if where == "partition" else b"\x00"),
                                    12),
    "v12 response truncated": (flexible_answer(lambda where: tag_section([(2, struct.pack(">qi", 5, 3))])
                                               if where == "partition" else b"\x00"), 12),  # snapshot_id, no tags
}


@pytest.mark.parametrize("message", HOSTILE)
def test_a_hostile_answer_is_refused_with_a_clear_message_as_kio_refuses_it(message):
    frame, version = HOSTILE[message]
    with pytest.raises(rec.MalformedFrame, match=re.escape(message)):
        rec.read_fetch_response(frame, version)
    assert kio_values(frame, version) is None


def test_no_allocation_is_sized_from_a_declared_length():
    """Answers of a few bytes declaring 2^31 (or 2^35) topics, partitions, aborted transactions, record bytes or
    tagged fields: refused with no more memory than a handful of small objects."""
    frames = [HOSTILE[m] for m in ("2147483647 topics", "2147483647 partition answers",
                                   "2147483647 aborted transactions", "records of 2147483647 bytes",
                                   "34359738366 topics", "records of 34359738366 bytes",
                                   "34359738366 aborted transactions")]
    frames.append((flexible_answer(lambda where: uvarint(2**35 - 1) if where == "partition" else b"\x00"), 12))
    tracemalloc.start()
    try:
        for frame, version in frames:
            tracemalloc.reset_peak()
            with pytest.raises(rec.MalformedFrame):
                rec.read_fetch_response(frame, version)
            assert tracemalloc.get_traced_memory()[1] < 16_384
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("buffer_type", [bytearray, memoryview])
def test_an_answer_in_a_bytearray_or_a_read_only_view_is_read_in_place(buffer_type):
    """The upstream reader delivers a large answer as a read-only view of its own bytearray."""
    frame, version = sample_answers()["v12"]
    whole = bytearray(b"\x00" * 4 + frame)
    given_frame = memoryview(whole).toreadonly()[4:] if buffer_type is memoryview else bytearray(frame)
    read = rec.read_fetch_response(given_frame, version)
    assert as_values(read, version) == kio_values(frame, version) is not None
    owner = whole if buffer_type is memoryview else given_frame
    assert all(p.records.obj is owner for t in read.responses for p in t.partitions if p.records is not None)


# -- the request the proxy sends ---------------------------------------------------------------------------------------

request_topics = st.lists(st.builds(rec.FetchTopicRequest, names, st.lists(
    st.builds(rec.FetchPartitionRequest, int32s, int64s, int32s), max_size=4).map(tuple)), max_size=4).map(tuple)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.one_of(st.none(), names), st.integers(0, 2**31 - 1), int32s, int32s,
       st.sampled_from([0, 1]), request_topics)
def test_the_request_frame_is_kio_s_byte_for_byte(version, correlation_id, client_id, max_wait_ms, min_bytes,
                                                  max_bytes, isolation_level, topics):
    """What the proxy asked kio for before: replica -1, sessionless, no leader epoch, last fetched epoch or log
    start, no forgotten topics, rack "" and no cluster id."""
    kio_request = build(codec.request_schema(1, version), {
        "cluster_id": None, "replica_id": -1, "max_wait": i32Timedelta.parse(timedelta(milliseconds=max_wait_ms)),
        "min_bytes": min_bytes, "max_bytes": max_bytes, "isolation_level": isolation_level, "session_id": 0,
        "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": t.topic, "partitions": [
            {"partition": p.partition, "current_leader_epoch": -1, "fetch_offset": p.fetch_offset,
             "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": p.partition_max_bytes}
            for p in t.partitions]} for t in topics]})
    assert rec.fetch_request_frame(version, correlation_id, client_id, max_wait_ms, min_bytes, max_bytes,
                                   isolation_level, topics) == codec.encode_request(kio_request, correlation_id,
                                                                                    client_id)


def test_the_request_writer_refuses_a_version_outside_4_to_12():
    for version in (3, 13):
        with pytest.raises(ValueError, match=r"outside 4\.\.12"):
            rec.fetch_request_frame(version, 1, None, 0, 1, 1, 0, ())
