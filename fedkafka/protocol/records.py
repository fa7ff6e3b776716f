"""Record-batch header work (magic v2) without decoding records: the only hand-written byte code.

Layout of a v2 batch header (offsets in bytes): baseOffset int64 @0, batchLength int32 @8,
partitionLeaderEpoch int32 @12, magic int8 @16, crc uint32 @17, attributes int16 @21,
lastOffsetDelta int32 @23, baseTimestamp int64 @27, maxTimestamp int64 @35, producerId int64 @43,
producerEpoch int16 @51, baseSequence int32 @53, recordCount int32 @57, records @61.
The CRC-32C covers attributes..end of batch, so baseOffset (and the leader epoch) can be patched freely; the
producer fields a Produce rewrites (`with_producer`) are patched with the CRC updated for the change, not
recomputed (CRC-32C is linear: `producer_head`), so a batch whose CRC was wrong stays wrong and its broker refuses it.
The produce path checks a batch with `forwarded_batch`: a plain batch's CRC is left to its broker, which checks
every batch's before appending (docs/DESIGN.md §5.4, "The batch's CRC").

The walks, checks and patches have a compiled twin, `fedkafka_speedups` (rust/fedkafka_speedups, built by the
Makefile's install step when cargo is present), as does `frame_buffer` (a bytearray not zero-filled): used when
it is importable (of this INTERFACE, at least this REVISION; what a build of an older revision lacks runs in
Python: `forwarded_batch`, `producer_head` and record sets in pieces came with revision 5), unless
FEDKAFKA_PURE_PYTHON=1. The
two give identical bytes and identical RecordsError messages (tests/protocol/test_records_twins.py); `use()`
switches between them (tests run every records test against both).

The Produce frame walks and writers at the end (`read_produce_request`, `produce_request_parts`,
`produce_response_frame`, `read_produce_response`) have a compiled fast path (revision 2 of the twin): it takes
the frames the produce path sees every request and answers None for any other (a malformed frame, tagged
fields, a request past its `max_elements`, ...), which the Python code then reads, writes or refuses as before
(a twin older than revision 4 does not count elements: it is given only frames too small to hold more than
`max_elements`); where it answers, it answers what the Python code does (tests/protocol/
test_produce_frames_twins.py). Revision 7 adds the Produce lane's own steps, compiled only (`lane_routes`,
`read_lane_request`, `lane_written`): each answers None for anything it does not take (and without the twin), and
the lane then runs its Python code, the reference (tests/proxy/test_produce_lane_compiled.py). The Fetch frames
(`read_fetch_response`, `fetch_response_parts`, `fetch_request_frame`) are Python only: no compiled twin yet. So is
`fit_to_segment_parts`, which lists batches with the compiled walk when it is there
(tests/consume/test_fit_to_segment.py holds it to `fit_to_segment`'s bytes under both). A walk whose caller may stop
early (`walk_batches`, `_batch_spans`) has the compiled walk list the buffer in slices, so that it builds the
headers looked at, not every one.
"""

from __future__ import annotations

import importlib
import os
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from types import ModuleType
from typing import Any, Literal, NamedTuple

import crc32c

HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: bytes not counted in batchLength
_CRC_START = 21
_HEAD = struct.Struct(">qiibIhiqqqhii")
_PRODUCER = struct.Struct(">qhi")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")

# A records buffer this large goes out by reference; a smaller one is copied among the small fields. Over TLS
# each writelines part is its own SSL_write and TLS record: ten 1 KiB parts cost 6x one 10 KiB part.
BY_REFERENCE_BYTES = 16 * 1024


class RecordsError(ValueError):
    """A records buffer that is not a well-formed sequence of v2 batches (Kafka: CORRUPT_MESSAGE)."""


class InvalidRecords(RecordsError):
    """Well-formed batches that break a produce rule (Kafka: INVALID_RECORD)."""


# Not frozen, like the Produce frames' classes below: a frozen dataclass' __init__ sets each field through
# object.__setattr__ (90 bytecodes for these 11 fields, 35 plain), and one is made per partition of every request.
@dataclass(slots=True)
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


_HEADER_FIELDS = tuple(f.name for f in dataclass_fields(BatchHeader))  # the compiled produce_batch sets these

Implementation = Literal["python", "compiled"]
_compiled: ModuleType | None = None


# The fedkafka_speedups this module calls: its INTERFACE exactly (another is a stale build, not used), and at
# least its REVISION (functions added without changing the others): a newer build also serves an older commit's
# records.py, so `bench/data_path.py --compare-ref` runs both sides with the same twin.
_INTERFACE = 1
_REVISION = 1  # frame_buffer
_FRAMES_REVISION = 2  # the Produce frames (an older build serves the rest; these then run in Python)
_frames: ModuleType | None = None  # _compiled when it has them
# translated_produce_answer (3), which passes the broker's throttle time on since 6 (an older one wrote 0: the lane's
# answers are then written in Python)
_LANE_REVISION = 6
_lane: ModuleType | None = None  # _compiled when it has it
_COUNTED_REVISION = 4  # read_produce_request counts elements (`max_elements`) as the Python walk does
_counted: ModuleType | None = None  # _compiled when it has it
_HEADS_REVISION = 5  # forwarded_batch, producer_head, produce_request_parts taking a RecordParts
_heads: ModuleType | None = None  # _compiled when it has them
_THROTTLE_REVISION = 6  # read_produce_answer
_throttled: ModuleType | None = None  # _compiled when it has it
_LANE_READ_REVISION = 7  # LaneRoutes, read_lane_request (the Produce lane's request step)
_lane_read: ModuleType | None = None  # _compiled when it has them
_LAZY_LANE_REVISION = 8  # read_lane_request's `lazy`: the request as a LaneRequest, its topics read when asked for
_lazy_lane: ModuleType | None = None  # _compiled when it has it


def _load_compiled() -> ModuleType | None:
    try:
        module = importlib.import_module("fedkafka_speedups")
    except ImportError:
        return None
    if getattr(module, "INTERFACE", None) != _INTERFACE or getattr(module, "REVISION", 0) < _REVISION:
        return None
    return module


def compiled_available() -> bool:
    return _load_compiled() is not None


def use(implementation: Implementation) -> None:
    """Switch every function here to the pure-Python code or to the compiled twin (ImportError if not built)."""
    global _compiled, _frames, _lane, _counted, _heads, _throttled, _lane_read, _lazy_lane, lane_written
    if implementation == "python":
        _compiled = _frames = _lane = _counted = _heads = _throttled = _lane_read = _lazy_lane = None
        lane_written = _no_lane_written
        return
    module = _load_compiled()
    if module is None:
        raise ImportError("fedkafka_speedups is not installed (rust/fedkafka_speedups)")
    _compiled = module
    _frames = module if module.REVISION >= _FRAMES_REVISION else None
    _lane = module if module.REVISION >= _LANE_REVISION else None
    _throttled = module if module.REVISION >= _THROTTLE_REVISION else None
    _counted = module if module.REVISION >= _COUNTED_REVISION else None
    _heads = module if module.REVISION >= _HEADS_REVISION else None
    _lane_read = module if module.REVISION >= _LANE_READ_REVISION else None
    _lazy_lane = module if module.REVISION >= _LAZY_LANE_REVISION else None
    lane_written = _no_lane_written if _lane_read is None else _lane_read.lane_written


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


def _iter_batches(buf: bytes | bytearray | memoryview, allow_partial_tail: bool,
                  start: int = 0) -> Iterator[BatchHeader]:
    view = memoryview(buf)
    pos, end = start, len(view)
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


# The first slice of a buffer the compiled twin lists for a lazy walk (`walk_batches`); each next one twice as large.
WALK_WINDOW = 16 * 1024


def walk_batches(buf: bytes | bytearray | memoryview, *, allow_partial_tail: bool = False) -> Iterator[BatchHeader]:
    """`iter_batches` for a caller that may stop before the end (the first header, the batches before a seal): the
    same headers and the same RecordsError, but the compiled twin lists the buffer in slices, each twice as large
    as the one before (`_slices`), so a caller that stops early has had few headers built. `iter_batches`' compiled
    walk builds every header first: 900 000 small batches cost 5.9 s and 209 MB to look at the first one."""
    if _compiled is None:
        return _iter_batches(buf, allow_partial_tail)
    return _walked_in_slices(_compiled, memoryview(buf), allow_partial_tail)


def _walked_in_slices(module: ModuleType, view: memoryview, allow_partial_tail: bool) -> Iterator[BatchHeader]:
    for at, headers in _slices(module, view, allow_partial_tail):
        for fields in headers:
            h = BatchHeader(*fields)
            h.position += at
            yield h


def _slices(module: ModuleType, view: memoryview, allow_partial_tail: bool,
            window: int | None = None) -> Iterator[tuple[int, Sequence[tuple[int, ...]]]]:
    """The compiled walk's header fields, a slice of `view` at a time: (where the slice starts, its headers, their
    positions in the slice). WALK_WINDOW bytes first (or `window`), twice as many each time after, at least the
    whole batch a slice starts with (its batchLength). A slice before the end allows a partial tail (the batch it
    cuts is the next slice's first). A slice whose walk fails is walked again by the Python twin from the failing
    batch on, a header at a time: the same error, with its position in `view`."""
    pos, end = 0, len(view)
    window = WALK_WINDOW if window is None else window
    while pos < end:
        first = _I32.unpack_from(view, pos + 8)[0] + LOG_OVERHEAD if end - pos >= LOG_OVERHEAD else 0
        stop = min(end, pos + max(window, first))
        headers, error = module.batch_headers(view[pos:stop], allow_partial_tail or stop < end)
        if headers:
            yield pos, headers
        after = pos + headers[-1][0] + headers[-1][2] if headers else pos
        if error is not None or (stop < end and after == pos):
            for h in _iter_batches(view, allow_partial_tail, after):
                yield 0, (tuple(getattr(h, name) for name in _HEADER_FIELDS),)
            return
        if stop == end:
            return
        pos, window = after, window * 2


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
    return _checked(buf, crc=True)


def _checked(buf: bytes | bytearray | memoryview, crc: bool) -> list[BatchHeader]:
    """`check_batches` in Python, the CRC-32C checked only when `crc`."""
    headers = list(iter_batches(buf))
    for h in headers:
        if h.record_count < 0:
            raise RecordsError(f"negative record count {h.record_count} at byte {h.position}")
        room = h.length - HEADER_SIZE
        if not h.attributes & _COMPRESSION and h.record_count * _MIN_RECORD > room:
            raise RecordsError(f"{h.record_count} records cannot fit in {room} bytes at byte {h.position}")
        if crc and not crc_ok(buf, h):
            raise RecordsError(f"CRC-32C mismatch in the batch at byte {h.position}")
    return headers


