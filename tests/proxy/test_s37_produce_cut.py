"""Session 37's cut of the client connection's per-request Python (issue #20), against main's code.

Cut (nothing else changed): `ClientConnection._read_loop` takes a staged frame (`ClientFrames.take_whole`) and offers
it to the Produce lane (`Dispatcher.start_now`) itself, where main called `_buffered_frame` and `_started_now` for
it (two Python calls a lane request), and awaits the waiting path's `_read_frame` itself, where main's `_read_one`
did (`_dispatch` is the rest of `_read_one`: the generic path); `_finish` gives back an answer's bytes itself, where
main called `_InFlight.done` for each (a call a request).
Main's versions (0d15e1a) are kept below, only here, and installed for the "main" side. Each drawn connection (its
requests' sizes and ways: taken by the lane at once or answered a loop step later, left to the generic path,
answered by a CloseConnection, failed, the lane's step raising; the request slots, the connection's byte budget,
the client authenticated or not with a pre-authentication frame limit; a frame over the frame limit; the bytes
written at once or in pieces) runs once per side over real sockets: the client's bytes, the requests dispatched and
how, the budgets and slots given back and the log lines are compared."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys

import pytest
from example_counts import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol.test_records_twins import using

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.framing import FrameError
from fedkafka.proxy.core import connection, dispatch, produce_lane
from fedkafka.proxy.core.client_frames import start_server
from fedkafka.proxy.core.connection import ClientConnection, IdleTimeout, _InFlight
from fedkafka.proxy.core.dispatch import Dispatcher, ProtocolViolation
from fedkafka.proxy.core.limits import ByteBudget, Limits
from fedkafka.proxy.core.observe import NULL_OBSERVER
from fedkafka.proxy.core.produce_lane import ProduceLane
from fedkafka.proxy.core.upstream import PRODUCE_API_KEY
from fedkafka.proxy.handlers import produce as produce_handler
from fedkafka.proxy.plan import CloseConnection
from fedkafka.security.session import Session
from proxy.test_connection_callbacks_unit import answer_frame, rest_until_closed, until
from proxy.test_limits_unit import frame_of
from proxy.test_produce_lane import batch as lane_batch
from proxy.test_produce_lane import broker_answers, calls_of_a_lane_request, proxy, run, view
from proxy.test_produce_lane import frame as lane_frame
from proxy.test_s36_produce_shared_cut import EVENTS, EventBroker, assert_same_outcome, lane_requests
from proxy.test_s36_produce_shared_cut import outcome as outcome_of_lane

log = connection.log

# -- main's code (0d15e1a), kept only here ----------------------------------------------------------------------


async def _main_read_loop(self) -> None:
    try:
        while not self._closing:
            if self._free_slots > 0:
                self._free_slots -= 1
            else:
                await self._take_slot()
            try:  # a frame staged whole that the lane takes: no coroutine (the usual Produce)
                frame = self._buffered_frame()
                if (frame is None or not self._started_now(frame)) and not await self._read_one(frame):
                    self._give_slot()
                    return
            except BaseException:
                self._give_slot()
                raise
    except IdleTimeout:
        log.info("closing client %s: idle for %.0f s", self.peer, self.limits.idle_timeout_s)
    except (FrameError, ProtocolViolation, codec.DecodeError) as e:
        log.warning("closing client %s: %s", self.peer, e)
    except (ConnectionError, OSError):
        pass
    except Exception:
        log.exception("closing client %s after an internal error", self.peer)


async def _main_read_one(self, frame):
    if frame is None:
        frame = await self._read_frame()
        if frame is None:
            return False
        if self._started_now(frame):
            return True
    size = len(frame)
    self._dispatching = True
    try:
        if self._start_now is None:
            pending = await self.dispatcher.start(frame, self.slot, self.session)
        else:
            pending = await self.dispatcher.start(frame, self.slot, self.session, lane=False)
    except BaseException:
        self._unhold(size)
        raise
    finally:
        self._dispatching = False
    self._queued(pending, size)
    return True


def _main_started_now(self, frame) -> bool:
    start_now = self._start_now
    if start_now is None:
        return False
    try:
        pending = start_now(frame, self.slot, self.session)
    except BaseException:
        self._unhold(len(frame))
        raise
    if pending is None:
        return False
    self._queued(pending, len(frame))
    return True


def _main_buffered_frame(self):
    limits = self.limits
    return self.reader.take_whole(limits.max_frame_bytes if self.session.authenticated else
                                  min(limits.max_frame_bytes, limits.max_pre_auth_frame_bytes),
                                  self.held, self.budget)


def _main_finish(self, batch) -> None:
    n = 0
    for done in batch:
        n += done.done()
    self._unhold(n)
    self._in_flight -= len(batch)
    if not self._in_flight and self._awaiting_request:
        self.reader.release_staging()
    self._free_slots += len(batch)
    freed = self._slot_freed
    if freed is not None and not freed.done():
        freed.set_result(None)
    batch.clear()
    self._last_active = self._loop.time()


def _main_done(self) -> int:
    self.finished = True
    return self.size + self.answer_bytes


def _main_start_now(self, frame, slot, session=None):
    lane = self.lane
    if lane is None or len(frame) < dispatch._HEADER.size:
        return None
    api_key, version, correlation_id = dispatch._HEADER.unpack_from(frame)
    if api_key != dispatch.PRODUCE_API_KEY:
        return None
    return lane.start(frame, version, correlation_id, slot, session, self._loop or self.loop)


def _main_lane_start(self, frame, version, correlation_id, slot, session, loop):
    d = self.dispatcher
    if session is not None and (not session.authenticated or session.expires_at is not None):
        return None
    route = d._route(PRODUCE_API_KEY, version)
    if route is None or route[0] is not produce_handler:
        return None
    state = d.state
    view = state.view
    if view is not self._view or state.me.node_id != self._node_id:
        self._new_view(view, state.me.node_id)
    read = rec.read_lane_request(frame, d._routes_limit, self._table, produce_lane._LANE_UPSTREAM,
                                 d.observer is NULL_OBSERVER)
    if read is None:
        return self._start_read(frame, route[1], correlation_id, slot, session, loop)
    if not state.lease_valid():
        return None
    request, routes, upstream = read
    answer = self._send(request, routes, None, slot, loop.time(), loop, view, correlation_id, session, upstream)
    if answer is not None:
        self.compiled += 1
    return answer


@contextlib.contextmanager
def code_of(side: str):
    with pytest.MonkeyPatch.context() as patch:
        if side == "main":
            patch.setattr(ClientConnection, "_read_loop", _main_read_loop)
            patch.setattr(ClientConnection, "_read_one", _main_read_one, raising=False)
            patch.setattr(ClientConnection, "_started_now", _main_started_now, raising=False)
            patch.setattr(ClientConnection, "_buffered_frame", _main_buffered_frame, raising=False)
            patch.setattr(ClientConnection, "_finish", _main_finish)
            patch.setattr(_InFlight, "done", _main_done, raising=False)
            patch.setattr(Dispatcher, "start_now", _main_start_now)
            patch.setattr(ProduceLane, "start", _main_lane_start)
        yield


# -- the dispatcher and the scenario ----------------------------------------------------------------------------

LANE, LATER, GENERIC, CLOSE, FAIL, RAISES = "lane", "later", "generic", "close", "fail", "raises"


class WayDispatcher:
    """Stands in for the dispatcher: request `corr`'s way is `ways[corr]`: taken by `start_now` and answered at once
    (LANE) or a loop step later (LATER), left to `start` (GENERIC), answered by a CloseConnection (CLOSE, by the
    lane) or failed (FAIL, by `start`), or `start_now` raises (RAISES)."""

    def __init__(self, ways: dict[int, str]):
        self.ways = ways
        self.started: list[tuple[int, str, int]] = []  # (correlation id, "now" or "start", frame size)

    def start_now(self, frame, slot: int, session=None):
        _key, _version, corr = codec.peek_header(frame)
        way = self.ways.get(corr, GENERIC)
        if way in (GENERIC, FAIL):
            return None
        self.started.append((corr, "now", len(frame)))
        if way == RAISES:
            raise RuntimeError(f"the lane's step failed on {corr}")
        fut = asyncio.get_running_loop().create_future()
        answer = CloseConnection(f"closed at {corr}") if way == CLOSE else answer_frame(corr, 40 + corr % 7)
        if way == LATER:
            asyncio.get_running_loop().call_soon(fut.set_result, answer)
        else:
            fut.set_result(answer)
        return fut

    async def start(self, frame, slot: int, session=None, lane: bool = True):
        assert not lane
        _key, _version, corr = codec.peek_header(frame)
        self.started.append((corr, "start", len(frame)))
        await asyncio.sleep(0)
        fut = asyncio.get_running_loop().create_future()
        if self.ways.get(corr) == FAIL:
            fut.set_exception(RuntimeError(f"request {corr} failed"))
        else:
            fut.set_result(answer_frame(corr, 24))
        return fut

    def forget(self, slot: int) -> None:
        pass


async def outcome(sizes: list[int], ways: dict[int, str], slots: int, held_bytes: int, authenticated: bool,
                  pieces: int):
    d = WayDispatcher(ways)
    limits = Limits(max_frame_bytes=300_000, max_pre_auth_frame_bytes=2_000, max_inflight_requests=slots,
                    max_inflight_bytes=held_bytes)
    budget = ByteBudget(1 << 30)
    conns: list[ClientConnection] = []

    async def on_client(reader, writer):
        conns.append(conn := ClientConnection(reader, writer, d, limits, budget, Session(authenticated=authenticated)))
        await conn.run()

    lines: list[tuple[str, int, str]] = []
    handler = logging.Handler(logging.DEBUG)
    root = logging.getLogger("fedkafka")
    server = await start_server(on_client, "127.0.0.1", 0)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        peer = str(w.get_extra_info("sockname"))
        handler.emit = lambda rec: lines.append((rec.name, rec.levelno, rec.getMessage().replace(peer, "PEER")))
        root.addHandler(handler)
        reading = asyncio.create_task(rest_until_closed(r))  # as the client writes: a closing proxy stops reading
        data = b"".join(frame_of(corr, size) for corr, size in enumerate(sizes, 1))
        step = -(-len(data) // pieces)
        try:
            for at in range(0, len(data), step):
                w.write(data[at:at + step])
                await w.drain()
                await asyncio.sleep(0)
            w.write_eof()
        except ConnectionError:  # the proxy closed first (a CloseConnection, a failure, the frame limit)
            pass
        got = await reading
        w.close()
        await until(lambda: bool(conns) and conns[0]._read_task is not None and conns[0]._read_task.done()
                    and not conns[0]._responses)
        await asyncio.sleep(0.01)  # run() ends: the writer task and the close
        conn = conns[0]
        return (got, d.started, budget.used, conn.held.used, conn._free_slots, conn._in_flight, lines)
    finally:
        root.removeHandler(handler)
        server.close()


def ways_of(draw, n: int) -> dict[int, str]:
    """Each request's way; a failure (FAIL, RAISES) or an oversized frame only last: what is read after it is the
    sockets' timing, on main as here."""
    ways = {c: draw(st.sampled_from([LANE, LANE, LATER, GENERIC, CLOSE])) for c in range(1, n)}
    ways[n] = draw(st.sampled_from([LANE, LATER, GENERIC, CLOSE, FAIL, RAISES]))
    return ways


