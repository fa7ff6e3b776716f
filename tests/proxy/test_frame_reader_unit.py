"""The client connections' reader (`connection.FrameReader`): asyncio's StreamReader less one copy per frame.
It must read exactly what StreamReader reads, however the bytes arrive, and resume a paused socket."""

from __future__ import annotations

import asyncio
import random
import struct

from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.proxy.core.connection import ClientConnection, FrameReader, start_server
from fedkafka.proxy.core.limits import ByteBudget, Limits

GUARD_S = 20.0  # only against a hang


async def _read_all(reader: asyncio.StreamReader, data: bytes, cuts: list[int], reads: list[tuple[bool, int]]) -> list:
    """Feed `data` cut at `cuts`, making `reads` ((exactly?, size): readexactly or read) as soon as each cannot
    wait; what each read returned, and what was left."""
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out: list = []
    wanted = iter(reads)
    step = next(wanted, None)

    def ready() -> bool:
        held = len(reader._buffer)  # type: ignore[attr-defined]
        return step is not None and (held >= step[1] if step[0] else held > 0 or step[1] == 0)

    for piece in pieces:
        reader.feed_data(piece)
        while ready():
            assert step is not None
            out.append(await (reader.readexactly if step[0] else reader.read)(step[1]))
            step = next(wanted, None)
    reader.feed_eof()
    if step is not None:
        try:
            out.append(await (reader.readexactly if step[0] else reader.read)(step[1]))
        except asyncio.IncompleteReadError as e:
            out.append(("incomplete", e.partial, e.expected))
    out.append(bytes(reader._buffer))  # type: ignore[attr-defined]
    return out


def test_a_read_of_more_than_is_buffered_copies_once():
    """Reading a large frame in chunks asks for more than the socket has delivered so far: that read takes what is
    there through the one-copy path too (broken once: only a read of less than was buffered did, about half of
    a large frame's chunks)."""
    async def scenario():
        reader = FrameReader()
        taken: list[int] = []
        take = reader._take
        reader._take = lambda n: taken.append(n) or take(n)  # type: ignore[method-assign]
        reader.feed_data(b"a" * 100)
        first = await reader.read(65536)
        waiting = asyncio.ensure_future(reader.read(65536))  # nothing buffered: waits for the next bytes
        await asyncio.sleep(0)
        reader.feed_data(b"b" * 50)
        return first, await waiting, taken

    first, second, taken = asyncio.run(scenario())
    assert (first, second, taken) == (b"a" * 100, b"b" * 50, [100, 50])


@settings(max_examples=examples(300), deadline=None)
@given(data=st.binary(min_size=0, max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=6),
       reads=st.lists(st.tuples(st.booleans(), st.integers(0, 1500)), max_size=6))
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


def test_a_client_connection_over_it_gets_large_and_small_frames_whole_with_their_bytes_held_and_given_back():
    """Through the server's reader: a frame of many chunks (read piece by piece as it arrives), one just over a
    chunk, and small ones; each reaches the dispatcher whole, and every byte held comes back."""
    from proxy.test_limits_unit import _HeldDispatcher, frame_of

    rng = random.Random(11)
    sizes = [600 * 1024, 64 * 1024 + 100, 40, 200 * 1024, 12]
    frames = [frame_of(c, size) for c, size in enumerate(sizes, 1)]
    frames = [f[:16] + rng.randbytes(len(f) - 16) for f in frames]  # not zeros: a misplaced byte would show

    async def scenario():
        d = _HeldDispatcher()
        limits = Limits()
        budget = ByteBudget(limits.max_buffered_bytes)
        conns: list[ClientConnection] = []

        async def on_client(reader, writer):
            conns.append(conn := ClientConnection(reader, writer, d, limits, budget))
            await conn.run()

        server = await start_server(on_client, "127.0.0.1", 0, limit=64 * 1024)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"".join(frames))
        async with asyncio.timeout(GUARD_S):
            while len(d.started) < len(frames):
                await asyncio.sleep(0.01)
        assert [d.frames[c] for c in d.started] == [f[4:] for f in frames]
        assert budget.used == sum(sizes)
        for c in d.started:
            d.answer(c)
        async with asyncio.timeout(GUARD_S):
            got = [struct.unpack(">ii", await r.readexactly(8))[1] for _ in frames]
        assert got == [1, 2, 3, 4, 5]
        for _ in range(100):
            if budget.used == 0:
                break
            await asyncio.sleep(0.01)
        assert budget.used == 0 and conns[0].held.used == 0
        w.close()
        server.close()

    asyncio.run(scenario())


def test_pipelined_frames_buffered_whole_are_taken_one_copy_each_in_order_and_held_within_the_budget():
    """Frames already buffered whole are taken by the connection in one piece each (`_take(size, 4)`: the prefix
    dropped, one copy, no clock), in order and whole; their bytes are held from the connection's budget, and a
    frame the budget has no room for waits (on the waiting path) until answers give bytes back."""
    from proxy.test_limits_unit import _HeldDispatcher, frame_of

    rng = random.Random(5)
    sizes = [rng.choice([12, 300, 2000, 9000]) for _ in range(24)]
    frames = [frame_of(c, size) for c, size in enumerate(sizes, 1)]
    frames = [f[:16] + rng.randbytes(len(f) - 16) for f in frames]
    total = sum(len(f) for f in frames)
    room = sum(sizes[:10])  # the connection's budget: the first ten frames, not the eleventh

    async def scenario():
        d = _HeldDispatcher()
        takes: list[tuple[int, int]] = []
        conns: list[ClientConnection] = []
        buffered = asyncio.Event()

        async def on_client(reader, writer):
            take = reader._take
            reader._take = lambda n, skip=0: takes.append((n, skip)) or take(n, skip)
            async with asyncio.timeout(GUARD_S):
                while len(reader._buffer) < total:  # every frame here before the connection reads one
                    await asyncio.sleep(0.005)
            buffered.set()
            conns.append(conn := ClientConnection(reader, writer, d, Limits(max_inflight_bytes=room)))
            await conn.run()

        server = await start_server(on_client, "127.0.0.1", 0, limit=256 * 1024)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"".join(frames))
        async with asyncio.timeout(GUARD_S):
            await buffered.wait()
            while len(d.started) < 10:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        assert d.started == list(range(1, 11))  # the eleventh does not fit beside them
        assert conns[0].held.used == room
        assert takes[:10] == [(size, 4) for size in sizes[:10]]
        assert takes[10:] == [(1, 0), (3, 0)]  # the eleventh's prefix, on the waiting path; its body waits
        answered = 0
        async with asyncio.timeout(GUARD_S):
            while answered < len(frames):
                for c in d.started[answered:]:
                    d.answer(c)
                answered = len(d.started)
                assert conns[0].held.used <= room + 8 * answered  # answers' bytes count until written
                await asyncio.sleep(0.01)
            got = [struct.unpack(">ii", await r.readexactly(8))[1] for _ in frames]
        assert got == list(range(1, len(frames) + 1))
        assert [d.frames[c] for c in d.started] == [f[4:] for f in frames]
        w.close()
        server.close()

    asyncio.run(scenario())
