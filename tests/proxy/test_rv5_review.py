"""Reviewer rv5 of f12c4f1 (drain counts of requests given up on once written): its failing tests, and those of the
change that closed its two known gaps (s33-drain: a generic answer cancelled once written, a drained request's later
round), each failed before it (the controls excepted)."""

from __future__ import annotations

import asyncio
import types

import pytest

from fedkafka.controller.moves import Mover
from fedkafka.controller.service import Settings
from fedkafka.fencing import ABANDONED_SETTLE_S
from fedkafka.proxy.plan import NO_RESPONSE
from proxy.test_in_flight_abandoned_and_full import _generic_proxy_holding_p0
from proxy.test_produce_in_flight_fresh_id import _request
from proxy.test_produce_lane import run


def test_a_proxy_holding_an_abandoned_written_request_can_still_ack_a_frozen_view_before_the_controller_gives_up():
    """A renewing proxy is held to `live_ack_timeout_s` (moves.await_version: `stuck` after it, MoveFailed), 38.3 s
    at the defaults, less than ABANDONED_SETTLE_S: a request given up on once written (a barrier round cancelled
    mid-call, here) must not hold the drain that long. The drain closes the upstream connections at DRAIN_PATIENCE_S
    (below the live ack timeout), and closing the connection the written call is pending on bounds what the broker
    can still append, so the count goes then (`AbandonedWrites.close`), not ABANDONED_SETTLE_S later. Here the
    drain's patience is 0 and the 80 s timer cannot fire while the test runs."""
    from fedkafka.proxy.core.server import InflightProduce
    from fedkafka.proxy.core.upstream import PRODUCE_API_KEY
    from proxy.test_produce_in_flight_fresh_id import _routed
    from proxy.test_produce_lane import PID

    live = Mover(types.SimpleNamespace(settings=Settings(db_url="sqlite://"))).live_ack_timeout  # the defaults
    assert live < ABANDONED_SETTLE_S  # why the close, not the timer, must end the drain

    async def scenario():
        now = [1000.0]
        async with _generic_proxy_holding_p0(now) as (table, _broker, d):
            version = d.state.view.version
            started = asyncio.ensure_future(d.start(_request([(1, 15), (0, 6)]), 0, None))
            await _routed(table, (PID, 0, "t", 1), 16)
            started.cancel()  # the client's connection broke mid-round: the round's call is written, held
            for _ in range(5):
                await asyncio.sleep(0)
            assert started.cancelled() and d.writes_in_flight[version] == 1
            # the server's close (before this change: `pool.close_pending(PRODUCE_API_KEY)` alone)
            inflight = InflightProduce(getattr(d, "close_drained_upstream", None) or
                                       (lambda: d.pool.close_pending(PRODUCE_API_KEY)))
            inflight.by_version = d.writes_in_flight
            drain = asyncio.ensure_future(inflight.drain_before(version + 1, patience_s=0))
            for _ in range(200):
                if drain.done():
                    break
                await asyncio.sleep(0.005)
            assert drain.done(), "the drain still waits for the abandoned request's 80 s timer"
            assert d.writes_in_flight[version] == 0 and not len(d.abandoned_writes), "a record kept past its release"
    run(scenario)


def test_a_generic_one_call_produce_whose_answer_is_cancelled_once_written_stays_counted_for_the_drain():
    """The lane keeps a written request whose answer was cancelled in `writes_in_flight` ABANDONED_SETTLE_S (lane
    `_abandoned`, DESIGN table: 'a lane call whose client answer was cancelled once written'); the generic one-call
    path (`_one_call`) uncounted the same request at once (a strict xfail until this change): `start` added
    `_uncount` as a done-callback of the answer, which a cancellation runs immediately, though the broker holds the
    request and may append it above the seal. Now that done-callback (`_uncount_answered`) holds it with its written
    call's future, as the lane does, until the drain's close of its connection (`close_drained_upstream`)."""
    async def scenario():
        now = [1000.0]
        async with _generic_proxy_holding_p0(now) as (_table, broker, d):
            five = await d.start(_request([(0, 5)]), 0, None)
            for _ in range(20):
                await asyncio.sleep(0)
            assert sum(d.writes_in_flight.values()) == 1  # written upstream, its answer held by the broker
            five.cancel()  # the loop's teardown cancels the writer's awaited answer (connection._parked)
            for _ in range(20):
                await asyncio.sleep(0)
            assert 5 not in broker.written.get(0, ()), "the broker still holds it: it may yet be appended"
            assert sum(d.writes_in_flight.values()) == 1, \
                "uncounted at once while written (the lane keeps the same request counted ABANDONED_SETTLE_S)"
            assert len(d.abandoned_writes) == 1
            d.close_drained_upstream()  # the drain's close at DRAIN_PATIENCE_S: its connection, then its count
            assert sum(d.writes_in_flight.values()) == 0 and not len(d.abandoned_writes)
    run(scenario)




