"""Review rv5 of 0ab7e22 (a client connection's staging buffer grows a second step, to 1 MiB): failing tests.

1. A connection held back by its request slots or the budgets (a producer faster than its broker: the case the
   second step is for) sits with its staging buffer full, and takes one frame each time a slot or bytes come
   free. Reading is resumed at once, and the socket's read then needs room at the buffer's end: `get_buffer`
   moves the whole unread rest to the front first. At 1 MiB that is ~960 KiB moved for each 64 KiB request read
   (~15 bytes moved per byte read; ~140 us a request on the review machine, ~31 us at 256 KiB before 0ab7e22,
   which already moved 3 bytes per byte read). The second step made the steady state of a backpressured
   producer ~4.5 times dearer in copies, where it was meant to make producing cheaper.
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from fedkafka.proxy.core.client_frames import STAGING_BYTES, ClientFrames
from fedkafka.proxy.core.limits import ByteBudget, Limits
from proxy.test_client_frames_unit import (
    _answered_whole_and_returned,
    _frames,
    _sent_until_the_staging_is_full,
    _Transport,
)


def _moved_before_read(frames: ClientFrames) -> int:
    """The unread bytes `get_buffer` moves to the front of the staging buffer before the socket reads (it does
    when the buffer's end is reached and no frame's own buffer is being received into)."""
    if frames._target is None and frames._staging and frames._end == len(frames._staging):
        return frames._end - frames._start
    return 0


def test_a_full_staging_buffer_taken_one_frame_at_a_time_moves_at_most_a_byte_for_each_byte_read():
    """A pipelining producer's 64 KiB requests, its staging buffer grown to 1 MiB and full; the connection takes
    one frame at a time (a request slot came free), the socket reading whenever it is let. Every frame arrives
    whole, and the bytes moved to the buffer's front are at most the bytes read into it (a buffer more: the
    last read is cut short by the end of the data). Fails on 0ab7e22: each
    frame taken resumes reading, which moves the ~960 KiB still unread to read 64 KiB (~15 bytes per byte)."""
    payloads = [random.Random(i).randbytes(64 * 1024) for i in range(64)]
    data = b"".join(struct.pack(">i", len(p)) + p for p in payloads)
    spare = ByteBudget(1 << 30)
    counts = {"moved": 0, "read": 0}

    async def scenario():
        transport = _Transport()
        frames = ClientFrames(lambda r, w: None, budget=ByteBudget(Limits().max_buffered_bytes))
        frames.transport = transport  # type: ignore[assignment]
        at = 0

        def socket_reads() -> None:  # as a socket that has every byte: while it is let read
            nonlocal at
            while transport.reading and at < len(data):
                counts["moved"] += _moved_before_read(frames)
                view = frames.get_buffer(-1)
                n = min(len(view), len(data) - at)
                view[:n] = data[at:at + n]
                del view
                frames.buffer_updated(n)
                counts["read"] += n
                at += n

        socket_reads()
        assert len(frames._staging) == STAGING_BYTES and frames.buffered() == STAGING_BYTES
        assert not transport.reading  # full: the connection takes nothing until a slot comes free
        counts["moved"] = counts["read"] = 0
        taken: list[bytes] = []
        while len(taken) < len(payloads):
            frame = frames.take_whole(1 << 24, spare, spare)  # a slot came free: one frame
            assert frame is not None, f"frame {len(taken)} not staged whole"
            taken.append(frame)
            socket_reads()
        assert taken == payloads
        assert at == len(data)

    asyncio.run(scenario())
    assert counts["read"] > 2 * STAGING_BYTES
    # one buffer of slack: the last read may be cut short by the end of the data after a full move
    assert counts["moved"] <= counts["read"] + STAGING_BYTES, counts


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_producer_held_back_by_its_request_slot_moves_at_most_a_staged_byte_for_each_byte_read(loop, monkeypatch):
    """Over a socket: one request slot, 48 pipelined 64 KiB requests sent at once, answered one at a time (a
    broker slower than the client). The staging buffer grows to 1 MiB and fills; each answer lets one frame be
    taken. Every frame arrives whole and in order, and the bytes moved to the buffer's front are at most the bytes
    the socket read into it (a buffer more: the last reads are cut short by the end of the data). Fails on
    0ab7e22: ~10-15 bytes moved per byte read (each 64 KiB read behind ~960 KiB moved)."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    frames = _frames([64 * 1024] * 48, 21)
    counts = {"moved": 0, "read": 0}
    get_buffer, buffer_updated = ClientFrames.get_buffer, ClientFrames.buffer_updated

    def counted_get_buffer(self, sizehint):
        counts["moved"] += _moved_before_read(self)
        return get_buffer(self, sizehint)

    def counted_buffer_updated(self, nbytes):
        if self._target is None:
            counts["read"] += nbytes
        buffer_updated(self, nbytes)

    monkeypatch.setattr(ClientFrames, "get_buffer", counted_get_buffer)
    monkeypatch.setattr(ClientFrames, "buffer_updated", counted_buffer_updated)

    async def scenario():
        d, budget, server, conns, r, w = await _sent_until_the_staging_is_full(frames)
        assert d.started == [1] and len(conns[0].reader._staging) == STAGING_BYTES
        await _answered_whole_and_returned(d, frames, r, budget)
        w.close()
        server.close()

    run(scenario())
    assert counts["read"] > 2 * STAGING_BYTES  # staged: the rest of the last frames may come straight
    # one buffer of slack: the last reads may be cut short by the end of the data after a full move
    assert counts["moved"] <= counts["read"] + STAGING_BYTES, counts
