"""Review rv3 of a473924 (a client connection keeps its grown staging buffer while it waits for its next request
with answers still due): failing tests for what the change holds that it did not before and cannot use.

1. A connection whose reader stopped for good (a request failed or was cancelled, a CloseConnection, the client
   closed half way through a frame) never reads its staging buffer again, yet keeps it, grown and charged
   (240 KiB), until the last answer still due comes (a long poll, a slow broker: up to the request timeout).
   Before a473924 it had let it go when it started waiting for the next request.
2. A consumer's connection waiting for its next request with only its long-poll Fetch due keeps its 16 KiB
   (uncharged) buffer for the whole poll. Before a473924 it held none; keeping a buffer that never grew saves no
   256 KiB regrowth (what bench/README.md measured), it only adds 16 KiB uncounted per such connection (160 MiB
   at 10,000 connections, steadily, where it was ~0 in a consumer fleet).
"""

from __future__ import annotations

import asyncio

import pytest

from fedkafka.proxy.core.client_frames import SMALL_FRAME_BYTES
from fedkafka.proxy.core.limits import ByteBudget, Limits
from fedkafka.proxy.plan import CloseConnection
from proxy.test_client_frames_unit import _connection_server, _grown_by_two_requests
from proxy.test_limits_unit import GUARD_S, _HeldDispatcher, _settle, frame_of


async def _two_requests_in_a_grown_buffer(d: _HeldDispatcher):
    """A connection that read two pipelined 70,000-byte requests (sent at once: its staging buffer grew) and
    waits for its next request with both answers due; returns (budget, server, conn, writer)."""
    budget, server, conn, _r, w = await _grown_by_two_requests(d, 5)
    assert conn._in_flight == 2 and conn.reader.buffered() == 0  # waits for its next request, both answers due
    return budget, server, conn, w


def _fail(d: _HeldDispatcher, w) -> None:
    d.answers[1].set_exception(RuntimeError("the first request failed"))


def _cancel(d: _HeldDispatcher, w) -> None:
    d.answers[1].cancel()


def _close_connection(d: _HeldDispatcher, w) -> None:
    d.answers[1].set_result(CloseConnection("a handler closes the connection"))


def _closed_mid_frame(d: _HeldDispatcher, w) -> None:
    w.write(b"\0\0")  # half of the next request's size prefix, then the client closes
    w.close()


@pytest.mark.parametrize("stop", [_fail, _cancel, _close_connection, _closed_mid_frame],
                         ids=["request failed", "request cancelled", "CloseConnection", "client closed mid-frame"])
def test_a_connection_that_reads_no_more_holds_no_grown_staging_buffer_while_its_last_answers_are_due(stop):
    """Its reader stopped for good while the second answer is still due: the staging buffer is never read again,
    so its growth is given back now (at most the 16 KiB a new buffer has stays, uncharged), not when the second
    answer comes. Fails on a473924: the 240 KiB growth stays charged until then. Everything comes back once the
    second answer came."""

    async def scenario():
        d = _HeldDispatcher()
        budget, server, conn, w = await _two_requests_in_a_grown_buffer(d)
        stop(d, w)
        await _settle()
        assert conn._in_flight >= 1 and not d.answers[2].done()  # the second answer is still due
        assert conn.reader._charged == 0 and budget.used == conn.held.used
        assert len(conn.reader._staging) <= SMALL_FRAME_BYTES
        for corr in (1, 2):
            if not d.answers[corr].done():
                d.answer(corr)
        await _settle()
        assert budget.used == 0 and conn.held.used == 0
        w.close()
        server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_waiting_with_only_a_long_poll_due_holds_no_staging_buffer_that_never_grew(loop):
    """A consumer: one small Fetch-like request read, its answer held back (a long poll), the connection waiting
    for its next request. Its 16 KiB staging buffer never grew: keeping it saves no regrowth, so it holds none
    (as before a473924; 10,000 such connections held 160 MiB uncounted for as long as their polls last).
    A grown buffer is still kept while answers are due
    (`test_client_frames_unit.py::test_a_connection_waiting_for_its_next_request_with_answers_due_keeps_its_grown_staging_buffer`)."""
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run

    async def scenario():
        d = _HeldDispatcher()
        budget = ByteBudget(Limits().max_buffered_bytes)
        server, port, conns = await _connection_server(d, Limits(), budget)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(frame_of(1, 120))
        async with asyncio.timeout(GUARD_S):
            while not d.started:
                await asyncio.sleep(0.002)
        await _settle()
        conn = conns[0]
        assert conn._in_flight == 1 and conn.reader.buffered() == 0  # waits for its next request, the poll due
        assert len(conn.reader._staging) == 0
        d.answer(1)
        async with asyncio.timeout(GUARD_S):
            await r.readexactly(8)
        await _settle()
        assert len(conn.reader._staging) == 0 and budget.used == 0
        w.close()
        server.close()

    run(scenario())
