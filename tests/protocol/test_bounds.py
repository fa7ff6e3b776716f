"""The length pre-pass walks exactly the bytes kio reads, for every schema the proxy decodes, and refuses
every truncation of a valid frame with DecodeError."""

from __future__ import annotations

import io
import struct

import pytest
from example_counts import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import Records

from fedkafka.protocol import bounds, codec
from fedkafka.protocol.consumer_protocol import _schema
from fedkafka.proxy import handlers

st.register_type_strategy(Records, st.binary(max_size=80))  # kio registers every other primitive itself

# the requests clients send, the answers brokers send to the upstream requests, the consumer-protocol bytes
SERVED = sorted({(key, v) for m in handlers.MODULES for key, (lo, hi) in m.API_KEYS.items() for v in range(lo, hi + 1)})
SCHEMAS = [t for key, v in SERVED for t in (codec.request_type(key, v), codec.response_type(key, v)) if t]
SCHEMAS += sorted({t.__header_schema__ for t in SCHEMAS}, key=lambda t: t.__module__)
SCHEMAS += [_schema(kind, v) for kind in ("subscription", "assignment") for v in range(4)]


def encoded(tp: type, value) -> bytes:
    buf = io.BytesIO()
    entity_writer(tp)(buf, value)
    return buf.getvalue()


@pytest.mark.parametrize("tp", SCHEMAS, ids=lambda t: f"{t.__module__.removeprefix('kio.schema.')}")
def test_the_walk_ends_where_kio_ends(tp):
    @settings(max_examples=examples(5), suppress_health_check=list(HealthCheck), deadline=None, database=None)
    @given(st.from_type(tp), st.data())
    def walk_matches(value, data):
        frame = encoded(tp, value)
        assert bounds.check(tp)(frame, 0, len(frame)) == len(frame)
        try:
            expected = entity_reader(tp)(frame, 0)
        except (OverflowError, ValueError):  # kio writes some values it cannot read back (a timedelta of
            return  # 2^63 - 1 ms): nothing to compare with
        assert codec.read_entity(tp, frame) == expected
        if frame:  # every strict prefix lacks some byte kio needs
            cut = data.draw(st.integers(0, len(frame) - 1))
            with pytest.raises(codec.DecodeError):
                codec.read_entity(tp, frame[:cut])

    walk_matches()


def test_a_lie_is_refused_before_kio_reads():
    # Metadata v12 request body: topics = compact array declaring 2^32 - 1 entries
    with pytest.raises(bounds.OutOfBounds, match="array of 4294967295 elements"):
        bounds.check(codec.request_type(3, 12))(b"\x80\x80\x80\x80\x10", 0, 5)
    # a legacy string claiming more than is left
    with pytest.raises(bounds.OutOfBounds, match="string of 300 bytes"):
        bounds.check(_schema("subscription", 0))(b"\x00\x00\x00\x01\x01\x2c" + b"t" * 10, 0, 16)


# Mutated frames: wherever the walk accepts a frame and kio decodes it, both must have read the same bytes.
# (A walk that skipped bytes kio reads could miss a lying length there.) Nested, tagged, flexible and legacy.
MUTATED = [codec.request_type(1, 12), codec.response_type(1, 12), codec.request_type(3, 12),
           codec.response_type(3, 12), codec.request_type(0, 9), codec.response_type(0, 9),
           codec.request_type(11, 9), codec.response_type(11, 9), codec.response_type(15, 5),
           codec.response_type(18, 3), codec.request_type(8, 8), codec.response_type(9, 8),
           codec.request_type(1, 4), codec.response_type(3, 1), codec.request_type(0, 3),
           _schema("subscription", 1), _schema("subscription", 3), _schema("assignment", 3)]
interesting = st.one_of(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF]), st.integers(0, 255))


@pytest.mark.parametrize("tp", MUTATED, ids=lambda t: f"{t.__module__.removeprefix('kio.schema.')}")
def test_walk_and_kio_agree_on_mutated_frames(tp):
    @settings(max_examples=examples(30), suppress_health_check=list(HealthCheck), deadline=None, database=None)
    @given(st.from_type(tp), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), interesting), min_size=1,
                                      max_size=4))
    def agree(value, changes):
        frame = bytearray(encoded(tp, value))
        if not frame:
            return
        for where, byte in changes:
            frame[int(where * len(frame))] = byte
        try:
            end = bounds.check(tp)(bytes(frame), 0, len(frame))
        except bounds.OutOfBounds:
            return
        try:
            _, size = entity_reader(tp)(bytes(frame), 0)
        except Exception:  # kio refusing the frame is fine: only a silent disagreement is not
            return
        assert size == end

    agree()


