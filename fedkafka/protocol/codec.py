"""Request/response codecs built on kio's generated types (no hand-written per-field byte code).

A request frame (after the size prefix) starts with api_key int16, api_version int16,
correlation_id int32 in every header version, so dispatch needs only `peek_header`.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from functools import cache
from typing import Any

from kio.index import KioIndexError, load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.static.primitive import i16, i32

from fedkafka.protocol.framing import size_prefix

_PEEK = struct.Struct(">hhi")


class DecodeError(ValueError):
    """A frame that does not decode as the schema its header names."""


def peek_header(frame: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) of a request frame; DecodeError when too short."""
    if len(frame) < _PEEK.size:
        raise DecodeError(f"request frame of {len(frame)} bytes is shorter than a header")
    return _PEEK.unpack_from(frame, 0)


@cache
def request_type(api_key: int, version: int) -> type | None:
    """kio's request type for (key, version), or None when kio does not know it."""
    try:
        return load_request_schema(api_key, version)
    except (KioIndexError, ImportError, ValueError, AttributeError):
        return None


@cache
def response_type(api_key: int, version: int) -> type | None:
    try:
        return load_response_schema(api_key, version)
    except (KioIndexError, ImportError, ValueError, AttributeError):
        return None


def decode_request(frame: bytes | memoryview) -> tuple[Any, Any]:
    """(header, body) of a request frame. DecodeError for unknown (key, version) or malformed bytes."""
    api_key, version, _ = peek_header(frame)
    req_t = request_type(api_key, version)
    if req_t is None:
        raise DecodeError(f"no schema for api_key={api_key} version={version}")
    try:
        header, n = entity_reader(req_t.__header_schema__)(frame, 0)
        body, _ = entity_reader(req_t)(frame, n)
    except (SerialError, ValueError, TypeError, IndexError, OverflowError) as e:
        raise DecodeError(f"malformed {req_t.__name__} v{version}: {e}") from None
    # Bytes after the last known field are ignored, as Kafka's own request parser does: librdkafka's
    # all-topics Metadata v12/v13 carries 3 such bytes, and brokers answer it normally.
    return header, body


def encode_request(body: Any, correlation_id: int, client_id: str | None = "fedkafka-proxy") -> bytes:
    """A size-prefixed request frame for `body` (a kio request entity)."""
    header_t = type(body).__header_schema__
    fields = {f.name for f in dataclasses.fields(header_t)}
    kwargs: dict[str, Any] = {"request_api_key": i16(body.__api_key__), "request_api_version": i16(body.__version__),
                              "correlation_id": i32(correlation_id)}
    if "client_id" in fields:
        kwargs["client_id"] = client_id
    return _encode(header_t(**kwargs), body)


def encode_response(body: Any, correlation_id: int) -> bytes:
    """A size-prefixed response frame; kio's header schema encodes Kafka's special cases (ApiVersions: v0)."""
    header = type(body).__header_schema__(correlation_id=i32(correlation_id))
    return _encode(header, body)


def decode_response(resp_t: type, frame: bytes | memoryview) -> tuple[Any, Any]:
    try:
        header, n = entity_reader(resp_t.__header_schema__)(frame, 0)
        body, _ = entity_reader(resp_t)(frame, n)
    except (SerialError, ValueError, TypeError, IndexError, OverflowError) as e:
        raise DecodeError(f"malformed {resp_t.__name__}: {e}") from None
    return header, body


def response_correlation_id(frame: bytes | memoryview) -> int:
    return struct.unpack_from(">i", frame, 0)[0]


def _encode(header: Any, body: Any) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    entity_writer(type(header))(buf, header)
    entity_writer(type(body))(buf, body)
    out = buf.getbuffer()
    out[0:4] = size_prefix(len(out) - 4)
    del out
    return buf.getvalue()
