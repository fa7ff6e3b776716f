"""records.py's pure-Python code and its compiled twin (fedkafka_speedups) give identical bytes, headers and
RecordsError messages, over batches built by aiokafka and over those batches damaged: bytes flipped, cut short,
header fields overwritten, garbage appended."""

from __future__ import annotations

import contextlib
import struct

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.protocol import records as rec

pytestmark = pytest.mark.skipif(not rec.compiled_available(),
                                reason="fedkafka_speedups is not built (rust/fedkafka_speedups needs cargo)")

i64s = st.integers(-(2**63), 2**63 - 1)
i32s = st.integers(-(2**31), 2**31 - 1)


@st.composite
def batch(draw) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=draw(st.sampled_from([0, 1])), is_transactional=draw(st.booleans()),
        producer_id=draw(st.integers(-1, 2**63 - 1)), producer_epoch=draw(st.integers(-1, 2**15 - 1)),
        base_sequence=draw(st.integers(-1, 2**31 - 1)), batch_size=1 << 20)
    for i in range(draw(st.integers(1, 5))):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=draw(st.none() | st.binary(max_size=10)),
                       value=draw(st.binary(max_size=40)), headers=[])
    out = bytearray(builder.build())
    struct.pack_into(">q", out, 0, draw(st.integers(0, 2**40)))
    struct.pack_into(">i", out, 12, draw(st.integers(-1, 50)))
    return bytes(out)


# where a damage lands: header fields the walks read, a CRC-covered byte, anywhere
FIELDS = {"base_offset": (0, ">q"), "batch_length": (8, ">i"), "leader_epoch": (12, ">i"), "magic": (16, ">b"),
          "attributes": (21, ">h"), "last_offset_delta": (23, ">i"), "record_count": (57, ">i")}


@st.composite
def damaged(draw, buf: bytes) -> bytes:
    out = bytearray(buf)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "flip", "cut", "append"]))
        if kind == "field" and len(out) >= rec.HEADER_SIZE:
            at, fmt = FIELDS[draw(st.sampled_from(sorted(FIELDS)))]
            size = struct.calcsize(fmt)
            value = draw(st.integers(-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1)
                         | st.integers(-2, 100))
            struct.pack_into(fmt, out, at, value)
        elif kind == "flip" and out:
            out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[draw(st.integers(0, len(out))):]
        elif kind == "append":
            out += draw(st.binary(max_size=80))
    return bytes(out)


@st.composite
def buffers(draw) -> bytes:
    """Zero or more batches, maybe damaged."""
    buf = b"".join(draw(st.lists(batch(), max_size=3)))
    return draw(damaged(buf)) if draw(st.booleans()) else buf


@contextlib.contextmanager
def using(implementation: rec.Implementation):
    before = rec.implementation()
    rec.use(implementation)
    try:
        yield
    finally:
        rec.use(before)


def both(run):
    """`run()` under the pure-Python code, then under the compiled twin."""
    with using("python"):
        python = run()
    with using("compiled"):
        compiled = run()
    return python, compiled


def outcome(fn):
    """What `fn()` gave: its value, or the RecordsError subclass and message it raised."""
    try:
        return ("ok", fn())
    except rec.RecordsError as e:
        return (type(e).__name__, str(e))


def walked(buf: bytes, allow_partial_tail: bool):
    """Headers yielded before a walk ended, and how it ended."""
    seen: list[rec.BatchHeader] = []

    def run():
        for h in rec.iter_batches(buf, allow_partial_tail=allow_partial_tail):
            seen.append(h)
        return None
    result = outcome(run)
    return list(seen), result


@settings(max_examples=examples(300))
@given(buffers(), st.booleans())
def test_walks_give_the_same_headers_and_the_same_error(buf, allow_partial_tail):
    python, compiled = both(lambda: walked(buf, allow_partial_tail))
    assert python == compiled


@contextlib.contextmanager
def walk_window(size: int):
    """The compiled lazy walks' first slice (`records._slices`) this many bytes."""
    before = rec.WALK_WINDOW, rec.PARTS_WINDOW
    rec.WALK_WINDOW = rec.PARTS_WINDOW = size
    try:
        yield
    finally:
        rec.WALK_WINDOW, rec.PARTS_WINDOW = before