class _Recorded:
    """An open pooled connection: `send` writes at once (synchronously); the calls' futures kept, to answer them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.futures: list[asyncio.Future] = []

    def send(self, request, expect_response=True, client_id=None):
        fut = self.loop.create_future()
        self.futures.append(fut)
        return fut


def _dispatcher_writing(loop: asyncio.AbstractEventLoop, first: list, finish=lambda results: NO_RESPONSE):
    """A dispatcher counting drained requests, every broker's connection open (`_Recorded`), and a handler returning
    the plan of the calls `first` and `finish` (no barrier: `start` sends it, its first answer round)."""
    import collections

    from fedkafka.proxy.plan import Plan
    from proxy.test_hostile_requests_unit import dispatcher

    d = dispatcher()
    d._loop = loop
    d.writes_in_flight = collections.Counter()
    conn = _Recorded(loop)
    d.physical.address = lambda cluster, node: ("h", node)  # type: ignore[method-assign]
    d.pool.ready = lambda host, port, key: conn  # type: ignore[method-assign]
    plan = Plan(first, finish)
    d._handle = lambda *args: (plan, None, None, d.context("app"))  # type: ignore[method-assign]
    return d, conn


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("first_calls", [1, 2], ids=["one-call", "several-calls"])
def test_a_drained_requests_later_round_is_refused_before_any_call_of_it_is_written(first_calls):
    """Was rv5's strict xfail `test_a_later_round_that_fails_after_writing_a_call_keeps_the_drain_count_as_a_barrier_
    round_does` (whose dispatcher had no context: it failed on `ctx.client_id` in `start`, before its own assertions).
    A round run after a drained request's first answer (`_finish_rounds`, on the one-call path's Task or
    `_complete`'s) ends in the client's answer, whose done-callback cannot tell what such a round wrote when it was
    cancelled; no drained handler returns one, so `_finish_rounds` refuses it before it sends anything
    (`DrainedLaterRound`): the count goes at once and rightly, the first round answered, nothing else written. Before
    this change the later round's two calls were written (and its failure or cancellation uncounted it at once)."""
    from fedkafka.proxy.core import dispatch
    from fedkafka.proxy.plan import Broker, Call, Plan
    from proxy.test_abandoned_writes_in_flight import METADATA
    from proxy.test_hostile_requests_unit import produce_v3

    async def scenario():
        loop = asyncio.get_running_loop()
        abandoned: list[str] = []
        later = Plan([Call(Broker("c1", 1), METADATA), Call(Broker("c1", 2), METADATA)], lambda results: NO_RESPONSE,
                     abandoned=lambda: abandoned.append("later"))
        d, conn = _dispatcher_writing(loop, [Call(Broker("c1", n), METADATA) for n in range(1, first_calls + 1)],
                                      lambda results: later)
        answer = await d.start(produce_v3(1), 0, None, lane=False)  # a Produce: drained
        assert sum(d.writes_in_flight.values()) == 1 and len(conn.futures) == first_calls
        for fut in conn.futures:
            fut.set_result(object())  # the first round answered by its brokers
        await _turns()
        assert len(conn.futures) == first_calls, "the later round of a drained request wrote its calls"
        assert answer.done()
        assert type(answer.exception()).__name__ == "DrainedLaterRound"
        assert isinstance(answer.exception(), dispatch.DrainedLaterRound)
        assert sum(d.writes_in_flight.values()) == 0 and not len(d.abandoned_writes)  # nothing left to wait for
        assert abandoned == ["later"] or abandoned == ["later", "later"]  # its hook: the plan was given up on
    run(scenario)


@pytest.mark.parametrize("first_calls", [1, 2], ids=["one-call", "several-calls"])
def test_a_later_round_of_a_request_not_drained_still_runs(first_calls):
    """Control (passes before and after): the refusal is a drained request's only; a group listing (ListGroups asks a
    broker for the coordination cluster's brokers, then each of them) keeps its later rounds."""
    from fedkafka.proxy.plan import Broker, Call, Plan
    from proxy.test_abandoned_writes_in_flight import METADATA
    from proxy.test_hostile_requests_unit import metadata_frame

    async def scenario():
        loop = asyncio.get_running_loop()
        later = Plan([Call(Broker("c1", 1), METADATA), Call(Broker("c1", 2), METADATA)], lambda results: NO_RESPONSE)
        d, conn = _dispatcher_writing(loop, [Call(Broker("c1", n), METADATA) for n in range(1, first_calls + 1)],
                                      lambda results: later)
        answer = await d.start(metadata_frame(["t"]), 0, None, lane=False)
        for fut in conn.futures:
            fut.set_result(object())
        await _turns()
        assert len(conn.futures) == first_calls + 2  # the later round written
        for fut in conn.futures[first_calls:]:
            fut.set_result(object())
        await _turns()
        assert answer.result() is None and not +d.writes_in_flight  # NO_RESPONSE's answer; nothing counted
    run(scenario)


@pytest.mark.parametrize("task_started", [True, False], ids=["mid-call", "before-its-first-step"])
def test_a_drained_request_of_several_calls_cancelled_once_written_stays_counted_until_the_drain_closes_them(
        task_started):
    """The several-calls path (`_complete`'s Task), as the one-call path above: cancelled with its calls written and
    unanswered (the loop's teardown), the request stays counted (held in `abandoned_writes`) until the drain's close
    of their connections; the Task cancelled before its first step cancels none of its calls, which are pending all
    the same. Before this change it was uncounted at the cancellation (`start`'s `_uncount` done-callback)."""
    from fedkafka.proxy.plan import Broker, Call
    from proxy.test_abandoned_writes_in_flight import METADATA
    from proxy.test_hostile_requests_unit import produce_v3

    async def scenario():
        loop = asyncio.get_running_loop()
        d, conn = _dispatcher_writing(loop, [Call(Broker("c1", 1), METADATA), Call(Broker("c1", 2), METADATA)])
        answer = await d.start(produce_v3(1), 0, None, lane=False)
        if task_started:
            await _turns(2)  # `_complete` awaits its calls' answers
        conn.futures[0].set_result(object())  # one answered, the other still pending at the broker
        answer.cancel()
        await _turns()
        assert answer.cancelled() and len(conn.futures) == 2
        assert sum(d.writes_in_flight.values()) == 1, "uncounted at once while a written call is unanswered"
        assert len(d.abandoned_writes) == 1
        d.close_drained_upstream()
        assert sum(d.writes_in_flight.values()) == 0 and not len(d.abandoned_writes)
    run(scenario)


@pytest.mark.parametrize("first_calls", [1, 2], ids=["one-call", "several-calls"])
def test_a_drained_request_failing_after_its_calls_were_answered_is_uncounted_at_once(first_calls):
    """Control (passes before and after): the check `start`'s done-callback now makes holds only a request with a
    written call unanswered; one whose handler's `finish` failed on its brokers' answers has nothing left to land."""
    from fedkafka.proxy.plan import Broker, Call
    from proxy.test_abandoned_writes_in_flight import METADATA
    from proxy.test_hostile_requests_unit import produce_v3

    async def scenario():
        loop = asyncio.get_running_loop()
        def failing(results):
            raise RuntimeError("the handler's finish failed")

        d, conn = _dispatcher_writing(loop, [Call(Broker("c1", n), METADATA) for n in range(1, first_calls + 1)],
                                      failing)
        answer = await d.start(produce_v3(1), 0, None, lane=False)
        for fut in conn.futures:
            fut.set_result(object())
        await _turns()
        assert isinstance(answer.exception(), RuntimeError)
        assert sum(d.writes_in_flight.values()) == 0 and not len(d.abandoned_writes)
    run(scenario)
