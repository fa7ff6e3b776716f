"""A CloseConnection in an answer's place (an acks=0 produce with errors): nothing more is read once it is known,
the answers of every request read before that are written in order (those read after the acks=0 produce were
forwarded already: dropping their answers would make the client send them again), the connection closes,
every request's bytes and slot come back and the connection's task ends (docs/DESIGN.md §5.4)."""

from __future__ import annotations

import asyncio
import struct

from fedkafka.proxy.plan import CloseConnection
from proxy.test_limits_unit import GUARD_S, _connected, _HeldDispatcher, _settle, closed_by_peer, frame_of


class _ClosingAt(_HeldDispatcher):
    """Request `at` is answered CloseConnection at once (a handler that refused before forwarding anything)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    async def start(self, frame: bytes, slot: int, session=None):
        fut = await super().start(frame, slot, session)
        if self.started[-1] == self.at:
            fut.set_result(CloseConnection("test"))
        return fut


def test_a_close_that_came_later_still_answers_the_requests_read_after_it_then_closes_and_gives_every_byte_back():
    """The acks=0 produce (3) is answered CloseConnection only once its upstream answers are in: 4 and 5 were read and
    forwarded meanwhile. Old code closed at once and dropped their answers (a non-idempotent producer resends
    them: duplicates); they are written, in order, then the connection closes. A request sent once the close is
    known is not read."""
    async def scenario():
        d = _HeldDispatcher()
        budget, server, conns, r, w = await _connected(d, *(frame_of(c, 32) for c in range(1, 6)))
        assert d.started == [1, 2, 3, 4, 5]
        d.answer(4)
        d.answers[3].set_result(CloseConnection("acks=0 produce with errors"))
        d.answer(2, 4000)
        d.answer(1)
        async with asyncio.timeout(GUARD_S):
            got = [await _next_correlation_id(r) for _ in range(3)]
        assert got == [1, 2, 4]
        w.write(frame_of(6, 32))  # after the close was decided: not read, never forwarded
        await _settle()
        assert d.started == [1, 2, 3, 4, 5] and not conns[0].writer.is_closing()  # 5 still due
        d.answer(5)
        async with asyncio.timeout(GUARD_S):
            assert await _next_correlation_id(r) == 5
        assert await closed_by_peer(r)
        await _settle()
        assert d.started == [1, 2, 3, 4, 5]
        assert budget.used == conns[0].held.used == 0 and conns[0].in_flight == 0
        w.close()
        server.close()

    asyncio.run(scenario())


class _SlowStartAt(_HeldDispatcher):
    """Request `at`'s start waits for `go` (a produce waiting behind a barrier: a first batch sent alone, a
    leader awaited) before it returns its answer's future."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at
        self.go: asyncio.Future | None = None

    async def start(self, frame: bytes, slot: int, session=None):
        fut = await super().start(frame, slot, session)
        if self.started[-1] == self.at:
            self.go = asyncio.get_running_loop().create_future()
            await self.go
        return fut


def test_a_close_decided_while_a_later_request_is_being_dispatched_lets_it_finish_and_answers_it():
    """Request 2 is in the dispatcher (it may have written upstream already) when 1's close is decided: it is not
    cancelled, its answer is written, then the connection closes; the request behind it is not read. Old code
    cancelled the reader in the middle of the dispatch."""
    async def scenario():
        d = _SlowStartAt(2)
        budget, server, conns, r, w = await _connected(d, *(frame_of(c, 32) for c in range(1, 4)))
        assert d.started == [1, 2] and d.go is not None
        d.answers[1].set_result(CloseConnection("acks=0 produce with errors"))
        await _settle()
        assert not d.go.done()  # the dispatch is not cancelled
        d.go.set_result(None)
        await _settle()
        d.answer(2)
        async with asyncio.timeout(GUARD_S):
            assert await _next_correlation_id(r) == 2
        assert await closed_by_peer(r)
        await _settle()
        assert d.started == [1, 2]  # 3: not read
        assert budget.used == conns[0].held.used == 0 and conns[0].in_flight == 0
        w.close()
        server.close()

    asyncio.run(scenario())


async def _next_correlation_id(r: asyncio.StreamReader) -> int:
    size, corr = struct.unpack(">ii", await r.readexactly(8))
    await r.readexactly(size - 4)
    return corr


def test_a_close_at_once_stops_reading_and_ends_the_connection():
    async def scenario():
        d = _ClosingAt(2)
        budget, server, conns, r, w = await _connected(d, *(frame_of(c, 32) for c in range(1, 5)))
        assert d.started == [1, 2]  # nothing read after the CloseConnection
        d.answer(1)
        async with asyncio.timeout(GUARD_S):
            assert struct.unpack(">ii", await r.readexactly(8))[1] == 1
        assert await closed_by_peer(r)
        await _settle()
        assert budget.used == conns[0].held.used == 0 and conns[0].in_flight == 0
        w.close()
        server.close()

    asyncio.run(scenario())
