"""Request/response codecs built on kio's generated types (no hand-written per-field byte code).

A request frame (after the size prefix) starts with api_key int16, api_version int16,
correlation_id int32 in every header version, so dispatch needs only `peek_header`.

Every decode of bytes from outside (clients, brokers, the consumer-protocol bytes inside group requests)
goes through `read_entity`: `bounds.check` walks the frame first, so kio's native reader never sizes an
allocation from a declared length the frame cannot hold (that aborts the process, see bounds.py).
"""

from __future__ import annotations

import dataclasses
import io
import struct
from functools import cache
from typing import IO, Any, cast

from kio.index import KioIndexError, load_request_schema, load_response_schema
from kio.schema.index import api_key_map, schema_name_map
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.static.primitive import i16, i32
from kio.static.protocol import Entity, RequestPayload, ResponsePayload

from fedkafka.protocol import bounds
from fedkafka.protocol.framing import size_prefix

_PEEK = struct.Struct(">hhi")

# Array elements (and tagged fields) one client request may have, all its arrays together (bounds.py): the
# proxy's --max-request-elements. Kafka's largest legitimate requests stay far below it (a Fetch or
# OffsetCommit of every partition a consumer is assigned, a Produce to every partition a batch goes to).
MAX_REQUEST_ELEMENTS = 100_000


class DecodeError(ValueError):
    """A frame that does not decode as the schema its header names."""


class TooManyElements(DecodeError):
    """A counted decode (`read_entity(..., counted=True)`) past the element budget (--max-request-elements)."""


_READ_ERRORS = (SerialError, ValueError, TypeError, LookupError, OverflowError)


def read_entity(entity_type: type[Entity], buf: bytes | memoryview, offset: int = 0,
                counted: bool = False) -> tuple[Any, int]:
    """(entity, bytes read) of one kio entity at `offset`: lengths bounds-checked, then kio's native reader.
    Tagged fields the schema does not know are skipped, as Kafka's readers do. DecodeError for anything
    malformed. `counted`: its elements are taken from the budget `bounds.set_budget` gave (client requests)."""
    try:
        end = bounds.check(entity_type, counted)(buf, offset, len(buf))
        try:
            return entity_reader(entity_type)(buf, offset)
        except KeyError:  # kio refuses an unknown tag: read the entity again without them
            stripped = bounds.without_unknown_tags(entity_type, buf, offset, len(buf))
            entity, _ = entity_reader(entity_type)(stripped, 0)
            return entity, end - offset
    except bounds.TooManyElements as e:
        raise TooManyElements(f"malformed {entity_type.__name__}: {e}") from None
    except _READ_ERRORS as e:
        raise DecodeError(f"malformed {entity_type.__name__}: {e}") from None


PROXY_CLIENT_ID = "fedkafka-proxy"  # the client id of the proxy's own requests to brokers


def peek_header(frame: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) of a request frame; DecodeError when too short."""
    if len(frame) < _PEEK.size:
        raise DecodeError(f"request frame of {len(frame)} bytes is shorter than a header")
    api_key, version, correlation_id = _PEEK.unpack_from(frame, 0)
    return api_key, version, correlation_id


# Every (api_key, version) kio has schemas for: a pair outside it is None without a cache entry, so a client
# naming many pairs (any int16 key and version) leaves nothing behind.
KNOWN_VERSIONS: frozenset[tuple[int, int]] = frozenset(
    (key, version) for key, name in api_key_map.items() for version in schema_name_map.get(name, ()))


def known_versions(api_key: int) -> list[int]:
    """The versions of `api_key` kio knows, in order (empty: an unknown key)."""
    return sorted(v for k, v in KNOWN_VERSIONS if k == api_key)


def request_type(api_key: int, version: int) -> type[RequestPayload] | None:
    """kio's request type for (key, version), or None when kio does not know it."""
    return _request_type(api_key, version) if (api_key, version) in KNOWN_VERSIONS else None