def produce_batch(records: bytes | bytearray | memoryview | None) -> BatchHeader:
    """The one batch a partition of a Produce request (v3+) must carry, checked (`check_batches`). Kafka's
    produce rules on top: exactly one batch, and its offset range matches its record count (InvalidRecords)."""
    if _frames is not None:  # one call, the header made without a Python frame
        header, error, invalid = _frames.produce_batch(records, BatchHeader, _HEADER_FIELDS)
        if header is not None:
            return header  # type: ignore[no-any-return]
        raise (InvalidRecords if invalid else RecordsError)(error)
    return _one_batch(check_batches(records or b""))


def _one_batch(headers: list[BatchHeader]) -> BatchHeader:
    """Kafka's produce rules over a partition's checked batches (InvalidRecords): exactly one batch, and its offset
    range matches its record count (the compiled twin's `one_batch`)."""
    if len(headers) != 1:
        raise InvalidRecords(f"produce requests carry exactly one record batch per partition, not {len(headers)}")
    (h,) = headers
    if h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
        raise InvalidRecords(f"lastOffsetDelta {h.last_offset_delta} does not match {h.record_count} records")
    return h


def forwarded_batch(records: bytes | bytearray | memoryview | None) -> BatchHeader:
    """`produce_batch` as the produce path checks a batch it forwards (docs/DESIGN.md §5.4, "The batch's CRC"): the
    CRC-32C is checked for a batch of a producer id (the proxy's sequence bookkeeping acts on its header before any
    broker sees it) and for a batch refused on any other count (the error `produce_batch` gives, so a corrupt batch
    is CORRUPT_MESSAGE as from a broker); a plain batch (producer id < 0) that passes every other check is returned
    without it, its broker checks it (CORRUPT_MESSAGE) and nothing the proxy keeps comes from its header."""
    if _heads is not None:  # one call, the header made without a Python frame
        header, error, invalid = _heads.forwarded_batch(records, BatchHeader, _HEADER_FIELDS)
        if header is not None:
            return header  # type: ignore[no-any-return]
        raise (InvalidRecords if invalid else RecordsError)(error)
    h = _unchecked_crc(records)
    if h is None:
        return produce_batch(records)  # refused: as produce_batch refuses it (which checks the CRC first)
    if h.producer_id >= 0 and not crc_ok(records or b"", h):
        raise RecordsError(f"CRC-32C mismatch in the batch at byte {h.position}")
    return h


def _unchecked_crc(records: bytes | bytearray | memoryview | None) -> BatchHeader | None:
    """The one batch when it passes every check of `produce_batch` but its CRC-32C; None otherwise."""
    try:
        return _one_batch(_checked(records or b"", crc=False))
    except RecordsError:  # InvalidRecords too
        return None


_LENGTH_AT = 8
_MAGIC_AT = 16
_CRC_AT = 17
_ATTRIBUTES_AT = 21
_PRODUCER_AT = 43


def claimed_sequence(records: bytes | bytearray | memoryview | None) -> tuple[int, int, int] | None:
    """(producer id, producer epoch, base sequence) the first batch's header claims, read without any check (a batch
    answered with an error before or instead of `produce_batch`'s): None when the bytes hold no v2 header, or the
    header no idempotent, non-transactional batch."""
    if records is None or len(records) < HEADER_SIZE:
        return None
    view = memoryview(records)
    if view[_MAGIC_AT] != 2 or view[_ATTRIBUTES_AT + 1] & 0x10:  # attributes: int16, the flags in its low byte
        return None
    producer_id, epoch, base_sequence = _PRODUCER.unpack_from(view, _PRODUCER_AT)
    if producer_id < 0 or base_sequence < 0:
        return None
    return producer_id, epoch, base_sequence


def header_intact(records: bytes | bytearray | memoryview | None) -> bool:
    """Whether the first batch's CRC-32C matches the bytes it covers (attributes to the batch's end, as its
    batchLength gives it): its producer id, epoch and base sequence are then as the client wrote them, and
    `claimed_sequence` can be trusted (docs/DESIGN.md §5.4, "The batch's CRC"). False for bytes too short to hold
    the batch their header describes: nothing of such a header is known to be the client's."""
    if records is None or len(records) < HEADER_SIZE:
        return False
    view = memoryview(records)
    end = LOG_OVERHEAD + _I32.unpack_from(view, _LENGTH_AT)[0]
    if not HEADER_SIZE <= end <= len(view):
        return False
    stored: int = _U32.unpack_from(view, _CRC_AT)[0]
    return _covered_crc(view, 0, end) == stored


def crc_ok(buf: bytes | bytearray | memoryview, header: BatchHeader) -> bool:
    """Whether batch `header`'s CRC-32C (as its header was read) matches the bytes it covers in `buf`."""
    return _covered_crc(memoryview(buf), header.position, header.position + header.length) == header.crc


def _covered_crc(view: memoryview, position: int, end: int) -> int:
    """The CRC-32C of the bytes a batch's CRC covers: from its attributes (`position` + 21) to `end`, its end.
    `crc_ok` gives the batch from a header read before, `header_intact` from the raw bytes (the first batch's
    batchLength, no other check: the header is what is in question)."""
    crc = crc32c.crc32c if _compiled is None else _compiled.crc32c
    covered: int = crc(view[position + _CRC_START:end])
    return covered


def _write_crc(buf: bytearray, position: int, end: int) -> None:
    """Store in the batch at `position` (ending at `end`) the CRC-32C of the bytes it covers (`_covered_crc`)."""
    _U32.pack_into(buf, position + _CRC_AT, _covered_crc(memoryview(buf), position, end))


def patch_base_offset(buf: bytearray | memoryview, header: BatchHeader, base_offset: int) -> None:
    """Overwrite baseOffset in place (not covered by the CRC)."""
    _I64.pack_into(buf, header.position, base_offset)


def rewrite_producer(buf: bytearray, header: BatchHeader, producer_id: int, producer_epoch: int,
                     base_sequence: int | None = None) -> None:
    """Overwrite producer id/epoch (and optionally the base sequence) in place and recompute the CRC-32C: the batch
    comes out valid whatever its CRC was (tests build batches with it). The produce path uses `with_producer`, whose
    CRC is updated for the change, never recomputed."""
    seq = header.base_sequence if base_sequence is None else base_sequence
    if _compiled is not None:
        _compiled.rewrite_producer(buf, header.position, header.length, producer_id, producer_epoch, seq)
        return
    _PRODUCER.pack_into(buf, header.position + _PRODUCER_AT, producer_id, producer_epoch, seq)
    _write_crc(buf, header.position, header.position + header.length)


def producer_head(records: Buffer, header: BatchHeader, producer_id: int, producer_epoch: int,
                  base_sequence: int | None = None) -> bytes:
    """The first 61 bytes of batch `header` in `records` with another producer id, epoch (and base sequence, if
    given), and its CRC-32C updated for them without a pass over the records. CRC-32C is linear: the CRC of the
    new bytes is the stored one XOR the raw CRC (no initial or final inversion) of old XOR new over bytes [43, 57),
    moved past the bytes after them (multiplied by x^(8n) modulo the polynomial, as zlib's crc32_combine does:
    `_crc_shift`). So a stored CRC that was right is right for the new bytes, one that was wrong stays wrong by the
    same bits and its broker still refuses the batch (CORRUPT_MESSAGE): a rewrite never makes a corrupt batch
    valid."""
    seq = header.base_sequence if base_sequence is None else base_sequence
    if _heads is not None:
        head: bytes = _heads.producer_head(records, header.position, header.length, producer_id, producer_epoch, seq)
        return head
    position, length = header.position, header.length
    if position < 0 or length < HEADER_SIZE or position + length > len(records):
        raise ValueError(f"no batch of {length} bytes at byte {position}")
    out = bytearray(memoryview(records)[position:position + HEADER_SIZE])
    old = int.from_bytes(out[_PRODUCER_AT:_PRODUCER_END])
    _PRODUCER.pack_into(out, _PRODUCER_AT, producer_id, producer_epoch, seq)
    change = (old ^ int.from_bytes(out[_PRODUCER_AT:_PRODUCER_END])).to_bytes(_PRODUCER.size)
    raw = crc32c.crc32c(change) ^ _ZEROS_CRC
    crc = _U32.unpack_from(out, _CRC_AT)[0] ^ _crc_shift(raw, length - _PRODUCER_END)
    _U32.pack_into(out, _CRC_AT, crc)
    return bytes(out)


def with_producer(records: Buffer, header: BatchHeader, producer_id: int, producer_epoch: int) -> RecordParts:
    """`records` whose batch `header` carries another producer id/epoch, not copied: the batch's first 61 bytes
    rewritten in a buffer of their own (`producer_head`: its CRC-32C updated, so a corrupt batch stays corrupt),
    the rest views of `records`. `produce_request_parts` writes the pieces, the large ones by reference."""
    view = memoryview(records)
    position, end = header.position, header.position + header.length
    head = producer_head(view, header, producer_id, producer_epoch)
    if not position and end == len(view):  # a Produce partition's one batch
        return RecordParts([head, view[HEADER_SIZE:]], end)
    parts: list[Buffer] = [view[:position]] if position else []
    parts.append(head)
    parts.append(view[position + HEADER_SIZE:end])
    if end < len(view):
        parts.append(view[end:])
    return RecordParts(parts, len(view))


_PRODUCER_END = _PRODUCER_AT + _PRODUCER.size  # 57: producerId, producerEpoch, baseSequence end
_POLY = 0x82F63B78  # CRC-32C, bit-reflected: bit 31 is x^0
_ZEROS_CRC = crc32c.crc32c(bytes(_PRODUCER.size))  # crc32c(d) ^ this = the raw CRC of d (14 bytes)


