"""Record-batch header work, checked against batches built (and CRC-validated) by aiokafka."""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from fedkafka.protocol import records as rec


def batch(n: int = 3, producer_id: int = -1, epoch: int = -1, seq: int = -1, compression: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                        producer_id=producer_id, producer_epoch=epoch, base_sequence=seq,
                                        batch_size=1 << 20)
    for i in range(n):
        builder.append(i, timestamp=None, key=b"k%d" % i, value=b"v" * 50, headers=[])
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


def test_rewrite_all_producers_and_patch_base_offset():
    buf = rec.rewrite_all_producers(batch(2, 1, 0, 0) + batch(2, 1, 0, 2), 77, 5)
    assert [(h.producer_id, h.producer_epoch) for h in rec.iter_batches(buf)] == [(77, 5), (77, 5)]
    out = bytearray(buf)
    (h, _) = rec.iter_batches(out)
    rec.patch_base_offset(out, h, 123456)
    assert DefaultRecordBatch(bytes(out)).base_offset == 123456
    assert all(rec.crc_ok(out, x) for x in rec.iter_batches(out))  # baseOffset is outside the CRC


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


def test_first_producer():
    assert rec.first_producer(batch(1, 5, 2, 0)) == (5, 2, False)
    assert rec.first_producer(b"") is None
