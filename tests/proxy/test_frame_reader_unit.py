"""The client connections' reader (`connection.FrameReader`): asyncio's StreamReader less one copy per frame.
It must read exactly what StreamReader reads, however the bytes arrive, and resume a paused socket."""

from __future__ import annotations

import asyncio
import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.proxy.core.connection import FrameReader, start_server

GUARD_S = 20.0  # only against a hang


async def _read_all(reader: asyncio.StreamReader, data: bytes, cuts: list[int], reads: list[int]) -> list:
    """Feed `data` cut at `cuts`, reading `reads` sizes as soon as each is there; what each read returned."""
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out: list = []
    wanted = iter(reads)
    n = next(wanted, None)
    for piece in pieces:
        reader.feed_data(piece)
        while n is not None and len(reader._buffer) >= n:  # type: ignore[attr-defined]
            out.append(await reader.readexactly(n))
            n = next(wanted, None)
    reader.feed_eof()
    if n is not None:
        try:
            out.append(await reader.readexactly(n))
        except asyncio.IncompleteReadError as e:
            out.append(("incomplete", e.partial, e.expected))
    out.append(bytes(reader._buffer))  # type: ignore[attr-defined]
    return out


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=6),
       reads=st.lists(st.integers(0, 1500), max_size=6))
def test_it_reads_exactly_what_a_stream_reader_reads(data, cuts, reads):
    cuts = sorted({c for c in cuts if 0 < c < len(data)})

    async def both():
        return (await _read_all(FrameReader(), data, cuts, reads),
                await _read_all(asyncio.StreamReader(), data, cuts, reads))

    mine, theirs = asyncio.run(both())
    assert mine == theirs


def test_frames_larger_than_its_limit_arrive_whole_and_in_order_over_a_socket():
    """The client sends far more than the reader buffers (it pauses the socket at twice its limit): every frame
    still arrives whole, so reading resumed each time."""
    rng = random.Random(7)
    frames = [rng.randbytes(rng.choice([10, 1000, 5000, 70_000])) for _ in range(60)]

    async def scenario():
        got: list[bytes] = []
        done = asyncio.Event()

        async def on_client(reader, writer):
            assert isinstance(reader, FrameReader)
            for _ in frames:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                got.append(await reader.readexactly(size))
            writer.close()
            done.set()

        server = await start_server(on_client, "127.0.0.1", 0, limit=4096)
        port = server.sockets[0].getsockname()[1]
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"".join(struct.pack(">i", len(f)) + f for f in frames))
        async with asyncio.timeout(GUARD_S):
            await done.wait()
        w.close()
        server.close()
        return got

    assert asyncio.run(scenario()) == frames