def test_after_a_known_tag_the_walk_goes_on_where_kio_does():
    """kio reads on from where a known tag's value ends, even when the tag declared a larger size: the walk
    must too, or whatever follows would be checked at other bytes than kio reads."""
    fetch = codec.request_type(1, 12)
    body = struct.pack(">iiiibii", -1, 500, 1, 1 << 20, 0, 0, -1) + b"\x01\x01\x01"  # no topics, rack ""
    frame = body + b"\x01" + b"\x00\x05" + b"\x02a" + b"\x00\x00\x00"  # cluster_id "a" in a 5-byte tag
    _, size = entity_reader(fetch)(frame, 0)
    assert bounds.check(fetch)(frame, 0, len(frame)) == size == len(frame) - 3


# Unknown tagged fields: Kafka's readers skip them (KIP-482: a newer client may send tags this schema lacks);
# kio raised KeyError, which reached the connection as an internal error and closed it.
def produce_v9(tags_at: dict[str, bytes]) -> bytes:
    """A Produce v9 request frame (header v2) with `tags_at[section]` as the tag sections' bytes."""
    t = lambda name: tags_at.get(name, b"\x00")  # noqa: E731
    head = struct.pack(">hhih", 0, 9, 7, 1) + b"c" + t("header")
    partition = struct.pack(">i", 0) + b"\x00" + t("partition")  # records null
    topic = b"\x02t" + b"\x02" + partition + t("topic")
    return head + b"\x00" + struct.pack(">hi", 1, 1000) + b"\x02" + topic + t("request")


UNKNOWN = b"\x02" + b"\x05\x02ab" + b"\x81\x01\x00"  # two fields: tag 5 (2 bytes), tag 129 (empty)


@pytest.mark.parametrize("section", ["header", "request", "topic", "partition"])
def test_unknown_tags_are_skipped_as_kafka_does(section):
    plain = codec.decode_request(produce_v9({}))
    assert codec.decode_request(produce_v9({section: UNKNOWN})) == plain
    everywhere = dict.fromkeys(["header", "request", "topic", "partition"], UNKNOWN)
    assert codec.decode_request(produce_v9(everywhere)) == plain


def test_an_unknown_tag_beside_a_known_one_keeps_the_known_one():
    fetch = codec.request_type(1, 12)
    body = struct.pack(">iiiibii", -1, 500, 1, 1 << 20, 0, 0, -1) + b"\x01\x01\x01"  # no topics, rack ""
    frame = body + b"\x03" + b"\x07\x01x" + b"\x00\x02\x02a" + b"\x09\x00"  # tags 7, 0 (cluster_id "a"), 9
    decoded, size = codec.read_entity(fetch, frame)
    assert decoded.cluster_id == "a" and size == len(frame)
    # the bytes read count the unknown tags: what follows the entity is read from the right place
    assert codec.read_entity(fetch, frame + b"trailing")[1] == len(frame)


def test_an_unknown_tag_that_lies_about_its_size_is_still_refused():
    with pytest.raises(codec.DecodeError, match="tagged field 5"):
        codec.decode_request(produce_v9({"topic": b"\x01\x05\x7fab"}))


# A null where the schema has a non-nullable array: kio handed the handler None (a TypeError in Produce);
# Kafka's reader refuses the request ("non-nullable field ... was serialized as null") and the broker closes.
def test_a_null_non_nullable_array_is_a_decode_error():
    flexible = produce_v9({})
    null_topics = flexible[: flexible.index(b"\x02\x02t")] + b"\x00" + b"\x00"  # compact null, request tags
    with pytest.raises(codec.DecodeError, match="non-nullable array"):
        codec.decode_request(null_topics)
    # Produce v3 (classic): one topic "t" whose partition array is null (-1)
    null_partitions = struct.pack(">hhih" "hhi" "i" "h1s" "i", 0, 3, 7, -1, -1, 1, 1000, 1, 1, b"t", -1)
    with pytest.raises(codec.DecodeError, match="non-nullable array"):
        codec.decode_request(null_partitions)


def test_a_null_nullable_array_still_decodes():
    # Metadata v12 with topics null: "all topics"
    _, body = codec.decode_request(struct.pack(">hhih", 3, 12, 7, -1) + b"\x00" + b"\x00" + b"\x00\x00" + b"\x00")
    assert body.topics is None
