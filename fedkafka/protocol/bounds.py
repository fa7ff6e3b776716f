"""A bounded walk over a frame, by kio schema, before kio's native decoder sees it.

kio's native reader sizes an array from its declared element count before reading any element: a frame
declaring 2^32 elements makes it ask for tens of GB, and a failed allocation in native code aborts the whole
process (no exception to catch). So every declared length (arrays, strings, bytes, records, tagged fields)
is first checked against the bytes actually left, by walking the same field layout kio reads. The walk
follows kio's own field classification (`kio.serial._introspect`), so it reads exactly the bytes kio will.
It is lenient about most values (unicode, null strings): those kio refuses with an exception, which is safe.
Two places where kio and Kafka's own reader part ways are settled here: a null where the schema has a
non-nullable array is OutOfBounds (kio would hand the handler None; Kafka refuses the request), and tagged
fields the schema does not know are skipped by their size (Kafka skips them, KIP-482; kio refuses them, so
`without_unknown_tags` gives the entity's bytes without them for kio to read).

The counted walk (`check(entity_type, counted=True)`: codec.decode_request, one client request) also counts the
elements of every array and tagged-fields section it crosses, against the budget `set_budget` gave: past it,
TooManyElements. A count only checked against the bytes left lets a 16 MiB frame declare ~5 million 3-byte
elements, each of which kio decodes into an object and a handler may answer with one entry (a Metadata request
naming "x" a million times: ~12 s of the loop and ~400 MiB). The plain walk (answers of the brokers, everything
else) does not count: an answer of 1,600 partitions has ~5,000 arrays, and counting them doubled its walk.

`check(entity_type)(buf, pos, end) -> pos after the entity`; OutOfBounds on any length past `end`.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)
from kio.static.protocol import Entity

from fedkafka.protocol.records import varint_bytes

Buf = bytes | memoryview
Check = Callable[[Buf, int, int], int]

_FIXED = {"int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2, "error_code": 2, "int32": 4, "uint32": 4,
          "timedelta_i32": 4, "int64": 8, "uint64": 8, "float64": 8, "timedelta_i64": 8, "datetime_i64": 8,
          "uuid": 16}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class OutOfBounds(ValueError):
    """A declared length larger than the bytes left (or malformed), found before anything was allocated."""


class TooManyElements(OutOfBounds):
    """More array elements (and tagged fields) in one request than `set_budget` allows."""


class _Budget(threading.local):
    """Elements the counted walks may still cross (`set_budget`)."""

    left: int = sys.maxsize
    limit: int | None = None


_budget = _Budget()


def set_budget(max_elements: int | None) -> tuple[int, int | None]:
    """From now on counted walks cross at most `max_elements` array elements and tagged fields together (None:
    any); returns the budget before, for `restore_budget`."""
    saved = _budget.left, _budget.limit
    _budget.left = sys.maxsize if max_elements is None else max_elements
    _budget.limit = max_elements
    return saved


def restore_budget(saved: tuple[int, int | None]) -> None:
    _budget.left, _budget.limit = saved


def budget_left() -> int:
    """Elements the counted walks may still cross under the budget now set."""
    return _budget.left


def _spend(count: int, pos: int) -> None:
    """Take `count` elements from the budget: TooManyElements once it is spent."""
    _budget.left -= count
    if _budget.left < 0:
        _too_many(pos)


def _too_many(pos: int) -> None:
    raise TooManyElements(f"more than {_budget.limit} array elements and tagged fields in one request "
                          f"(--max-request-elements), at byte {pos}")


class _Edits(threading.local):
    """While `without_unknown_tags` walks: (start, end, replacement) byte spans that drop unknown tags."""

    spans: list[tuple[int, int, bytes]] | None = None


_edits = _Edits()


def check(entity_type: type[Entity], counted: bool = False) -> Check:
    """The walker for one kio entity type (cached); `counted`: one that spends the budget (`set_budget`)."""
    return _entity(entity_type, counted).walk


def without_unknown_tags(entity_type: type[Entity], buf: Buf, pos: int, end: int) -> bytes:
    """The bytes of the entity at `pos` with every tagged field its schema does not know left out (and each
    such section's count lowered), so that kio reads what a Kafka reader reads. The rare path: only after
    kio refused a tag, so a well-behaved frame pays nothing for it."""
    spans: list[tuple[int, int, bytes]] = []
    _edits.spans = spans
    try:
        stop = check(entity_type)(buf, pos, end)  # not counted: the first walk did
    finally:
        _edits.spans = None
    out = bytearray()
    for start, until, replacement in sorted(spans):  # disjoint: fields inside a section, counts before them
        out += buf[pos:start]
        out += replacement
        pos = until
    out += buf[pos:stop]
    return bytes(out)


@dataclasses.dataclass(slots=True)
class _Walker:
    walk: Check
    min_size: int  # fewest bytes one instance can take: bounds element counts
    fixed_size: int | None  # every instance takes exactly this many bytes (arrays of it are skipped at once)
    item: _Walker | None = None  # arrays: the element's walker
    nullable: bool = True  # arrays: whether a null count is allowed


def _uvarint(buf: Buf, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it); at most 5 bytes, as kio reads them."""
    if pos < end and buf[pos] < 0x80:  # the common one-byte case, without the loop
        return buf[pos], pos + 1
    value = shift = 0
    for i in range(pos, min(pos + 5, end)):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1
        shift += 7
    raise OutOfBounds(f"bad or truncated varint at byte {pos}")


def _need(pos: int, size: int, end: int, what: str) -> int:
    if size > end - pos:
        raise OutOfBounds(f"{what} of {size} bytes at byte {pos}, only {end - pos} left")
    return pos + size


# -- lengths of strings and bytes -----------------------------------------------------------------------
def _compact_bytes(buf: Buf, pos: int, end: int) -> int:
    n, pos = _uvarint(buf, pos, end)
    return pos if n == 0 else _need(pos, n - 1, end, "compact string/bytes")


def _legacy_string(buf: Buf, pos: int, end: int) -> int:
    _need(pos, 2, end, "string length")
    (n,) = _I16.unpack_from(buf, pos)
    return pos + 2 if n < 0 else _need(pos + 2, n, end, "string")


def _legacy_bytes(buf: Buf, pos: int, end: int) -> int:
    _need(pos, 4, end, "bytes length")
    (n,) = _I32.unpack_from(buf, pos)
    return pos + 4 if n < 0 else _need(pos + 4, n, end, "bytes")


def _primitive(kafka_type: str, flexible: bool) -> _Walker:
    if kafka_type in _FIXED:
        size = _FIXED[kafka_type]
        return _Walker(lambda _buf, pos, end: _need(pos, size, end, kafka_type), size, size)
    if kafka_type not in ("string", "bytes", "records"):
        raise TypeError(f"no bounds check for kafka_type {kafka_type!r}")
    if flexible:
        return _Walker(_compact_bytes, 1, None)
    return _Walker(_legacy_string, 2, None) if kafka_type == "string" else _Walker(_legacy_bytes, 4, None)


# -- arrays ---------------------------------------------------------------------------------------------
def _array(item: _Walker, flexible: bool, nullable: bool, counted: bool) -> _Walker:
    per_item = max(item.min_size, 1)
    item_walk, fixed = item.walk, item.fixed_size

    def items(buf: Buf, pos: int, end: int, count: int) -> int:
        if count * per_item > end - pos:  # the check that keeps kio from allocating for a lie
            raise OutOfBounds(f"array of {count} elements at byte {pos}, only {end - pos} bytes left")
        if counted:
            _spend(count, pos)
        if fixed is not None:
            return pos + count * fixed
        for _ in range(count):
            pos = item_walk(buf, pos, end)
        return pos

    def compact(buf: Buf, pos: int, end: int) -> int:
        n, after = _uvarint(buf, pos, end)
        if n == 0 and not nullable:
            _null(pos)
        return after if n == 0 else items(buf, after, end, n - 1)

    def legacy(buf: Buf, pos: int, end: int) -> int:
        _need(pos, 4, end, "array length")
        (n,) = _I32.unpack_from(buf, pos)
        if n < 0 and not nullable:
            _null(pos)
        return pos + 4 if n < 0 else items(buf, pos + 4, end, n)

    return _Walker(compact, 1, None, item, nullable) if flexible else _Walker(legacy, 4, None, item, nullable)


# -- entities -------------------------------------------------------------------------------------------
def _nullable(inner: _Walker) -> _Walker:
    """KIP-893 nullable struct: an int8 marker (-1 null) before the struct."""
    def walk(buf: Buf, pos: int, end: int) -> int:
        _need(pos, 1, end, "struct marker")
        return pos + 1 if buf[pos] == 0xFF else inner.walk(buf, pos + 1, end)
    return _Walker(walk, 1, None)


def _field(entity_type: type[Entity], field: dataclasses.Field[Any], is_tag: bool, counted: bool) -> _Walker:
    flexible = entity_type.__flexible__
    if entity_type.__name__ == "RequestHeader" and field.name == "client_id":
        return _Walker(_legacy_string, 2, None)  # Kafka's special case: always a legacy string
    optional = False if is_tag else is_optional(field)  # as kio decides it (see its entity_writer)
    kind = classify_field(field)
    match kind:
        case EntityField(tp):
            walker = _nullable(_entity(tp, counted)) if optional else _entity(tp, counted)
        case EntityTupleField(tp):
            walker = _entity(tp, counted)
        case _:
            walker = _primitive(get_schema_field_type(field), flexible)
    if isinstance(kind, EntityTupleField | PrimitiveTupleField):
        walker = _array(walker, flexible, nullable=is_tag or is_optional(field), counted=counted)
    return walker


@cache
def _entity(entity_type: type[Entity], counted: bool) -> _Walker:
    plain: list[tuple[dataclasses.Field[Any], _Walker]] = []
    tagged: dict[int, _Walker] = {}
    for field in dataclasses.fields(entity_type):
        tag = get_field_tag(field)
        if tag is None:
            plain.append((field, _field(entity_type, field, is_tag=False, counted=counted)))
        else:
            tagged[tag] = _field(entity_type, field, is_tag=True, counted=counted)
    flexible = entity_type.__flexible__
    walk = _compile(entity_type, plain, _tagged_fields(tagged, counted) if flexible else None, counted)
    min_size = sum(w.min_size for _, w in plain) + (1 if flexible else 0)
    fixed = None if flexible or any(w.fixed_size is None for _, w in plain) else min_size
    return _Walker(walk, min_size, fixed)


# -- the entity walk as one generated function ------------------------------------------------------------
# Generated so that a Fetch partition or a Metadata partition costs one Python call, not one per field: the
# fixed-size runs, strings, bytes and array counts are inlined; nested entities and the rest call walkers.
_COUNT_COMPACT = """\
n = buf[pos] if pos < end else 0x80
if n < 0x80:
    pos += 1
else:
    n, pos = _uvarint(buf, pos, end)
n -= 1"""
_COUNT_LEGACY = """\
if pos + {width} > end:
    _short(pos, end)
n = _i{bits}(buf, pos)[0]
pos += {width}"""
_SKIP = """\
if n > 0:
    pos += n
    if pos > end:
        _short(pos, end)"""
_NOT_NULL = """\
if n < 0:
    _null(pos)"""
_ITEMS = """\
if n > 0:
    if n * {per_item} > end - pos:
        _lie(n, pos, end)
    {count}{advance}"""
_SPEND = """_budget.left -= n
    if _budget.left < 0:
        _too_many(pos)
    """


def _field_code(field: dataclasses.Field[Any], walker: _Walker, flexible: bool, name: str, counted: bool) -> str:
    """Inline code for one variable-size field, or a call of its walker."""
    if isinstance(classify_field(field), EntityTupleField | PrimitiveTupleField):
        item = walker.item
        assert item is not None  # _array always sets it
        advance = (f"pos += n * {item.fixed_size}" if item.fixed_size is not None else
                   f"for _ in range(n):\n        pos = {name}_item(buf, pos, end)")
        count = _COUNT_COMPACT if flexible else _COUNT_LEGACY.format(width=4, bits=32)
        null = "" if walker.nullable else _NOT_NULL + "\n"
        return count + "\n" + null + _ITEMS.format(per_item=max(item.min_size, 1), count=_SPEND if counted else "",
                                                    advance=advance)
    if walker.walk is _compact_bytes:
        return _COUNT_COMPACT + "\n" + _SKIP
    if walker.walk in (_legacy_string, _legacy_bytes):
        width = 2 if walker.walk is _legacy_string else 4
        return _COUNT_LEGACY.format(width=width, bits=width * 8) + "\n" + _SKIP
    return f"pos = {name}(buf, pos, end)"


def _compile(entity_type: type[Entity], plain: list[tuple[dataclasses.Field[Any], _Walker]],
             tags: Check | None, counted: bool) -> Check:
    flexible = entity_type.__flexible__
    env: dict[str, Any] = {"_uvarint": _uvarint, "_short": _short, "_lie": _lie, "_null": _null,
                           "_budget": _budget, "_too_many": _too_many,
                           "_i16": _I16.unpack_from, "_i32": _I32.unpack_from, "_tags": tags}
    body: list[str] = []
    fixed_run = 0  # consecutive fixed-size fields: one bounds check for the run

    def flush() -> None:
        nonlocal fixed_run
        if fixed_run:
            body.append(f"pos += {fixed_run}\nif pos > end:\n    _short(pos, end)")
        fixed_run = 0

    for i, (field, walker) in enumerate(plain):
        if walker.fixed_size is not None:
            fixed_run += walker.fixed_size
            continue
        flush()
        env[f"w{i}"], env[f"w{i}_item"] = walker.walk, getattr(walker.item, "walk", None)
        body.append(_field_code(field, walker, flexible, f"w{i}", counted))
    flush()
    if tags is not None:
        body.append("if pos < end and buf[pos] == 0:\n    pos += 1\nelse:\n    pos = _tags(buf, pos, end)")
    body.append("return pos")
    source = "def walk(buf, pos, end):\n" + "\n".join(
        "    " + line for chunk in body for line in chunk.splitlines())
    exec(compile(source, f"<bounds {entity_type.__module__}.{entity_type.__name__}>", "exec"), env)
    walk: Check = env["walk"]
    return walk


def _short(pos: int, end: int) -> None:
    raise OutOfBounds(f"a length past the end of the frame ({end} bytes) at byte {pos}")


def _lie(count: int, pos: int, end: int) -> None:
    raise OutOfBounds(f"array of {count} elements at byte {pos}, only {end - pos} bytes left")


def _null(pos: int) -> None:
    raise OutOfBounds(f"null where the schema has a non-nullable array, near byte {pos}")


def _tagged_fields(known: dict[int, _Walker], counted: bool) -> Check:
    """uvarint count, then per field uvarint tag, uvarint size, value. A known tag's value must fit its size;
    an unknown one is skipped by its size, as Kafka's readers do (noted for `without_unknown_tags`).

    kio reads on from where a known tag's value ends, not from where its declared size ends: so does the
    walk, or the two would read different bytes after a tag that lies."""
    def walk(buf: Buf, pos: int, end: int) -> int:
        if pos < end and buf[pos] == 0:  # no tagged fields: the common case
            return pos + 1
        count_at = pos
        count, pos = _uvarint(buf, pos, end)
        if count * 2 > end - pos:
            raise OutOfBounds(f"{count} tagged fields at byte {pos}, only {end - pos} bytes left")
        if counted:
            _spend(count, pos)
        count_end, unknown = pos, 0
        for _ in range(count):
            field_at = pos
            tag, pos = _uvarint(buf, pos, end)
            size, pos = _uvarint(buf, pos, end)
            stop = _need(pos, size, end, f"tagged field {tag}")
            walker = known.get(tag)
            if walker is not None:
                pos = walker.walk(buf, pos, stop)
                continue
            pos, unknown = stop, unknown + 1
            if _edits.spans is not None:
                _edits.spans.append((field_at, stop, b""))
        if unknown and _edits.spans is not None:
            _edits.spans.append((count_at, count_end, varint_bytes(count - unknown)))
        return pos
    return walk


