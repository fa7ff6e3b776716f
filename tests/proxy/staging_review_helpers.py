"""Set-up shared by the staging buffer's review tests (docs/DESIGN.md §4.12; test_s33_rv1_review_staging_unit,
test_s33_rv7_review_staging_unit): a reader taking a large frame as `ClientConnection` does, and a socket feeding
`ClientFrames` one read per loop turn. Not a test module: pytest collects it nowhere."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fedkafka.proxy.core.client_frames import SMALL_FRAME_BYTES, ClientFrames
from fedkafka.proxy.core.connection import ARRIVED_BEFORE_HELD, HELD_WHOLE_BYTES, READ_CHUNK_BYTES
from fedkafka.proxy.core.limits import ByteBudget
from proxy.test_client_frames_unit import _Transport
from proxy.test_limits_unit import GUARD_S

T = TypeVar("T")


async def _large_frame_by_the_waiting_path(frames: ClientFrames) -> bytes:
    """`ClientConnection._read_frame`'s reads of a frame over SMALL_FRAME_BYTES (the budgets never short): its
    first byte, its size, its first ARRIVED_BEFORE_HELD bytes staged, then its body received into buffers of its
    own (whole up to HELD_WHOLE_BYTES, else in READ_CHUNK_BYTES chunks)."""
    await frames.until_buffered(1)
    await frames.until_buffered(4)
    size = frames.take_size()
    assert size > SMALL_FRAME_BYTES
    await frames.until_buffered(ARRIVED_BEFORE_HELD)
    if size <= HELD_WHOLE_BYTES:
        return bytes(await frames.read_frame(size))
    chunks = []
    got = 0
    while got < size:
        chunk = bytearray(min(size - got, READ_CHUNK_BYTES))
        await frames.receive_into(chunk)
        chunks.append(bytes(chunk))
        got += len(chunk)
    return b"".join(chunks)


async def _fed_a_read_a_turn(read: Callable[[ClientFrames], Awaitable[T]], data: bytes, budget: ByteBudget,
                             segment: int | None = None) -> tuple[T, int, int, int]:
    """`read` (the connection's task) run on `ClientFrames` charging `budget` while the socket reads `data` into
    it, one read a loop turn while reading is not paused, each read what the staging buffer gives, at most `segment`
    bytes (None: no limit). Returns what `read` returned, the staging buffer's largest size, the most `budget` had
    charged and the pauses of reading."""
    transport = _Transport()
    frames = ClientFrames(lambda r, w: None, budget=budget)
    frames.transport = transport  # type: ignore[assignment]
    reader = asyncio.ensure_future(read(frames))
    at = largest = most_charged = 0
    async with asyncio.timeout(GUARD_S):
        while not reader.done():
            await asyncio.sleep(0)  # the connection's task runs between the socket's reads
            if transport.reading and at < len(data):
                view = frames.get_buffer(-1)
                n = min(len(view), len(data) - at, len(data) if segment is None else segment)
                view[:n] = data[at:at + n]
                del view
                frames.buffer_updated(n)
                at += n
                largest = max(largest, len(frames._staging))
                most_charged = max(most_charged, budget.used)
    return reader.result(), largest, most_charged, transport.pauses
