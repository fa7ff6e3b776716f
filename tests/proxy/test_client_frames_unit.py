"""The client connections' reader (`client_frames.ClientFrames`, a BufferedProtocol): frames arrive whole however
their bytes are cut, a large frame is received into a buffer of its own size, and reading pauses while the
connection takes nothing (backpressure)."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import tracemalloc

import pytest
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.protocol import records
from fedkafka.proxy.core import client_frames
from fedkafka.proxy.core.client_frames import (
    SMALL_FRAME_BYTES,
    STAGING_BYTES,
    STAGING_FIRST_BYTES,
    ClientFrames,
    IncompleteFrame,
    start_server,
)
from fedkafka.proxy.core.connection import HELD_WHOLE_BYTES, READ_CHUNK_BYTES, ClientConnection
from fedkafka.proxy.core.limits import ByteBudget, Limits
from fedkafka.proxy.plan import CloseConnection
from proxy.test_limits_unit import GUARD_S, _HeldDispatcher, _settle, closed_by_peer, frame_of


class _Transport:
    """Just enough of a transport for ClientFrames without a socket: it records pause and resume."""

    def __init__(self):
        self.reading = True
        self.pauses = 0

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        assert self.reading
        self.reading, self.pauses = False, self.pauses + 1

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True


async def _feed(frames: ClientFrames, transport: _Transport, data: bytes, cuts: list[int]) -> None:
    """The bytes as the socket would give them: each piece into get_buffer's view (at most its length), never
    while reading is paused, the connection's reads running in between."""
    at = 0
    piece_ends = iter([*cuts, len(data)])
    end = next(piece_ends)
    while at < len(data):
        while not transport.reading:
            await asyncio.sleep(0)
        view = frames.get_buffer(-1)
        assert len(view) > 0  # an empty buffer is a fatal error for asyncio's and uvloop's transports
        n = min(len(view), end - at)
        view[:n] = data[at:at + n]
        del view
        frames.buffer_updated(n)
        at += n
        if at == end and at < len(data):
            end = next(piece_ends)
        await asyncio.sleep(0)
    frames.eof_received()


async def _read_frames(frames: ClientFrames) -> list[bytes]:
    """Frames as the connection reads them: size prefix from staging, then the body."""
    out = []
    while True:
        try:
            await frames.until_buffered(4)
        except IncompleteFrame as e:
            assert e.got == 0
            return out
        (size,) = struct.unpack(">i", frames.take(4))
        out.append(bytes(await frames.read_frame(size)))


@settings(max_examples=examples(200), deadline=None)
@given(sizes=st.lists(st.sampled_from([0, 1, 7, 300, STAGING_FIRST_BYTES - 4, STAGING_FIRST_BYTES, STAGING_BYTES - 4,
                                      STAGING_BYTES, 40_000, 70_000]), max_size=6),
       cuts=st.lists(st.integers(1, 200_000), max_size=12), seed=st.integers(0, 1000))
def test_frames_arrive_whole_and_in_order_however_their_bytes_are_cut(sizes, cuts, seed):
    rng = random.Random(seed)
    bodies = [rng.randbytes(size) for size in sizes]
    data = b"".join(struct.pack(">i", len(b)) + b for b in bodies)
    cuts = sorted({c for c in cuts if c < len(data)})

    async def scenario():
        transport = _Transport()
        frames = ClientFrames(lambda r, w: None)
        frames.transport = transport  # type: ignore[assignment]
        feeder = asyncio.create_task(_feed(frames, transport, data, cuts))
        got = await _read_frames(frames)
        await feeder
        return got

    assert asyncio.run(scenario()) == bodies


def test_a_frame_larger_than_the_staging_buffer_lands_in_a_buffer_of_its_own_size_and_bytes_after_it_do_not():
    """Most of a 70 000-byte frame is received straight into its own buffer (the view the connection gets is of
    that buffer, which has exactly the frame's size); the next frame's bytes go to the staging buffer."""
    rng = random.Random(3)
    large, small = rng.randbytes(70_000), rng.randbytes(100)
    data = struct.pack(">i", len(large)) + large + struct.pack(">i", len(small)) + small

    async def scenario():
        transport = _Transport()
        frames = ClientFrames(lambda r, w: None)
        frames.transport = transport  # type: ignore[assignment]
        feeder = asyncio.create_task(_feed(frames, transport, data, [1000, 30_000, 70_004]))
        await frames.until_buffered(4)
        size = struct.unpack(">i", frames.take(4))[0]
        first = await frames.read_frame(size)
        assert isinstance(first, memoryview) and first.readonly
        assert type(first.obj) is bytearray and len(first.obj) == size and first == large
        await frames.until_buffered(4)
        second = await frames.read_frame(struct.unpack(">i", frames.take(4))[0])
        await feeder
        return second

    assert asyncio.run(scenario()) == small


