"""Review rv7 of s33-fix1 (the staging buffer grows or pauses at its end only for a backlog: unread bytes past the
frame the reader takes, its size told by `ClientFrames.take_size`): the no-stall harness of rv8, its reader
closer to `ClientConnection` (held back for the budgets before every chunk of a frame over HELD_WHOLE_BYTES, the
staging buffer let go when nothing is staged as `_first_byte` does) and more frame sizes (each staging size's
half and whole, a frame exactly filling a buffer), process budgets (none spared, the first step only, both) and
socket read sizes, and bursts of reads before the reader runs (uvloop, TLS). Every frame must arrive whole and in
order and no wait for bytes may find reading paused: it passes on s33-fix1 (also 1 500 seeds run outside pytest).

Defects found (failing tests; both older than s33-fix1, main fails them too, neither a stall):
1. Memory: `test_a_large_frame_sent_at_once_by_an_idle_client_keeps_the_staging_buffer_at_16_kib_uncharged`.
2. Perf/doc: `test_a_large_frame_read_chunk_by_chunk_through_a_grown_staging_buffer_moves_at_most_a_byte_per_byte_read`
   (DESIGN §4.12's new "at most once per frame"); fixed in s34-staging (the rest of the frame being taken pauses
   reading at the buffer's end while the reader does not wait).
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.protocol import records
from fedkafka.proxy.core.client_frames import SMALL_FRAME_BYTES, STAGING_BYTES, STAGING_FIRST_BYTES, ClientFrames
from fedkafka.proxy.core.connection import ARRIVED_BEFORE_HELD, HELD_WHOLE_BYTES, READ_CHUNK_BYTES
from fedkafka.proxy.core.limits import ByteBudget, Limits
from proxy.staging_review_helpers import _fed_a_read_a_turn, _large_frame_by_the_waiting_path
from proxy.test_client_frames_unit import _Transport
from proxy.test_limits_unit import GUARD_S

_SIZES = [0, 3, 100, SMALL_FRAME_BYTES - 8, SMALL_FRAME_BYTES - 4, SMALL_FRAME_BYTES, SMALL_FRAME_BYTES + 4,
          2 * SMALL_FRAME_BYTES, 64 * 1024, HELD_WHOLE_BYTES - 4, HELD_WHOLE_BYTES, HELD_WHOLE_BYTES + 4,
          STAGING_FIRST_BYTES // 2, STAGING_FIRST_BYTES - 4, STAGING_FIRST_BYTES, STAGING_FIRST_BYTES + 4,
          STAGING_BYTES // 2 - 4, STAGING_BYTES - 4, 3 * READ_CHUNK_BYTES + 1]
# budgets: no growth spared, the first step only, both steps
_BUDGETS = [0, 64 * 1024, 600 * 1024, 1024 * 1024, 3 * 1024 * 1024, 1 << 30]
_PIECES = [1, 4, 1448, SMALL_FRAME_BYTES - 4, SMALL_FRAME_BYTES, 64 * 1024, STAGING_FIRST_BYTES, 1 << 30]


async def _hold(rng: random.Random) -> None:
    for _ in range(rng.choice([0, 0, 1, 4, 30])):
        await asyncio.sleep(0)


async def _read_like_a_connection(frames: ClientFrames, count: int, rng: random.Random, out: list[bytes]) -> None:
    plenty = ByteBudget(1 << 40)
    short = ByteBudget(0)
    while len(out) < count:
        await _hold(rng)  # a request slot
        frame = frames.take_whole(1 << 30, plenty, rng.choice([plenty, short]))
        if frame is None:
            frame = await _read_by_the_waiting_path(frames, rng)
        out.append(bytes(frame))


async def _read_by_the_waiting_path(frames: ClientFrames, rng: random.Random) -> bytes | memoryview:
    if not frames.buffered():
        frames.release_staging()  # `_first_byte`: idle, nothing staged
        await frames.until_buffered(1)
    await frames.until_buffered(4)
    size = frames.take_size()
    if size > SMALL_FRAME_BYTES:
        await frames.until_buffered(ARRIVED_BEFORE_HELD)
    if size <= HELD_WHOLE_BYTES:
        await _hold(rng)
        return await frames.read_frame(size)
    chunks = []
    got = 0
    while got < size:
        await _hold(rng)  # `_hold(want)` before each chunk
        chunk = records.frame_buffer(min(size - got, READ_CHUNK_BYTES))
        await frames.receive_into(chunk)
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


async def _run(payloads: list[bytes], budget: ByteBudget, seed: int) -> tuple[list[bytes], int]:
    rng = random.Random(seed)
    data = b"".join(struct.pack(">i", len(p)) + p for p in payloads)
    transport = _Transport()
    frames = ClientFrames(lambda r, w: None, budget=budget)
    frames.transport = transport  # type: ignore[assignment]
    out: list[bytes] = []
    reader = asyncio.ensure_future(_read_like_a_connection(frames, len(payloads), random.Random(seed + 1), out))
    at = 0
    async with asyncio.timeout(GUARD_S):
        while not reader.done():
            burst = rng.choice([1, 1, 2, 5])  # reads before the reader runs (uvloop, TLS read on)
            for _ in range(burst):
                if transport.reading and at < len(data):
                    view = frames.get_buffer(-1)
                    assert len(view) > 0
                    n = min(len(view), len(data) - at, rng.choice(_PIECES))
                    view[:n] = data[at:at + n]
                    del view
                    frames.buffer_updated(n)
                    at += n
            await asyncio.sleep(0)
            waiter = frames._waiter
            if waiter is not None and not waiter.done() and not transport.reading and not reader.done():
                reader.cancel()
                raise AssertionError(f"stall: the reader waits with reading paused, {frames.buffered()} staged of "
                                     f"{len(frames._staging)}, frame_left {frames._frame_left}")
    return reader.result() or out, at


@settings(max_examples=examples(400), deadline=None)
@given(sizes=st.lists(st.sampled_from(_SIZES), min_size=1, max_size=20), budget=st.sampled_from(_BUDGETS),
       seed=st.integers(0, 2**32))
def test_s33_rv7_every_frame_arrives_and_no_wait_finds_reading_paused_holds_per_chunk(sizes, budget, seed):
    """Guard (passes on s33-fix1): no stall, every frame in order, whatever the sizes, budget and reads."""
    rng = random.Random(seed)
    payloads = [rng.randbytes(size) for size in sizes]
    spent = ByteBudget(budget)
    got, _ = asyncio.run(_run(payloads, spent, seed))
    assert got == payloads


# DEFECT (s33 rv7, memory; older than s33-fix1, main too): a large frame sent at once (not trickled) by an idle
# client fills the new 16 KiB staging buffer with its size and first bytes in the socket's first read, before the
# connection took its size (`_frame_left` is still 0): all of it counts as a backlog and the buffer grows to
# 256 KiB (245 760 bytes charged, kept while the answer is due: `grown()`), though the connection then copies
# those 16 KiB into the frame's own buffer and the socket reads the rest there, never into the 256 KiB. The
# reasoning s33-fix1 applies to a trickled frame holds here; the staged size prefix tells the same
# (`4 + size >= unread`: one frame, no backlog) when `_frame_left` is 0.
@pytest.mark.xfail(strict=True, reason="known gap, older than the backlog rule (docs/DESIGN.md §4.12): before the "
                   "reader took its size an idle client's large frame filling a new 16 KiB buffer counts as a "
                   "backlog; kept: that read is what grows a pipelining producer's buffer (the guard below)")
@pytest.mark.parametrize("size", [20 * 1024, HELD_WHOLE_BYTES, 1024 * 1024])
def test_a_large_frame_sent_at_once_by_an_idle_client_keeps_the_staging_buffer_at_16_kib_uncharged(size):
    """One frame over 16 KiB, the whole of it in the kernel's buffer (one read fills whatever the staging
    buffer gives; the connection's task runs between reads, as on asyncio's loop), the connection idle (waiting
    for a first byte): it arrives whole, the staging buffer stays at 16 KiB and nothing is charged. Fails on
    s33-fix1: grown to 256 KiB, 245 760 bytes charged."""
    payload = random.Random(size).randbytes(size)
    data = struct.pack(">i", size) + payload
    budget = ByteBudget(Limits().max_buffered_bytes)

    got, largest, most_charged, _ = asyncio.run(_fed_a_read_a_turn(_large_frame_by_the_waiting_path, data, budget))
    assert got == payload
    assert (largest, most_charged) == (SMALL_FRAME_BYTES, 0)


def test_pipelined_frames_over_16_kib_sent_at_once_grow_the_staging_buffer_and_never_pause():
    """Guard for the memory gap above (why it stays): 20 pipelined 64 KiB frames, all in the kernel's buffer, read
    one socket read a loop turn, the reader taking each by the waiting path: the staging buffer grows to 1 MiB
    and reading never pauses. The first read into a new 16 KiB buffer, before the reader took a size, is what
    grows it; told one frame from a backlog there by the staged size prefix (s33-fix7's fix for the gap), it
    stayed at 16 KiB and paused once per frame (20 pauses)."""
    rng = random.Random(3)
    payloads = [rng.randbytes(64 * 1024) for _ in range(20)]
    data = b"".join(struct.pack(">i", len(p)) + p for p in payloads)

    async def read(frames: ClientFrames) -> list[bytes]:
        out = []
        for _ in payloads:
            await frames.until_buffered(4)
            size = frames.take_size()
            await frames.until_buffered(ARRIVED_BEFORE_HELD)
            out.append(bytes(await frames.read_frame(size)))
        return out

    got, largest, _, pauses = asyncio.run(_fed_a_read_a_turn(read, data, ByteBudget(Limits().max_buffered_bytes)))
    assert got == payloads
    assert (largest, pauses) == (STAGING_BYTES, 0)


# DEFECT (s33 rv7, perf/doc; fixed in s34-staging): the rest of the frame being taken never paused at the buffer's
# end unless it filled it, so a large frame read chunk by chunk (over HELD_WHOLE_BYTES, `_hold` before each chunk)
# through a staging buffer grown to 1 MiB by the pipelined frames before it was moved to the front again and again
# (24 248 268 bytes moved for 8 323 156 read). Now it pauses there while the reader does not wait (8 388 556 moved).
def test_a_large_frame_read_chunk_by_chunk_through_a_grown_staging_buffer_moves_at_most_a_byte_per_byte_read():
    """20 pipelined 64 KiB frames (the staging buffer grows to 1 MiB), then one of 8 MiB, read as
    `ClientConnection` does (64 KiB chunks, the reader held back a loop turn before each), the socket reading
    64 KiB at a time, three reads per loop turn: the bytes `get_buffer` moves to the staging buffer's front
    while the 8 MiB frame is read stay within the bytes read into it (plus a buffer of slack). Failed on
    s33-fix1 and main before s34-staging: ~24.2 MB moved for ~8.3 MB read (2.9 bytes per byte)."""
    import proxy.test_s33_rv7_review_staging_unit as this
    from proxy.test_rv8_review_staging_unit import _moved_before_read

    big = 8 * 1024 * 1024
    rng = random.Random(1)
    payloads = [rng.randbytes(64 * 1024) for _ in range(20)] + [rng.randbytes(big)]
    data = b"".join(struct.pack(">i", len(p)) + p for p in payloads)

    async def one_turn(_rng: random.Random) -> None:
        await asyncio.sleep(0)

    async def scenario() -> tuple[int, int, int]:
        transport = _Transport()
        frames = ClientFrames(lambda r, w: None, budget=ByteBudget(1 << 30))
        frames.transport = transport  # type: ignore[assignment]
        out: list[bytes] = []
        reader = asyncio.ensure_future(_read_like_a_connection(frames, len(payloads), random.Random(2), out))
        at = moved = read = 0
        async with asyncio.timeout(GUARD_S):
            while not reader.done():
                for _ in range(3):
                    if transport.reading and at < len(data):
                        before = _moved_before_read(frames)
                        view = frames.get_buffer(-1)
                        n = min(len(view), len(data) - at, 64 * 1024)
                        view[:n] = data[at:at + n]
                        del view
                        if at >= len(data) - big:
                            moved += before
                            read += n if frames._target is None else 0
                        frames.buffer_updated(n)
                        at += n
                await asyncio.sleep(0)
        assert out == payloads
        return moved, read, len(frames._staging)

    original = this._hold
    this._hold = one_turn
    try:
        moved, read, staging = asyncio.run(scenario())
    finally:
        this._hold = original
    assert staging == STAGING_BYTES
    assert moved <= read + STAGING_BYTES, (moved, read)