def _multmodp(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC-32C polynomial, both bit-reflected (zlib's multmodp)."""
    p = 0
    for i in range(31, -1, -1):
        if a >> i & 1:
            p ^= b
        b = b >> 1 ^ _POLY if b & 1 else b >> 1
    return p


def _powers() -> list[int]:
    """x^(2^k) modulo the polynomial, k = 0..34."""
    out = [1 << 30]  # x^1
    for _ in range(34):
        out.append(_multmodp(out[-1], out[-1]))
    return out


_X2N = _powers()
# Per k, four byte tables of the multiplication by x^(8 * 2^k) (2^k zero bytes appended), made when first used.
_SHIFT_TABLES: list[tuple[list[int], list[int], list[int], list[int]] | None] = [None] * 32


def _shift_tables(k: int) -> tuple[list[int], list[int], list[int], list[int]]:
    tables = _SHIFT_TABLES[k]
    if tables is None:
        factor = _X2N[k + 3]
        made = []
        for byte in range(4):
            basis = [_multmodp(factor, 1 << (8 * byte + bit)) for bit in range(8)]
            table = [0] * 256
            for v in range(1, 256):
                low = v & -v
                table[v] = table[v ^ low] ^ basis[low.bit_length() - 1]
            made.append(table)
        tables = _SHIFT_TABLES[k] = (made[0], made[1], made[2], made[3])
    return tables


def _crc_shift(crc: int, n: int) -> int:
    """A raw CRC-32C register after `n` more zero bytes (n < 2^32): one table multiplication per bit set in n."""
    while n:
        low = n & -n
        t0, t1, t2, t3 = _SHIFT_TABLES[low.bit_length() - 1] or _shift_tables(low.bit_length() - 1)
        crc = t0[crc & 0xFF] ^ t1[crc >> 8 & 0xFF] ^ t2[crc >> 16 & 0xFF] ^ t3[crc >> 24]
        n ^= low
    return crc


_I32 = struct.Struct(">i")
_EPOCH_AT = 12


def fit_to_segment(records: Buffer, *, phys_end: int | None, delta: int, max_epoch: int) -> Buffer:
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



class RecordParts:
    """A record set as the pieces it is written from, in order: rewritten batch heads (and whole small batches) in
    buffers of their own, the bodies of large batches as views of the broker's frame. `len()` is its size in
    bytes, `bytes()` joins it. A moved segment's answer, rewritten without copying its records."""

    __slots__ = ("nbytes", "parts")

    def __init__(self, parts: list[Buffer], nbytes: int):
        self.parts, self.nbytes = parts, nbytes

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


_REWRITTEN_HEAD = 16  # baseOffset, batchLength, partitionLeaderEpoch: all a fit to a segment changes


def _batch_spans(view: memoryview) -> Iterator[tuple[int, int, int]]:
    """(position, baseOffset, whole length) of each complete batch, as `iter_batches(allow_partial_tail=True)` walks
    them (the same RecordsError after the same batches), without a BatchHeader each: 2 us of an 11-field frozen
    dataclass per batch would cost more than copying a 16 KiB one."""
    if _compiled is None:
        for h in _iter_batches(view, True):
            yield h.position, h.base_offset, h.length
        return
    for at, headers in _slices(_compiled, view, True, PARTS_WINDOW):  # in slices: the caller stops at the seal
        for fields in headers:
            yield at + fields[0], fields[1], fields[2]


# A batch at least this large is left in the frame by fit_to_segment_parts. Listing a batch costs about 0.7 us
# (compiled walk): at 16 KiB that is what the compiled twin takes to copy it, at 64 KiB a quarter.
PARTS_FROM_BYTES = 2 * BY_REFERENCE_BYTES
# The first slice `_batch_spans` has the compiled walk list (`_slices`): its batches are mostly PARTS_FROM_BYTES or
# more, and each slice costs a call (a first slice of WALK_WINDOW made 16 x 64 KiB batches' walk twice as long; this
# one 20% longer than one call for all, and 1 large batch then 100 000 small ones past the seal 60x shorter).
PARTS_WINDOW = 8 * PARTS_FROM_BYTES


def fit_to_segment_parts(records: Buffer, *, phys_end: int | None, delta: int, max_epoch: int,
                         by_reference: int = PARTS_FROM_BYTES) -> Buffer | RecordParts:
    """`fit_to_segment`, whose batches of `by_reference` bytes or more are not copied: each one's first 16 bytes are
    rewritten in a buffer of their own and the rest is left in `records` (RecordParts). Joined, the same bytes as
    `fit_to_segment`, and a RecordsError where it raises one (the first found may differ). Only for a moved segment
    (delta != 0: every batch changes) whose first batch is that large (a partition's batches come from the same
    producers, so mostly alike); otherwise `fit_to_segment` itself, whose compiled twin returns an unchanged
    buffer in no time and copies small batches faster than this walk would list them."""
    view = memoryview(records)
    if delta == 0 or len(view) < HEADER_SIZE or _I32.unpack_from(view, 8)[0] + LOG_OVERHEAD < by_reference:
        return fit_to_segment(records, phys_end=phys_end, delta=delta, max_epoch=max_epoch)
    parts: list[Buffer] = []
    small = bytearray()
    size = 0
    for position, base_offset, length in _batch_spans(view):
        if phys_end is not None and base_offset >= phys_end:
            break
        moved = base_offset + delta
        if not -(1 << 63) <= moved < 1 << 63:  # a corrupt or hostile answer: refuse it, never wrap
            raise RecordsError(f"baseOffset {base_offset} + {delta} outside int64 at byte {position}")
        at = len(small)
        copied = _REWRITTEN_HEAD if length >= by_reference else length
        small += view[position:position + copied]
        _I64.pack_into(small, at, moved)
        if _I32.unpack_from(small, at + _EPOCH_AT)[0] > max_epoch:
            _I32.pack_into(small, at + _EPOCH_AT, max_epoch)
        if copied < length:
            parts.append(small)
            parts.append(view[position + copied:position + length])
            small = bytearray()
        size += length
    if not size:
        return bytearray()  # as fit_to_segment: nothing before the seal
    if small:
        parts.append(small)
    return RecordParts(parts, size)

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
        _write_crc(out, start, len(out))
        base += delta + 1
    return out


def frame_buffer(size: int) -> bytearray:
    """A bytearray of `size` bytes for a reader that writes every one of them before anything reads it
    (`upstream.FrameProtocol`, a large broker answer). The compiled twin leaves its contents uninitialised:
    `bytearray(size)`'s zero fill was ~5% of a consume's CPU (bench/README.md, "Fetch frames without kio
    entities"). Same errors as `bytearray(size)` for a negative size."""
    if _compiled is not None:
        buffer: bytearray = _compiled.frame_buffer(size)
        return buffer
    return bytearray(size)


# -- Produce frames ---------------------------------------------------------------------------------------------
# Produce requests (v3..12) and responses read and written byte by byte, without kio entities: the produce path
# runs once per request, and kio's generic walk of every small field cost a third of the proxy's CPU there.
# A compiled fast path for the frames the produce path sees (see the module's doc); `use()` switches it with the
# rest. Every frame they read or write is the one kio reads or writes (tests/protocol/test_produce_frames.py
# compares the two over random frames, under both implementations).
#
# Layouts. Request header v1 (v3..8) / v2 (v9..12): api_key int16, api_version int16, correlation_id int32,
# client_id NULLABLE_STRING (int16 length even in v2), then in v2 tagged fields. Body: transactional_id nullable
# string, acks int16, timeout_ms int32, topic_data[name string, partition_data[index int32, records nullable
# bytes]]. Response header v0 / v1: correlation_id int32 (v1: tagged fields). Body: responses[name,
# partition_responses[index int32, error_code int16, base_offset int64, log_append_time_ms int64,
# log_start_offset int64 (v5+), record_errors[batch_index int32, message nullable string] (v8+), error_message
# nullable string (v8+)]], throttle_time_ms int32. v9+ are flexible: strings, bytes and arrays carry an unsigned
# varint length + 1 (0: null), and every struct ends with a tagged-fields section. v10+ responses know tag 0 of
# a partition answer (current_leader) and of the body (node_endpoints): hints the proxy does not pass on.

PRODUCE_VERSIONS = range(3, 13)
_FIRST_FLEXIBLE = 9
_REQUEST_HEAD = struct.Struct(">hhih")  # api_key, api_version, correlation_id, client_id length
_REQUEST_PREFIX = struct.Struct(">ihhi")  # size, api_key, api_version, correlation_id
_ACKS_TIMEOUT = struct.Struct(">hi")
_ACKS_TIMEOUT_COUNT = struct.Struct(">hii")  # v3..8: acks, timeout_ms, topic count
_INDEX_LENGTH = struct.Struct(">ii")  # v3..8: partition index, records length
_SIZE_CORRELATION = struct.Struct(">ii")  # a response's size prefix and correlation_id
_I16 = struct.Struct(">h")
_NULL_LEGACY_STRING = b"\xff\xff"
_NO_TAGS = b"\x00"
_ONE_BYTE_VARINT = [bytes((n,)) for n in range(0x80)]
_TRUNCATED = (struct.error, IndexError)  # a fixed-size field or a varint byte past the end of the frame


Buffer = bytes | bytearray | memoryview


class MalformedFrame(RecordsError):
    """A Produce frame that does not parse (the dispatcher closes the connection, as for any undecodable request)."""


# Named tuples: the (name, [(index, records)]) shape `produce_request_parts` writes, passed to it as they are, and
# cheaper to make than a dataclass (one of each per partition of every request, read and written).
class ProducePartitionData(NamedTuple):
    index: int  # type: ignore[assignment]  # the field, as Kafka names it, hides tuple.index (never called)
    records: Buffer | RecordParts | None  # read: a slice of the frame, never copied; written: also a rewritten batch


class ProduceTopicData(NamedTuple):
    name: str
    partition_data: tuple[ProducePartitionData, ...]


@dataclass(slots=True)
class ProduceRequestFrame:
    version: int  # 3..12
    correlation_id: int
    client_id: str | None
    transactional_id: str | None
    acks: int
    timeout_ms: int
    topic_data: tuple[ProduceTopicData, ...]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ with 7 fields costs 1.4 µs, this one 0.2
class ProducePartitionAnswer:  # (two are made per partition of every request: the broker's and the client's)
    index: int
    error_code: int
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    record_errors: tuple[tuple[int, str | None], ...] = ()  # (batch_index, batch_index_error_message)
    error_message: str | None = None


# The fields the compiled readers set on the two classes above, through their slots (no __init__ frame)
_REQUEST_FIELDS = tuple(f.name for f in dataclass_fields(ProduceRequestFrame))


class LaneRequest:
    """A Produce request of one partition as the lane's compiled step reads it with `lazy` (`read_lane_request`): the
    fields of a `ProduceRequestFrame`, its `topic_data` read from `frame` (within `max_elements`, as the step read
    it: `read_produce_request`, the same topics the step would have made) only when first asked for. The lane's
    usual request, answered with its broker's answer as read and no metrics observer, is never asked: its topics are
    not made. The lane holds `frame` until it is answered, as the record sets the broker's request is made of."""

    __slots__ = ("_topic_data", "acks", "client_id", "correlation_id", "frame", "max_elements", "timeout_ms",
                 "transactional_id", "version")
    version: int
    correlation_id: int
    client_id: str | None
    transactional_id: str | None
    acks: int
    timeout_ms: int
    frame: Buffer
    max_elements: int | None
    _topic_data: tuple[ProduceTopicData, ...]  # set when first read

    @property
    def topic_data(self) -> tuple[ProduceTopicData, ...]:
        try:
            return self._topic_data
        except AttributeError:
            topics = self._topic_data = read_produce_request(self.frame, self.max_elements).topic_data
            return topics

    def __eq__(self, other: object) -> bool:  # as the ProduceRequestFrame it stands for
        fields = (self.version, self.correlation_id, self.client_id, self.transactional_id, self.acks,
                  self.timeout_ms, self.topic_data)
        if isinstance(other, LaneRequest | ProduceRequestFrame):
            return fields == (other.version, other.correlation_id, other.client_id, other.transactional_id,
                              other.acks, other.timeout_ms, other.topic_data)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as a ProduceRequestFrame (a dataclass with eq)


# What `read_lane_request` makes a LaneRequest of (`lazy`): its fields in the order the compiled step passes them
_LANE_REQUEST = (LaneRequest, ("version", "correlation_id", "client_id", "transactional_id", "acks", "timeout_ms",
                               "frame", "max_elements"))
_ANSWER_FIELDS = tuple(f.name for f in dataclass_fields(ProducePartitionAnswer))

TagWalk = Callable[[memoryview, int], int]  # (view ending where the tag's size does, position) -> position after


# Fewest bytes one element of a Produce request takes: a v9+ topic (empty name, partition count, tags); every other
# element (a partition, a legacy topic, a tagged field) takes more. A frame of n bytes has at most n / 3 elements:
# a compiled walk older than _COUNTED_REVISION, which does not count, reads only frames too small to hold more.
_MIN_ELEMENT_BYTES = 3


def read_produce_request(frame: Buffer, max_elements: int | None = None) -> ProduceRequestFrame:
    """The Produce request in `frame` (the request after its 4-byte size prefix: header and body), read as kio
    reads it: unknown tagged fields are skipped, bytes after the last field ignored, and each partition's records
    are a memoryview into `frame`. MalformedFrame for anything that does not parse; no allocation is sized from
    a declared length (an array's count is checked against the bytes left before its first element is read),
    and past `max_elements` topics, partitions and tagged fields together (None: any number) the walk stops.
    The compiled walk counts them as this one does and answers None past the limit, so this one refuses the
    frame (an older build, which does not count, reads only frames too small to hold more: `_MIN_ELEMENT_BYTES`)."""
    read: ProduceRequestFrame | None = None
    if _counted is not None:
        read = _counted.read_produce_request(
            frame, ProduceRequestFrame, _REQUEST_FIELDS, ProduceTopicData, ProducePartitionData, max_elements)
    elif _frames is not None and (max_elements is None or len(frame) <= max_elements * _MIN_ELEMENT_BYTES):
        read = _frames.read_produce_request(
            frame, ProduceRequestFrame, _REQUEST_FIELDS, ProduceTopicData, ProducePartitionData)
    if read is not None:
        return read
    view = memoryview(frame)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    end = len(view)
    if end < _REQUEST_HEAD.size:
        raise MalformedFrame(f"a Produce request of {end} bytes is shorter than its header")
    api_key, version, correlation_id, length = _REQUEST_HEAD.unpack_from(view, 0)
    if api_key != 0:
        raise MalformedFrame(f"api_key {api_key} is not Produce (0)")
    if version not in PRODUCE_VERSIONS:
        raise MalformedFrame(f"Produce version {version} outside 3..12")
    elements = _Elements(max_elements)
    try:
        client_id, pos = _legacy_string(view, _REQUEST_HEAD.size, length, end, "client_id")
        if version < _FIRST_FLEXIBLE:
            transactional_id, acks, timeout_ms, topics = _legacy_body(view, pos, end, elements)
        else:
            pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end, None, elements)  # the header's
            transactional_id, acks, timeout_ms, topics = _flexible_body(view, pos, end, elements)
    except _TRUNCATED:
        raise MalformedFrame(f"Produce v{version} request truncated: a field runs past its end ({end} bytes)") from None
    except UnicodeDecodeError as e:
        raise MalformedFrame(f"Produce v{version} request: a string that is not UTF-8 ({e.reason})") from None
    return ProduceRequestFrame(version, correlation_id, client_id, transactional_id, acks, timeout_ms, topics)


class _Elements:
    """The topics, partitions and tagged fields a request walk may still cross."""

    __slots__ = ("left", "limit")

    def __init__(self, max_elements: int | None):
        self.left = sys.maxsize if max_elements is None else max_elements
        self.limit = max_elements

    def spend(self, count: int, pos: int) -> None:
        self.left -= count
        if self.left < 0:
            raise MalformedFrame(f"more than {self.limit} topics, partitions and tagged fields in one request "
                                 f"(--max-request-elements), at byte {pos}")


def _legacy_string(view: memoryview, pos: int, length: int, end: int, what: str) -> tuple[str | None, int]:
    """A NULLABLE_STRING whose int16 `length` was read just before `pos`: (value, position after it)."""
    if length < 0:
        if length == -1:
            return None, pos
        raise MalformedFrame(f"negative length {length} of {what} at byte {pos - 2}")
    stop = pos + length
    if stop > end:
        raise MalformedFrame(f"{what} of {length} bytes at byte {pos}, only {end - pos} left")
    return str(view[pos:stop], "utf-8"), stop


def _compact_string(view: memoryview, pos: int, end: int, what: str) -> tuple[str | None, int]:
    """A COMPACT_NULLABLE_STRING at `pos`: (value, position after it)."""
    length = view[pos]
    if length < 0x80:
        pos += 1
    else:
        length, pos = _uvarint(view, pos, end)
    if length == 0:
        return None, pos
    stop = pos + length - 1
    if stop > end:
        raise MalformedFrame(f"{what} of {length - 1} bytes at byte {pos}, only {end - pos} left")
    return str(view[pos:stop], "utf-8"), stop


def _uvarint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of an unsigned varint of at most 5 bytes, as Kafka and kio read them.
    Unrolled: a 64 KiB records length takes 3 bytes, and a loop costs several times as much."""
    try:
        byte = view[pos]
        value = byte & 0x7F
        if byte < 0x80:
            return value, pos + 1
        byte = view[pos + 1]
        value |= (byte & 0x7F) << 7
        if byte < 0x80:
            return value, pos + 2
        byte = view[pos + 2]
        value |= (byte & 0x7F) << 14
        if byte < 0x80:
            return value, pos + 3
        byte = view[pos + 3]
        value |= (byte & 0x7F) << 21
        if byte < 0x80:
            return value, pos + 4
        byte = view[pos + 4]
        if byte < 0x80:
            return value | byte << 28, pos + 5
    except IndexError:  # `end` is the view's length
        raise MalformedFrame(f"a varint cut by the end of the frame at byte {pos}") from None
    raise MalformedFrame(f"a varint longer than 5 bytes at byte {pos}")


def _skip_tags(view: memoryview, pos: int, end: int, tag_zero: TagWalk | None = None,
               elements: _Elements | None = None) -> int:
    """The position after a tagged-fields section: no tag of Produce's request is known, so all are skipped by
    their size, as Kafka's readers skip unknown tags (KIP-482). `tag_zero` walks the value of a known tag 0 (a
    response's) in a view that ends where its declared size does; the section goes on from where the value
    ends, as kio reads it."""
    count, pos = _uvarint(view, pos, end)
    if count * 2 > end - pos:  # each field takes at least a tag and a size byte
        raise MalformedFrame(f"{count} tagged fields at byte {pos}, only {end - pos} bytes left")
    if elements is not None:
        elements.spend(count, pos)
    for _ in range(count):
        tag, pos = _uvarint(view, pos, end)
        size, pos = _uvarint(view, pos, end)
        if size > end - pos:
            raise MalformedFrame(f"tagged field {tag} of {size} bytes at byte {pos}, only {end - pos} left")
        pos = tag_zero(view[:pos + size], pos) if tag == 0 and tag_zero is not None else pos + size
    return pos


def _bad_count(count: int, min_size: int, pos: int, end: int, what: str) -> MalformedFrame:
    """The error for an array count that is null or more than the bytes left can hold (callers check inline)."""
    if count < 0:
        return MalformedFrame(f"null {what} array at byte {pos}")
    return MalformedFrame(f"{count} {what} at byte {pos}, only {end - pos} bytes left (at least {min_size} each)")


def _legacy_topic_head(view: memoryview, pos: int, end: int, min_size: int, what: str) -> tuple[str, int, int]:
    """(name, partition count, position after them) of a v3..8 topic, request or answer: the name must not be
    null, and the count must fit in the bytes left at `min_size` each."""
    (length,) = _I16.unpack_from(view, pos)
    if length == -1:
        raise MalformedFrame(f"null topic name at byte {pos}")
    name, pos = _legacy_string(view, pos + 2, length, end, "topic name")
    assert name is not None  # -1 refused above, other negatives by _legacy_string
    (count,) = _I32.unpack_from(view, pos)
    pos += 4
    if count < 0 or count * min_size > end - pos:
        raise _bad_count(count, min_size, pos, end, what)
    return name, count, pos


def _legacy_body(view: memoryview, pos: int, end: int,
                 elements: _Elements) -> tuple[str | None, int, int, tuple[ProduceTopicData, ...]]:
    """transactional_id, acks, timeout_ms and topic_data of a v3..8 body at `pos`."""
    (length,) = _I16.unpack_from(view, pos)
    transactional_id, pos = _legacy_string(view, pos + 2, length, end, "transactional_id")
    acks, timeout_ms, count = _ACKS_TIMEOUT_COUNT.unpack_from(view, pos)
    pos += _ACKS_TIMEOUT_COUNT.size
    if count < 0 or count * 6 > end - pos:  # a topic: name length, partition count
        raise _bad_count(count, 6, pos, end, "topics")
    elements.spend(count, pos)
    topics = []
    for _ in range(count):
        name, partitions_count, pos = _legacy_topic_head(view, pos, end, 8, "partitions")  # index, records length
        elements.spend(partitions_count, pos)
        partitions = []
        for _ in range(partitions_count):
            index, length = _INDEX_LENGTH.unpack_from(view, pos)
            pos += 8
            if length < 0:
                if length != -1:
                    raise MalformedFrame(f"negative records length {length} at byte {pos - 4}")
                partitions.append(ProducePartitionData(index, None))
                continue
            if length > end - pos:
                raise MalformedFrame(f"records of {length} bytes at byte {pos}, only {end - pos} left")
            partitions.append(ProducePartitionData(index, view[pos:pos + length]))
            pos += length
        topics.append(ProduceTopicData(name, tuple(partitions)))
    return transactional_id, acks, timeout_ms, tuple(topics)


def _flexible_body(view: memoryview, pos: int, end: int,
                   elements: _Elements) -> tuple[str | None, int, int, tuple[ProduceTopicData, ...]]:
    """transactional_id, acks, timeout_ms and topic_data of a v9..12 body at `pos` (its tagged fields skipped)."""
    transactional_id, pos = _compact_string(view, pos, end, "transactional_id")
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(view, pos)
    count, pos = _uvarint(view, pos + _ACKS_TIMEOUT.size, end)
    count -= 1
    if count < 0 or count * 3 > end - pos:  # a topic: name length, partition count, tags
        raise _bad_count(count, 3, pos, end, "topics")
    elements.spend(count, pos)
    topics = []
    for _ in range(count):
        at = pos
        name, pos = _compact_string(view, pos, end, "topic name")
        if name is None:
            raise MalformedFrame(f"null topic name at byte {at}")
        partitions, pos = _flexible_partitions(view, pos, end, elements)
        pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end, None, elements)
        topics.append(ProduceTopicData(name, partitions))
    pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end, None, elements)
    return transactional_id, acks, timeout_ms, tuple(topics)


def _flexible_partitions(view: memoryview, pos: int, end: int,
                         elements: _Elements) -> tuple[tuple[ProducePartitionData, ...], int]:
    """A v9..12 topic's partition_data at `pos`: (partitions, position after them)."""
    count = view[pos]
    if count < 0x80:
        pos += 1
    else:
        count, pos = _uvarint(view, pos, end)
    count -= 1
    if count < 0 or count * 6 > end - pos:  # index, records length, tags
        raise _bad_count(count, 6, pos, end, "partitions")
    elements.spend(count, pos)
    partitions = []
    for _ in range(count):
        (index,) = _I32.unpack_from(view, pos)
        length = view[pos + 4]
        if length < 0x80:
            pos += 5
        else:
            length, pos = _uvarint(view, pos + 4, end)
        if length == 0:
            records = None
        elif length - 1 > end - pos:
            raise MalformedFrame(f"records of {length - 1} bytes at byte {pos}, only {end - pos} left")
        else:
            records = view[pos:pos + length - 1]
            pos += length - 1
        pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end, None, elements)
        partitions.append(ProducePartitionData(index, records))
    return tuple(partitions), pos


