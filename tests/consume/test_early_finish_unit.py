"""The core's fan-out rule (docs/DESIGN.md §3.1): a plan with `return_early` finishes at the first result with data,
the slower calls are left running (their dedicated connections return to the pool when their broker answers)."""

from __future__ import annotations

import asyncio

from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.plan import UNANSWERED, AnyBroker, Call


class _Physical:
    def mark_unreachable(self, cluster, reason, asked=None):
        raise AssertionError("no call failed")


def _dispatcher() -> Dispatcher:
    d = Dispatcher.__new__(Dispatcher)  # _collect needs nothing but `physical`
    d.physical = _Physical()
    return d


def test_finishes_at_first_data_and_leaves_the_quiet_call_running():
    async def scenario():
        loop = asyncio.get_running_loop()
        quiet, busy = loop.create_future(), loop.create_future()
        calls = [Call(AnyBroker("quiet"), None), Call(AnyBroker("busy"), None)]
        loop.call_later(0.01, busy.set_result, "data")
        results = await _dispatcher()._collect(calls, [quiet, busy], return_early=lambda r: r == "data")
        assert results == [UNANSWERED, "data"]
        assert not quiet.cancelled()  # still owned by its connection
        quiet.set_result("late")

    asyncio.run(scenario())


def test_without_data_it_waits_for_every_call():
    async def scenario():
        loop = asyncio.get_running_loop()
        a, b = loop.create_future(), loop.create_future()
        loop.call_later(0.01, a.set_result, "empty")
        loop.call_later(0.02, b.set_result, "empty")
        calls = [Call(AnyBroker("a"), None), Call(AnyBroker("b"), None)]
        assert await _dispatcher()._collect(calls, [a, b], return_early=lambda r: r == "data") == ["empty", "empty"]

    asyncio.run(scenario())
