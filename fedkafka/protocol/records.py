"""Record-batch header work (magic v2) without decoding records: the only hand-written byte code.

Layout of a v2 batch header (offsets in bytes): baseOffset int64 @0, batchLength int32 @8,
partitionLeaderEpoch int32 @12, magic int8 @16, crc uint32 @17, attributes int16 @21,
lastOffsetDelta int32 @23, baseTimestamp int64 @27, maxTimestamp int64 @35, producerId int64 @43,
producerEpoch int16 @51, baseSequence int32 @53, recordCount int32 @57, records @61.
The CRC-32C covers attributes..end of batch, so baseOffset (and the leader epoch) can be patched freely.

The walks, checks and patches have a compiled twin, `fedkafka_speedups` (rust/fedkafka_speedups, built by the
Makefile's install step when cargo is present): used when it is importable, unless FEDKAFKA_PURE_PYTHON=1. The
two give identical bytes and identical RecordsError messages (tests/protocol/test_records_twins.py); `use()`
switches between them (tests run every records test against both).
"""

from __future__ import annotations

import importlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import crc32c

HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: bytes not counted in batchLength
_CRC_START = 21
_HEAD = struct.Struct(">qiibIhiqqqhii")
_PRODUCER = struct.Struct(">qhi")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")


class RecordsError(ValueError):
    """A records buffer that is not a well-formed sequence of v2 batches (Kafka: CORRUPT_MESSAGE)."""


