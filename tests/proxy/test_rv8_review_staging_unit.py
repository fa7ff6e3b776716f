"""Review rv8 of e9b95ac (a full staging buffer resumes reading only once at most half of it is unread): no wait for
bytes stalls.

A connection whose read waits for bytes while reading stays paused would never be read again (its client times
out). These drive `ClientFrames` with a fake transport and a socket that reads only while it is let, cut at random,
and a reader that does what `ClientConnection` does (a frame staged whole taken at once, else its size, the first
ARRIVED_BEFORE_HELD bytes of a large one, then the body staged or received into a buffer of its own, in 64 KiB
chunks above HELD_WHOLE_BYTES), held back at random between frames (a request slot, the budgets) and inside one
(the budgets, after the size). Every frame must arrive whole and in order, and whenever the reader waits for bytes
reading must not be paused. They pass on e9b95ac (guards: they fail if `until_buffered` resumed by the half rule
only, or if a fix paused at the buffer's end while the reader waits), as does the same over a socket, TLS or not,
asyncio or uvloop.

One defect, not a stall and not new in e9b95ac (it was there before; the half rule did not reach it):
`test_a_producer_whose_unanswered_requests_stay_just_under_the_staging_size_moves_at_most_a_byte_per_byte_read`.
The half rule acted only on a buffer that filled; a producer whose unanswered requests stay just under 1 MiB
(a bounded max.in.flight above what the connection takes) never fills it, and `get_buffer` moved ~0.8-0.9 MiB to
read each 64-200 KiB request, as rv5 measured for the full buffer. Fixed in s33: reading reaching the buffer's
end with more than half of it unread grows it or pauses there, as a full one
(`test_a_window_just_under_each_staging_size_moves_at_most_a_byte_per_byte_read_or_grows` for 16 and 256 KiB).
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
from fedkafka.proxy.core.client_frames import (
    SMALL_FRAME_BYTES,
    STAGING_BYTES,
    STAGING_FIRST_BYTES,
    ClientFrames,
    IncompleteFrame,
)
from fedkafka.proxy.core.connection import ARRIVED_BEFORE_HELD, HELD_WHOLE_BYTES, READ_CHUNK_BYTES
from fedkafka.proxy.core.limits import ByteBudget, Limits
from proxy.test_client_frames_unit import (
    _answered_whole_and_returned,
    _connection_server,
    _frames,
    _Transport,
)
from proxy.test_limits_unit import GUARD_S, _HeldDispatcher

_SIZES = [0, 1, 7, 100, SMALL_FRAME_BYTES - 5, SMALL_FRAME_BYTES - 4, SMALL_FRAME_BYTES, SMALL_FRAME_BYTES + 1,
          40_000, 64 * 1024, HELD_WHOLE_BYTES, HELD_WHOLE_BYTES + 1, STAGING_FIRST_BYTES // 2 + 3,
          STAGING_FIRST_BYTES - 2, STAGING_BYTES // 2 + 9, 700_000]
# budgets: growth refused (16 KiB only), the first step only, both steps
_BUDGETS = [64 * 1024, 1024 * 1024, 1 << 30]


class _Stalled(AssertionError):
    pass


class _Closed(Exception):
    """The client closed before every frame was sent: the frames read before the end was seen."""

    def __init__(self, got: list[bytes]):
        super().__init__(f"closed after {len(got)} frames")
        self.got = got


async def _read_like_a_connection(frames: ClientFrames, count: int, rng: random.Random, out: list[bytes]) -> None:
    """`ClientConnection._read_loop`'s reads, held back at random where it may be (a slot, the budgets), into
    `out`; IncompleteFrame once the client closed."""
    plenty = ByteBudget(1 << 40)
    short = ByteBudget(0)  # a budget with no room: take_whole leaves the frame to the waiting path
    while len(out) < count:
        for _ in range(rng.choice([0, 0, 1, 3, 20])):  # waits for a request slot: reads nothing
            await asyncio.sleep(0)
        frame = frames.take_whole(1 << 30, plenty, rng.choice([plenty, plenty, short]))
        if frame is None:
            frame = await _read_by_the_waiting_path(frames, rng)
        out.append(bytes(frame))


async def _read_by_the_waiting_path(frames: ClientFrames, rng: random.Random) -> bytes | memoryview:
    if not frames.buffered():
        await frames.until_buffered(1)
    await frames.until_buffered(4)
    size = frames.take_size()
    if size > SMALL_FRAME_BYTES:
        await frames.until_buffered(ARRIVED_BEFORE_HELD)
    for _ in range(rng.choice([0, 0, 5])):  # the budgets: held back, reads nothing
        await asyncio.sleep(0)
    if size <= HELD_WHOLE_BYTES:
        return await frames.read_frame(size)
    chunks = []
    got = 0
    while got < size:
        chunk = records.frame_buffer(min(size - got, READ_CHUNK_BYTES))
        await frames.receive_into(chunk)
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _stalled(frames: ClientFrames, transport: _Transport) -> bool:
    """The reader waits for bytes and the socket is not read: nothing can wake it (no bytes, no EOF come)."""
    waiter = frames._waiter
    return waiter is not None and not waiter.done() and not transport.reading


async def _run(payloads: list[bytes], budget_limit: int, seed: int, sent: int | None = None) -> list[bytes]:
    """The frames the reader got, the socket holding `payloads` framed (only the first `sent` bytes of them, then
    EOF, when given); if the client closed before them all, `_Closed` with those it got."""
    rng = random.Random(seed)
    data = b"".join(struct.pack(">i", len(p)) + p for p in payloads)
    if sent is not None:
        data = data[:sent]
    transport = _Transport()
    frames = ClientFrames(lambda r, w: None, budget=ByteBudget(budget_limit))
    frames.transport = transport  # type: ignore[assignment]
    out: list[bytes] = []
    reader = asyncio.ensure_future(_read_like_a_connection(frames, len(payloads), random.Random(seed + 1), out))
    at = 0
    eof = sent is None
    async with asyncio.timeout(GUARD_S):  # a hang guard only: the stall check below names it first
        while not reader.done():
            if transport.reading and at == len(data) and not eof:  # the socket reads the client's FIN
                eof = True
                frames.eof_received()
            elif transport.reading and at < len(data) and rng.random() < 0.7:  # the socket reads a piece
                view = frames.get_buffer(-1)
                assert len(view) > 0  # an empty buffer is a fatal error for asyncio's and uvloop's transports
                n = min(len(view), len(data) - at, rng.choice([1, 3, 1000, 16 * 1024, 64 * 1024, 1 << 30]))
                view[:n] = data[at:at + n]
                del view
                frames.buffer_updated(n)
                at += n
            await asyncio.sleep(0)
            if _stalled(frames, transport) and not reader.done():
                reader.cancel()
                raise _Stalled(f"the reader waits for bytes with reading paused: {frames.buffered()} staged of "
                               f"{len(frames._staging)}, {len(data) - at} bytes unread on the socket")
    try:
        reader.result()
    except IncompleteFrame:
        raise _Closed(out) from None
    return out


@settings(max_examples=examples(100), deadline=None)
@given(sizes=st.lists(st.sampled_from(_SIZES), min_size=1, max_size=24), budget=st.sampled_from(_BUDGETS),
       seed=st.integers(0, 2**32))
def test_every_frame_arrives_and_no_wait_for_bytes_finds_reading_paused(sizes, budget, seed):
    """Random frames (sizes around every boundary: 16 KiB, 128 KiB, half of each staging size), the socket cut at
    random, the reader held back at random between frames and after a size: every frame arrives whole, in order,
    and the reader never waits for bytes while reading is paused (a stall: its client would time out)."""
    rng = random.Random(seed)
    payloads = [rng.randbytes(size) for size in sizes]
    assert asyncio.run(_run(payloads, budget, seed)) == payloads


@pytest.mark.parametrize("budget", _BUDGETS)
@pytest.mark.parametrize("seed", range(6))
def test_a_pipelining_producer_held_back_between_frames_gets_every_frame_through_every_staging_size(budget, seed):
    """Many frames a little over a quarter and a little under half of each staging size (so that a buffer full
    and paused holds a frame partly staged at its end, its size prefix cut at any byte): all arrive."""
    rng = random.Random(seed)
    sizes = [rng.choice([STAGING_FIRST_BYTES // 4 + 1, STAGING_FIRST_BYTES // 2 - 3, STAGING_BYTES // 4 + 5,
                         STAGING_BYTES // 2 - 7, 5, SMALL_FRAME_BYTES - 4]) for _ in range(30)]
    payloads = [rng.randbytes(size) for size in sizes]
    assert asyncio.run(_run(payloads, budget, seed)) == payloads


@settings(max_examples=examples(60), deadline=None)
@given(sizes=st.lists(st.sampled_from(_SIZES), min_size=1, max_size=16), budget=st.sampled_from(_BUDGETS),
       seed=st.integers(0, 2**32), cut=st.floats(0, 1))
def test_a_client_that_closes_anywhere_gets_its_whole_frames_read_and_then_the_end_seen_never_a_stall(
        sizes, budget, seed, cut):
    """The client sends its frames up to a random byte (inside a size, a small frame, a large one) and closes:
    every frame sent whole arrives, then the reader sees the end (IncompleteFrame), the staging buffer paused full
    or not when the FIN comes: the socket reads it only while reading is not paused, and no wait stalls."""
    rng = random.Random(seed)
    payloads = [rng.randbytes(size) for size in sizes]
    total = sum(4 + len(p) for p in payloads)
    sent = int(cut * total)
    whole, at = 0, 0
    for p in payloads:
        if at + 4 + len(p) > sent:
            break
        at += 4 + len(p)
        whole += 1

    async def scenario() -> tuple[list[bytes], str]:
        try:
            return await _run(payloads, budget, seed, sent), "all"
        except _Closed as closed:
            return closed.got, "closed"

    got, ending = asyncio.run(scenario())
    assert got == payloads[:whole]
    assert ending == ("all" if sent == total else "closed")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("budget", [1024 * 1024, Limits().max_buffered_bytes])
def test_a_producer_held_back_by_one_request_slot_gets_frames_of_every_size_through(tmp_path, loop, tls, budget):
    """Over a socket (TLS or not, asyncio's loop or uvloop's; a budget that spares the first growth only, or
    both), one request slot, pipelined frames around half of each staging size, small ones, one read into its own
    buffer and one chunk by chunk, sent at once and answered one at a time: the staging buffer fills and pauses,
    and is taken a frame at a time; every frame arrives whole and in order, none waits for a read that never
    comes (a stall would end in the guard's timeout), and every byte held is given back."""
    import ssl

    from security.pki import make_pki

    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    sizes = [STAGING_FIRST_BYTES // 2 + 9, 64 * 1024, 100, STAGING_BYTES // 2 + 9, STAGING_FIRST_BYTES // 2 - 9,
             SMALL_FRAME_BYTES, 300 * 1024, 30, STAGING_BYTES // 2 - 9, 600 * 1024, 64 * 1024] * 2
    frames = _frames(sizes, 8)

    async def scenario():
        kwargs = {}
        client_tls = {}
        if tls:
            pki = make_pki(tmp_path)
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
            kwargs["ssl"] = server_ctx
            client_tls = {"ssl": ssl.create_default_context(cafile=pki.ca), "server_hostname": "localhost"}
        d = _HeldDispatcher()
        spent = ByteBudget(budget)
        server, port, conns = await _connection_server(d, Limits(max_inflight_requests=1), spent, **kwargs)
        r, w = await asyncio.open_connection("127.0.0.1", port, **client_tls)
        w.write(b"".join(frames))
        # the first request taken, the staging buffer fills and pauses; with the backlog rule reading may pause at
        # the end of a buffer that cannot grow before the connection task took the first frame (TLS hands bytes over
        # in bursts): it is taken then, and reading pauses again once its slot is held
        async with asyncio.timeout(GUARD_S):
            while not conns or conns[0].writer.transport.is_reading() or not d.started:
                await asyncio.sleep(0.005)
        assert d.started == [1]
        await _answered_whole_and_returned(d, frames, r, spent)
        w.close()
        server.close()

    run(scenario())


def _moved_before_read(frames: ClientFrames) -> int:
    """The unread bytes `get_buffer` moves to the front of the staging buffer before the socket reads."""
    if frames._target is None and frames._staging and frames._end == len(frames._staging):
        return frames._end - frames._start
    return 0


async def _windowed_producer(size: int, window: int, count: int, counts: dict[str, int],
                             budget: int = 1 << 30) -> list[bytes]:
    """A producer that keeps `window` requests unanswered (a Kafka client's max.in.flight), the connection taking
    one at a time (one request slot, each answered at once), the socket reading all the client sent whenever it
    is let; returns the frames taken, counting the bytes read into the staging buffer and moved to its front, and
    the largest the staging buffer grew (`largest`; its growth charged to a process budget of `budget`)."""
    payloads = [random.Random(i).randbytes(size) for i in range(count)]
    framed = [struct.pack(">i", size) + p for p in payloads]
    transport = _Transport()
    frames = ClientFrames(lambda r, w: None, budget=ByteBudget(budget))
    frames.transport = transport  # type: ignore[assignment]
    plenty = ByteBudget(1 << 40)
    sent = bytearray()
    at = sent_count = 0
    taken: list[bytes] = []

    def socket_reads() -> None:
        nonlocal at, sent_count
        while sent_count < count and sent_count - len(taken) < window:  # an answer lets the client send one more
            sent.extend(framed[sent_count])
            sent_count += 1
        while transport.reading and at < len(sent):
            counts["moved"] += _moved_before_read(frames)
            view = frames.get_buffer(-1)
            n = min(len(view), len(sent) - at)
            view[:n] = sent[at:at + n]
            del view
            if frames._target is None:
                counts["read"] += n
            frames.buffer_updated(n)
            at += n
            counts["largest"] = max(counts.get("largest", 0), len(frames._staging))

    async with asyncio.timeout(GUARD_S):
        while len(taken) < count:
            socket_reads()
            frame = frames.take_whole(1 << 30, plenty, plenty)
            if frame is None:  # not staged whole (reading paused): the waiting path, the socket reading meanwhile
                wait = asyncio.ensure_future(_read_by_the_waiting_path(frames, random.Random(0)))
                while not wait.done():
                    socket_reads()
                    await asyncio.sleep(0)
                frame = wait.result()
            taken.append(bytes(frame))
    assert taken == payloads
    return taken


@pytest.mark.parametrize(("size", "window"), [(64 * 1024, 15), (200 * 1024, 5)])
def test_a_producer_whose_unanswered_requests_stay_just_under_the_staging_size_moves_at_most_a_byte_per_byte_read(
        size, window):
    """rv8: the half rule (e9b95ac) holds reading back only once the staging buffer is full. A producer that keeps
    a bounded number of requests unanswered (Kafka's max.in.flight: the Java client's 5, here of ~200 KiB; or 15
    of 64 KiB), the connection taking one at a time (one request slot, or the budgets), never fills it: its
    unanswered requests stay just under 1 MiB, so each time reading reaches the buffer's end `get_buffer` moves
    them all (~800-920 KiB) to its front to read one request (64-200 KiB), ~4-14 bytes moved per byte read: the
    steady state rv5 measured (~15 at 64 KiB) and DESIGN §4.12 says is gone ("at most a byte moved to the front
    per byte read"). Every frame still arrives; the bytes moved must stay within the bytes read (a buffer of
    slack, as rv5's test). Failed on 7237ffc (a strict xfail until s33: reading now pauses at the buffer's end
    when more than half of it is unread and it cannot grow, as at a full one)."""
    counts = {"moved": 0, "read": 0}
    asyncio.run(_windowed_producer(size, window, 120, counts))
    assert counts["read"] > 2 * STAGING_BYTES
    assert counts["moved"] <= counts["read"] + STAGING_BYTES, counts


@pytest.mark.parametrize(("size", "window", "budget", "staging"), [
    (5 * 1024, 3, 64 * 1024, SMALL_FRAME_BYTES),  # growth refused: the buffer stays at 16 KiB
    (60 * 1024, 4, 1024 * 1024, STAGING_FIRST_BYTES),  # the second step refused: it stays at 256 KiB
    (60 * 1024, 4, 1 << 30, STAGING_BYTES),  # both spared: it grows at the 256 KiB buffer's end, not full
])
def test_a_window_just_under_each_staging_size_moves_at_most_a_byte_per_byte_read_or_grows(
        size, window, budget, staging):
    """s33: the same window just under each size the staging buffer may stop at (16 KiB when the budget refuses
    growth, 256 KiB when it refuses the second step): a buffer whose end is reached with more than half of it
    unread pauses reading there when it cannot grow (resumed once half is free, as a full one), so the bytes
    moved to its front stay within the bytes read; one that can grow grows there (4 x 60 KiB unanswered reach
    1 MiB, not a move of ~180 KiB for each 60 KiB read at 256 KiB). Fails on 7237ffc: the buffer never fills,
    so it never pauses nor grows, and each read at its end moves 2-3 bytes per byte read."""
    counts = {"moved": 0, "read": 0}
    asyncio.run(_windowed_producer(size, window, 120, counts, budget))
    assert counts["largest"] == staging
    assert counts["read"] > 2 * staging
    assert counts["moved"] <= counts["read"] + staging, counts
