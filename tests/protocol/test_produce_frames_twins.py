"""The compiled fast path of records.py's Produce frames (fedkafka_speedups, rust/fedkafka_speedups/src/produce.rs)
against the pure-Python code, over Hypothesis-drawn frames: where it answers, it answers exactly what the Python
code does (the same fields and records views, the same parts and bytes); where it does not (None), the Python
code takes the frame; and it answers for every frame the produce path sees (no tagged fields, no record errors
in a flexible answer), so that it is used at all."""

from __future__ import annotations

import dataclasses
import itertools
import struct

import pytest
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.protocol import records as rec
from fedkafka.protocol.records import BatchHeader, ProducePartitionAnswer, ProduceRequestFrame

from .test_produce_frames import mutated
from .test_records_twins import batch

speedups = pytest.importorskip("fedkafka_speedups", reason="fedkafka_speedups is not built (needs cargo)")
pytestmark = pytest.mark.skipif(getattr(speedups, "REVISION", 0) < 2, reason="fedkafka_speedups built before its "
                                "Produce frames (revision 2)")

VERSIONS = range(3, 13)
int16s = st.integers(-2**15, 2**15 - 1)
int32s = st.integers(-2**31, 2**31 - 1)
int64s = st.integers(-2**63, 2**63 - 1)
names = st.text(max_size=12)
records_values = st.one_of(st.none(), st.just(b""), st.binary(min_size=1, max_size=300))
topic_lists = st.lists(st.tuples(names, st.lists(st.tuples(int32s, records_values), max_size=4)), max_size=4)


@pytest.fixture(autouse=True)
def pure_python():
    """The module's calls of records.py run its Python code; the compiled function is called by name."""
    before = rec.implementation()
    rec.use("python")
    yield
    if before == "compiled":
        rec.use("compiled")


def python_request(frame):
    try:
        return rec.read_produce_request(frame)
    except rec.MalformedFrame as e:
        return e


def compiled_request(frame):
    return speedups.read_produce_request(frame, rec.ProduceRequestFrame, rec._REQUEST_FIELDS, rec.ProduceTopicData,
                                         rec.ProducePartitionData)


def same_request(compiled: rec.ProduceRequestFrame, python: rec.ProduceRequestFrame, frame) -> None:
    assert type(compiled) is rec.ProduceRequestFrame
    assert compiled == python  # the fields, and every records view by its bytes
    for ct, pt in zip(compiled.topic_data, python.topic_data, strict=True):
        assert type(ct) is rec.ProduceTopicData and type(ct.partition_data) is tuple
        for cp, pp in zip(ct.partition_data, pt.partition_data, strict=True):
            assert type(cp) is rec.ProducePartitionData
            assert type(cp.records) is type(pp.records)
            if cp.records is not None:  # a view into the frame itself, never a copy
                assert cp.records.obj is memoryview(frame).obj and cp.records.readonly == pp.records.readonly


def request_frame(version, correlation_id, client_id, acks, timeout_ms, topics) -> bytes:
    return b"".join(rec.produce_request_parts(version, correlation_id, client_id, acks, timeout_ms, topics))[4:]


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.none() | names, int16s, int32s, topic_lists,
       st.sampled_from([bytes, bytearray, memoryview]))
def test_every_request_the_proxy_writes_is_read_by_the_compiled_path_as_python_reads_it(
        version, correlation_id, client_id, acks, timeout_ms, topics, buffer_type):
    frame = buffer_type(request_frame(version, correlation_id, client_id, acks, timeout_ms, topics))
    compiled = compiled_request(frame)
    assert compiled is not None
    same_request(compiled, python_request(frame), frame)


SAMPLE_TOPICS = [("orders", [(0, b"x" * 40), (3, None), (-1, b"")]), ("é", [(7, b"\x80" * 200)])]


@settings(max_examples=examples(600), deadline=None)
@given(st.sampled_from(VERSIONS), st.data())
def test_a_damaged_request_is_read_as_python_reads_it_or_left_to_python(version, data):
    frame = mutated(request_frame(version, 5, "app", -1, 30_000, SAMPLE_TOPICS), data, cuts=True)
    compiled, python = compiled_request(frame), python_request(frame)
    if compiled is not None:  # None: the Python code reads or refuses it
        same_request(compiled, python, frame)


def tagged(frame: bytes) -> bytes:
    """A v9+ request frame with a tag in its header's tagged fields (after the client id)."""
    (length,) = struct.unpack_from(">h", frame, 8)
    at = 10 + max(length, 0)
    return frame[:at] + b"\x01\x03\x01h" + frame[at + 1:]