def varint_bytes(value: int) -> bytes:
    """An unsigned varint (Kafka's: 7 bits a byte, low bits first), for lengths and counts. Unrolled up to 3 bytes
    (a record set's length up to 2 MiB: one per partition of every Fetch answer and Produce request)."""
    if value < 0x80:
        return _ONE_BYTE_VARINT[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string_bytes(value: str | None, flexible: bool) -> bytes:
    """A (nullable) string as written in a v3..8 (int16 length) or a flexible (compact) Produce frame."""
    if value is None:
        return b"\x00" if flexible else _NULL_LEGACY_STRING
    data = value.encode()
    return (varint_bytes(len(data) + 1) if flexible else _I16.pack(len(data))) + data


_NAMES: dict[tuple[str | None, bool], bytes] = {}
# Topic names and client ids. Clients choose them (an answer echoes names of topics that do not exist), so only
# names a topic can have are kept (Kafka allows 249 characters), and the cache starts over once this many are
# kept: a client inventing names costs at most ~2 MB here, and cannot keep real names out for the process' life.
_MAX_NAMES = 4096
_MAX_NAME_CHARS = 249


def _name_bytes(value: str | None, flexible: bool) -> bytes:
    """_string_bytes of a topic name or client id, kept: the same few are written in every request and answer."""
    written = _NAMES.get((value, flexible))
    if written is None:
        written = _string_bytes(value, flexible)
        if value is None or len(value) <= _MAX_NAME_CHARS:
            if len(_NAMES) >= _MAX_NAMES:
                _NAMES.clear()
            _NAMES[(value, flexible)] = written
    return written


def produce_request_parts(version: int, correlation_id: int, client_id: str | None, acks: int, timeout_ms: int,
                          topics: Sequence[tuple[str, Sequence[tuple[int, Buffer | RecordParts | None]]]], *,
                          by_reference: int = BY_REFERENCE_BYTES) -> list[Buffer]:
    """The whole size-prefixed Produce request (transactional_id null, no tagged fields) as pieces for
    `transport.writelines`: the small fields gathered into as few buffers as possible, each records buffer
    (bytes-like, one byte per item; or each piece of a RecordParts, `with_producer`'s) of `by_reference` bytes or
    more passed by reference, never copied. Joined,
    exactly what `codec.encode_request` writes for the kio ProduceRequest of the same fields."""
    if _frames is not None:  # None: not one it takes (see rust/fedkafka_speedups/src/produce.rs; a RecordParts
        # before revision 5)
        parts: list[Buffer] | None = _frames.produce_request_parts(version, correlation_id, client_id, acks,
                                                                   timeout_ms, topics, by_reference)
        if parts is not None:
            return parts
    if version not in PRODUCE_VERSIONS:
        raise ValueError(f"Produce version {version} outside 3..12")
    flexible = version >= _FIRST_FLEXIBLE
    out = _FrameParts(bytearray(_REQUEST_PREFIX.pack(0, 0, version, correlation_id)), by_reference)
    small = out.small
    small += _name_bytes(client_id, False)  # a legacy string in header v2 too
    small += b"\x00\x00" if flexible else _NULL_LEGACY_STRING  # (header tags,) null transactional_id
    small += _ACKS_TIMEOUT.pack(acks, timeout_ms)
    small += varint_bytes(len(topics) + 1) if flexible else _I32.pack(len(topics))
    for name, partitions in topics:
        small += _name_bytes(name, flexible)
        small += varint_bytes(len(partitions) + 1) if flexible else _I32.pack(len(partitions))
        for index, records in partitions:
            length = -1 if records is None else len(records)
            if flexible:
                small += _I32.pack(index)
                small += varint_bytes(length + 1)
            else:
                small += _INDEX_LENGTH.pack(index, length)
            if isinstance(records, RecordParts):
                for piece in records.parts:
                    if len(piece):
                        small = out.add(piece)
            elif length > 0:
                assert records is not None
                small = out.add(records)
            if flexible:
                small += _NO_TAGS
        if flexible:
            small += _NO_TAGS
    if flexible:
        small += _NO_TAGS
    return out.done()


class _FrameParts:
    """A size-prefixed frame as `writelines` parts: small fields gathered into bytearrays (`small`, the one being
    filled), each buffer of `by_reference` bytes or more passed as it is, never copied. `head` starts with the
    4-byte size, written by `done`."""

    __slots__ = ("by_reference", "head", "parts", "size", "small")

    def __init__(self, head: bytearray, by_reference: int):
        self.head = self.small = head
        self.parts: list[Buffer] = [head]
        self.size = 0  # of the parts before `small`
        self.by_reference = by_reference

    def add(self, piece: Buffer) -> bytearray:
        """Adds a buffer; returns the bytearray to go on filling (callers keep it in a local: faster)."""
        if len(piece) >= self.by_reference:
            self.size += len(self.small) + len(piece)
            self.parts.append(piece)
            self.small = bytearray()
            self.parts.append(self.small)
        else:
            self.small += piece
        return self.small

    def done(self) -> list[Buffer]:
        if not self.small:
            self.parts.pop()
        _I32.pack_into(self.head, 0, self.size + len(self.small) - 4)
        return self.parts


_ANSWER_V3 = struct.Struct(">ihqq")  # index, error_code, base_offset, log_append_time_ms
_ANSWER_V5 = struct.Struct(">ihqqq")  # + log_start_offset
# what follows log_start_offset in an answer without record errors or message: an empty array and a null string
_PLAIN_TAIL = {False: _I32.pack(0) + _NULL_LEGACY_STRING, True: b"\x01\x00" + _NO_TAGS}


def produce_response_frame(version: int, correlation_id: int,
                           topics: Sequence[tuple[str, Sequence[ProducePartitionAnswer]]],
                           throttle_time_ms: int = 0) -> bytes:
    """The whole size-prefixed ProduceResponse frame: byte for byte what `codec.encode_response` writes for the
    kio ProduceResponse of that version with the same values (fields a version lacks left out, no tagged
    fields)."""
    if _frames is not None:  # None: not one it takes (see rust/fedkafka_speedups/src/produce.rs)
        frame: bytes | None = _frames.produce_response_frame(version, correlation_id, topics, throttle_time_ms)
        if frame is not None:
            return frame
    if version not in PRODUCE_VERSIONS:
        raise ValueError(f"Produce version {version} outside 3..12")
    flexible = version >= _FIRST_FLEXIBLE
    out = bytearray(_SIZE_CORRELATION.pack(0, correlation_id))  # the size is filled in at the end
    if flexible:
        out += _NO_TAGS  # response header v1
    out += varint_bytes(len(topics) + 1) if flexible else _I32.pack(len(topics))
    for name, answers in topics:
        out += _name_bytes(name, flexible)
        out += varint_bytes(len(answers) + 1) if flexible else _I32.pack(len(answers))
        for a in answers:
            if version < 5:
                out += _ANSWER_V3.pack(a.index, a.error_code, a.base_offset, a.log_append_time_ms)
                continue
            out += _ANSWER_V5.pack(a.index, a.error_code, a.base_offset, a.log_append_time_ms, a.log_start_offset)
            if version < 8:
                continue
            if a.record_errors or a.error_message is not None:
                out += _answer_errors(a, flexible)
            else:
                out += _PLAIN_TAIL[flexible]
        if flexible:
            out += _NO_TAGS
    out += _I32.pack(throttle_time_ms)
    if flexible:
        out += _NO_TAGS
    _I32.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def _answer_errors(answer: ProducePartitionAnswer, flexible: bool) -> bytes:
    """record_errors and error_message of a v8+ answer (and its tagged fields when flexible)."""
    errors = answer.record_errors
    out = bytearray(varint_bytes(len(errors) + 1) if flexible else _I32.pack(len(errors)))
    for batch_index, message in errors:
        out += _I32.pack(batch_index)
        out += _string_bytes(message, flexible)
        if flexible:
            out += _NO_TAGS
    out += _string_bytes(answer.error_message, flexible)
    if flexible:
        out += _NO_TAGS
    return bytes(out)


_ANSWER_FLEXIBLE = struct.Struct(">ihqqqB")  # v9+: the v5 fields and the first byte of record_errors' count


def read_produce_response(frame: Buffer, version: int) -> tuple[tuple[str, tuple[ProducePartitionAnswer, ...]], ...]:
    """The (topic name, partition answers) of the ProduceResponse of `version` in `frame` (the response after its
    size prefix: correlation_id, header, body), read as kio reads it: fields a version lacks keep the
    ProducePartitionAnswer defaults, error codes stay plain ints (a code kio does not know is read too), the
    leader and endpoint hints of v10+ are checked and skipped, other tagged fields skipped by their size, bytes
    after the last field ignored. A broker's bytes are untrusted like a client's: MalformedFrame for anything
    that does not parse, and no allocation sized from a declared length."""
    if _frames is not None:  # None: not one it takes (see rust/fedkafka_speedups/src/produce.rs)
        answers: tuple[tuple[str, tuple[ProducePartitionAnswer, ...]], ...] | None = _frames.read_produce_response(
            frame, version, ProducePartitionAnswer, _ANSWER_FIELDS)
        if answers is not None:
            return answers
    return _read_answer(frame, version)[0]


ProduceAnswers = tuple[tuple[str, tuple[ProducePartitionAnswer, ...]], ...]


def read_produce_answer(frame: Buffer, version: int) -> tuple[ProduceAnswers, int]:
    """(the topics `read_produce_response` reads, the answer's throttle_time_ms): a broker muting the proxy's
    connection for a quota says how long, and the client must back off as long (KIP-219)."""
    if _throttled is not None:  # None: not one it takes (see rust/fedkafka_speedups/src/produce.rs)
        read: tuple[ProduceAnswers, int] | None = _throttled.read_produce_answer(frame, version,
                                                                                 ProducePartitionAnswer, _ANSWER_FIELDS)
        if read is not None:
            return read
    return _read_answer(frame, version)


def _read_answer(frame: Buffer, version: int) -> tuple[ProduceAnswers, int]:
    if version not in PRODUCE_VERSIONS:
        raise ValueError(f"Produce version {version} outside 3..12")
    view = memoryview(frame)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    end = len(view)
    try:
        if version < _FIRST_FLEXIBLE:
            return _legacy_answers(view, 4, end, version)
        return _flexible_answers(view, 5 if view[4] == 0 else _skip_tags(view, 4, end), end, version)
    except _TRUNCATED:
        raise MalformedFrame(f"Produce v{version} response truncated: a field runs past its end ({end} bytes)"
                             ) from None
    except UnicodeDecodeError as e:
        raise MalformedFrame(f"Produce v{version} response: a string that is not UTF-8 ({e.reason})") from None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def translated_produce_answer(frame: Buffer, version: int, correlation_id: int, name: str, index: int,
                              phys_topic: str, phys_partition: int,
                              shift: tuple[int, int, int | None]) -> tuple[bytes, int] | None:
    """The client's answer frame to a Produce of one partition (`name`, `index`) and its error code, written from
    the broker's answer `frame` (after its size prefix) for physical partition (`phys_topic`, `phys_partition`);
    None when that answer is anything but one topic with the one partition's answer, or an offset moved out of an
    int64 (the caller reads it then).
    `shift` (delta, phys_start, chain_base) moves its offsets into the client's space: the base offset by delta
    unless below 0; the log start stays below 0, becomes max(start, phys_start) + delta when chain_base is None or
    start > phys_start, else chain_base. Malformed frames raise as `read_produce_response` raises."""
    if _lane is not None:  # None: not one it takes (see rust/fedkafka_speedups/src/produce.rs)
        written: tuple[bytes, int] | None = _lane.translated_produce_answer(
            frame, version, correlation_id, name, index, phys_topic, phys_partition, shift)
        if written is not None:
            return written
    answers, throttle_time_ms = read_produce_answer(frame, version)
    if len(answers) != 1 or answers[0][0] != phys_topic or len(answers[0][1]) != 1:
        return None
    pr = answers[0][1][0]
    if pr.index != phys_partition:
        return None
    delta, phys_start, chain_base = shift
    base, start = pr.base_offset, pr.log_start_offset
    if start >= 0:
        start = max(start, phys_start) + delta if chain_base is None or start > phys_start else chain_base
    if base >= 0:
        base += delta
    if not (_INT64_MIN <= base <= _INT64_MAX and _INT64_MIN <= start <= _INT64_MAX):
        return None  # moved past an int64, as the compiled twin's checked_add: the caller reads the answer
    answer = ProducePartitionAnswer(index, pr.error_code, base, pr.log_append_time_ms, start, pr.record_errors,
                                    pr.error_message)
    return produce_response_frame(version, correlation_id, ((name, (answer,)),), throttle_time_ms), pr.error_code


def translated_base_offset(written: bytes, version: int, name: str | None) -> int:
    """The base offset in an answer `translated_produce_answer` wrote (either twin: the same bytes) for `name`:
    where `produce_response_frame` puts the one partition's answer of one topic (size, correlation id, header
    tags, topic count, name, partition count, index, error code)."""
    flexible = version >= _FIRST_FLEXIBLE
    counts = 2 if flexible else 8  # two counts of one: a varint each, or an int32 each
    pos = 8 + (len(_NO_TAGS) if flexible else 0) + counts + len(_name_bytes(name, flexible)) + 6
    base: int = _I64.unpack_from(written, pos)[0]
    return base


def lane_routes() -> object | None:
    """A new, empty route table for `read_lane_request` (the compiled twin's `LaneRoutes`: `insert(name, index,
    route, phys_topic, phys_partition)`, `clear()`, `len`), or None without a twin of revision 7: the Produce lane
    then reads every request in Python."""
    return None if _lane_read is None else _lane_read.LaneRoutes()


def _no_lane_written(frame: Buffer, upstream: object, written_cls: type) -> object | None:
    """`lane_written` without the twin of revision 7: the caller reads every answer in Python."""
    return None


# The Produce lane's answer step, compiled: `produce.LaneProduce.read_response` of the broker's answer `frame` to
# `upstream` when that is the client's answer `translated_produce_answer` writes, at or above its segment's logical
# base, as a `written_cls` (`produce.Written`); None for anything else and without the twin of revision 7 (the caller
# then reads the answer in Python). `use` binds it to the twin's function itself (no Python call a request: the
# answer side of every plain lane request) or to `_no_lane_written`.
lane_written: Callable[[Buffer, object, type], object | None] = _no_lane_written


def read_lane_request(frame: Buffer, max_elements: int | None, table: object,
                      upstream: tuple[type, tuple[str, ...], type, tuple[str, ...], int], lazy: bool = False
                      ) -> tuple[ProduceRequestFrame | LaneRequest, list[Any], Any] | None:
    """The Produce lane's request step, compiled (rust/fedkafka_speedups/src/lane.rs): (the request as
    `read_produce_request` reads it, the routes `table` holds for its partitions in its order, the broker's request)
    for a request of a plain producer every partition of which is in `table`; None for anything else, and without
    the twin (the lane then reads the frame in Python and decides). The broker's request is made of `upstream`'s
    classes (`produce.LANE_UPSTREAM`: one partition's class and fields, more partitions' class and fields, the cap
    of its timeout) as `produce.lane_upstream` makes it: its topics as `UpstreamProduce.of` groups them. `lazy`: a
    request of one partition as a `LaneRequest` (its topics read only when asked for) with a twin of revision 8."""
    if _lane_read is None or table is None:
        return None
    if lazy and _lazy_lane is not None:
        taken: tuple[ProduceRequestFrame | LaneRequest, list[Any], Any] | None = _lazy_lane.read_lane_request(
            frame, max_elements, table, ProduceRequestFrame, _REQUEST_FIELDS, ProduceTopicData, ProducePartitionData,
            upstream, _LANE_REQUEST)
        return taken
    read: tuple[ProduceRequestFrame, list[Any], Any] | None = _lane_read.read_lane_request(
        frame, max_elements, table, ProduceRequestFrame, _REQUEST_FIELDS, ProduceTopicData, ProducePartitionData,
        upstream)
    return read


def _legacy_answers(view: memoryview, pos: int, end: int, version: int) -> tuple[ProduceAnswers, int]:
    """The responses of a v3..8 body at `pos` and its throttle_time_ms."""
    fields = _ANSWER_V3 if version < 5 else _ANSWER_V5
    min_size = fields.size + (6 if version >= 8 else 0)  # record_errors count, error_message length
    (count,) = _I32.unpack_from(view, pos)
    pos += 4
    if count < 0 or count * 6 > end - pos:  # a topic: name length, partition count
        raise _bad_count(count, 6, pos, end, "topics")
    topics = []
    for _ in range(count):
        name, partitions_count, pos = _legacy_topic_head(view, pos, end, min_size, "partition answers")
        answers = []
        for _ in range(partitions_count):
            if version < 8:
                answers.append(ProducePartitionAnswer(*fields.unpack_from(view, pos)))
                pos += fields.size
                continue
            index, error_code, base_offset, append_ms, start_offset = _ANSWER_V5.unpack_from(view, pos)
            record_errors, pos = _legacy_record_errors(view, pos + _ANSWER_V5.size, end)
            (length,) = _I16.unpack_from(view, pos)
            error_message, pos = _legacy_string(view, pos + 2, length, end, "error_message")
            answers.append(ProducePartitionAnswer(index, error_code, base_offset, append_ms, start_offset,
                                                  record_errors, error_message))
        topics.append((name, tuple(answers)))
    (throttle_time_ms,) = _I32.unpack_from(view, pos)  # kio refuses a body without it
    return tuple(topics), throttle_time_ms


def _legacy_record_errors(view: memoryview, pos: int, end: int) -> tuple[tuple[tuple[int, str | None], ...], int]:
    """A v8 answer's record_errors at `pos`: ((batch_index, message) pairs, position after them)."""
    (count,) = _I32.unpack_from(view, pos)
    pos += 4
    if count == 0:
        return (), pos
    if count < 0 or count * 6 > end - pos:  # batch_index, message length
        raise _bad_count(count, 6, pos, end, "record errors")
    errors = []
    for _ in range(count):
        batch_index, length = _INDEX_STRING.unpack_from(view, pos)
        message, pos = _legacy_string(view, pos + 6, length, end, "record error message")
        errors.append((batch_index, message))
    return tuple(errors), pos


_INDEX_STRING = struct.Struct(">ih")  # v8 record error: batch_index, message length


def _flexible_answers(view: memoryview, pos: int, end: int, version: int) -> tuple[ProduceAnswers, int]:
    """The responses of a v9..12 body at `pos` and its throttle_time_ms (the body's tags walked)."""
    count = view[pos]
    if count < 0x80:
        pos += 1
    else:
        count, pos = _uvarint(view, pos, end)
    count -= 1
    if count < 0 or count * 3 > end - pos:  # a topic: name length, partition count, tags
        raise _bad_count(count, 3, pos, end, "topics")
    hint = _skip_leader if version >= 10 else None
    topics = []
    for _ in range(count):
        at = pos
        name, pos = _compact_string(view, pos, end, "topic name")
        if name is None:
            raise MalformedFrame(f"null topic name at byte {at}")
        answers, pos = _flexible_partition_answers(view, pos, end, hint)
        pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end)
        topics.append((name, answers))
    (throttle_time_ms,) = _I32.unpack_from(view, pos)  # kio refuses a body without it
    pos += 4
    if view[pos] != 0:  # v10+: tag 0 is node_endpoints
        _skip_tags(view, pos, end, _skip_node_endpoints if version >= 10 else None)
    return tuple(topics), throttle_time_ms


