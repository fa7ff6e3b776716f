"""A CloseConnection in an answer's place (an acks=0 produce with errors): the answers before it are written, the
connection closes, every request's bytes and slot come back and the connection's task ends."""

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


def test_a_close_that_came_later_writes_the_answers_before_it_and_gives_every_byte_back():
    async def scenario():
        d = _HeldDispatcher()
        budget, server, conns, r, w = await _connected(d, *(frame_of(c, 32) for c in range(1, 6)))
        assert d.started == [1, 2, 3, 4, 5]
        d.answer(4)
        d.answers[3].set_result(CloseConnection("acks=0 produce with errors"))
        d.answer(2, 4000)
        d.answer(1)
        async with asyncio.timeout(GUARD_S):
            got = []
            for _ in range(2):
                size, corr = struct.unpack(">ii", await r.readexactly(8))
                await r.readexactly(size - 4)
                got.append(corr)
        assert got == [1, 2]
        assert await closed_by_peer(r)  # 4 and 5 never written
        d.answer(5)  # answered after the close: dropped, its bytes given back
        await _settle()
        assert budget.used == conns[0].held.used == 0 and conns[0].in_flight == 0
        w.close()
        server.close()

    asyncio.run(scenario())


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
