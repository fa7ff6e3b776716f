"""Answers written from their done-callbacks (`connection._InFlight._answered` → `ClientConnection._write_now`):
over real sockets, with a dispatcher that takes some requests synchronously (`start_now`, as the Produce lane) and
the others in a coroutine that waits (as the generic path), and whose answers come when the test says. The order
of answers stays request order whatever order they come in, a client that stops reading is held to its byte
budget (what the transport holds is charged), a failed request closes the connection after the answers before it,
and a CloseConnection in the middle of answers ready together writes the others, then closes.

Both loops: asyncio's and uvloop's (the proxy's) transports buffer differently."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import struct

import pytest

from fedkafka.protocol import codec
from fedkafka.proxy.core.client_frames import start_server
from fedkafka.proxy.core.connection import ClientConnection
from fedkafka.proxy.core.limits import ByteBudget, Limits
from fedkafka.proxy.plan import CloseConnection
from proxy.test_limits_unit import GUARD_S, _HeldDispatcher, _settle, frame_of

LOOPS = ["asyncio", "uvloop"]


def run(loop: str, scenario) -> None:
    (asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run)(scenario())


class _MixedDispatcher(_HeldDispatcher):
    """Even correlation ids are taken at once by `start_now` (the Produce lane's way), odd ones by `start`, a
    coroutine that waits a loop step first (the generic path's awaits); every answer waits for the test."""

    def __init__(self):
        super().__init__()
        self.taken_now: list[int] = []

    def start_now(self, frame: bytes, slot: int, session=None) -> asyncio.Future | None:
        _key, _version, corr = codec.peek_header(frame)
        if corr % 2:
            return None
        self.taken_now.append(corr)
        self.started.append(corr)
        self.answers[corr] = fut = asyncio.get_running_loop().create_future()
        return fut

    async def start(self, frame: bytes, slot: int, session=None, lane: bool = True):
        assert not lane  # offered to start_now first: not twice
        await asyncio.sleep(0)
        return await super().start(frame, slot, session)


def answer_frame(corr: int, size: int) -> bytes:
    """An answer of `size` bytes whose body repeats its correlation id's low byte (a mix-up shows)."""
    return struct.pack(">ii", size - 4, corr) + bytes([corr & 0xFF]) * (size - 8)


async def read_answer(r: asyncio.StreamReader) -> tuple[int, int]:
    """(correlation id, size with its prefix) of the next answer, its body checked."""
    (size,) = struct.unpack(">i", await r.readexactly(4))
    body = await r.readexactly(size)
    (corr,) = struct.unpack_from(">i", body)
    assert body[4:] == bytes([corr & 0xFF]) * (size - 4), corr
    return corr, size + 4


async def serve(d, limits: Limits, budget: ByteBudget, sndbuf: int | None = None):
    """A listener of ClientConnections over `d` (its sockets' send buffer `sndbuf`: the transport holds what the
    client has not taken); returns (server, port, conns)."""
    conns: list[ClientConnection] = []

    async def on_client(reader, writer):
        if sndbuf is not None:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        conns.append(conn := ClientConnection(reader, writer, d, limits, budget))
        await conn.run()

    server = await start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], conns


async def client(port: int, rcvbuf: int | None = None):
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return await asyncio.open_connection(sock=sock, limit=1 << 16)


async def rest_until_closed(r: asyncio.StreamReader) -> bytes:
    """What the peer still sends until it closes (EOF or reset)."""
    rest = bytearray()
    async with asyncio.timeout(GUARD_S):
        try:
            while chunk := await r.read(65536):
                rest += chunk
        except ConnectionError:
            pass
    return bytes(rest)


async def until(condition) -> None:
    async with asyncio.timeout(GUARD_S):
        while not condition():
            await asyncio.sleep(0.002)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("seed", range(6))
def test_answers_coming_in_any_order_and_groups_are_written_in_request_order(loop, seed):
    """24 requests, half taken at once and half through a coroutine, answered in a shuffled order, a few at a time
    in one loop step (written together), some of them 256 KiB with a small socket send buffer (the transport holds
    them and the writer task waits for their drain while later answers come): the client reads every answer in
    request order, whole, and every byte and slot comes back."""
    rng = random.Random(seed)
    n = 24
    sizes = {c: rng.choice((16, 300) * 4 + (256 * 1024,)) for c in range(1, n + 1)}

    async def scenario():
        d = _MixedDispatcher()
        budget = ByteBudget(1 << 30)
        server, port, conns = await serve(d, Limits(), budget, sndbuf=4096)
        r, w = await client(port, rcvbuf=4096)
        w.write(b"".join(frame_of(c, 32) for c in range(1, n + 1)))
        await until(lambda: len(d.started) == n)
        assert sorted(d.taken_now) == list(range(2, n + 1, 2))
        got: list[tuple[int, int]] = []

        async def read_all():
            while len(got) < n:
                got.append(await read_answer(r))
                if rng.random() < 0.3:
                    await asyncio.sleep(0.001)  # a client that reads in spurts

        reading = asyncio.create_task(read_all())
        order = list(range(1, n + 1))
        rng.shuffle(order)
        while order:
            group = order[:rng.randint(1, 4)]
            order = order[len(group):]
            for corr in group:
                d.answers[corr].set_result(answer_frame(corr, sizes[corr]))
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
        async with asyncio.timeout(GUARD_S):
            await reading
        assert got == [(c, sizes[c]) for c in range(1, n + 1)]
        conn = conns[0]
        await until(lambda: conn.in_flight == 0)
        assert conn.held.used == budget.used == 0
        w.close()
        server.close()

    run(loop, scenario)


ANSWER_BYTES = 64 * 1024
HELD_LIMIT = 512 * 1024


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_stops_reading_holds_its_answers_in_its_byte_budget_and_reading_stops(loop):
    """Each request is answered (64 KiB) as soon as it is read, by its callback while nothing else is written; the
    client reads nothing. The first answer the transport cannot pass on stays charged while the writer task waits
    for its drain, and so does every answer after it: the connection's budget (512 KiB) fills and reading stops,
    what is held being exactly the requests not written out yet and their answers. Then the client reads: every
    answer arrives, in order, the rest of the requests are read and answered, and every byte comes back."""
    n = 32

    async def scenario():
        d = _MixedDispatcher()
        budget = ByteBudget(1 << 30)
        server, port, conns = await serve(d, Limits(max_inflight_bytes=HELD_LIMIT), budget, sndbuf=4096)
        r, w = await client(port, rcvbuf=4096)
        await until(lambda: conns)
        conn = conns[0]

        def answered_or_full(corr: int) -> bool:
            return corr in d.answers or conn.held.used + 32 > HELD_LIMIT

        def settled() -> bool:  # every request read has its answer written out, or charged with it
            return conn.held.used == conn.in_flight * (32 + ANSWER_BYTES)

        for corr in range(1, n + 1):
            w.write(frame_of(corr, 32))
            await until(functools.partial(answered_or_full, corr))
            if corr not in d.answers:
                break
            d.answers[corr].set_result(answer_frame(corr, ANSWER_BYTES))
            await until(settled)
        await _settle()
        assert corr < n and corr not in d.started  # reading stopped at the full budget
        held = conn.held.used
        # every request not written out yet is charged with its answer: those the transport holds too
        assert held == budget.used == conn.in_flight * (32 + ANSWER_BYTES)
        assert 0 < conn.writer.transport.get_write_buffer_size() <= held
        w.write(b"".join(frame_of(c, 32) for c in range(corr + 1, n + 1)))
        got: list[tuple[int, int]] = []
        async with asyncio.timeout(GUARD_S):
            while len(got) < n:
                got.append(await read_answer(r))
                for c in list(d.answers):
                    if not d.answers[c].done():
                        d.answers[c].set_result(answer_frame(c, ANSWER_BYTES))
        assert got == [(c, ANSWER_BYTES) for c in range(1, n + 1)]
        await until(lambda: conn.in_flight == 0)
        assert conn.held.used == budget.used == 0
        w.close()
        server.close()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_failed_request_among_answers_written_by_callbacks_closes_after_the_answers_before_it(loop, caplog):
    """1 and 2 answered (2 first: written with 1), then 4, then 3 fails: its callback finds it at the head with 4
    ready behind it; 3 is logged, 4 is not written, nor 5 and 6 answered later, nothing more is read, the
    connection closes and every byte and slot comes back."""
    async def scenario():
        d = _MixedDispatcher()
        budget = ByteBudget(1 << 30)
        server, port, conns = await serve(d, Limits(), budget)
        r, w = await client(port)
        w.write(b"".join(frame_of(c, 32) for c in range(1, 7)))
        await until(lambda: len(d.started) == 6)
        d.answers[2].set_result(answer_frame(2, 100))
        d.answers[1].set_result(answer_frame(1, 100))
        got = [await read_answer(r), await read_answer(r)]
        d.answers[4].set_result(answer_frame(4, 100))
        await _settle()
        d.answers[3].set_exception(RuntimeError("handler bug"))
        await _settle()
        w.write(frame_of(7, 32))
        d.answers[5].set_result(answer_frame(5, 100))
        d.answers[6].set_result(answer_frame(6, 100))
        assert await rest_until_closed(r) == b""
        conn = conns[0]
        await until(lambda: conn.in_flight == 0)
        assert got == [(1, 100), (2, 100)] and d.started == [1, 2, 3, 4, 5, 6]
        assert 7 not in d.started
        assert conn.held.used == budget.used == 0
        server.close()

    with caplog.at_level(logging.ERROR):
        run(loop, scenario)
    assert caplog.text.count("failed; closing") == 1 and "handler bug" in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
def test_a_close_in_the_middle_of_answers_ready_together_writes_the_others_then_closes(loop, caplog):
    """2 answered first; then 1, 3 (CloseConnection: an acks=0 produce with errors) and 4 in one step: 1's callback
    writes 1, 2 and 4 together and skips 3; 5, read before the close was known, is answered and written after
    them; then the connection closes, the request sent after the close is never read, every byte comes back."""
    async def scenario():
        d = _MixedDispatcher()
        budget = ByteBudget(1 << 30)
        server, port, conns = await serve(d, Limits(), budget)
        r, w = await client(port)
        w.write(b"".join(frame_of(c, 32) for c in range(1, 6)))
        await until(lambda: len(d.started) == 5)
        d.answers[2].set_result(answer_frame(2, 100))
        await _settle()
        d.answers[1].set_result(answer_frame(1, 100))
        d.answers[3].set_result(CloseConnection("acks=0 produce with errors"))
        d.answers[4].set_result(answer_frame(4, 100))
        got = [await read_answer(r) for _ in range(3)]
        await _settle()
        w.write(frame_of(6, 32))
        await _settle()
        conn = conns[0]
        assert not conn.writer.is_closing()  # 5 still due
        d.answers[5].set_result(answer_frame(5, 100))
        got.append(await read_answer(r))
        assert await rest_until_closed(r) == b""
        assert got == [(1, 100), (2, 100), (4, 100), (5, 100)] and 6 not in d.started
        await until(lambda: conn.in_flight == 0)
        assert conn.held.used == budget.used == 0
        w.close()
        server.close()

    with caplog.at_level(logging.INFO):
        run(loop, scenario)
    assert "acks=0 produce with errors" in caplog.text


class _AnsweredDispatcher(_HeldDispatcher):
    """Every request answered when it is started (the writer task writes it: no done-callback), with what
    `answers_with` gives (None: left for the test); the connections forgotten are recorded."""

    def __init__(self, answers_with):
        super().__init__()
        self.answers_with = answers_with
        self.forgotten: list[int] = []

    async def start(self, frame: bytes, slot: int, session=None, lane: bool = True):
        fut = await super().start(frame, slot, session)
        answer = self.answers_with(codec.peek_header(frame)[2])
        if answer is not None:
            fut.set_result(answer)
        return fut

    def forget(self, slot: int) -> None:
        self.forgotten.append(slot)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_answer_the_writer_task_cannot_write_closes_the_connection_and_gives_everything_back(loop, caplog):
    """A handler's bug: 2's answer is not bytes, and it exists when it is queued (the writer task writes it, not a
    callback). Logged once with its traceback; the connection closes at once (3, answered, is not written; 4 is
    still due), nothing more is read; when 4's answer comes it is dropped, every byte and slot comes back, the
    dispatcher forgets the connection and run() ends. The writer task died: the reader went on reading requests
    nobody answered, and run() raised, skipping forget() and the close."""
    async def scenario():
        d = _AnsweredDispatcher(lambda corr: {2: "not bytes", 4: None}.get(corr, answer_frame(corr, 100)))
        budget = ByteBudget(1 << 30)
        server, port, conns = await serve(d, Limits(), budget)
        r, w = await client(port)
        w.write(frame_of(1, 32))
        assert await read_answer(r) == (1, 100)
        w.write(b"".join(frame_of(c, 32) for c in (2, 3, 4)))
        assert await rest_until_closed(r) == b""  # closed before 4 was answered: not 3's answer either
        conn = conns[0]
        await until(lambda: conn._read_task is not None and conn._read_task.done())
        assert d.started == [1, 2, 3, 4] and conn.in_flight == 1 and not d.forgotten
        d.answers[4].set_result(answer_frame(4, 100))
        await until(lambda: d.forgotten)
        assert d.forgotten == [conn.slot] and conn.in_flight == 0 and conn.held.used == budget.used == 0
        assert conn.writer.is_closing()
        w.close()
        server.close()

    with caplog.at_level(logging.ERROR):
        run(loop, scenario)
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "internal error writing its answers" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is TypeError


@pytest.mark.parametrize("loop", LOOPS)
def test_an_answer_a_callback_cannot_write_closes_the_connection_at_once_too(loop, caplog):
    """The same bug, the answer coming while nothing is written (its done-callback writes it): logged once with
    its traceback (by the loop: the callback re-raises), the connection closes at once, not once 4's answer came
    (no answer would be written), and everything comes back when it does."""
    async def scenario():
        d = _MixedDispatcher()
        budget = ByteBudget(1 << 30)
        server, port, conns = await serve(d, Limits(), budget)
        r, w = await client(port)
        w.write(b"".join(frame_of(c, 32) for c in range(1, 5)))
        await until(lambda: len(d.started) == 4)
        d.answers[1].set_result(answer_frame(1, 100))
        assert await read_answer(r) == (1, 100)
        d.answers[2].set_result("not bytes")
        d.answers[3].set_result(answer_frame(3, 100))
        assert await rest_until_closed(r) == b""
        conn = conns[0]
        assert conn.in_flight == 1
        d.answers[4].set_result(answer_frame(4, 100))
        await until(lambda: conn.in_flight == 0)
        assert conn.held.used == budget.used == 0 and conn.writer.is_closing()
        w.close()
        server.close()

    with caplog.at_level(logging.ERROR):
        run(loop, scenario)
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and record.exc_info[0] is TypeError


@pytest.mark.parametrize("loop", LOOPS)
def test_run_forgets_and_closes_the_connection_when_it_is_cancelled(loop):
    """The client sent its request and closed its side; run() waits for the answer (the reader ended) and is
    cancelled (the loop's teardown, a server that stops): the connection is still forgotten and closed."""
    async def scenario():
        d = _AnsweredDispatcher(lambda corr: None)
        runs: list[asyncio.Task] = []
        conns: list[ClientConnection] = []

        async def on_client(reader, writer):
            task = asyncio.current_task()
            assert task is not None
            runs.append(task)
            conns.append(conn := ClientConnection(reader, writer, d, Limits(), ByteBudget(1 << 30)))
            await conn.run()

        server = await start_server(on_client, "127.0.0.1", 0)
        r, w = await client(server.sockets[0].getsockname()[1])
        w.write(frame_of(1, 32))
        w.write_eof()
        await until(lambda: conns and conns[0]._reader_done)  # run() waits for the writer task
        assert d.started == [1] and not d.forgotten
        runs[0].cancel()
        await until(runs[0].done)
        assert runs[0].cancelled() and d.answers[1].cancelled()
        assert d.forgotten == [conns[0].slot] and conns[0].writer.is_closing()
        assert await rest_until_closed(r) == b""
        w.close()
        server.close()

    run(loop, scenario)


def test_start_now_takes_what_the_lane_takes_and_start_without_the_lane_leaves_it_to_the_handler():
    """`Dispatcher.start_now` (what the connection calls first, synchronously): the lane's answer future for a
    Produce it takes, None for another request or a frame too short for a header (`start` answers or refuses
    those); `start(..., lane=False)` does not offer the request to the lane again, and its generic answer is the
    lane's, byte for byte."""
    from proxy.test_produce_lane import Broker, batch, frame, proxy, view

    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        request = frame({0: batch()}, correlation_id=5)
        assert d.start_now(request[:7], 0) is None
        assert d.start_now(frame_of(1, 32)[4:], 0) is None  # ApiVersions
        assert d.start_now(frame({0: batch()}, acks=0), 0) is None and d.lane.taken == 0  # the lane leaves it
        taken = d.start_now(request, 0)
        assert taken is not None and d.lane.taken == 1
        by_lane = bytes(await taken)
        by_handler = await (await d.start(request, 0, None, lane=False))
        assert d.lane.taken == 1 and bytes(by_handler) == by_lane
        assert await (await d.start(request, 0)) == by_lane and d.lane.taken == 2  # `start` alone: the lane first
        broker.close()

    asyncio.run(scenario())
