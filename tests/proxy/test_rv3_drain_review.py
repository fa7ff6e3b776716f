"""Reviewer rv3 of s33-drain (`_uncount_answered`, `DrainedLaterRound`): no defect found; these pin the edges of
`start`'s done-callback that the branch's own tests leave out, each asserting the drain count (`writes_in_flight`)
and what is held (`abandoned_writes`). A written call unanswered keeps the count; an answered one releases it."""

from __future__ import annotations

import asyncio

from fedkafka.proxy.core import dispatch
from fedkafka.proxy.plan import Broker, Call
from proxy.test_abandoned_writes_in_flight import METADATA
from proxy.test_hostile_requests_unit import produce_v3
from proxy.test_produce_lane import run
from proxy.test_rv5_review import _dispatcher_writing, _turns


def _two_calls() -> list[Call]:
    return [Call(Broker("c1", 1), METADATA), Call(Broker("c1", 2), METADATA)]


def test_a_several_calls_answer_cancelled_before_its_calls_are_awaited_stays_counted():
    """`_complete` cancelled after gather made its per-call tasks but before any ran: the calls' futures are neither
    cancelled nor answered (nothing awaits them), pending at the broker: held, released by the drain's close."""
    async def scenario():
        loop = asyncio.get_running_loop()
        d, conn = _dispatcher_writing(loop, _two_calls())
        answer = await d.start(produce_v3(1), 0, None, lane=False)
        await asyncio.sleep(0)  # `_complete`'s first step: `_collect`'s gather, its tasks not started
        answer.cancel()
        await _turns()
        assert answer.cancelled() and not any(f.done() for f in conn.futures)
        assert sum(d.writes_in_flight.values()) == 1 and len(d.abandoned_writes) == 1
        d.close_drained_upstream()
        assert sum(d.writes_in_flight.values()) == 0 and not len(d.abandoned_writes)
    run(scenario)


def test_a_one_call_answer_cancelled_as_its_call_times_out_stays_counted():
    """The call's timer fired (`_time_out`) and the answer was cancelled before `_one_answered` ran, so `_outcome`
    never closed the call's connection: the broker may still append it, and the request stays held."""
    async def scenario():
        loop = asyncio.get_running_loop()
        d, conn = _dispatcher_writing(loop, [Call(Broker("c1", 1), METADATA)])
        answer = await d.start(produce_v3(1), 0, None, lane=False)
        dispatch._time_out(conn.futures[0])
        answer.cancel()
        await _turns()
        assert sum(d.writes_in_flight.values()) == 1 and len(d.abandoned_writes) == 1
    run(scenario)


def test_a_one_call_answer_cancelled_once_its_broker_answered_is_uncounted_at_once():
    """The broker's answer came, the client's answer cancelled before `_one_answered` ran: nothing left to land."""
    async def scenario():
        loop = asyncio.get_running_loop()
        d, conn = _dispatcher_writing(loop, [Call(Broker("c1", 1), METADATA)])
        answer = await d.start(produce_v3(1), 0, None, lane=False)
        conn.futures[0].set_result(object())
        answer.cancel()
        await _turns()
        assert answer.cancelled()
        assert sum(d.writes_in_flight.values()) == 0 and not len(d.abandoned_writes)
    run(scenario)


def test_a_several_calls_answer_failed_by_one_call_while_another_is_pending_stays_counted():
    """One call fails with an error `_outcome` raises (not a timeout or a lost connection): gather fails the answer at
    once, the other call still out at its broker: held, not uncounted."""
    async def scenario():
        loop = asyncio.get_running_loop()
        d, conn = _dispatcher_writing(loop, _two_calls())
        answer = await d.start(produce_v3(1), 0, None, lane=False)
        await _turns(3)  # both calls awaited
        conn.futures[0].set_exception(RuntimeError("an answer no reader expected"))
        await _turns()
        assert isinstance(answer.exception(), RuntimeError) and not conn.futures[1].done()
        assert sum(d.writes_in_flight.values()) == 1 and len(d.abandoned_writes) == 1
    run(scenario)


def test_held_and_answered_drained_requests_are_each_uncounted_once():
    """Five drained requests, one cancelled with its call out, four answered; the drain's close run twice: the count
    ends at zero, never below (no double release)."""
    async def scenario():
        loop = asyncio.get_running_loop()
        d, conn = _dispatcher_writing(loop, [Call(Broker("c1", 1), METADATA)])
        answers = [await d.start(produce_v3(1), 0, None, lane=False) for _ in range(5)]
        answers[0].cancel()
        for fut in conn.futures[1:]:
            fut.set_result(object())
        await _turns()
        assert sum(d.writes_in_flight.values()) == 1
        d.close_drained_upstream()
        d.close_drained_upstream()
        await _turns()
        assert list(d.writes_in_flight.values()) == [0] and not len(d.abandoned_writes)
    run(scenario)
