"""Record-batch header work, checked against batches built (and CRC-validated) by aiokafka."""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from fedkafka.protocol import records as rec

# every test here runs against the pure-Python code and the compiled twin (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("records_implementation")


def batch(n: int = 3, producer_id: int = -1, epoch: int = -1, seq: int = -1, compression: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                        producer_id=producer_id, producer_epoch=epoch, base_sequence=seq,
                                        batch_size=1 << 20)
    for i in range(n):
        # a fixed timestamp: two calls build equal bytes (the clock's millisecond could tick between them)
        builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=b"v" * 50, headers=[])
    return bytes(builder.build())


def test_iter_batches_reads_headers_of_concatenated_batches():
    buf = batch(3, 7, 1, 0) + batch(5, 7, 1, 3, compression=1)
    headers = list(rec.iter_batches(buf))
    assert [(h.record_count, h.producer_id, h.producer_epoch, h.base_sequence) for h in headers] == [
        (3, 7, 1, 0), (5, 7, 1, 3)]
    assert headers[1].position == headers[0].length
    assert all(rec.crc_ok(buf, h) for h in headers)


def test_rewrite_producer_keeps_a_valid_crc():
    buf = bytearray(batch(4, 42, 0, 10, compression=1))
    (h,) = rec.iter_batches(buf)
    rec.rewrite_producer(buf, h, 9_000_000_001, 3)
    (h2,) = rec.iter_batches(buf)
    assert (h2.producer_id, h2.producer_epoch, h2.base_sequence) == (9_000_000_001, 3, 10)
    assert rec.crc_ok(buf, h2)
    parsed = DefaultRecordBatch(bytes(buf))
    assert parsed.validate_crc() and parsed.producer_id == 9_000_000_001
    assert [r.value for r in parsed] == [b"v" * 50] * 4  # records untouched


def test_with_producer_and_patch_base_offset():
    records = batch(2, 1, 0, 0)
    before = bytearray(records)
    h = rec.produce_batch(records)
    parts = rec.with_producer(records, h, 77, 5)
    out = bytearray(bytes(parts))
    assert [(x.producer_id, x.producer_epoch) for x in rec.check_batches(out)] == [(77, 5)]
    assert records == before  # the client's buffer is untouched: a new head, the rest of it by reference
    assert [len(p) for p in parts.parts] == [rec.HEADER_SIZE, len(records) - rec.HEADER_SIZE]
    assert parts.parts[1].obj is records
    rec.patch_base_offset(out, h, 123456)
    assert DefaultRecordBatch(bytes(out)).base_offset == 123456
    assert rec.check_batches(out)  # baseOffset is outside the CRC


@pytest.mark.parametrize("cut", [0, 10, 60, 61, 80])
def test_truncated_buffers_are_refused(cut):
    buf = batch(3)
    if cut == 0:
        assert list(rec.iter_batches(b"")) == []
        return
    with pytest.raises(rec.RecordsError):
        list(rec.iter_batches(buf[:cut]))
    assert list(rec.iter_batches(buf[:cut], allow_partial_tail=True)) == []


def test_old_magic_and_bad_length_are_refused():
    buf = bytearray(batch(1))
    buf[16] = 1
    with pytest.raises(rec.RecordsError, match="magic"):
        list(rec.iter_batches(buf))
    buf = bytearray(batch(1))
    buf[8:12] = (5).to_bytes(4, "big")
    with pytest.raises(rec.RecordsError, match="too small"):
        list(rec.iter_batches(buf))


def test_check_batches_refuses_a_bad_second_batch():
    good = batch(3, 7, 1, 0)
    assert [h.record_count for h in rec.check_batches(good + batch(2))] == [3, 2]
    corrupt = bytearray(batch(2))
    corrupt[-1] ^= 0x01  # a record byte: only the CRC tells
    with pytest.raises(rec.RecordsError, match="CRC"):
        rec.check_batches(good + bytes(corrupt))
    lying = bytearray(batch(2))
    lying[57:61] = (1000).to_bytes(4, "big")  # 1000 uncompressed records cannot fit (CRC made valid again)
    h = next(rec.iter_batches(lying))
    rec.rewrite_producer(lying, h, h.producer_id, h.producer_epoch)
    with pytest.raises(rec.RecordsError, match="cannot fit"):
        rec.check_batches(good + bytes(lying))


def test_produce_batch_follows_kafkas_produce_rules():
    assert rec.produce_batch(batch(3, 5, 2, 0)).producer_id == 5
    for records in (None, b"", batch(1) + batch(1)):
        with pytest.raises(rec.InvalidRecords, match="exactly one record batch"):
            rec.produce_batch(records)
    off = bytearray(batch(3))
    off[23:27] = (7).to_bytes(4, "big")  # lastOffsetDelta 7 for 3 records
    h = next(rec.iter_batches(off))
    rec.rewrite_producer(off, h, h.producer_id, h.producer_epoch)
    with pytest.raises(rec.InvalidRecords, match="lastOffsetDelta"):
        rec.produce_batch(off)


def test_claimed_sequence_reads_the_first_header_without_checking_it():
    """What an idempotent batch answered with an error claims (producer id, epoch, base sequence), corrupt or not;
    nothing for a plain or transactional batch, a short buffer or another magic."""
    good = batch(3, 42, 1, 2**31 - 2)
    assert rec.claimed_sequence(good) == (42, 1, 2**31 - 2)
    flipped = bytearray(good + batch(2, 43, 0, 9))
    flipped[-1] ^= 1  # a corrupt second batch: the first header is read all the same
    assert rec.claimed_sequence(memoryview(flipped)) == (42, 1, 2**31 - 2)
    old_magic = bytearray(good)
    old_magic[16] = 1
    txn = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True, producer_id=42,
                                    producer_epoch=1, base_sequence=0, batch_size=1 << 20)
    txn.append(0, timestamp=1, key=b"k", value=b"v", headers=[])
    for nothing in (None, b"", good[:60], batch(3), batch(3, 42, 1, -1), bytes(old_magic), bytes(txn.build())):
        assert rec.claimed_sequence(nothing) is None