def test_the_staging_buffer_grows_in_two_steps_then_reading_pauses_when_it_is_full_and_resumes_once_half_is_taken():
    """Full, reading stays paused while more than half the buffer is unread (the move of the unread rest to the
    front would cost more than the read it makes room for: rv5) and resumes once half is taken."""
    async def scenario():
        transport = _Transport()
        budget = ByteBudget(Limits().max_buffered_bytes)
        frames = ClientFrames(lambda r, w: None, budget=budget)
        frames.transport = transport  # type: ignore[assignment]
        data = bytes(range(256)) * (STAGING_BYTES // 256 + 10)
        sizes = []
        while transport.reading:
            view = frames.get_buffer(-1)
            sizes.append(len(view))
            view[:] = data[frames.buffered():frames.buffered() + len(view)]
            del view
            frames.buffer_updated(sizes[-1])
        # 16 KiB first (a trickle keeps it), then 256 KiB, then 1 MiB
        assert sizes == [SMALL_FRAME_BYTES, STAGING_FIRST_BYTES - SMALL_FRAME_BYTES,
                         STAGING_BYTES - STAGING_FIRST_BYTES]
        assert frames.buffered() == STAGING_BYTES
        assert budget.used == STAGING_BYTES - SMALL_FRAME_BYTES  # the growths are charged; the first 16 KiB are not
        assert frames.take(100) == data[:100]
        assert not transport.reading  # more than half unread
        half = STAGING_BYTES // 2
        assert frames.take(half - 101) == data[100:half - 1]
        assert not transport.reading  # one byte more than half unread
        assert frames.take(1) == data[half - 1:half]
        assert transport.reading
        view = frames.get_buffer(-1)
        assert len(view) == half  # the unread half moved to the front: room for what was taken
        del view
        assert frames.take(STAGING_BYTES - half) == data[half:STAGING_BYTES]
        frames.release_staging()
        assert budget.used == 0
        assert len(frames.get_buffer(-1)) == SMALL_FRAME_BYTES  # let go when empty; a new one starts small

    asyncio.run(scenario())


def test_second_growths_take_at_most_a_quarter_of_the_budget_so_a_new_connection_still_grows_once():
    """A budget of 4 MiB: the first connection grows twice (1008 KiB charged, within the quarter); the second's
    and third's second steps would pass the quarter and are refused, their first steps (within the half) are not.
    Without the quarter rule the second grew to 1 MiB too and left the third at 16 KiB (the half taken)."""
    async def scenario():
        budget = ByteBudget(4 * 1024 * 1024)
        sizes = []
        for _ in range(3):
            transport = _Transport()
            frames = ClientFrames(lambda r, w: None, budget=budget)
            frames.transport = transport  # type: ignore[assignment]
            _read_until_paused(frames, transport)
            sizes.append(len(frames._staging))
        return sizes, budget.used

    sizes, used = asyncio.run(scenario())
    assert sizes == [STAGING_BYTES, STAGING_FIRST_BYTES, STAGING_FIRST_BYTES]
    assert used == (STAGING_BYTES - SMALL_FRAME_BYTES) + 2 * (STAGING_FIRST_BYTES - SMALL_FRAME_BYTES)


def _pauses_reading_pipelined(frames: ClientFrames, transport: _Transport, data: bytes) -> tuple[int, list[bytes]]:
    """`data` (size-prefixed frames) handed over as a socket that always has more would (every read fills the
    buffer it is given), the connection taking every frame staged whole between reads: the reader's pauses, and
    the frames taken."""
    budget = ByteBudget(1 << 30)
    taken: list[bytes] = []
    at = 0
    while at < len(data):
        if transport.reading:
            view = frames.get_buffer(-1)
            n = min(len(view), len(data) - at)
            view[:n] = data[at:at + n]
            del view
            frames.buffer_updated(n)
            at += n
            continue
        before = len(taken)
        while (frame := frames.take_whole(1 << 24, ByteBudget(1 << 30), budget)) is not None:
            taken.append(frame)
        assert len(taken) > before, "reading paused with no whole frame staged"
    while (frame := frames.take_whole(1 << 24, ByteBudget(1 << 30), budget)) is not None:
        taken.append(frame)
    return transport.pauses, taken


@pytest.mark.parametrize("spare", [True, False])
def test_a_pipelining_client_fills_and_pauses_the_staging_buffer_once_a_mebibyte_not_once_a_quarter(spare):
    """A producer pipelining 64 KiB requests faster than they are taken filled the 256 KiB staging buffer every
    three requests: each fill a pause and a resume of reading (two system calls) and a read. Grown a second step,
    to 1 MiB, when the budget spares it (charged), it fills every fifteen; refused, it stays at 256 KiB (the first
    growth still charged) and every frame still arrives whole. Counted, not timed (bench/README.md)."""
    payloads = [random.Random(i).randbytes(64 * 1024) for i in range(48)]
    data = b"".join(struct.pack(">i", len(p)) + p for p in payloads)
    # refused: the budget spares the first growth (half of it stays free after it), not the second
    budget = ByteBudget(4 * STAGING_BYTES if spare else 2 * (STAGING_FIRST_BYTES - SMALL_FRAME_BYTES) + 4096)

    async def scenario():
        transport = _Transport()
        frames = ClientFrames(lambda r, w: None, budget=budget)
        frames.transport = transport  # type: ignore[assignment]
        pauses, taken = _pauses_reading_pipelined(frames, transport, data)
        assert taken == payloads
        assert len(frames._staging) == (STAGING_BYTES if spare else STAGING_FIRST_BYTES)
        assert budget.used == len(frames._staging) - SMALL_FRAME_BYTES
        frames.release_staging()
        assert budget.used == 0
        return pauses

    pauses = asyncio.run(scenario())
    assert pauses <= (4 if spare else 16)  # 48 frames of 64 KiB: 15 a fill at 1 MiB, 3 at 256 KiB


def test_staged_bytes_are_moved_without_a_copy_of_them_on_the_side():
    """The unread tail moved to the front of a full staging buffer, and a large frame's staged head moved into its
    own buffer, are each one move: no buffer of their size is allocated on the way (a bytearray slice assignment
    copies any value that is not a bytearray into a new one first: two copies, bench/README.md "Native costs").
    Counted with tracemalloc, not timed."""
    tail = 100_000

    async def scenario():
        transport = _Transport()
        frames = ClientFrames(lambda r, w: None)
        frames.transport = transport  # type: ignore[assignment]
        data = random.Random(5).randbytes(STAGING_BYTES)
        while transport.reading:
            view = frames.get_buffer(-1)
            n = len(view)
            view[:] = data[frames.buffered():frames.buffered() + n]
            del view
            frames.buffer_updated(n)
        frames.take(STAGING_BYTES - tail)
        own = bytearray(tail // 2)
        tracemalloc.start()
        try:
            view = frames.get_buffer(-1)  # full at its end: the tail moves to the front
            moved = tracemalloc.get_traced_memory()[1]
            assert len(view) == STAGING_BYTES - tail
            del view
            tracemalloc.reset_peak()
            await frames.receive_into(own)  # half the tail is a frame's head: into its own buffer
            received = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert moved < 4096 and received < 4096  # a few small objects; the old copies were 100 000 and 50 000
        assert own == data[STAGING_BYTES - tail:STAGING_BYTES - tail // 2]
        assert frames.take(tail // 2) == data[STAGING_BYTES - tail // 2:]

    asyncio.run(scenario())


# the budget, and the size the staging buffer is full at: both growths spared, the second refused, none spared
_FULL_AT = {"twice": (4 * STAGING_BYTES, STAGING_BYTES),
            "once": (2 * (STAGING_FIRST_BYTES - SMALL_FRAME_BYTES) + 4096, STAGING_FIRST_BYTES),
            "never": (0, SMALL_FRAME_BYTES)}


@pytest.mark.parametrize("grows", list(_FULL_AT))
def test_reading_is_not_resumed_while_the_staging_buffer_is_full_even_when_a_read_takes_nothing(grows):
    """A zero-size frame's body (`read_frame(0)`) or an empty buffer (`receive_into`) takes no byte: with the
    staging buffer full (at 1 MiB, at 256 KiB when the budget refused the second growth, or at 16 KiB when it
    refused the first) reading stays paused. Resumed,
    the socket's next read would be given an empty buffer, a fatal error for asyncio's and uvloop's transports
    (the connection is aborted). Reachable: a zero-size frame's body is read after its hold, which waits while
    other connections wait for the process budget, and meanwhile the socket refills the 4 bytes its size took."""
    async def scenario():
        transport = _Transport()
        limit, full_at = _FULL_AT[grows]
        frames = ClientFrames(lambda r, w: None, budget=ByteBudget(limit))
        frames.transport = transport  # type: ignore[assignment]
        _read_until_paused(frames, transport)
        assert frames.buffered() == len(frames._staging) == full_at
        assert await frames.read_frame(0) == b""
        assert not transport.reading
        await frames.receive_into(bytearray())
        assert not transport.reading
        assert len(frames.take(1)) == 1 and not transport.reading  # more than half still unread: rv5
        assert len(frames.take(full_at // 2 - 1)) == full_at // 2 - 1
        assert transport.reading and len(frames.get_buffer(-1)) == full_at // 2

    asyncio.run(scenario())


@pytest.mark.parametrize("grows", list(_FULL_AT))
@pytest.mark.parametrize("waits", ["until_buffered", "receive_into"])
def test_a_connection_waiting_for_bytes_not_all_staged_resumes_reading_while_more_than_half_is_unread(grows, waits):
    """A full staging buffer with one byte taken stays paused (more than half unread: rv5), but a connection that
    waits for more than is staged (a frame's rest, in the staging buffer or in a buffer of its own) resumes reading
    and gets its bytes: no wait for bytes depends on half the buffer being taken (a frame larger than half of it
    would wait forever)."""
    async def scenario():
        transport = _Transport()
        limit, full_at = _FULL_AT[grows]
        frames = ClientFrames(lambda r, w: None, budget=ByteBudget(limit))
        frames.transport = transport  # type: ignore[assignment]
        data = random.Random(7).randbytes(full_at + 10)
        at = 0
        while transport.reading:
            view = frames.get_buffer(-1)
            n = len(view)
            view[:] = data[at:at + n]
            del view
            frames.buffer_updated(n)
            at += n
        assert at == full_at and frames.take(1) == data[:1] and not transport.reading
        own = bytearray(full_at)
        wait = asyncio.ensure_future(frames.until_buffered(full_at) if waits == "until_buffered"
                                     else frames.receive_into(own))
        await asyncio.sleep(0)
        assert transport.reading and not wait.done()
        view = frames.get_buffer(-1)
        view[:1] = data[at:at + 1]  # the one byte it waits for
        del view
        frames.buffer_updated(1)
        await asyncio.wait_for(wait, GUARD_S)
        got = frames.take(full_at) if waits == "until_buffered" else bytes(own)
        assert got == data[1:full_at + 1]

    asyncio.run(scenario())


def test_a_staging_buffer_the_budget_cannot_spare_stays_small_and_every_frame_still_arrives():
    """With less than half the process budget free for it the staging buffer does not grow (nor is anything
    charged for it): it fills at 16 KiB, reading pauses, and the frames all arrive whole once they are answered."""
    frames = _frames([64] + [9000, 70_000, 30] * 3, 5)

    async def scenario():
        d = _HeldDispatcher()
        budget = ByteBudget(2 * (STAGING_FIRST_BYTES - SMALL_FRAME_BYTES) - 1)  # its half: 1 byte short of the growth
        server, port, conns = await _connection_server(d, Limits(max_inflight_requests=1), budget)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"".join(frames))
        async with asyncio.timeout(GUARD_S):  # full, paused (the first frame taken before it filled or after)
            while not conns or conns[0].writer.transport.is_reading():
                await asyncio.sleep(0.005)
        await _settle()
        assert d.started == [1] and budget.used == 64
        reader = conns[0].reader
        assert len(reader._staging) == SMALL_FRAME_BYTES
        # taken after it filled, the first frame's 68 bytes leave more than half unread: still paused (rv5)
        assert reader.buffered() in (SMALL_FRAME_BYTES, SMALL_FRAME_BYTES - 68)
        assert not conns[0].writer.transport.is_reading()
        await _answered_whole_and_returned(d, frames, r, budget)
        w.close()
        server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_staging_buffers_many_connections_grew_are_charged_until_they_are_let_go(loop):
    """20 connections, each with its one request slot taken and 1.05 MiB more sent: each staging buffer grows in
    two steps, to 256 KiB and then to 1 MiB, and the budget counts both growths of every one (the previous reader
    held them all uncharged; together 19.7 MiB, far below half the 512 MiB budget, so take_spare refuses none).
    Once everything is answered and the connections wait idle for a next request, every charge has come back,
    both steps'. A connection whose buffer does not fill fails with its reader's state, not a bare timeout."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    n, growth = 20, STAGING_BYTES - SMALL_FRAME_BYTES
    # 14 x 79,042 bytes after the first request: more than the 1 MiB buffer holds, so each one fills it
    sent = {k: [frame_of(100 * k + c, size) for c, size in enumerate([64] + [9000, 70_000, 30] * 14, 1)]
            for k in range(n)}

    async def scenario():
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, port, conns = await _connection_server(d, Limits(max_inflight_requests=1), budget)
        clients = []
        for k in range(n):  # one after the other: each fills its staging buffer before the next connects
            clients.append(client := await asyncio.open_connection("127.0.0.1", port))
            client[1].write(b"".join(sent[k]))
            try:
                async with asyncio.timeout(GUARD_S):
                    while len(conns) <= k or conns[k].reader.buffered() < STAGING_BYTES:
                        await asyncio.sleep(0.005)
            except TimeoutError:
                pytest.fail(f"connection {k} of {n}: {_reader_state(conns[k:k + 1], budget)}")
        await _settle()
        assert sorted(d.started) == [100 * k + 1 for k in range(n)]
        assert all(len(c.reader._staging) == STAGING_BYTES for c in conns)
        assert budget.used == n * (64 + growth)
        async with asyncio.timeout(GUARD_S):
            for k in range(n):
                for frame in sent[k]:
                    corr = struct.unpack_from(">i", frame, 8)[0]
                    while corr not in d.answers:
                        await asyncio.sleep(0.002)
                    d.answer(corr)
                    assert struct.unpack(">ii", await clients[k][0].readexactly(8))[1] == corr
        await _settle()
        assert budget.used == 0
        assert all(len(c.reader._staging) == 0 for c in conns)
        for _, w in clients:
            w.close()
        server.close()

    run(scenario())


def _reader_state(conns: list[ClientConnection], budget: ByteBudget) -> str:
    if not conns:
        return "not accepted"
    reader = conns[0].reader
    return (f"{reader.buffered()} bytes staged in {len(reader._staging)}, reading paused: {reader._paused}, "
            f"transport reading: {conns[0].writer.transport.is_reading()}, budget used {budget.used}")


@pytest.mark.parametrize("size", [STAGING_FIRST_BYTES, STAGING_BYTES], ids=["grown once", "grown twice"])
@pytest.mark.parametrize("end", ["reset", "task ended"])
def test_a_grown_staging_buffer_gives_its_charge_back_when_its_connection_ends_with_bytes_staged(end, size):
    """A connection reset, or its task ended, with bytes still staged in a buffer grown once (256 KiB) or twice
    (1 MiB): the buffer goes and the budget gets its growth back, both steps' (nothing reads those bytes any
    more). Fails if the release missed a step: 240 KiB or 768 KiB would stay charged."""
    async def scenario():
        budget = ByteBudget(Limits().max_buffered_bytes)
        frames = ClientFrames(_end_when_told, budget=budget)
        frames.connection_made(_Transport())
        await asyncio.sleep(0)  # the connection's task starts
        filled = 0
        while len(frames._staging) < size:  # filled, it grows: at 16 KiB, then (to grow twice) at 256 KiB
            view = frames.get_buffer(-1)
            n = len(view)
            view[:] = b"x" * n
            del view
            frames.buffer_updated(n)
            filled += n
        view = frames.get_buffer(-1)  # the grown buffer's next bytes
        view[:SMALL_FRAME_BYTES] = b"x" * SMALL_FRAME_BYTES
        del view
        frames.buffer_updated(SMALL_FRAME_BYTES)
        assert len(frames._staging) == size and frames.buffered() == filled + SMALL_FRAME_BYTES
        assert budget.used == size - SMALL_FRAME_BYTES
        if end == "reset":
            frames.connection_lost(ConnectionResetError())
        else:
            _TOLD[-1].set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert budget.used == 0 and frames.buffered() == 0

    asyncio.run(scenario())


_TOLD: list[asyncio.Future] = []


async def _end_when_told(reader, writer) -> None:
    _TOLD.append(told := asyncio.get_running_loop().create_future())
    await told


def _frames(sizes: list[int], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = [frame_of(c, size) for c, size in enumerate(sizes, 1)]
    return [f[:16] + rng.randbytes(len(f) - 16) for f in out]  # not zeros: a misplaced byte would show


async def _connection_server(d, limits: Limits, budget: ByteBudget, **kwargs):
    conns: list[ClientConnection] = []

    async def on_client(reader, writer):
        assert isinstance(reader, ClientFrames)
        conns.append(conn := ClientConnection(reader, writer, d, limits, budget))
        await conn.run()

    server = await start_server(on_client, "127.0.0.1", 0, budget=budget, **kwargs)  # as server.py: one budget
    return server, server.sockets[0].getsockname()[1], conns


async def _grown_by_two_requests(d, seed: int):
    """A connection that read two pipelined 70,000-byte requests (sent at once: its staging buffer grew), their
    answers held back by `d`; returns (budget, server, conn, reader, writer)."""
    budget = ByteBudget(Limits().max_buffered_bytes)
    server, port, conns = await _connection_server(d, Limits(), budget)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    first, second = _frames([70_000, 70_000], seed)
    w.write(first + second)
    async with asyncio.timeout(GUARD_S):
        while len(d.started) < 2:
            await asyncio.sleep(0.002)
    await _settle()
    return budget, server, conns[0], r, w


async def _answer_in_turn(d, frames: list[bytes], r) -> list[int]:
    """One request at a time (one request slot): each answered once it was read, its answer's correlation id read."""
    got = []
    async with asyncio.timeout(GUARD_S):
        for c in range(1, len(frames) + 1):
            while c not in d.answers:
                await asyncio.sleep(0.002)
            d.answer(c)
            got.append(struct.unpack(">ii", await r.readexactly(8))[1])
    return got


async def _answer_all(d, frames: list[bytes], r) -> list[int]:
    async with asyncio.timeout(GUARD_S):
        while len(d.started) < len(frames):
            await asyncio.sleep(0.01)
    for c in d.started:
        d.answer(c)
    async with asyncio.timeout(GUARD_S):
        return [struct.unpack(">ii", await r.readexactly(8))[1] for _ in frames]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_gets_frames_written_in_small_pieces_whole_and_large_ones_in_buffers_of_their_own(loop):
    """Over a socket, each frame written in pieces of up to 3000 bytes: every frame reaches the dispatcher
    whole; one over SMALL_FRAME_BYTES and up to HELD_WHOLE_BYTES, not staged whole when the connection reads it
    (its first 20 000 bytes came first: it is read once ARRIVED_BEFORE_HELD arrived), is the very buffer the
    socket read it into, of its size; a larger one (read chunk by chunk) arrives whole too; every byte held comes
    back."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    sizes = [40, 70_000, 12, HELD_WHOLE_BYTES, 300 * 1024, STAGING_BYTES - 4, 5000]
    frames = _frames(sizes, 11)
    allocated: list[bytearray] = []

    async def scenario():
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, port, conns = await _connection_server(d, Limits(), budget)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        rng = random.Random(2)
        for frame in frames:  # its first bytes, then (once the connection waits for the rest) the rest in pieces
            w.write(frame[:20_000])
            await _settle()
            at = 20_000
            while at < len(frame):
                step = rng.randint(1, 3000)
                w.write(frame[at:at + step])
                await w.drain()
                at += step
        assert await _answer_all(d, frames, r) == list(range(1, len(frames) + 1))
        assert [bytes(d.frames[c]) for c in d.started] == [f[4:] for f in frames]
        own = [d.frames[c] for c in d.started if SMALL_FRAME_BYTES < len(d.frames[c]) <= HELD_WHOLE_BYTES]
        assert len(own) == 2 and all(type(f.obj) is bytearray and len(f.obj) == len(f) for f in own)
        assert all(any(f.obj is a for a in allocated) for f in own)
        for _ in range(100):
            if budget.used == 0:
                break
            await asyncio.sleep(0.01)
        assert budget.used == 0 and conns[0].held.used == 0
        w.close()
        server.close()

    frame_buffer = records.frame_buffer
    client_frames.records.frame_buffer = lambda n: allocated.append(b := frame_buffer(n)) or b  # type: ignore
    try:
        run(scenario())
    finally:
        client_frames.records.frame_buffer = frame_buffer


def _read_until_paused(frames: ClientFrames, transport: _Transport) -> None:
    """As a socket with endless bytes would: every buffer `frames` hands out filled whole, until it pauses reading."""
    while transport.reading:
        view = frames.get_buffer(-1)
        n = len(view)
        del view
        frames.buffer_updated(n)


async def _answered_whole_and_returned(d, frames: list[bytes], r: asyncio.StreamReader, budget: ByteBudget) -> None:
    """Each request answered in turn: every answer arrives in order, every frame was dispatched whole, and then
    every byte the connection buffered is back in its budget."""
    assert await _answer_in_turn(d, frames, r) == list(range(1, len(frames) + 1))
    assert [bytes(d.frames[c]) for c in d.started] == [f[4:] for f in frames]
    await _settle()
    assert budget.used == 0


async def _sent_until_the_staging_is_full(frames: list[bytes]):
    """A connection with one request slot, held by its first request: `frames` sent at once, and waited for until
    the staging buffer is full. Returns the dispatcher, the byte budget, the server, its connections and the
    client's reader and writer."""
    d = _HeldDispatcher()
    budget = ByteBudget(Limits().max_buffered_bytes)
    server, port, conns = await _connection_server(d, Limits(max_inflight_requests=1), budget)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"".join(frames))
    async with asyncio.timeout(GUARD_S):
        while not conns or conns[0].reader.buffered() < STAGING_BYTES:
            await asyncio.sleep(0.005)
    await _settle()
    return d, budget, server, conns, r, w


def test_while_no_request_slot_is_free_the_socket_is_not_read_and_nothing_is_lost():
    """Backpressure: with its one request slot taken the connection reads nothing more; the staging buffer fills
    (grown twice, to 1 MiB: 1.05 MiB is sent after the first request), the transport stops reading (the rest
    waits in the kernel, slowing the client), and once the answer is written every frame still arrives whole and
    in order."""
    sizes = [64] + [9000, 70_000, 30] * 14
    frames = _frames(sizes, 4)

    async def scenario():
        d, budget, server, conns, r, w = await _sent_until_the_staging_is_full(frames)
        assert d.started == [1]
        assert conns[0].reader.buffered() == STAGING_BYTES and not conns[0].writer.transport.is_reading()
        assert budget.used == 64 + STAGING_BYTES - SMALL_FRAME_BYTES  # the frame read, and the staging's growths
        assert await _answer_in_turn(d, frames, r) == list(range(1, len(frames) + 1))
        assert [bytes(d.frames[c]) for c in d.started] == [f[4:] for f in frames]
        await _settle()
        assert len(conns[0].reader._staging) == 0  # waiting for its next request, it holds no buffer
        w.close()
        server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("cut", [2, 4 + 100, 4 + 50_000, 4 + 200_000])
def test_a_client_that_closes_inside_a_frame_is_closed_and_its_bytes_come_back(cut, caplog):
    """EOF inside the size prefix, a small frame's body, a frame read into its own buffer, and a frame read
    chunk by chunk: the connection closes with "truncated", nothing is dispatched and nothing stays held."""
    frame = _frames([300 * 1024], 9)[0]

    async def scenario():
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, port, conns = await _connection_server(d, Limits(), budget)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(frame[:cut])
        await w.drain()
        w.write_eof()
        assert await closed_by_peer(r)
        await _settle()
        assert d.started == [] and budget.used == 0 and conns[0].held.used == 0
        server.close()

    asyncio.run(scenario())
    assert "truncated" in caplog.text


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_frames_over_tls_arrive_whole(tmp_path, loop):
    """On a TLS listener the TLS layer hands the decrypted bytes to the same protocol (asyncio's and uvloop's SSL
    transports support BufferedProtocol): small, own-buffer and chunked frames arrive whole."""
    import ssl

    from security.pki import make_pki

    pki = make_pki(tmp_path)
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    frames = _frames([50, 70_000, 300 * 1024, 20, STAGING_BYTES], 6)

    async def scenario():
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, port, conns = await _connection_server(d, Limits(), budget, ssl=server_ctx)
        client = socket.create_connection(("127.0.0.1", port))
        r, w = await asyncio.open_connection(sock=client, ssl=ssl.create_default_context(cafile=pki.ca),
                                             server_hostname="localhost")
        w.write(b"".join(frames))
        assert await _answer_all(d, frames, r) == list(range(1, len(frames) + 1))
        assert [bytes(d.frames[c]) for c in d.started] == [f[4:] for f in frames]
        assert conns[0].reader.over_tls and conns[0]._tls  # one answer to "TLS?", from the reader
        await _settle()
        assert budget.used == 0
        w.close()
        server.close()

    run(scenario())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_whose_task_fails_is_closed_not_left_open(loop):
    """An exception escaping the connection's task (an internal error) closes the socket, as asyncio's
    start_server does: the client reads end-of-file instead of waiting for answers that never come."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    errors: list[dict] = []

    async def scenario():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))

        async def on_client(reader, writer):
            raise RuntimeError("an internal error")

        server = await start_server(on_client, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        assert await closed_by_peer(r)
        w.close()
        server.close()

    run(scenario())
    assert [type(c.get("exception")) for c in errors] == [RuntimeError]


def test_a_broken_connection_hands_out_none_of_its_staged_requests():
    """A connection reset while frames are staged: none of them is handed out any more (their answers could not
    be delivered, and a client retrying elsewhere would write them twice); the read reports the reset."""
    frame = frame_of(1, 10)

    async def scenario():
        frames = ClientFrames(lambda reader, writer: asyncio.sleep(0))
        frames.transport = _Transport()  # type: ignore[assignment]
        view = frames.get_buffer(-1)
        view[:len(frame)] = frame
        frames.buffer_updated(len(frame))
        assert frames.buffered() == len(frame)
        frames.connection_lost(ConnectionResetError("reset by peer"))
        held, budget = ByteBudget(1 << 20), ByteBudget(1 << 20)
        assert frames.take_whole(1 << 20, held, budget) is None and held.used == budget.used == 0
        with pytest.raises(ConnectionResetError):
            await frames.until_buffered(len(frame))

    asyncio.run(scenario())


def test_a_frame_is_taken_whole_only_when_staged_whole_and_both_budgets_have_room_and_else_nothing_is_taken():
    """`take_whole`: the frame staged whole comes out (without its prefix) with its bytes taken from the connection's
    and the process' budgets; a frame not staged whole, over the size cap, or one a budget has no room for now
    takes nothing from either budget nor from the staging buffer (the waiting path reads it)."""
    first, second = frame_of(1, 100), frame_of(2, 100)

    async def scenario():
        frames = ClientFrames(lambda reader, writer: asyncio.sleep(0))
        frames.transport = _Transport()  # type: ignore[assignment]
        data = first + second[:50]
        frames.get_buffer(-1)[:len(data)] = data
        frames.buffer_updated(len(data))
        held, budget = ByteBudget(1000), ByteBudget(1000)
        assert frames.take_whole(99, held, budget) is None  # over the cap
        held.used = 901  # 100 more do not fit the connection's budget
        assert frames.take_whole(1 << 20, held, budget) is None and (held.used, budget.used) == (901, 0)
        held.used, budget.used = 0, 901  # ... nor the process'
        assert frames.take_whole(1 << 20, held, budget) is None and (held.used, budget.used) == (0, 901)
        budget.used = 0
        assert frames.take_whole(1 << 20, held, budget) == first[4:] and held.used == budget.used == 100
        assert frames.take_whole(1 << 20, held, budget) is None  # half staged
        assert (held.used, budget.used, frames.buffered()) == (100, 100, 50)

    asyncio.run(scenario())


def test_a_chunk_that_cannot_be_allocated_gives_its_bytes_back_to_the_budgets():
    """A frame read chunk by chunk whose next buffer cannot be allocated (MemoryError): the connection ends and
    every byte taken from the budgets for it comes back, the chunk not allocated included."""
    frame = _frames([300 * 1024], 5)[0]
    frame_buffer = records.frame_buffer

    def no_second_chunk(n: int) -> bytearray:
        no_second_chunk.calls += 1  # type: ignore[attr-defined]
        if n == READ_CHUNK_BYTES and no_second_chunk.calls > 3:  # type: ignore[attr-defined]
            raise MemoryError()
        return frame_buffer(n)

    async def scenario():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, port, conns = await _connection_server(d, Limits(), budget)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(frame)
        await w.drain()
        assert await closed_by_peer(r)
        await _settle()
        assert d.started == [] and budget.used == 0 and conns[0].held.used == 0
        w.close()
        server.close()

    no_second_chunk.calls = 0  # type: ignore[attr-defined]
    records.frame_buffer = no_second_chunk  # type: ignore[assignment]
    try:
        asyncio.run(scenario())
    finally:
        records.frame_buffer = frame_buffer  # type: ignore[assignment]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_waiting_for_its_next_request_with_answers_due_keeps_its_grown_staging_buffer(loop):
    """A pipelining producer whose requests the reader keeps up with: while answers are due the connection waits
    for its next request with its grown staging buffer kept (its growth still charged), not let go and then
    allocated (16 KiB) and grown (256 KiB, the 16 KiB copied) again for the next request, as it was per request
    (bench/README.md, "A staging buffer kept while answers are due"). Once the last answer is written while it
    waits, it holds none and every charge is back; every frame arrives whole and in order. The reader keeping up,
    the buffer never fills at 256 KiB, so it grows one step, not two; a buffer grown twice is kept alike
    (`test_a_staging_buffer_grown_twice_and_kept_while_answers_are_due_gives_back_both_growths_when_let_go`)."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    frames = _frames([70_000, 70_000, 70_000, 500], 12)
    growth = STAGING_FIRST_BYTES - SMALL_FRAME_BYTES
    allocated: list[int] = []

    async def scenario():
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, port, conns = await _connection_server(d, Limits(), budget)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(frames[0] + frames[1])  # more than 16 KiB at once: the first read fills the buffer, which grows
        for i, frame in enumerate(frames[2:], 3):
            async with asyncio.timeout(GUARD_S):
                while len(d.started) < i - 1:
                    await asyncio.sleep(0.002)
            await _settle()
            reader = conns[0].reader
            assert reader.buffered() == 0 and len(reader._staging) == STAGING_FIRST_BYTES  # waits, answers due: kept
            assert budget.used == conns[0].held.used + growth
            w.write(frame)
        assert await _answer_all(d, frames, r) == list(range(1, len(frames) + 1))
        assert [bytes(d.frames[c]) for c in d.started] == [f[4:] for f in frames]
        # grown once for the four requests, not once each (and never to 1 MiB: it never filled at 256 KiB)
        assert allocated.count(STAGING_FIRST_BYTES) == 1 and STAGING_BYTES not in allocated
        await _settle()
        assert len(conns[0].reader._staging) == 0 and budget.used == 0  # answered and waiting: let go
        w.close()
        server.close()

    frame_buffer = records.frame_buffer
    client_frames.records.frame_buffer = lambda n: allocated.append(n) or frame_buffer(n)  # type: ignore
    try:
        run(scenario())
    finally:
        client_frames.records.frame_buffer = frame_buffer


@settings(max_examples=examples(25), deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from([20, 9000, 40_000, 70_000, 200_000]), st.integers(0, 3)),
                      min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_frames_and_answers_are_the_same_bytes_whether_answers_come_before_or_after_the_next_request(steps, seed):
    """Requests sent one at a time, after each some of the answers due given (0-3, oldest first), so the
    connection waits for its next request sometimes with answers due (its staging buffer kept) and sometimes
    with none (let go): every frame reaches the dispatcher as sent, every answer reaches the client as given, in
    order, and once all are answered the connection holds no buffer and no charge."""
    frames = _frames([size for size, _ in steps], seed)

    async def scenario():
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, port, conns = await _connection_server(d, Limits(), budget)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        given_answers: list[bytes] = []
        for i, (frame, (_, answers)) in enumerate(zip(frames, steps, strict=True), 1):
            w.write(frame)
            async with asyncio.timeout(GUARD_S):
                while len(d.started) < i:
                    await asyncio.sleep(0.002)
            for corr in [c for c in d.started if not d.answers[c].done()][:answers]:
                d.answer(corr, size=8 + corr)
                given_answers.append(d.answers[corr].result())
        for corr in d.started:
            if not d.answers[corr].done():
                d.answer(corr, size=8 + corr)
                given_answers.append(d.answers[corr].result())
        async with asyncio.timeout(GUARD_S):
            got = await r.readexactly(sum(map(len, given_answers)))
        assert got == b"".join(given_answers)
        assert [bytes(d.frames[c]) for c in d.started] == [f[4:] for f in frames]
        await _settle()
        assert len(conns[0].reader._staging) == 0 and budget.used == 0 and conns[0].held.used == 0
        w.close()
        server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_that_reads_no_more_does_not_grow_a_staging_buffer_for_bytes_its_client_still_sends(loop):
    """A handler closed the connection (CloseConnection) after the first of two pipelined requests that grew the
    staging buffer; the second's answer is still due (a long poll) and the client keeps sending (100,000 bytes).
    Nothing reads them: they land in a new 16 KiB buffer that does not grow (reading pauses once it is full), so
    no growth is charged again for them (`ClientFrames.drop_staging`). Fails if the dropped buffer regrows: 240 KiB
    charged until the last answer. The second answer still reaches the client; every charge comes back."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run

    async def scenario():
        d = _HeldDispatcher()
        budget, server, conn, r, w = await _grown_by_two_requests(d, 7)
        assert len(conn.reader._staging) == STAGING_FIRST_BYTES  # the two requests grew it (a step)
        d.answers[1].set_result(CloseConnection("a handler closes the connection"))
        await _settle()
        w.write(bytes(100_000))  # unread: the connection reads no more
        await _settle()
        assert not d.answers[2].done() and conn.in_flight == 1
        assert conn.reader._charged == 0 and budget.used == conn.held.used
        assert len(conn.reader._staging) == SMALL_FRAME_BYTES and conn.reader.buffered() == SMALL_FRAME_BYTES
        d.answer(2)
        async with asyncio.timeout(GUARD_S):
            assert struct.unpack(">ii", await r.readexactly(8))[1] == 2
        await _settle()
        assert budget.used == 0 and conn.held.used == 0
        w.close()
        server.close()

    run(scenario())


async def _grown_twice_then_waiting_with_an_answer_due(d, frames: list[bytes], budget: ByteBudget):
    """A connection with two request slots sent `frames` (seven 70,000-byte requests) at once: it reads two, its
    slots are taken, the other five (342 KiB) fill its 256 KiB staging buffer, which grows to 1 MiB; then answered
    one at a time, it reads them, until it waits for its next request with the last one's answer due. Returns
    (server, conn, reader, writer)."""
    server, port, conns = await _connection_server(d, Limits(max_inflight_requests=2), budget)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"".join(frames))
    async with asyncio.timeout(GUARD_S):
        while not conns or conns[0].reader.buffered() < sum(map(len, frames[2:])):
            await asyncio.sleep(0.005)
    await _settle()
    conn = conns[0]
    assert d.started == [1, 2] and len(conn.reader._staging) == STAGING_BYTES
    assert budget.used == conn.held.used + STAGING_BYTES - SMALL_FRAME_BYTES  # both growths charged
    async with asyncio.timeout(GUARD_S):
        for corr in range(1, len(frames)):
            while corr not in d.answers:
                await asyncio.sleep(0.002)
            d.answer(corr)
            assert struct.unpack(">ii", await r.readexactly(8))[1] == corr
    await _settle()
    assert d.started == list(range(1, len(frames) + 1))
    assert [bytes(d.frames[c]) for c in d.started] == [f[4:] for f in frames]
    return server, conn, r, w


@pytest.mark.parametrize("let_go", ["last answer written", "reader ended"])
def test_a_staging_buffer_grown_twice_and_kept_while_answers_are_due_gives_back_both_growths_when_let_go(let_go):
    """A connection whose staging buffer grew twice, to 1 MiB (its request slots taken, 342 KiB staged), waits
    for its next request with an answer due: it keeps the 1 MiB buffer, charged both growths (1008 KiB). Let go,
    when its last answer is written while it waits (`release_staging`) or when its read loop ends with the
    answer still due (its client closes mid-frame: `drop_staging`), it gives both growths back. Fails if the
    charge or the release missed the second step (768 KiB charged after its buffer went) or the first (240 KiB)."""
    frames = _frames([70_000] * 7, 13)

    async def scenario():
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, conn, r, w = await _grown_twice_then_waiting_with_an_answer_due(d, frames, budget)
        assert conn.in_flight == 1 and conn.reader.buffered() == 0  # waits for its next request, an answer due
        assert len(conn.reader._staging) == STAGING_BYTES  # kept, charged both growths
        assert budget.used == conn.held.used + STAGING_BYTES - SMALL_FRAME_BYTES
        if let_go == "reader ended":
            w.write(b"\0\0")  # half a size prefix, then the client closes its side: the reader ends
            w.write_eof()
            await _settle()
            assert conn.in_flight == 1 and not d.answers[len(frames)].done()  # the answer still due
            assert conn.reader._charged == 0 and budget.used == conn.held.used > 0
            assert len(conn.reader._staging) <= SMALL_FRAME_BYTES
        d.answer(len(frames))
        async with asyncio.timeout(GUARD_S):
            assert struct.unpack(">ii", await r.readexactly(8))[1] == len(frames)
        await _settle()
        assert len(conn.reader._staging) == 0 and budget.used == 0 and conn.held.used == 0
        w.close()
        server.close()

    asyncio.run(scenario())