def test_tagged_fields_and_other_buffers_are_left_to_python():
    frame = request_frame(12, 5, "app", -1, 30_000, SAMPLE_TOPICS)
    assert compiled_request(tagged(frame)) is None
    assert python_request(tagged(frame)).client_id == "app"  # read by the Python code
    assert compiled_request(memoryview(frame).cast("c")) is None
    assert compiled_request(frame[:-1]) is None  # malformed: the Python code raises its MalformedFrame
    assert isinstance(python_request(frame[:-1]), rec.MalformedFrame)


counting = pytest.mark.skipif(getattr(speedups, "REVISION", 0) < 4, reason="built before the compiled request walk "
                              "counted elements (revision 4)")


def python_limited(frame, max_elements):
    try:
        return rec.read_produce_request(frame, max_elements)
    except rec.MalformedFrame as e:
        return e


def compiled_limited(frame, max_elements):
    return speedups.read_produce_request(frame, rec.ProduceRequestFrame, rec._REQUEST_FIELDS, rec.ProduceTopicData,
                                         rec.ProducePartitionData, max_elements)


@counting
@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), topic_lists, st.data())
def test_the_compiled_walk_counts_topics_and_partitions_as_python_does(version, topics, data):
    """At the limit both read the request; one past it the compiled walk leaves it to Python, which refuses it
    with its own message (tagged fields, which it also counts, the compiled walk never reads)."""
    frame = request_frame(version, 5, "app", -1, 30_000, topics)
    elements = len(topics) + sum(len(partitions) for _, partitions in topics)
    max_elements = data.draw(st.none() | st.integers(elements - 2, elements + 2), "max_elements")
    compiled, python = compiled_limited(frame, max_elements), python_limited(frame, max_elements)
    if max_elements is not None and max_elements < elements:
        assert compiled is None
        assert isinstance(python, rec.MalformedFrame)
        assert f"more than {max_elements} topics, partitions and tagged fields in one request" in str(python)
    else:
        assert compiled is not None
        same_request(compiled, python, frame)


@counting
@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(VERSIONS), st.data())
def test_a_damaged_request_under_a_limit_is_read_as_python_reads_it_or_left_to_python(version, data):
    frame = mutated(request_frame(version, 5, "app", -1, 30_000, SAMPLE_TOPICS), data, cuts=True)
    max_elements = data.draw(st.none() | st.integers(-1, 8), "max_elements")  # SAMPLE_TOPICS: 2 + 4 elements
    compiled = compiled_limited(frame, max_elements)
    if compiled is not None:
        same_request(compiled, python_limited(frame, max_elements), frame)


@counting
def test_a_limit_the_compiled_walk_cannot_hold_is_left_to_python():
    frame = request_frame(12, 5, "app", -1, 30_000, SAMPLE_TOPICS)
    assert compiled_limited(frame, 2**63) is None  # more than an int64: the Python walk reads it
    assert python_limited(frame, 2**63).client_id == "app"
    assert compiled_limited(frame, 0) is None and compiled_limited(frame, -1) is None
    assert compiled_request(frame) == compiled_limited(frame, None) == compiled_limited(frame, 6)


def python_parts(*args, **kwargs):
    return rec.produce_request_parts(*args, **kwargs)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.none() | names, int16s, int32s, topic_lists,
       st.sampled_from([1, 40, 200, rec.BY_REFERENCE_BYTES]), st.sampled_from([bytes, bytearray, memoryview]))
def test_request_parts_are_python_s_part_for_part(version, correlation_id, client_id, acks, timeout_ms, topics,
                                                  by_reference, buffer_type):
    topics = [(n, [(i, None if r is None else buffer_type(r)) for i, r in ps]) for n, ps in topics]
    if by_reference == 40:  # lists of pairs, as a caller may pass them
        topics = [[n, [[i, r] for i, r in ps]] for n, ps in topics]
    python = python_parts(version, correlation_id, client_id, acks, timeout_ms, topics, by_reference=by_reference)
    compiled = speedups.produce_request_parts(version, correlation_id, client_id, acks, timeout_ms, topics,
                                              by_reference)
    assert compiled is not None
    assert [type(p) for p in compiled] == [type(p) for p in python]
    assert [bytes(p) for p in compiled] == [bytes(p) for p in python]
    referenced = [p for p in python if not isinstance(p, bytearray) or any(p is r for _, ps in topics for _, r in ps)]
    assert [id(p) for p in compiled if any(p is q for q in referenced)] == [id(p) for p in referenced]