def walked_lazily(buf: bytes, allow_partial_tail: bool, stop_after: int | None):
    """As `walked`, with `walk_batches`, stopped after `stop_after` headers (None: to the end)."""
    seen: list[rec.BatchHeader] = []

    def run():
        for h in rec.walk_batches(buf, allow_partial_tail=allow_partial_tail):
            if len(seen) == stop_after:
                break
            seen.append(h)
        return None
    result = outcome(run)
    return list(seen), result


@settings(max_examples=examples(300))
@given(buffers(), st.booleans(), st.sampled_from([1, 61, 100, 300, rec.WALK_WINDOW]), st.none() | st.integers(0, 3))
def test_lazy_walks_give_the_walk_s_headers_and_error_whatever_their_slices(buf, allow_partial_tail, window,
                                                                           stop_after):
    """The compiled lazy walk lists its buffer in slices (as small as one byte here: at least a batch each); it
    gives what the Python walk gives, and what `iter_batches` gives, up to where the caller stops."""
    with walk_window(window):
        python, compiled = both(lambda: walked_lazily(buf, allow_partial_tail, stop_after))
    whole = walked(buf, allow_partial_tail)
    assert python == compiled
    if stop_after is None:
        assert compiled == whole
    else:
        assert compiled[0] == whole[0][:stop_after]


@settings(max_examples=examples(300))
@given(buffers())
def test_checks_give_the_same_headers_and_the_same_error(buf):
    python, compiled = both(lambda: (outcome(lambda: rec.check_batches(buf)), outcome(lambda: rec.produce_batch(buf))))
    assert python == compiled


@settings(max_examples=examples(300))
@given(buffers(), st.none() | st.integers(0, 2**41), st.integers(-(2**41), 2**41) | i64s, st.integers(-1, 60),
       st.booleans())
def test_fit_to_segment_gives_the_same_bytes_and_the_same_error(buf, phys_end, delta, max_epoch, in_a_frame):
    """`in_a_frame`: the records are a read-only view into a larger buffer, as records.read_fetch_response gives
    them; unchanged, both twins return that view itself (the identity fetch path writes it by reference)."""
    records: bytes | memoryview = bytes(buf)
    if in_a_frame:
        records = memoryview(b"head" + bytes(buf) + b"tail").toreadonly()[4:-4]

    def run():
        out = outcome(lambda: rec.fit_to_segment(records, phys_end=phys_end, delta=delta, max_epoch=max_epoch))
        if out[0] != "ok":
            return out
        return ("ok", out[1] is records, type(out[1]), bytes(out[1]))
    python, compiled = both(run)
    assert python == compiled


@settings(max_examples=examples(200))
@given(st.lists(batch(), min_size=1, max_size=3), st.data(), st.integers(0, 2**63 - 1), st.integers(0, 2**15 - 1),
       st.none() | st.integers(0, 2**31 - 1))
def test_producer_rewrites_give_the_same_bytes(batches, data, producer_id, producer_epoch, base_sequence):
    buf = b"".join(batches)
    headers = list(rec.iter_batches(buf))
    header = data.draw(st.sampled_from(headers))

    def run():
        out = bytearray(buf)
        rec.rewrite_producer(out, header, producer_id, producer_epoch, base_sequence)
        copied = rec.with_producer(buf, header, producer_id, producer_epoch)
        return bytes(out), type(copied), bytes(copied), [rec.crc_ok(out, h) for h in rec.iter_batches(out)]
    python, compiled = both(run)
    assert python == compiled
    assert all(python[3])  # and the CRC-32C of every batch is right


@settings(max_examples=examples(200))
@given(st.integers(0, 2**62), st.integers(0, 2**33), st.integers(-1, 2**31 - 1))
def test_gap_batches_give_the_same_bytes(first, length, leader_epoch):
    python, compiled = both(lambda: bytes(rec.gap_batches(first, first + length, leader_epoch)))
    assert python == compiled


@settings(max_examples=examples(100))
@given(buffers())
def test_crc_checks_agree(buf):
    headers = list(rec.iter_batches(buf, allow_partial_tail=True)) if _walks(buf) else []
    python, compiled = both(lambda: [rec.crc_ok(buf, h) for h in headers])
    assert python == compiled