@pytest.mark.parametrize("interface, revision", [(0, 1), (2, 1), (1, 0), (1, None)])
def test_a_compiled_module_of_another_interface_or_an_older_revision_is_not_used(monkeypatch, interface, revision):
    """A stale build of fedkafka_speedups (another INTERFACE, or one without a function records.py calls: an older
    REVISION, or none) leaves records.py on its pure-Python code."""
    import sys
    import types

    stale = types.ModuleType("fedkafka_speedups")
    stale.INTERFACE = interface  # type: ignore[attr-defined]
    if revision is not None:
        stale.REVISION = revision  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fedkafka_speedups", stale)
    assert not rec.compiled_available()
    with pytest.raises(ImportError):
        rec.use("compiled")


def test_a_compiled_module_of_a_newer_revision_is_used(monkeypatch):
    """Functions added to the twin (REVISION up, INTERFACE kept) leave it usable by an older records.py: a bench
    against an older commit (`data_path.py --compare-ref`) runs both sides with one build."""
    import sys
    import types

    newer = types.ModuleType("fedkafka_speedups")
    newer.INTERFACE, newer.REVISION = rec._INTERFACE, rec._REVISION + 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fedkafka_speedups", newer)
    assert rec.compiled_available()


@pytest.mark.parametrize("size", [0, 1, 61, 256 * 1024 + 1, 3 << 20])
def test_frame_buffer_is_a_writable_bytearray_of_exactly_the_size_asked(size):
    buf = rec.frame_buffer(size)
    assert type(buf) is bytearray and len(buf) == size
    payload = bytes(i % 251 for i in range(size))
    memoryview(buf)[:] = payload  # as a socket reads into it
    assert buf == payload
    assert rec.frame_buffer(size) is not buf


def test_frame_buffer_refuses_a_negative_size_as_bytearray_does():
    with pytest.raises(ValueError, match=r"^negative count$"):
        bytearray(-1)
    with pytest.raises(ValueError, match=r"^negative count$"):
        rec.frame_buffer(-1)


@pytest.mark.skipif(not rec.compiled_available(), reason="fedkafka_speedups is not built")
def test_a_build_of_revision_4_serves_this_records_py_with_its_new_functions_in_python(monkeypatch):
    """A twin built before revision 5 (no forwarded_batch, producer_head, record sets in pieces) is still used; what
    it lacks runs in Python, with the same results."""
    import sys
    import types

    import fedkafka_speedups

    older = types.ModuleType("fedkafka_speedups")
    for name in dir(fedkafka_speedups):
        if name not in ("forwarded_batch", "producer_head") and not name.startswith("__"):
            setattr(older, name, getattr(fedkafka_speedups, name))
    older.REVISION = 4  # type: ignore[attr-defined]
    good = batch(3, 7, 1, 0)
    corrupt_plain = bytearray(batch(2))
    corrupt_plain[-1] ^= 0x01

    def results():
        h = rec.forwarded_batch(good)
        parts = rec.with_producer(good, h, 99, 2)
        frame = rec.produce_request_parts(9, 1, None, -1, 100, [("t", [(0, parts)])], by_reference=16)
        return h, rec.forwarded_batch(corrupt_plain), bytes(parts), b"".join(frame)
    before = rec.implementation()
    rec.use("python")
    try:
        expected = results()
        monkeypatch.setitem(sys.modules, "fedkafka_speedups", older)
        rec.use("compiled")
        assert rec._compiled is older and rec._heads is None and rec._counted is older
        assert results() == expected
    finally:
        monkeypatch.undo()
        rec.use(before)


def test_header_intact_checks_the_first_batchs_crc_as_crc_ok_does():
    """`header_intact` reads the first batch's CRC from raw bytes (no walk): it agrees with `crc_ok` on an intact
    and a damaged batch, ignores the fields the CRC leaves out and whatever follows the first batch, and is False
    for bytes that cannot hold the batch their header describes."""
    good = batch(3, 7, 1, 0)
    damaged = bytearray(good)
    damaged[50] ^= 0x01  # the producer epoch: a CRC-covered byte
    moved = bytearray(good)
    moved[0:16] = bytes(range(16))[::-1]  # baseOffset, batchLength (kept below), leader epoch: not covered
    moved[8:12] = good[8:12]
    for buf in (good, bytes(damaged), bytes(moved), good + bytes(damaged)):
        (first, *_) = rec.iter_batches(buf)
        assert rec.header_intact(buf) == rec.crc_ok(buf, first)
    assert rec.header_intact(good) and rec.header_intact(bytes(moved)) and not rec.header_intact(bytes(damaged))
    assert rec.header_intact(good + b"\xff" * 5)
    assert not rec.header_intact(None) and not rec.header_intact(good[:rec.HEADER_SIZE - 1])
    assert not rec.header_intact(good[:-1])  # batchLength points past the end
    short = bytearray(good)
    short[8:12] = (rec.HEADER_SIZE - rec.LOG_OVERHEAD - 1).to_bytes(4, "big")  # a batch shorter than its header
    assert not rec.header_intact(bytes(short))