def _in_pieces(records: bytes | None, cuts: list[int]) -> rec.RecordParts | bytes | None:
    """`records` as a RecordParts cut where `cuts` say (a buffer of its own and views of the rest, as
    `records.with_producer` makes them), or as it is when there is nothing to cut."""
    if not records or not cuts:
        return records
    view = memoryview(records)
    at = sorted({min(c, len(records)) for c in cuts} | {0, len(records)})
    pieces: list[rec.Buffer] = [bytes(view[at[0]:at[1]])] + [view[a:b] for a, b in itertools.pairwise(at[1:])]
    return rec.RecordParts(pieces, len(records))


@pytest.mark.skipif(getattr(speedups, "REVISION", 0) < 5, reason="built before record sets in pieces (5)")
@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.none() | names, int16s, int32s, topic_lists, st.data(),
       st.sampled_from([1, 40, 61, 200, rec.BY_REFERENCE_BYTES]))
def test_request_parts_of_record_sets_in_pieces_are_python_s_part_for_part(
        version, correlation_id, client_id, acks, timeout_ms, topics, data, by_reference):
    """A record set in pieces (`records.RecordParts`, a batch rewritten to a physical producer id): each piece passed
    by reference or copied by its own size, as Python does; joined, the frame of the record sets whole."""
    cuts = st.lists(st.integers(0, 320), max_size=3)
    pieces = [(n, [(i, _in_pieces(r, data.draw(cuts))) for i, r in ps]) for n, ps in topics]
    python = python_parts(version, correlation_id, client_id, acks, timeout_ms, pieces, by_reference=by_reference)
    compiled = speedups.produce_request_parts(version, correlation_id, client_id, acks, timeout_ms, pieces,
                                              by_reference)
    assert compiled is not None
    assert [type(p) for p in compiled] == [type(p) for p in python]
    assert [bytes(p) for p in compiled] == [bytes(p) for p in python]
    whole = python_parts(version, correlation_id, client_id, acks, timeout_ms, topics, by_reference=by_reference)
    assert b"".join(bytes(p) for p in python) == b"".join(bytes(p) for p in whole)
    referenced = [p for _, ps in pieces for _, r in ps if isinstance(r, rec.RecordParts) for p in r.parts
                  if len(p) >= by_reference]
    assert [id(p) for p in compiled if any(p is q for q in referenced)] == [id(p) for p in referenced]


def test_values_a_field_cannot_hold_are_left_to_python():
    assert speedups.produce_request_parts(2, 1, None, 1, 1, [], 10) is None
    assert speedups.produce_request_parts(9, 2**31, None, 1, 1, [], 10) is None
    assert speedups.produce_request_parts(9, 1, "\ud800", 1, 1, [], 10) is None  # not encodable
    assert speedups.produce_request_parts(9, 1, None, 1, 1, [("t",)], 10) is None  # not a pair
    assert speedups.produce_request_parts(9, 1, None, 1, 1, [{"t", ()}], 10) is None
    assert speedups.produce_response_frame(13, 1, [], 0) is None
    assert speedups.produce_response_frame(9, 1, [("t", [rec.ProducePartitionAnswer(0, 2**15)])], 0) is None
    assert speedups.read_produce_response(b"\x00" * 20, 2, rec.ProducePartitionAnswer, rec._ANSWER_FIELDS) is None
    # record errors that are no tuple or list (None): Python refuses them (len(None)); the compiled code used to
    # take them as no errors and write a frame
    assert speedups.produce_response_frame(9, 1, [("t", [rec.ProducePartitionAnswer(0, 0, 5, -1, 0, None, "x")])],
                                           0) is None


record_errors = st.lists(st.tuples(int32s, st.none() | names), max_size=3).map(tuple)
answers = st.builds(rec.ProducePartitionAnswer, int32s, int16s, int64s, int64s, int64s,
                    st.just(()) | record_errors, st.none() | names)
answer_lists = st.lists(st.tuples(names, st.lists(answers, max_size=4)), max_size=4)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, answer_lists, int32s)
def test_response_frames_are_python_s_byte_for_byte(version, correlation_id, topics, throttle_time_ms):
    compiled = speedups.produce_response_frame(version, correlation_id, topics, throttle_time_ms)
    assert type(compiled) is bytes
    assert compiled == rec.produce_response_frame(version, correlation_id, topics, throttle_time_ms)


def python_answers(frame, version):
    try:
        return rec.read_produce_response(frame, version)
    except rec.MalformedFrame as e:
        return e


def compiled_answers(frame, version):
    return speedups.read_produce_response(frame, version, rec.ProducePartitionAnswer, rec._ANSWER_FIELDS)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, answer_lists, int32s, st.sampled_from([bytes, bytearray, memoryview]))