@st.composite
def connections(draw):
    n = draw(st.integers(1, 8))
    sizes = draw(st.lists(st.sampled_from([16, 300, 1_500, 5_000, 20_000, 140_000]), min_size=n, max_size=n))
    if draw(st.booleans()):  # the last one over the frame limit: the connection closes, one line
        sizes[-1] = 400_000
    return (sizes, ways_of(draw, n), draw(st.integers(1, 3)), draw(st.sampled_from([300_000, 1 << 20])),
            draw(st.booleans()), draw(st.sampled_from([1, 3])))


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])  # sockets, loaded
@given(connections())
def test_the_cut_connection_reads_dispatches_answers_and_gives_back_what_main_s_code_does(case):
    sizes, ways, slots, held_bytes, authenticated, pieces = case
    results = {}
    for side in ("main", "new"):
        with code_of(side):
            results[side] = asyncio.run(outcome(sizes, ways, slots, held_bytes, authenticated, pieces))
    assert results["new"] == results["main"]
    _got, started, budget_used, held_used, free_slots, in_flight, _lines = results["new"]
    assert budget_used == held_used == in_flight == 0 and free_slots == slots  # and it is not vacuous:
    assert started or sizes[0] > (300_000 if authenticated else 2_000)


@pytest.mark.parametrize("side", ["main", "new"])
def test_a_staged_lane_request_costs_the_connection_three_python_calls_fewer(side):
    """The Python functions of connection.py that 20 pipelined requests the lane takes at once run: main's ran
    `_buffered_frame`, `_started_now` and `_InFlight.done` for each; the cut runs none of them, and the same others."""
    n = 20

    async def scenario() -> list[str]:
        d = WayDispatcher({})
        d.ways = {c: LATER for c in range(1, n + 1)}
        server = await start_server(lambda reader, writer: ClientConnection(reader, writer, d).run(), "127.0.0.1", 0)
        called: list[str] = []

        def profile(f, what, _arg):
            if what == "call" and f.f_code.co_filename in (connection.__file__, __file__):
                called.append(f.f_code.co_qualname)
        try:
            r, w = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            data = b"".join(frame_of(c, 16) for c in range(1, n + 1))
            sys.setprofile(profile)
            try:
                w.write(data)
                w.write_eof()
                got = await rest_until_closed(r)
            finally:
                sys.setprofile(None)
            answered, at = [], 0
            while at < len(got):
                size, corr = struct.unpack_from(">ii", got, at)
                answered.append(corr)
                at += 4 + size
            assert answered == list(range(1, n + 1)) and d.started == [(c, "now", 16) for c in range(1, n + 1)]
            w.close()
            return called
        finally:
            server.close()
    with code_of(side):
        called = asyncio.run(scenario())
    cut = ["_main_buffered_frame", "_main_started_now", "_main_done"]  # main's, kept here
    # (main's loop asked `_buffered_frame` once more: for the end of the stream)
    assert [min(called.count(name), n) for name in cut] == ([n, n, n] if side == "main" else [0, 0, 0])
    kept = ["ClientConnection._queued", "_InFlight.__init__", "_InFlight._answered"]
    assert [called.count(name) for name in kept] == [n, n, n]