def response_type(api_key: int, version: int) -> type[ResponsePayload] | None:
    """kio's response type for (key, version), or None when kio does not know it."""
    return _response_type(api_key, version) if (api_key, version) in KNOWN_VERSIONS else None


@cache
def _request_type(api_key: int, version: int) -> type[RequestPayload] | None:
    try:
        return load_request_schema(api_key, version)
    except (KioIndexError, ImportError, ValueError, AttributeError):
        return None


@cache
def _response_type(api_key: int, version: int) -> type[ResponsePayload] | None:
    try:
        return load_response_schema(api_key, version)
    except (KioIndexError, ImportError, ValueError, AttributeError):
        return None


def request_schema(api_key: int, version: int) -> type[RequestPayload]:
    """`request_type` for a (key, version) the caller knows kio has (a handler within its API_KEYS)."""
    req_t = request_type(api_key, version)
    if req_t is None:
        raise LookupError(f"kio has no request schema for api_key={api_key} version={version}")
    return req_t


def response_schema(api_key: int, version: int) -> type[ResponsePayload]:
    """`response_type` for a (key, version) the caller knows kio has: the answer to a request it decoded."""
    resp_t = response_type(api_key, version)
    if resp_t is None:
        raise LookupError(f"kio has no response schema for api_key={api_key} version={version}")
    return resp_t


def decode_request(frame: bytes | memoryview, max_elements: int | None = MAX_REQUEST_ELEMENTS) -> tuple[Any, Any]:
    """(header, body) of a request frame. DecodeError for unknown (key, version) or malformed bytes, or more
    than `max_elements` array elements and tagged fields in header and body together (None: any number)."""
    api_key, version, _ = peek_header(frame)
    req_t = request_type(api_key, version)
    if req_t is None:
        raise DecodeError(f"no schema for api_key={api_key} version={version}")
    saved = bounds.set_budget(max_elements)
    try:
        header, n = read_entity(req_t.__header_schema__, frame, counted=True)
        body, _ = read_entity(req_t, frame, n, counted=True)
    except DecodeError as e:
        raise type(e)(f"{e} (v{version})") from None
    finally:
        bounds.restore_budget(saved)
    # Bytes after the last known field are ignored, as Kafka's own request parser does: librdkafka's
    # all-topics Metadata v12/v13 carries 3 such bytes, and brokers answer it normally.
    return header, body


def encode_request(body: Any, correlation_id: int, client_id: str | None = PROXY_CLIENT_ID) -> bytes:
    """A size-prefixed request frame for `body` (a kio request entity)."""
    return _encode(_request_header(body, correlation_id, client_id), body)


def _request_header(body: Any, correlation_id: int, client_id: str | None) -> Any:
    header_t = type(body).__header_schema__
    kwargs: dict[str, Any] = {"request_api_key": i16(body.__api_key__), "request_api_version": i16(body.__version__),
                              "correlation_id": i32(correlation_id)}
    if _has_client_id(header_t):
        kwargs["client_id"] = client_id
    return header_t(**kwargs)


@cache
def _has_client_id(header_t: type) -> bool:
    return any(f.name == "client_id" for f in dataclasses.fields(header_t))


def encode_response(body: Any, correlation_id: int) -> bytes:
    """A size-prefixed response frame; kio's header schema encodes Kafka's special cases (ApiVersions: v0)."""
    header = type(body).__header_schema__(correlation_id=i32(correlation_id))
    return _encode(header, body)