class InvalidRecords(RecordsError):
    """Well-formed batches that break a produce rule (Kafka: INVALID_RECORD)."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    position: int  # where the batch starts in the buffer
    base_offset: int
    length: int  # whole batch, including baseOffset and batchLength
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & 0x10)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & 0x20)


Implementation = Literal["python", "compiled"]
_compiled: ModuleType | None = None


_INTERFACE = 1  # fedkafka_speedups.INTERFACE this module calls; another (a stale build) is not used


def _load_compiled() -> ModuleType | None:
    try:
        module = importlib.import_module("fedkafka_speedups")
    except ImportError:
        return None
    return module if getattr(module, "INTERFACE", None) == _INTERFACE else None


def compiled_available() -> bool:
    return _load_compiled() is not None


def use(implementation: Implementation) -> None:
    """Switch every function here to the pure-Python code or to the compiled twin (ImportError if not built)."""
    global _compiled
    if implementation == "python":
        _compiled = None
        return
    module = _load_compiled()
    if module is None:
        raise ImportError("fedkafka_speedups is not installed (rust/fedkafka_speedups)")
    _compiled = module


def implementation() -> Implementation:
    return "python" if _compiled is None else "compiled"


def iter_batches(buf: bytes | bytearray | memoryview, *, allow_partial_tail: bool = False) -> Iterator[BatchHeader]:
    """Headers of the batches in `buf`, in order. A truncated last batch is an error unless
    `allow_partial_tail` (fetch responses may end with a partial batch)."""
    if _compiled is not None:
        return _compiled_iter(_compiled, buf, allow_partial_tail)
    return _iter_batches(buf, allow_partial_tail)


def _compiled_iter(module: ModuleType, buf: bytes | bytearray | memoryview,
                   allow_partial_tail: bool) -> Iterator[BatchHeader]:
    headers, error = module.batch_headers(buf, allow_partial_tail)
    for fields in headers:
        yield BatchHeader(*fields)
    if error is not None:  # after the good headers, as the Python walk raises
        raise RecordsError(error)


def _iter_batches(buf: bytes | bytearray | memoryview, allow_partial_tail: bool) -> Iterator[BatchHeader]:
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < HEADER_SIZE:
            if allow_partial_tail:
                return
            raise RecordsError(f"truncated batch header at byte {pos}")
        (base_offset, batch_length, _epoch, magic, crc, attributes, last_delta, _ts0, _ts1, producer_id,
         producer_epoch, base_sequence, count) = _HEAD.unpack_from(view, pos)
        if magic != 2:
            raise RecordsError(f"unsupported record batch magic {magic} at byte {pos}")
        total = batch_length + LOG_OVERHEAD
        if batch_length < HEADER_SIZE - LOG_OVERHEAD:
            raise RecordsError(f"batch length {batch_length} too small at byte {pos}")
        if pos + total > end:
            if allow_partial_tail:
                return
            raise RecordsError(f"truncated batch at byte {pos}: needs {total}, has {end - pos}")
        yield BatchHeader(pos, base_offset, total, magic, crc, attributes, last_delta, producer_id,
                          producer_epoch, base_sequence, count)
        pos += total


_MIN_RECORD = 7  # length, attributes, timestampDelta, offsetDelta, keyLength, valueLength, header count: 1 byte each
_COMPRESSION = 0x07


def check_batches(buf: bytes | bytearray | memoryview) -> list[BatchHeader]:
    """Headers of the batches in `buf`, each checked as a broker checks it before appending: magic 2, length
    fields inside the buffer, CRC-32C, and a record count the bytes can hold. RecordsError otherwise."""
    if _compiled is not None:
        fields, error = _compiled.checked_headers(buf)
        if error is not None:
            raise RecordsError(error)
        return [BatchHeader(*f) for f in fields]
    headers = list(iter_batches(buf))
    for h in headers:
        if h.record_count < 0:
            raise RecordsError(f"negative record count {h.record_count} at byte {h.position}")
        room = h.length - HEADER_SIZE
        if not h.attributes & _COMPRESSION and h.record_count * _MIN_RECORD > room:
            raise RecordsError(f"{h.record_count} records cannot fit in {room} bytes at byte {h.position}")
        if not crc_ok(buf, h):
            raise RecordsError(f"CRC-32C mismatch in the batch at byte {h.position}")
    return headers


def produce_batch(records: bytes | bytearray | memoryview | None) -> BatchHeader:
    """The one batch a partition of a Produce request (v3+) must carry, checked (`check_batches`). Kafka's
    produce rules on top: exactly one batch, and its offset range matches its record count (InvalidRecords)."""
    headers = check_batches(records or b"")
    if len(headers) != 1:
        raise InvalidRecords(f"produce requests carry exactly one record batch per partition, not {len(headers)}")
    (h,) = headers
    if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
        raise InvalidRecords(f"lastOffsetDelta {h.last_offset_delta} does not match {h.record_count} records")
    return h


def crc_ok(buf: bytes | bytearray | memoryview, header: BatchHeader) -> bool:
    view = memoryview(buf)
    crc = crc32c.crc32c if _compiled is None else _compiled.crc32c
    return crc(view[header.position + _CRC_START: header.position + header.length]) == header.crc


def patch_base_offset(buf: bytearray | memoryview, header: BatchHeader, base_offset: int) -> None:
    """Overwrite baseOffset in place (not covered by the CRC)."""
    _I64.pack_into(buf, header.position, base_offset)


def rewrite_producer(buf: bytearray, header: BatchHeader, producer_id: int, producer_epoch: int,
                     base_sequence: int | None = None) -> None:
    """Overwrite producer id/epoch (and optionally the base sequence) in place and recompute the CRC-32C."""
    seq = header.base_sequence if base_sequence is None else base_sequence
    if _compiled is not None:
        _compiled.rewrite_producer(buf, header.position, header.length, producer_id, producer_epoch, seq)
        return
    _PRODUCER.pack_into(buf, header.position + 43, producer_id, producer_epoch, seq)
    start = header.position + _CRC_START
    crc = crc32c.crc32c(memoryview(buf)[start: header.position + header.length])
    _U32.pack_into(buf, header.position + 17, crc)


def with_producer(records: bytes | bytearray, header: BatchHeader, producer_id: int, producer_epoch: int) -> bytearray:
    """A copy of `records` whose batch `header` (checked before: its CRC is recomputed, so a corrupt batch
    would become a valid one) carries another producer id/epoch."""
    out = bytearray(records)
    rewrite_producer(out, header, producer_id, producer_epoch)
    return out  # kio writes any bytes-like: no extra copy


_I32 = struct.Struct(">i")
_EPOCH_AT = 12


def fit_to_segment(records: bytes, *, phys_end: int | None, delta: int, max_epoch: int) -> bytes | bytearray:
    """A fetch answer's batches as a reader of the logical partition must see them (docs/DESIGN.md §5.5).

    Drops batches starting at or beyond `phys_end` (the seal; batches never straddle it), adds `delta`
    (logical - physical) to each baseOffset, and caps partitionLeaderEpoch at `max_epoch` so physical epochs
    never exceed the logical one. Returns `records` itself when nothing changes (the zero-copy path of an
    identity active segment); otherwise a copy without the partial tail a broker may append.
    """
    if _compiled is not None:
        out, error = _compiled.fit_to_segment(records, phys_end, delta, max_epoch)
        if error is not None:
            raise RecordsError(error)
        return records if out is None else out
    view = memoryview(records)
    keep_end = 0  # end of the last complete batch we keep
    changed = delta != 0
    for h in iter_batches(view, allow_partial_tail=True):
        if phys_end is not None and h.base_offset >= phys_end:
            changed = True
            break
        if _I32.unpack_from(view, h.position + _EPOCH_AT)[0] > max_epoch:
            changed = True
        keep_end = h.position + h.length
    if not changed:
        return records
    out = bytearray(view[:keep_end])
    for h in iter_batches(out):
        moved = h.base_offset + delta
        if not -(1 << 63) <= moved < 1 << 63:  # a corrupt or hostile answer: refuse it, never wrap
            raise RecordsError(f"baseOffset {h.base_offset} + {delta} outside int64 at byte {h.position}")
        _I64.pack_into(out, h.position, moved)
        if _I32.unpack_from(out, h.position + _EPOCH_AT)[0] > max_epoch:
            _I32.pack_into(out, h.position + _EPOCH_AT, max_epoch)
    return out  # kio writes any bytes-like: no extra copy


_MAX_DELTA = (1 << 31) - 1  # lastOffsetDelta is an int32
_NO_TIMESTAMP = -1


def gap_batches(first: int, end: int, leader_epoch: int) -> bytearray:
    """Empty v2 batches (no records) covering logical offsets [first, end): how a reader is moved over an
    unclean gap (docs/DESIGN.md §9).

    Kafka itself returns such batches once compaction removed every record of a batch that still carries
    producer state, so every client advances its position to a batch's last offset + 1 whether or not it held
    a record (the Java consumer, librdkafka and aiokafka all do). lastOffsetDelta is an int32, so a gap of 2^40
    offsets takes 512 batches of 61 bytes."""
    if _compiled is not None:
        gap: bytearray = _compiled.gap_batches(first, end, leader_epoch)
        return gap
    out = bytearray()
    base = first
    while base < end:
        delta = min(end - base, _MAX_DELTA + 1) - 1
        start = len(out)
        out += _HEAD.pack(base, HEADER_SIZE - LOG_OVERHEAD, leader_epoch, 2, 0, 0, delta, _NO_TIMESTAMP,
                          _NO_TIMESTAMP, -1, -1, -1, 0)
        crc = crc32c.crc32c(memoryview(out)[start + _CRC_START:])
        _U32.pack_into(out, start + 17, crc)
        base += delta + 1
    return out


if os.environ.get("FEDKAFKA_PURE_PYTHON") != "1":
    _compiled = _load_compiled()