def _flexible_partition_answers(view: memoryview, pos: int, end: int,
                                hint: TagWalk | None) -> tuple[tuple[ProducePartitionAnswer, ...], int]:
    """A v9..12 topic's partition_responses at `pos`: (answers, position after them)."""
    count = view[pos]
    if count < 0x80:
        pos += 1
    else:
        count, pos = _uvarint(view, pos, end)
    count -= 1
    if count < 0 or count * 33 > end - pos:  # the v5 fields, record_errors, error_message, tags
        raise _bad_count(count, 33, pos, end, "partition answers")
    answers = []
    for _ in range(count):
        index, error_code, base_offset, append_ms, start_offset, errors_count = _ANSWER_FLEXIBLE.unpack_from(view, pos)
        if errors_count == 1:  # no record errors: the common case
            record_errors: tuple[tuple[int, str | None], ...] = ()
            pos += _ANSWER_FLEXIBLE.size
        else:
            record_errors, pos = _flexible_record_errors(view, pos + _ANSWER_FLEXIBLE.size - 1, end)
        if view[pos] == 0:
            error_message, pos = None, pos + 1
        else:
            error_message, pos = _compact_string(view, pos, end, "error_message")
        pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end, hint)
        answers.append(ProducePartitionAnswer(index, error_code, base_offset, append_ms, start_offset, record_errors,
                                              error_message))
    return tuple(answers), pos


