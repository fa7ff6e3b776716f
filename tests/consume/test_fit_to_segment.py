"""records.fit_to_segment: what a consumer of a logical partition sees of a physical fetch answer."""

from __future__ import annotations

import struct

import crc32c
import pytest

from fedkafka.protocol import records as rec

# every test here runs against the pure-Python code and the compiled twin (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("records_implementation")


def batch(base_offset: int, count: int, epoch: int = 0, payload: bytes = b"x" * 10) -> bytes:
    """A well-formed v2 batch header followed by opaque record bytes (records are never decoded)."""
    body = struct.pack(">hiqqqhii", 0, count - 1, 1000, 1000, -1, -1, -1, count) + payload
    crc = crc32c.crc32c(body)
    head = struct.pack(">qiibI", base_offset, 4 + 1 + 4 + len(body), epoch, 2, crc)
    return head + body


def bases(buf: bytes) -> list[int]:
    return [h.base_offset for h in rec.iter_batches(buf)]


def test_identity_active_segment_is_passed_through_untouched():
    data = batch(0, 3) + batch(3, 2)
    assert rec.fit_to_segment(data, phys_end=None, delta=0, max_epoch=0) is data


def test_base_offsets_are_shifted_and_crcs_stay_valid():
    data = batch(100, 3) + batch(103, 2)
    out = rec.fit_to_segment(data, phys_end=None, delta=-100 + 5000, max_epoch=0)
    assert bases(out) == [5000, 5003]
    assert all(rec.crc_ok(out, h) for h in rec.iter_batches(out))


def test_batches_at_or_beyond_the_seal_are_dropped():
    data = batch(0, 3) + batch(3, 2) + batch(5, 4)
    assert bases(rec.fit_to_segment(data, phys_end=5, delta=0, max_epoch=0)) == [0, 3]
    assert rec.fit_to_segment(batch(7, 1), phys_end=5, delta=0, max_epoch=0) == b""


def test_partial_tail_is_dropped_only_when_the_buffer_is_rewritten():
    data = batch(0, 3) + batch(3, 2)[:30]
    assert rec.fit_to_segment(data, phys_end=None, delta=0, max_epoch=0) is data
    assert bases(rec.fit_to_segment(data, phys_end=None, delta=10, max_epoch=0)) == [10]


def test_physical_leader_epochs_never_exceed_the_logical_one():
    data = batch(0, 1, epoch=7) + batch(1, 1, epoch=1)
    out = rec.fit_to_segment(data, phys_end=None, delta=0, max_epoch=2)
    assert [struct.unpack_from(">i", out, h.position + 12)[0] for h in rec.iter_batches(out)] == [2, 1]


def test_garbage_is_refused():
    with pytest.raises(rec.RecordsError):
        rec.fit_to_segment(b"\0" * 8 + struct.pack(">i", 100) + b"\0\0\0\0" + b"\x07" + b"\0" * 60,
                           phys_end=None, delta=5, max_epoch=0)
