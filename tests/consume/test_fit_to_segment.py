"""records.fit_to_segment: what a consumer of a logical partition sees of a physical fetch answer."""

from __future__ import annotations

import struct

import crc32c
import pytest
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol.test_records_twins import buffers, walk_window

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


# -- fit_to_segment_parts: a moved segment's large batches left in the broker's frame ---------------------------------

def outcome(fn) -> tuple:
    try:
        out = fn()
    except rec.RecordsError:
        return ("refused",)
    return ("ok", bytes(out))


@settings(max_examples=examples(300), deadline=None)
@given(buffers(), st.none() | st.integers(0, 2**41),
       (st.integers(-(2**41), 2**41) | st.integers(-(2**63), 2**63 - 1)).filter(bool),  # 0: fit_to_segment's way
       st.integers(-1, 60), st.integers(rec.HEADER_SIZE, 250))
def test_parts_join_to_fit_to_segment_s_bytes_or_are_refused_alike(buf, phys_end, delta, max_epoch, by_reference):
    """Over random (and damaged) batches, with a threshold low enough that most batches are left in the frame: the
    joined parts are fit_to_segment's bytes, and a buffer it refuses is refused."""
    frame = memoryview(b"head" + buf + b"tail").toreadonly()[4:-4]  # as read_fetch_response gives record sets
    theirs = outcome(lambda: rec.fit_to_segment(bytes(buf), phys_end=phys_end, delta=delta, max_epoch=max_epoch))
    ours = outcome(lambda: rec.fit_to_segment_parts(frame, phys_end=phys_end, delta=delta, max_epoch=max_epoch,
                                                    by_reference=by_reference))
    assert ours == theirs


@settings(max_examples=examples(200), deadline=None)
@given(buffers(), st.none() | st.integers(0, 2**41), st.integers(-(2**41), 2**41).filter(bool),
       st.integers(-1, 60), st.integers(rec.HEADER_SIZE, 250), st.sampled_from([1, 61, 100, 300]))
def test_parts_listed_in_small_slices_are_the_same(buf, phys_end, delta, max_epoch, by_reference, window):
    """The compiled walk lists the batches a slice at a time (`records._slices`, the caller stops at the seal):
    slices as small as a batch give the same parts, or the same refusal."""
    frame = memoryview(b"head" + buf + b"tail").toreadonly()[4:-4]
    theirs = outcome(lambda: rec.fit_to_segment(bytes(buf), phys_end=phys_end, delta=delta, max_epoch=max_epoch))
    with walk_window(window):
        ours = outcome(lambda: rec.fit_to_segment_parts(frame, phys_end=phys_end, delta=delta, max_epoch=max_epoch,
                                                        by_reference=by_reference))
    assert ours == theirs


def test_a_moved_segment_s_large_batches_are_left_in_the_frame_but_for_their_first_16_bytes():
    data = batch(100, 3, epoch=9, payload=b"p" * 40_000) + batch(103, 2, payload=b"q" * 40_000) + batch(105, 1)
    frame = memoryview(data + batch(106, 1, payload=b"x" * 30_000)[:-5]).toreadonly()  # a partial tail batch
    out = rec.fit_to_segment_parts(frame, phys_end=106, delta=1000, max_epoch=4)
    assert isinstance(out, rec.RecordParts) and len(out) == len(data)
    assert bytes(out) == bytes(rec.fit_to_segment(bytes(frame), phys_end=106, delta=1000, max_epoch=4))
    referenced = [p for p in out.parts if isinstance(p, memoryview)]
    assert [len(p) for p in referenced] == [len(data[:len(batch(100, 3, payload=b"p" * 40_000))]) - 16,
                                            len(batch(103, 2, payload=b"q" * 40_000)) - 16]
    assert all(p.obj is frame.obj for p in referenced)  # views of the frame, not copies
    assert bases(bytes(out)) == [1100, 1103, 1105]


def test_identity_and_small_batches_take_fit_to_segment_s_way():
    small = batch(0, 3) + batch(3, 2)
    assert rec.fit_to_segment_parts(small, phys_end=None, delta=0, max_epoch=0) is small
    assert isinstance(rec.fit_to_segment_parts(small, phys_end=None, delta=5, max_epoch=0), bytearray)
    large = batch(0, 3, payload=b"p" * 40_000)
    assert rec.fit_to_segment_parts(large, phys_end=None, delta=0, max_epoch=0) is large  # identity: untouched
    assert rec.fit_to_segment_parts(large, phys_end=0, delta=7, max_epoch=0) == bytearray()  # all past the seal