def _flexible_record_errors(view: memoryview, pos: int,
                            end: int) -> tuple[tuple[tuple[int, str | None], ...], int]:
    """A v9..12 answer's record_errors at `pos`: ((batch_index, message) pairs, position after them)."""
    count, pos = _uvarint(view, pos, end)
    count -= 1
    if count < 0 or count * 6 > end - pos:  # batch_index, message length, tags
        raise _bad_count(count, 6, pos, end, "record errors")
    errors = []
    for _ in range(count):
        (batch_index,) = _I32.unpack_from(view, pos)
        message, pos = _compact_string(view, pos + 4, end, "record error message")
        pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end)
        errors.append((batch_index, message))
    return tuple(errors), pos


def _skip_leader(view: memoryview, pos: int) -> int:
    """current_leader (a v10+ answer's tag 0): leader_id int32, leader_epoch int32, tagged fields."""
    pos += 8
    return pos + 1 if view[pos] == 0 else _skip_tags(view, pos, len(view))


def _skip_node_endpoints(view: memoryview, pos: int) -> int:
    """node_endpoints (a v10+ body's tag 0): [node_id int32, host string, port int32, rack nullable string,
    tagged fields]; null is allowed in a tag."""
    end = len(view)
    count, pos = _uvarint(view, pos, end)
    count -= 1
    if count < 0:
        return pos
    if count * 11 > end - pos:  # node_id, host length, port, rack length, tags
        raise _bad_count(count, 11, pos, end, "node endpoints")
    for _ in range(count):
        at = pos + 4
        host, pos = _compact_string(view, at, end, "host")
        if host is None:
            raise MalformedFrame(f"null host at byte {at}")
        _rack, pos = _compact_string(view, pos + 4, end, "rack")
        pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end)
    return pos