# -- the lane's start: the dispatcher's `start_now` is `ProduceLane.start` -----------------------------------------


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])  # sockets, loaded
@given(lane_requests(), broker_answers(), st.sampled_from(EVENTS), st.booleans())
def test_the_lane_s_own_start_writes_answers_counts_and_logs_what_main_s_start_now_and_start_do(
        request, answers, event, metrics):
    """Session 36's scenario (`test_s36_produce_shared_cut.outcome`: a request through `start_now`, else the generic
    path, before and after the drawn event), main's `Dispatcher.start_now` and `ProduceLane.start` against the lane's
    own start, which reads the header itself."""
    assert_same_outcome(request, event, lambda: outcome_of_lane(request, event, answers, metrics), code_of)


@pytest.mark.skipif(rec._lane_read is None, reason="the compiled twin is not built")
@pytest.mark.parametrize("side", ["main", "new"])
def test_a_lane_request_through_the_dispatcher_s_start_now_calls_the_lane_s_start_only(side):
    """A connection reads the dispatcher's `start_now` once and calls it per request: main's was the dispatcher's
    method, which called `ProduceLane.start`; the cut's is `ProduceLane.start` itself (a call less a request)."""
    async def scenario() -> list[str]:
        broker = await EventBroker().start()
        d = await proxy(view(), broker)
        d.observer = NULL_OBSERVER
        request = lane_frame({0: lane_batch(2)})
        start_now = d.start_now  # as `ClientConnection` reads it, once
        try:
            await start_now(request, 0)
            return await calls_of_a_lane_request(start_now, request)
        finally:
            d.pool.close()
            broker.close()
    with using("compiled"), code_of(side):
        called = run(scenario)
    starts = [name for name in called if name in ("_main_start_now", "_main_lane_start", "ProduceLane.start")]
    assert starts == (["_main_start_now", "_main_lane_start"] if side == "main" else ["ProduceLane.start"])
    assert "ProduceLane._send" in called