def _walks(buf: bytes) -> bool:
    try:
        list(rec.iter_batches(buf, allow_partial_tail=True))
    except rec.RecordsError:
        return False
    return True


def test_an_offset_moved_past_int64_is_refused_alike():
    """A corrupt answer whose baseOffset + delta leaves int64 is refused (it once raised struct.error in Python)."""
    buf = bytearray(b"".join([_plain_batch()]))
    struct.pack_into(">q", buf, 0, 2**63 - 10)
    python, compiled = both(lambda: outcome(lambda: rec.fit_to_segment(bytes(buf), phys_end=None, delta=100,
                                                                     max_epoch=10)))
    assert python == compiled == ("RecordsError", f"baseOffset {2**63 - 10} + 100 outside int64 at byte 0")


def test_non_contiguous_and_read_only_buffers():
    buf = _plain_batch()
    view = memoryview(buf * 2)[::2]  # not contiguous: the compiled walk refuses it rather than copy it
    (header,) = rec.iter_batches(buf)
    with using("compiled"), pytest.raises(BufferError):
        list(rec.iter_batches(view))
    with using("compiled"), pytest.raises(BufferError):
        rec.rewrite_producer(memoryview(bytearray(buf)).toreadonly(), header, 1, 1)  # type: ignore[arg-type]


def _plain_batch() -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=1, key=None, value=b"v", headers=[])
    return bytes(builder.build())


def _crc_of(buf: bytes, h: rec.BatchHeader) -> int:
    """The CRC-32C a batch's bytes have (not the one it stores)."""
    import crc32c
    return crc32c.crc32c(buf[h.position + 21:h.position + h.length])


@settings(max_examples=examples(200))
@given(st.lists(batch(), min_size=1, max_size=3), st.data(), st.integers(-(2**63), 2**63 - 1),
       st.integers(-(2**15), 2**15 - 1), st.none() | st.integers(-(2**31), 2**31 - 1),
       st.none() | st.integers(21, 2000), st.integers(1, 255))
def test_a_rewritten_head_s_crc_is_updated_for_the_change_alike_a_corrupt_batch_stays_corrupt(
        batches, data, producer_id, producer_epoch, base_sequence, damage_at, damage):
    """`producer_head` (and `with_producer`, which writes it and leaves the body by reference): the same bytes in both
    twins; a valid batch comes out with the CRC a full recompute gives (`rewrite_producer`'s); a batch whose stored CRC
    was wrong (a CRC-covered byte flipped: header or records) comes out wrong by the same bits, so its broker still
    refuses it."""
    buf = b"".join(batches)
    header = data.draw(st.sampled_from(list(rec.iter_batches(buf))))
    if damage_at is not None:  # a byte the CRC covers, not one the rewrite overwrites
        at = header.position + min(damage_at, header.length - 1)
        if not header.position + 43 <= at < header.position + 57:
            damaged_buf = bytearray(buf)
            damaged_buf[at] ^= damage
            buf = bytes(damaged_buf)

    def run():
        head = rec.producer_head(buf, header, producer_id, producer_epoch, base_sequence)
        parts = rec.with_producer(buf, header, producer_id, producer_epoch)
        return head, bytes(parts), [len(p) for p in parts.parts]
    python, compiled = both(run)
    assert python == compiled
    head, joined, sizes = python
    rest = len(buf) - header.position - header.length
    assert sizes == [header.position] * bool(header.position) + [rec.HEADER_SIZE, header.length - rec.HEADER_SIZE] \
        + [rest] * bool(rest)
    rewritten = bytearray(buf)
    rewritten[header.position:header.position + rec.HEADER_SIZE] = head
    (after,) = [h for h in rec.iter_batches(rewritten) if h.position == header.position]
    seq = header.base_sequence if base_sequence is None else base_sequence
    assert (after.producer_id, after.producer_epoch, after.base_sequence) == (producer_id, producer_epoch, seq)
    assert rewritten[header.position + rec.HEADER_SIZE:] == buf[header.position + rec.HEADER_SIZE:]
    wrong_before = header.crc ^ _crc_of(buf, header)
    assert after.crc ^ _crc_of(bytes(rewritten), after) == wrong_before  # stays wrong by the same bits, or right
    if wrong_before == 0:
        recomputed = bytearray(buf)
        rec.rewrite_producer(recomputed, header, producer_id, producer_epoch, base_sequence)
        assert bytes(rewritten) == bytes(recomputed)
    else:
        assert not rec.crc_ok(rewritten, after)
    parts_header = next(h for h in rec.iter_batches(joined) if h.position == header.position)
    assert rec.crc_ok(joined, parts_header) == (wrong_before == 0)


