"""A plan of one upstream call is completed by a done-callback, not a Task (`Dispatcher._one_call`): the same
outcomes as `_complete` gave (timeout, cancellation, a failing finish, further rounds), and no Task per request."""

from __future__ import annotations

import asyncio

import pytest

from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.plan import NO_RESPONSE, Broker, Call, Plan, UpstreamError
from proxy.test_limits_unit import _Physical, _Pool


class _Finish:
    """A handler's finish: records each round's results; returns `then` (a callable of the results) or NO_RESPONSE."""

    def __init__(self, then=None):
        self.results: list[list] = []
        self.then = then

    def __call__(self, results):
        self.results.append(results)
        return self.then(results) if self.then else NO_RESPONSE


def _dispatcher() -> Dispatcher:
    d = Dispatcher.__new__(Dispatcher)
    d.physical, d.pool = _Physical(), _Pool()
    d._dedicated_by_slot = {}
    return d


async def _one(finish: _Finish, timeout_s: float = 30) -> tuple[Dispatcher, asyncio.Future, asyncio.Future]:
    """A one-call plan's answer future and the upstream future it waits for."""
    d = _dispatcher()
    loop = d.loop
    item = loop.create_future()
    plan = Plan([Call(Broker("c1", 1), None, timeout_s=timeout_s)], finish)
    return d, d._one_call(loop, plan, item, 0, 7, None, None), item


def test_one_call_is_answered_by_its_finish_without_a_task():
    async def scenario():
        finish = _Finish(lambda results: NO_RESPONSE)
        tasks = len(asyncio.all_tasks())
        _, answer, item = await _one(finish)
        assert len(asyncio.all_tasks()) == tasks  # old code: a Task per request ran _complete
        item.set_result("broker answer")
        assert await answer is None  # NO_RESPONSE: nothing to write
        assert finish.results == [["broker answer"]]

    asyncio.run(scenario())


def test_one_call_past_its_timeout_is_an_upstream_error_and_the_broker_is_refreshed():
    async def scenario():
        finish = _Finish()
        d, answer, _ = await _one(finish, timeout_s=0.01)
        assert await answer is None
        (result,) = finish.results[0]
        assert isinstance(result, UpstreamError) and result.reason == "request timed out"
        assert d.physical.lost == ["c1"]

    asyncio.run(scenario())


def test_one_call_whose_connection_broke_is_an_upstream_error():
    async def scenario():
        finish = _Finish()
        _, answer, item = await _one(finish)
        item.set_exception(ConnectionError("c1:1: closed"))
        assert await answer is None
        (result,) = finish.results[0]
        assert isinstance(result, UpstreamError) and "closed" in result.reason

    asyncio.run(scenario())


def test_a_cancelled_answer_cancels_its_upstream_call():
    async def scenario():
        finish = _Finish()
        _, answer, item = await _one(finish)
        waiting = asyncio.ensure_future(answer)
        await asyncio.sleep(0)
        waiting.cancel()  # the connection's writer, cancelled at the loop's teardown
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert answer.cancelled() and item.cancelled()
        await asyncio.sleep(0)
        assert finish.results == []  # the handler never saw it

    asyncio.run(scenario())


def test_a_failing_finish_fails_the_answer():
    async def scenario():
        def boom(results):
            raise RuntimeError("handler bug")

        _, answer, item = await _one(_Finish(boom))
        item.set_result("broker answer")
        with pytest.raises(RuntimeError, match="handler bug"):
            await answer

    asyncio.run(scenario())


def test_a_finish_that_returns_another_plan_goes_on_in_rounds():
    async def scenario():
        second = _Finish()
        first = _Finish(lambda results: Plan([], second))
        _, answer, item = await _one(first)
        item.set_result("broker answer")
        assert await answer is None
        assert first.results == [["broker answer"]] and second.results == [[]]

    asyncio.run(scenario())


def test_a_call_cancelled_by_another_cancels_the_answer():
    """As for the Task that awaited it: its coroutine saw CancelledError, and the Task ended cancelled."""
    async def scenario():
        finish = _Finish()
        _, answer, item = await _one(finish)
        item.cancel()
        with pytest.raises(asyncio.CancelledError):
            await answer
        assert answer.cancelled() and finish.results == []

    asyncio.run(scenario())