def test_every_response_is_read_by_the_compiled_path_as_python_reads_it(version, correlation_id, topics,
                                                                        throttle_time_ms, buffer_type):
    frame = buffer_type(rec.produce_response_frame(version, correlation_id, topics, throttle_time_ms)[4:])
    compiled, python = compiled_answers(frame, version), python_answers(frame, version)
    if version >= 9 and any(a.record_errors for _, answers in topics for a in answers):
        assert compiled is None  # record errors in a flexible answer: left to the Python code
        return
    assert compiled is not None
    assert compiled == python
    assert all(type(a) is rec.ProducePartitionAnswer for _, answers in compiled for a in answers)


@pytest.mark.skipif(getattr(speedups, "REVISION", 0) < 6, reason="built before read_produce_answer (6)")
@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, answer_lists, int32s, st.data())
def test_a_response_s_throttle_time_is_read_by_the_compiled_path_as_python_reads_it(version, correlation_id, topics,
                                                                                   throttle_time_ms, data):
    frame = rec.produce_response_frame(version, correlation_id, topics, throttle_time_ms)[4:]
    if data.draw(st.booleans()):
        frame = mutated(frame, data, cuts=True)
    compiled = speedups.read_produce_answer(frame, version, rec.ProducePartitionAnswer, rec._ANSWER_FIELDS)
    if compiled is not None:
        assert compiled == rec.read_produce_answer(frame, version)
    elif frame == rec.produce_response_frame(version, correlation_id, topics, throttle_time_ms)[4:]:
        assert version >= 9 and any(a.record_errors for _, answers in topics for a in answers)


SAMPLE_ANSWERS = [("orders", [rec.ProducePartitionAnswer(0, 6, 41, 1_700_000_000_000, 0, (), "m"),
                              rec.ProducePartitionAnswer(1, 0, 7)]), ("é", [rec.ProducePartitionAnswer(5, 0)])]


@settings(max_examples=examples(600), deadline=None)
@given(st.sampled_from(VERSIONS), st.data())
def test_a_damaged_response_is_read_as_python_reads_it_or_left_to_python(version, data):
    frame = mutated(rec.produce_response_frame(version, 3, SAMPLE_ANSWERS)[4:], data, cuts=True)
    compiled = compiled_answers(frame, version)
    if compiled is not None:
        assert compiled == python_answers(frame, version)


@pytest.mark.parametrize("cls", [BatchHeader, ProduceRequestFrame, ProducePartitionAnswer])
def test_the_classes_the_compiled_code_makes_without_init_need_nothing_but_their_fields(cls):
    """The compiled code makes these through their slots, skipping __init__: that is the same object only while
    __init__ does nothing but set the fields (no __post_init__, no field left to a default factory)."""
    assert not hasattr(cls, "__post_init__")
    assert cls.__slots__ == tuple(f.name for f in dataclasses.fields(cls))
    assert all(f.default_factory is dataclasses.MISSING and f.init for f in dataclasses.fields(cls))


def python_batch(records):
    try:
        return rec.produce_batch(records)
    except rec.RecordsError as e:
        return type(e), str(e)


def compiled_batch(records):
    header, error, invalid = speedups.produce_batch(records, BatchHeader, rec._HEADER_FIELDS)
    return header if header is not None else (rec.InvalidRecords if invalid else rec.RecordsError, error)


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(batch(), max_size=2).map(b"".join), st.data())
def test_produce_batch_is_python_s_header_or_error(records, data):
    if records and data.draw(st.booleans(), label="damaged"):
        records = mutated(records, data, cuts=True)
    compiled = compiled_batch(records)
    assert compiled == python_batch(records)
    if isinstance(compiled, BatchHeader):
        assert type(compiled) is BatchHeader
    for empty in (None, b"", memoryview(b"")):
        assert compiled_batch(empty) == python_batch(empty)


# -- translated_produce_answer (revision 3): the Produce lane's answer, read and written in one call ---------------

def python_translated(*args):
    try:
        return rec.translated_produce_answer(*args)  # the module's calls run Python (the fixture above)
    except rec.MalformedFrame as e:
        return e


lane_shifts = st.tuples(st.integers(-2**40, 2**40), st.integers(0, 2**40), st.none() | st.integers(0, 2**40))
one_answer = st.builds(rec.ProducePartitionAnswer, int32s, int16s, st.integers(-3, 2**50), int64s,
                       st.integers(-3, 2**50), st.just(()) | record_errors, st.none() | names)