# -- Fetch answers ---------------------------------------------------------------------------------------------
# A broker's FetchResponse (v4..12) read and the client's written byte by byte, without kio entities: kio copied
# every record set out of the broker's frame, and its generic walk and writer cost more than the rest of a fetch.
# The reader leaves each record set in the frame (a memoryview); the writer passes a large one by reference. Python
# only, like the Produce frames; tests/protocol/test_fetch_frames.py compares both with kio over random answers.
#
# Layout. Response header v0 (v4..11) / v1 (v12): correlation_id int32 (v1: tagged fields). Body: throttle_time_ms
# int32, error_code int16 and session_id int32 (v7+), responses[topic string, partitions[partition_index int32,
# error_code int16, high_watermark int64, last_stable_offset int64, log_start_offset int64 (v5+),
# aborted_transactions nullable [producer_id int64, first_offset int64], preferred_read_replica int32 (v11+),
# records nullable bytes]]. v12 is flexible (as Produce v9+); a partition's tags 0 (diverging_epoch: epoch int32,
# end_offset int64), 1 (current_leader: leader_id int32, leader_epoch int32) and 2 (snapshot_id: end_offset
# int64, epoch int32) are known, each a struct ending with its own tagged fields: checked and skipped (the proxy
# passes none of them on).

FETCH_VERSIONS = range(4, 13)
_FETCH_FLEXIBLE = 12
_ERROR_SESSION = struct.Struct(">hi")
_FETCH_HEAD_V4 = struct.Struct(">ihqqi")  # index, error_code, high_watermark, last_stable_offset, aborted count
_FETCH_HEAD_V5 = struct.Struct(">ihqqqi")  # + log_start_offset before the aborted count
_FETCH_HEAD_FLEXIBLE = struct.Struct(">ihqqq")  # v12: the v5 fields; the aborted count is a varint
# a partition answer's head without aborted transactions, written in one pack: v12 (the count a varint, 0 or 1;
# preferred_read_replica), v11 (the count -1 or 0; preferred_read_replica)
_FETCH_HEAD_PLAIN_FLEXIBLE = struct.Struct(">ihqqqBi")
_FETCH_HEAD_PLAIN_V11 = struct.Struct(">ihqqqii")
_ABORTED = struct.Struct(">qq")  # producer_id, first_offset


@dataclass(slots=True)
class AbortedTransaction:
    producer_id: int
    first_offset: int


@dataclass(slots=True)  # not frozen, as ProducePartitionAnswer: one or two are made per partition of every fetch
class FetchPartitionData:
    """A partition of a FetchResponse, the broker's or the client's: kio's field names, so code reading either
    reads both. Fields a version lacks keep their defaults."""

    partition_index: int
    error_code: int
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    aborted_transactions: tuple[AbortedTransaction, ...] | None = None
    preferred_read_replica: int = -1
    records: Buffer | RecordParts | None = None  # read: a slice of the broker's frame, never copied


@dataclass(frozen=True, slots=True)
class FetchTopicData:
    topic: str
    partitions: tuple[FetchPartitionData, ...]


@dataclass(frozen=True, slots=True)
class FetchResponseFrame:
    throttle_time_ms: int
    error_code: int  # 0 before v7
    session_id: int  # 0 before v7
    responses: tuple[FetchTopicData, ...]


def read_fetch_response(frame: Buffer, version: int) -> FetchResponseFrame:
    """The FetchResponse of `version` in `frame` (after its size prefix: correlation_id, header, body), read as kio
    reads it: error codes stay plain ints, the known tags of a v12 partition are checked and skipped, unknown tags
    skipped by their size, bytes after the last field ignored, and each record set is a memoryview into `frame`.
    A broker's bytes are untrusted: MalformedFrame for anything that does not parse, no allocation sized from a
    declared length."""
    if version not in FETCH_VERSIONS:
        raise ValueError(f"Fetch version {version} outside 4..12")
    view = memoryview(frame)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    end = len(view)
    flexible = version >= _FETCH_FLEXIBLE
    try:
        pos = 4 if not flexible else 5 if view[4] == 0 else _skip_tags(view, 4, end)
        (throttle_time_ms,) = _I32.unpack_from(view, pos)
        pos += 4
        error_code = session_id = 0
        if version >= 7:
            error_code, session_id = _ERROR_SESSION.unpack_from(view, pos)
            pos += _ERROR_SESSION.size
        if flexible:
            topics, pos = _flexible_fetch_topics(view, pos, end)
            if view[pos] != 0:
                _skip_tags(view, pos, end)
        else:
            topics = _legacy_fetch_topics(view, pos, end, version)
    except _TRUNCATED:
        raise MalformedFrame(f"Fetch v{version} response truncated: a field runs past its end ({end} bytes)") from None
    except UnicodeDecodeError as e:
        raise MalformedFrame(f"Fetch v{version} response: a string that is not UTF-8 ({e.reason})") from None
    return FetchResponseFrame(throttle_time_ms, error_code, session_id, topics)


def _legacy_fetch_topics(view: memoryview, pos: int, end: int, version: int) -> tuple[FetchTopicData, ...]:
    """The responses of a v4..11 body at `pos`."""
    head = _FETCH_HEAD_V4 if version < 5 else _FETCH_HEAD_V5
    tail = 4 + (4 if version >= 11 else 0)  # records length, preferred_read_replica
    (count,) = _I32.unpack_from(view, pos)
    pos += 4
    if count < 0 or count * 6 > end - pos:  # a topic: name length, partition count
        raise _bad_count(count, 6, pos, end, "topics")
    topics = []
    for _ in range(count):
        name, partitions_count, pos = _legacy_topic_head(view, pos, end, head.size + tail, "partition answers")
        partitions = []
        for _ in range(partitions_count):
            fields = head.unpack_from(view, pos)
            pos += head.size
            aborted, pos = _legacy_aborted(view, pos, end, fields[-1])
            p = FetchPartitionData(*fields[:-1]) if version >= 5 else FetchPartitionData(*fields[:4])
            p.aborted_transactions = aborted
            if version >= 11:
                (p.preferred_read_replica,) = _I32.unpack_from(view, pos)
                pos += 4
            (length,) = _I32.unpack_from(view, pos)
            pos += 4
            if length >= 0:
                if length > end - pos:
                    raise MalformedFrame(f"records of {length} bytes at byte {pos}, only {end - pos} left")
                p.records = view[pos:pos + length]
                pos += length
            elif length != -1:
                raise MalformedFrame(f"negative records length {length} at byte {pos - 4}")
            partitions.append(p)
        topics.append(FetchTopicData(name, tuple(partitions)))
    return tuple(topics)


def _legacy_aborted(view: memoryview, pos: int, end: int, count: int) -> tuple[tuple[AbortedTransaction, ...] | None,
                                                                               int]:
    """A v4..11 partition's aborted_transactions whose int32 `count` was read just before `pos`."""
    if count < 0:
        if count == -1:
            return None, pos
        raise MalformedFrame(f"negative aborted transactions count {count} at byte {pos - 4}")
    if count * 16 > end - pos:
        raise _bad_count(count, 16, pos, end, "aborted transactions")
    out = []
    for _ in range(count):
        out.append(AbortedTransaction(*_ABORTED.unpack_from(view, pos)))
        pos += 16
    return tuple(out), pos


