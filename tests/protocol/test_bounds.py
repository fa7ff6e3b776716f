"""The length pre-pass walks exactly the bytes kio reads, for every schema the proxy decodes, and refuses
every truncation of a valid frame with DecodeError."""

from __future__ import annotations

import io

import pytest
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
SCHEMAS += [_schema(kind, v) for kind in ("subscription", "assignment") for v in range(4)]


def encoded(tp: type, value) -> bytes:
    buf = io.BytesIO()
    entity_writer(tp)(buf, value)
    return buf.getvalue()


@pytest.mark.parametrize("tp", SCHEMAS, ids=lambda t: f"{t.__module__.removeprefix('kio.schema.')}")
def test_the_walk_ends_where_kio_ends(tp):
    @settings(max_examples=5, suppress_health_check=list(HealthCheck), deadline=None, database=None)
    @given(st.from_type(tp), st.data())
    def walk_matches(value, data):
        frame = encoded(tp, value)
        assert bounds.check(tp)(frame, 0, len(frame)) == len(frame)
        decoded, size = codec.read_entity(tp, frame)
        assert (decoded, size) == entity_reader(tp)(frame, 0)
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