THROTTLED = "built before translated_produce_answer passed the broker's throttle time on (6)"


@pytest.mark.skipif(getattr(speedups, "REVISION", 0) < 6, reason=THROTTLED)
@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(VERSIONS), int32s, st.data(), one_answer, lane_shifts, st.none() | names, int32s,
       st.booleans(), int32s)
def test_the_lane_s_answer_is_python_s_byte_for_byte(version, correlation_id, data, answer, shift, name, index, usual,
                                                     throttle_time_ms):
    """One topic with one answer (the usual, `usual`), or any answer list (then None, or Python's reading); the
    broker's throttle time passed on by both."""
    topics = [("phys", [answer])] if usual else data.draw(answer_lists)
    frame = rec.produce_response_frame(version, 99, topics, throttle_time_ms)[4:]
    if data.draw(st.booleans()):
        frame = data.draw(st.sampled_from([bytearray, memoryview]))(frame)
    args = (frame, version, correlation_id, name, index, "phys", answer.index, shift)
    compiled = speedups.translated_produce_answer(*args)
    python = python_translated(*args)
    if compiled is not None:
        assert type(compiled) is tuple and type(compiled[0]) is bytes and compiled == python
    elif usual and not (version >= 9 and answer.record_errors):  # what the lane sees: taken
        pytest.fail(f"left to Python: {answer} {shift}")


@pytest.mark.skipif(getattr(speedups, "REVISION", 0) < 6, reason=THROTTLED)
@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(VERSIONS), st.data())
def test_a_damaged_answer_is_translated_as_python_translates_it_or_left_to_python(version, data):
    frame = mutated(rec.produce_response_frame(version, 3, [("orders", [rec.ProducePartitionAnswer(1, 6, 41, 5, 0)])]
                                               )[4:], data, cuts=True)
    args = (frame, version, 7, "t", 0, "orders", 1, (10, 5, None))
    compiled = speedups.translated_produce_answer(*args)
    if compiled is not None:
        assert compiled == python_translated(*args)


@pytest.mark.skipif(getattr(speedups, "REVISION", 0) < 3, reason="built before translated_produce_answer (3)")
@pytest.mark.parametrize("answer, shift", [((2**63 - 10, 5), (40, 0, None)), ((7, 2**63 - 10), (40, 0, None)),
                                           ((2**63 - 10, 2**63 - 10), (10, 0, None))])
def test_an_answer_moved_past_an_int64_is_left_to_the_caller_by_both(answer, shift):
    """The compiled twin's checked_add gives None; the Python twin raised struct.error writing the answer."""
    frame = rec.produce_response_frame(9, 1, [("phys", [rec.ProducePartitionAnswer(0, 0, answer[0], -1, answer[1])])]
                                       )[4:]
    args = (frame, 9, 5, "t", 3, "phys", 0, shift)
    assert speedups.translated_produce_answer(*args) is None and python_translated(*args) is None
    fits = (frame, 9, 5, "t", 3, "phys", 0, (9, 0, None))  # to 2**63 - 1: still an int64
    assert speedups.translated_produce_answer(*fits) == python_translated(*fits) is not None


def test_the_lane_s_answer_moves_offsets_into_the_logical_space():
    frame = rec.produce_response_frame(9, 1, [("phys", [rec.ProducePartitionAnswer(0, 0, 100, -1, 12)])])[4:]
    for shift, base, start in [((40, 10, None), 140, 52), ((40, 10, 0), 140, 52), ((40, 12, 0), 140, 0),
                               ((40, 20, None), 140, 60)]:
        written, code = rec.translated_produce_answer(frame, 9, 5, "t", 3, "phys", 0, shift)
        assert code == 0 and [(n, [(a.index, a.base_offset, a.log_start_offset) for a in ps])
                              for n, ps in rec.read_produce_response(written[4:], 9)] == [("t", [(3, base, start)])]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["t", "a" * 200, None])
def test_the_base_offset_of_a_translated_answer_is_read_where_both_twins_write_it(version, name):
    """The Produce lane reads the translated base offset back (`LaneProduce.read_response`: a write below its
    segment's start is left to the generic answer, which refuses it)."""
    frame = rec.produce_response_frame(version, 1, [("phys", [rec.ProducePartitionAnswer(0, 0, 100, -1, 12,
                                                                                         (), "m")])])[4:]
    args = (frame, version, 5, name, 3, "phys", 0, (-40, 60, None))
    for written in (speedups.translated_produce_answer(*args), python_translated(*args)):
        if written is not None:
            assert rec.translated_base_offset(written[0], version, name) == 60