@settings(max_examples=examples(300))
@given(buffers() | st.none())
def test_forwarded_batch_is_produce_batch_but_for_a_plain_batch_s_crc(buf):
    """`forwarded_batch`: the same header or error in both twins, and `produce_batch`'s for every buffer but a plain
    batch (producer id < 0) that passes every check but its CRC-32C: that one is returned (its broker checks it)."""
    python, compiled = both(lambda: (outcome(lambda: rec.forwarded_batch(buf)),
                                     outcome(lambda: rec.produce_batch(buf))))
    assert python == compiled
    forwarded, produced = python
    if produced[0] == "RecordsError" and produced[1] == "CRC-32C mismatch in the batch at byte 0" \
            and forwarded[0] == "ok" and forwarded[1].producer_id < 0:
        assert forwarded[1].length == len(buf)
        return
    assert forwarded == produced


def test_forwarded_batch_checks_the_crc_of_a_batch_with_a_producer_id_only():
    plain, idempotent = _plain_batch(), _idempotent_batch()
    for implementation in ("python", "compiled"):
        with using(implementation):
            for good, checked in ((plain, False), (idempotent, True)):
                corrupt = bytearray(good)
                corrupt[-1] ^= 0x01  # a record byte: only the CRC tells
                assert rec.forwarded_batch(good) == rec.produce_batch(good)
                if checked:
                    with pytest.raises(rec.RecordsError, match="CRC-32C mismatch in the batch at byte 0"):
                        rec.forwarded_batch(corrupt)
                else:
                    assert rec.forwarded_batch(corrupt).producer_id == -1
                off = bytearray(corrupt)
                off[23:27] = (7).to_bytes(4, "big")  # and lastOffsetDelta 7 for 1 record: corrupt, as a broker says
                with pytest.raises(rec.RecordsError, match="CRC-32C mismatch") as e:
                    rec.forwarded_batch(off)
                assert type(e.value) is rec.RecordsError


@settings(max_examples=examples(200))
@given(st.integers(0, 2**32 - 1), st.integers(0, 3000) | st.integers(0, 1 << 21))
def test_the_crc_shift_is_that_of_zero_bytes_appended(crc, n):
    """`_crc_shift`: a raw CRC-32C register after n zero bytes, as computed byte by byte (crc32c continues from a
    CRC: the inverted register)."""
    import crc32c
    expected = crc32c.crc32c(bytes(n), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF
    assert rec._crc_shift(crc, n) == expected


def _idempotent_batch() -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=1000,
                                        producer_epoch=0, base_sequence=5, batch_size=1 << 20)
    builder.append(0, timestamp=1, key=None, value=b"v", headers=[])
    return bytes(builder.build())


@pytest.mark.parametrize("after", [4, 5, 15, 16, 0xFFF, 0x1000, 0x12345, 0xFEDCBA, 0x10FEDCB])
def test_a_large_batch_s_head_is_rewritten_alike_with_the_crc_a_recompute_gives(after):
    """Batches of up to 17 MB (7 hex digits of bytes after the producer fields: the compiled twin multiplies once per
    digit): both twins give the CRC the whole batch has after the rewrite."""
    import crc32c
    buf = bytearray(57 + after)
    struct.pack_into(">qiibIhiqqqhii", buf, 0, 0, len(buf) - 12, 0, 2, 0, 0, 0, 0, 0, 1000, 1, 7, 1)
    buf[-1] = 0x5A
    struct.pack_into(">I", buf, 17, crc32c.crc32c(memoryview(buf)[21:]))
    (header,) = rec.iter_batches(buf)
    python, compiled = both(lambda: rec.producer_head(buf, header, 2**62 + 3, 9, 2**31 - 1))
    assert python == compiled
    buf[:61] = python
    assert rec.crc_ok(buf, next(rec.iter_batches(buf)))
