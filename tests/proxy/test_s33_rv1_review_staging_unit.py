"""Review rv1 of s33-staging (reading that reaches the staging buffer's end with more than half of it unread grows
it there, or pauses): failing tests, one per defect found (fixed in s33-fix1).

1. Memory (and a pause per frame when the budget refuses): a frame over 16 KiB whose first bytes trickle in (TCP
   segments, one read each, as asyncio's loop reads them) fills the 16 KiB staging buffer exactly with its size and
   `ARRIVED_BEFORE_HELD` bytes, what the connection waits for before holding it: reading reaches the buffer's end
   with 16 380 of 16 384 bytes unread, so the buffer grows to 256 KiB (240 KiB charged to the process budget, kept
   while the answer is due) although nothing else is staged and the connection takes those bytes out into the
   frame's own buffer at once: the growth is never used, the buffer "would fill anyway" (client_frames' docstring)
   is not so. Refused (a budget short of room), reading pauses there instead, and the connection's wait for the
   frame's rest resumes it: a pause and a resume per large frame. On 7237ffc the buffer stayed at 16 KiB, nothing
   charged, no pause (full, not merely at its end, was the trigger). DESIGN §4.12 says "one that trickles [stays]
   at 16 KiB", and its table row "a client that announces 1 MiB and trickles | one 64 KiB chunk": it now holds the
   240 KiB growth too. Scope: asyncio's loop, plain TCP. On uvloop (libuv reads on while a read fills the buffer)
   and over TLS (the TLS layer reads on likewise), 7237ffc too grew there whenever more bytes were waiting, after
   moving the 16 380 bytes to the front first; the waste is older there, and s33 only spares that move.
   Fixed in s33-fix1: the reader takes a frame's size with `take_size`, and the staging buffer grows or pauses at
   its end only for bytes staged past the rest of that frame (a backlog of frames), not for that rest alone.

2. Doc (no test): `ClientFrames._grow`'s docstring still says "The full staging buffer, grown a step" (it now grows
   one whose end is reached with more than half unread), and the module docstring's "A client that trickles keeps
   it at 16 KiB" is false for a frame over 16 KiB (1.).
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from fedkafka.proxy.core.client_frames import SMALL_FRAME_BYTES, ClientFrames
from fedkafka.proxy.core.connection import HELD_WHOLE_BYTES
from fedkafka.proxy.core.limits import ByteBudget, Limits
from proxy.staging_review_helpers import _fed_a_read_a_turn, _large_frame_by_the_waiting_path

_SEGMENT = 1448  # a TCP segment's payload on a 1500-byte MTU: what a trickling client's bytes arrive as


# DEFECT (s33 rv1, memory): a large frame trickled alone grows the staging buffer at its 16 KiB end (240 KiB
# charged) although the connection takes every staged byte into the frame's own buffer; refused, it pauses there
@pytest.mark.parametrize("size", [20 * 1024, HELD_WHOLE_BYTES, 1024 * 1024])
@pytest.mark.parametrize("spare", [True, False])
def test_a_large_frame_that_trickles_in_alone_keeps_the_staging_buffer_at_16_kib_uncharged_and_unpaused(size, spare):
    """One frame over 16 KiB, its bytes arriving a TCP segment at a time (one read each, the connection's reads
    running in between, as on asyncio's loop), nothing after it: the staging buffer holds its size and first
    ARRIVED_BEFORE_HELD bytes, the connection takes them out into the frame's own buffer, and the rest is received
    there. The staging buffer stays at 16 KiB and charges nothing (the default budget spares a growth); with a
    budget that spares none, reading is never paused (the connection waits for bytes throughout). The frame
    arrives whole. Fails on s33-staging: the buffer grows to 256 KiB at its end (245 760 bytes charged), or, refused,
    reading pauses once per frame."""
    payload = random.Random(size).randbytes(size)
    data = struct.pack(">i", size) + payload
    budget = ByteBudget(Limits().max_buffered_bytes if spare else 0)

    got, largest, most_charged, pauses = asyncio.run(
        _fed_a_read_a_turn(_large_frame_by_the_waiting_path, data, budget, segment=_SEGMENT))
    assert got == payload
    assert (largest, most_charged, pauses) == (SMALL_FRAME_BYTES, 0, 0)


@pytest.mark.parametrize("small", [100, 5000])
@pytest.mark.parametrize("spare", [True, False])
def test_a_large_frame_trickling_in_after_a_small_one_does_not_grow_the_staging_buffer(small, spare):
    """s33-fix1: as above, after a small frame (taken whole): the large frame's size prefix does not start the
    staging buffer, so reading reaches its end with fewer than ARRIVED_BEFORE_HELD of its bytes staged and the
    reader still waiting for them. They are the frame being taken, not a backlog: the buffer does not grow (the
    next read moves them to its front once, as on 7237ffc); that read fills it with the frame's first bytes, so
    reading pauses once (no room to give) and the reader, taking them into the frame's own buffer, resumes it, as
    7237ffc when the budget refused its growth. Failed on s33-rv1 with the growth spared (grown to 256 KiB,
    245 760 bytes charged)."""
    size = 20 * 1024
    first = random.Random(small).randbytes(small)
    payload = random.Random(size).randbytes(size)
    data = struct.pack(">i", small) + first + struct.pack(">i", size) + payload
    budget = ByteBudget(Limits().max_buffered_bytes if spare else 0)
    plenty = ByteBudget(1 << 40)

    async def read_both(frames: ClientFrames) -> list[bytes]:
        await frames.until_buffered(4 + small)
        return [frames.take_whole(1 << 30, plenty, plenty), await _large_frame_by_the_waiting_path(frames)]

    got, largest, most_charged, pauses = asyncio.run(_fed_a_read_a_turn(read_both, data, budget, segment=_SEGMENT))
    assert got == [first, payload]
    assert (largest, most_charged, pauses) == (SMALL_FRAME_BYTES, 0, 1)
