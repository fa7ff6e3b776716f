"""Properties of records.py (the only hand-written byte code) over batches built by aiokafka, whose own
parser checks the results: rewrites and patches keep every CRC valid and the records intact, fit_to_segment
keeps exactly the batches below the seal, and any changed byte the CRC covers is caught."""

from __future__ import annotations

import struct

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.protocol import records as rec

# every test here runs against the pure-Python code and the compiled twin (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("records_implementation")

values = st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=20)), st.binary(max_size=60)),
                  min_size=1, max_size=6)
ids = st.integers(0, 2**63 - 1)
epochs = st.integers(0, 2**15 - 1)
sequences = st.integers(0, 2**31 - 100)


def build(records, producer_id=-1, epoch=-1, seq=-1, compression=0, base_offset=0, leader_epoch=0) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                  producer_id=producer_id, producer_epoch=epoch, base_sequence=seq,
                                  batch_size=1 << 20)
    for i, (key, value) in enumerate(records):
        b.append(i, timestamp=1_700_000_000_000 + i, key=key, value=value, headers=[])
    out = bytearray(b.build())
    struct.pack_into(">q", out, 0, base_offset)
    struct.pack_into(">i", out, 12, leader_epoch)
    return bytes(out)


def parsed(buf: bytes | bytearray, position: int = 0) -> DefaultRecordBatch:
    (length,) = struct.unpack_from(">i", buf, position + 8)
    return DefaultRecordBatch(bytes(buf[position: position + 12 + length]))


def kvs(batch: DefaultRecordBatch):
    return [(r.key, r.value) for r in batch]


@settings(max_examples=examples(60), deadline=None)
@given(values, ids, epochs, sequences, ids, epochs, st.sampled_from([0, 1]))
def test_a_producer_rewrite_keeps_the_crc_valid_and_the_records_intact(records, pid, epoch, seq, new_pid,
                                                                        new_epoch, compression):
    original = build(records, pid, epoch, seq, compression)
    header = rec.produce_batch(original)
    out = bytes(rec.with_producer(original, header, new_pid, new_epoch))
    (after,) = rec.check_batches(out)  # CRC checked
    assert (after.producer_id, after.producer_epoch, after.base_sequence) == (new_pid, new_epoch, seq)
    batch = parsed(out)
    assert batch.validate_crc() and batch.producer_id == new_pid and kvs(batch) == records


@settings(max_examples=examples(60), deadline=None)
@given(values, st.integers(0, 2**62), st.integers(0, 2**31 - 1))
def test_base_offset_and_leader_epoch_sit_outside_the_crc(records, base_offset, leader_epoch):
    out = bytearray(build(records))
    rec.patch_base_offset(out, rec.produce_batch(out), base_offset)
    struct.pack_into(">i", out, 12, leader_epoch)
    (h,) = rec.check_batches(out)
    assert h.base_offset == base_offset and parsed(out).validate_crc()


@settings(max_examples=examples(150), deadline=None)
@given(values, st.sampled_from([0, 1]), st.data())
def test_a_changed_byte_the_crc_covers_is_caught(records, compression, data):
    buf = bytearray(build(records, 5, 1, 0, compression))
    at = data.draw(st.integers(16, len(buf) - 1))  # magic, the CRC itself, and everything it covers
    buf[at] ^= data.draw(st.integers(1, 255))
    try:
        rec.check_batches(buf)
    except rec.RecordsError:
        return
    raise AssertionError(f"a change at byte {at} went unnoticed")


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.tuples(values, st.integers(0, 5)), min_size=1, max_size=5), st.integers(0, 40),
       st.booleans(), st.integers(-1000, 10**6), st.integers(0, 5), st.integers(0, 30))
def test_fit_to_segment_keeps_the_batches_below_the_seal_shifted_and_capped(batches, seal, sealed, delta,
                                                                             max_epoch, tail):
    bufs, offset = [], 0
    for records, leader_epoch in batches:
        bufs.append(build(records, base_offset=offset, leader_epoch=leader_epoch))
        offset += len(records)
    whole = b"".join(bufs)
    fetched = whole + bufs[0][:tail]  # a broker may end its answer with part of a batch
    phys_end = seal if sealed else None
    out = rec.fit_to_segment(fetched, phys_end=phys_end, delta=delta, max_epoch=max_epoch)
    kept = [h for h in rec.iter_batches(whole) if phys_end is None or h.base_offset < phys_end]
    if out is fetched:  # nothing to change: the zero-copy path
        assert delta == 0 and all(struct.unpack_from(">i", whole, h.position + 12)[0] <= max_epoch for h in kept)
        return
    got = rec.check_batches(out)  # no partial tail, every CRC valid
    assert [h.base_offset for h in got] == [h.base_offset + delta for h in kept]
    for h, original in zip(got, kept, strict=True):
        epoch = struct.unpack_from(">i", out, h.position + 12)[0]
        assert epoch == min(struct.unpack_from(">i", whole, original.position + 12)[0], max_epoch)
        assert kvs(parsed(out, h.position)) == kvs(parsed(whole, original.position))