class Chunks:
    """An encoded frame kept as the list of buffers it was written from: a record set arrives as its own
    buffer, by reference (never copied into one big frame), and goes out with one writev
    (`transport.writelines`). `len()` is the frame's size in bytes, `bytes()` joins it."""

    __slots__ = ("nbytes", "parts")

    def __init__(self, parts: list[bytes | bytearray | memoryview], nbytes: int):
        self.parts, self.nbytes = parts, nbytes

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def held_bytes(self) -> int:
        """The bytes this frame keeps alive until it was written: its own parts, and the whole of each buffer a
        part is a view of, once (a 100 KiB record set cut from a broker's 4 MiB answer keeps all 4 MiB)."""
        own = 0
        viewed: dict[int, int] = {}
        for part in self.parts:
            base = part.obj if isinstance(part, memoryview) else None
            if base is not None:
                viewed[id(base)] = memoryview(base).nbytes
            else:
                own += len(part)
        return own + sum(viewed.values())


BY_REFERENCE_BYTES = 16 * 1024  # a written buffer this large is kept by reference, not copied


class _ChunkWriter:
    """The file kio's writers write to (they only call `write`): small writes gathered, large ones referenced."""

    __slots__ = ("nbytes", "parts", "small")

    def __init__(self) -> None:
        self.small = bytearray(4)  # the size prefix, filled in at the end
        self.parts: list[bytes | bytearray | memoryview] = [self.small]
        self.nbytes = 4

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        self.nbytes += n
        if n < BY_REFERENCE_BYTES:
            self.small += data
        else:
            self.parts.append(data)
            self.small = bytearray()
            self.parts.append(self.small)
        return n


def encode_response_chunks(body: Any, correlation_id: int) -> bytes | Chunks:
    """`encode_response`, with the record sets of a Fetch answer left where they are: Chunks when a field was
    at least BY_REFERENCE_BYTES long, else plain bytes. A body with `response_frame(correlation_id)` writes
    its own frame (records.py's Produce answer), or its parts as a list (records.py's Fetch answer)."""
    own = getattr(body, "response_frame", None)
    if own is not None:
        frame: bytes | list[bytes | bytearray | memoryview] = own(correlation_id)
        return Chunks(frame, sum(map(len, frame))) if isinstance(frame, list) else frame
    return _encode_chunks(type(body).__header_schema__(correlation_id=i32(correlation_id)), body)


def encode_request_chunks(body: Any, correlation_id: int, client_id: str | None = PROXY_CLIENT_ID) -> bytes | Chunks:
    """`encode_request`, with the record sets of a Produce request left where they are (see Chunks). A body with
    `frame_parts(correlation_id, client_id)` writes its own frame as parts (records.py's Produce request)."""
    own = getattr(body, "frame_parts", None)
    if own is not None:
        parts = own(correlation_id, client_id)
        return Chunks(parts, sum(map(len, parts)))
    return _encode_chunks(_request_header(body, correlation_id, client_id), body)


def _encode_chunks(header: Any, body: Any) -> bytes | Chunks:
    out = _ChunkWriter()
    sink = cast(IO[bytes], out)  # kio's writers call only write(); its Writable type names file types only
    entity_writer(type(header))(sink, header)
    entity_writer(type(body))(sink, body)
    first = out.parts[0]
    assert isinstance(first, bytearray)  # the writer's first part is always its own gathering buffer
    first[0:4] = size_prefix(out.nbytes - 4)
    if len(out.parts) == 1:
        return bytes(first)
    return Chunks([p for p in out.parts if len(p)], out.nbytes)


def decode_response(resp_t: type[ResponsePayload], frame: bytes | memoryview) -> tuple[Any, Any]:
    header, n = read_entity(resp_t.__header_schema__, frame)
    body, _ = read_entity(resp_t, frame, n)
    return header, body


def response_correlation_id(frame: bytes | memoryview) -> int:
    (correlation_id,) = struct.unpack_from(">i", frame, 0)
    return int(correlation_id)


def _encode(header: Any, body: Any) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    entity_writer(type(header))(buf, header)
    entity_writer(type(body))(buf, body)
    out = buf.getbuffer()
    out[0:4] = size_prefix(len(out) - 4)
    del out
    return buf.getvalue()