def _flexible_fetch_topics(view: memoryview, pos: int, end: int) -> tuple[tuple[FetchTopicData, ...], int]:
    """The responses of a v12 body at `pos`: (topics, position after them)."""
    count, pos = _uvarint(view, pos, end)
    count -= 1
    if count < 0 or count * 3 > end - pos:  # a topic: name length, partition count, tags
        raise _bad_count(count, 3, pos, end, "topics")
    topics = []
    for _ in range(count):
        at = pos
        name, pos = _compact_string(view, pos, end, "topic name")
        if name is None:
            raise MalformedFrame(f"null topic name at byte {at}")
        count, pos = _uvarint(view, pos, end)
        count -= 1
        if count < 0 or count * 37 > end - pos:  # the v5 fields, aborted count, replica, records length, tags
            raise _bad_count(count, 37, pos, end, "partition answers")
        partitions = []
        for _ in range(count):
            p = FetchPartitionData(*_FETCH_HEAD_FLEXIBLE.unpack_from(view, pos))
            pos += _FETCH_HEAD_FLEXIBLE.size
            if view[pos] < 2:  # null (read_uncommitted) or none (read_committed): the usual answer's, read here
                if view[pos]:  # without a call (bench/fetch_count.py)
                    p.aborted_transactions = ()
                pos += 1
            else:
                p.aborted_transactions, pos = _flexible_aborted(view, pos, end)
            (p.preferred_read_replica,) = _I32.unpack_from(view, pos)
            length, pos = _uvarint(view, pos + 4, end)
            if length:
                if length - 1 > end - pos:
                    raise MalformedFrame(f"records of {length - 1} bytes at byte {pos}, only {end - pos} left")
                p.records = view[pos:pos + length - 1]
                pos += length - 1
            pos = pos + 1 if view[pos] == 0 else _skip_fetch_partition_tags(view, pos, end)
            partitions.append(p)
        pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end)
        topics.append(FetchTopicData(name, tuple(partitions)))
    return tuple(topics), pos


def _flexible_aborted(view: memoryview, pos: int, end: int) -> tuple[tuple[AbortedTransaction, ...] | None, int]:
    """A v12 partition's aborted_transactions at `pos`: (transactions or None, position after them)."""
    count, pos = _uvarint(view, pos, end)
    if count == 0:
        return None, pos
    count -= 1
    if count * 17 > end - pos:  # producer_id, first_offset, tags
        raise _bad_count(count, 17, pos, end, "aborted transactions")
    out = []
    for _ in range(count):
        out.append(AbortedTransaction(*_ABORTED.unpack_from(view, pos)))
        pos += 16
        pos = pos + 1 if view[pos] == 0 else _skip_tags(view, pos, end)
    return tuple(out), pos


def _skip_fetch_partition_tags(view: memoryview, pos: int, end: int) -> int:
    """A v12 partition's tagged fields: tags 0..2 walked as kio reads them (see _skip_tags), others skipped."""
    count, pos = _uvarint(view, pos, end)
    if count * 2 > end - pos:
        raise MalformedFrame(f"{count} tagged fields at byte {pos}, only {end - pos} bytes left")
    for _ in range(count):
        tag, pos = _uvarint(view, pos, end)
        size, pos = _uvarint(view, pos, end)
        if size > end - pos:
            raise MalformedFrame(f"tagged field {tag} of {size} bytes at byte {pos}, only {end - pos} left")
        walk = _FETCH_PARTITION_TAGS.get(tag)
        pos = pos + size if walk is None else _tag_struct(view[:pos + size], pos + walk)
    return pos


def _tag_struct(view: memoryview, pos: int) -> int:
    """The position after a tagged struct whose fixed fields end at `pos`: its own tagged fields, in a view that
    ends where the tag's declared size does."""
    return pos + 1 if view[pos] == 0 else _skip_tags(view, pos, len(view))


_FETCH_PARTITION_TAGS = {0: 12, 1: 8, 2: 12}  # the fixed bytes of diverging_epoch, current_leader, snapshot_id


@dataclass(frozen=True, slots=True)
class FetchPartitionRequest:
    """A partition of the FetchRequest the proxy sends: no leader epoch, no last fetched epoch, no log start (the
    proxy never knows a physical partition's, and -1 asks the broker for no check)."""

    partition: int
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class FetchTopicRequest:
    topic: str
    partitions: tuple[FetchPartitionRequest, ...]


_FETCH_REQUEST_HEAD = struct.Struct(">iiiib")  # replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level
_SESSIONLESS = struct.Struct(">ii").pack(0, -1)  # session_id, session_epoch: no fetch session


def fetch_request_frame(version: int, correlation_id: int, client_id: str | None, max_wait_ms: int, min_bytes: int,
                        max_bytes: int, isolation_level: int, topics: Sequence[FetchTopicRequest]) -> bytes:
    """The whole size-prefixed FetchRequest of a consumer (replica_id -1) without a fetch session, forgotten
    topics, rack or cluster id: byte for byte what `codec.encode_request` writes for kio's FetchRequest of that
    version with the same values. A few small fields: written here only because kio's generic writer cost more
    than the rest of the request's way through the proxy."""
    if version not in FETCH_VERSIONS:
        raise ValueError(f"Fetch version {version} outside 4..12")
    flexible = version >= _FETCH_FLEXIBLE
    out = bytearray(_REQUEST_PREFIX.pack(0, 1, version, correlation_id))  # the size is filled in at the end
    out += _name_bytes(client_id, False)  # a legacy string in header v2 too
    if flexible:
        out += _NO_TAGS
    out += _FETCH_REQUEST_HEAD.pack(-1, max_wait_ms, min_bytes, max_bytes, isolation_level)
    if version >= 7:
        out += _SESSIONLESS
    out += varint_bytes(len(topics) + 1) if flexible else _I32.pack(len(topics))
    for t in topics:
        out += _name_bytes(t.topic, flexible)
        out += varint_bytes(len(t.partitions) + 1) if flexible else _I32.pack(len(t.partitions))
        for p in t.partitions:
            out += _I32.pack(p.partition)
            if version >= 9:
                out += _I32.pack(p.current_leader_epoch)
            out += _I64.pack(p.fetch_offset)
            if version >= 12:
                out += _I32.pack(-1)  # last_fetched_epoch
            if version >= 5:
                out += _I64.pack(-1)  # log_start_offset: a consumer's is -1
            out += _I32.pack(p.partition_max_bytes)
            if flexible:
                out += _NO_TAGS
        if flexible:
            out += _NO_TAGS
    if version >= 7:
        out += b"\x01" if flexible else _I32.pack(0)  # no forgotten topics
    if version >= 11:
        out += b"\x01" if flexible else _I16.pack(0)  # rack_id ""
    if flexible:
        out += _NO_TAGS
    _I32.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def fetch_response_parts(version: int, correlation_id: int, error_code: int, session_id: int,
                         topics: Sequence[tuple[str, Sequence[FetchPartitionData]]], throttle_time_ms: int = 0, *,
                         by_reference: int = BY_REFERENCE_BYTES) -> list[Buffer]:
    """The whole size-prefixed FetchResponse as pieces for `transport.writelines`: the small fields gathered, each
    record set (bytes-like, one byte per item) of `by_reference` bytes or more passed by reference, never copied.
    Joined, byte for byte what `codec.encode_response` writes for the kio FetchResponse of that version with the
    same values (fields a version lacks left out, no tagged fields)."""
    if version not in FETCH_VERSIONS:
        raise ValueError(f"Fetch version {version} outside 4..12")
    flexible = version >= _FETCH_FLEXIBLE
    out = _FrameParts(bytearray(_SIZE_CORRELATION.pack(0, correlation_id)), by_reference)
    small = out.small
    if flexible:
        small += _NO_TAGS  # response header v1
    small += _I32.pack(throttle_time_ms)
    if version >= 7:
        small += _ERROR_SESSION.pack(error_code, session_id)
    small += varint_bytes(len(topics) + 1) if flexible else _I32.pack(len(topics))
    for name, partitions in topics:
        small += _name_bytes(name, flexible)
        small += varint_bytes(len(partitions) + 1) if flexible else _I32.pack(len(partitions))
        for p in partitions:
            small += _fetch_partition_head(p, version, flexible)
            records = p.records
            length = -1 if records is None else len(records)
            small += varint_bytes(length + 1) if flexible else _I32.pack(length)
            if isinstance(records, RecordParts):
                for piece in records.parts:
                    small = out.add(piece)
            elif records is not None and length > 0:
                small = out.add(records)
            if flexible:
                small += _NO_TAGS
        if flexible:
            small += _NO_TAGS
    if flexible:
        small += _NO_TAGS
    return out.done()


def _fetch_partition_head(p: FetchPartitionData, version: int, flexible: bool) -> bytes:
    """A partition answer's fields before its records length: one pack for one without aborted transactions (the
    usual answer: null, or none read_committed), else gathered field by field."""
    aborted = p.aborted_transactions
    if not aborted:
        if flexible:  # the count a varint: 0 for null, 1 for none
            return _FETCH_HEAD_PLAIN_FLEXIBLE.pack(p.partition_index, p.error_code, p.high_watermark,
                                                   p.last_stable_offset, p.log_start_offset, aborted is not None,
                                                   p.preferred_read_replica)
        count = -1 if aborted is None else 0
        if version >= 11:
            return _FETCH_HEAD_PLAIN_V11.pack(p.partition_index, p.error_code, p.high_watermark, p.last_stable_offset,
                                              p.log_start_offset, count, p.preferred_read_replica)
        if version >= 5:
            return _FETCH_HEAD_V5.pack(p.partition_index, p.error_code, p.high_watermark, p.last_stable_offset,
                                       p.log_start_offset, count)
        return _FETCH_HEAD_V4.pack(p.partition_index, p.error_code, p.high_watermark, p.last_stable_offset, count)
    if version < 5:
        out = bytearray(_FETCH_HEAD_V4.pack(p.partition_index, p.error_code, p.high_watermark, p.last_stable_offset,
                                            len(aborted)))
    else:
        out = bytearray(_FETCH_HEAD_FLEXIBLE.pack(p.partition_index, p.error_code, p.high_watermark,
                                                  p.last_stable_offset, p.log_start_offset))
        out += varint_bytes(len(aborted) + 1) if flexible else _I32.pack(len(aborted))
    for a in aborted:
        out += _ABORTED.pack(a.producer_id, a.first_offset)
        if flexible:
            out += _NO_TAGS
    if version >= 11:
        out += _I32.pack(p.preferred_read_replica)
    return bytes(out)


if os.environ.get("FEDKAFKA_PURE_PYTHON") != "1" and compiled_available():
    use("compiled")
