"""Review rv3 (merges 311b6fc over 5dd29bc): every exit that gives up on a plan before its `finish` ran calls the
plan's `abandoned` hook (Plan.abandoned: "Called (at least once) when the core gives up on the plan before
`finish` ran on its results: cancelled ... or failed").

On the one-call path (`Dispatcher._one_call`) a handler whose first answer returns a further plan gets that plan
run in a Task (`_finish_rounds`). When the request is cancelled after the first answer but before that Task took
its first step, the Task's coroutine never runs: `_finish_rounds`'s except (which abandons) is never reached, and
`_pass_on` (which now handles that very case for the refusals) does not abandon. The later plan's hook is never
called: its counted batches (produce: `note_sent` at plan creation) would stay counted until the backstop."""

from __future__ import annotations

import asyncio

from fedkafka.proxy.plan import Broker, Call, Plan
from proxy.test_refusal_exits import REQUEST, answered, dispatcher


def _run(cancel_when: str) -> list[str]:
    """A one-call request whose finish returns a later plan with an `abandoned` hook; cancelled `cancel_when`."""
    d = dispatcher()
    ctx = d.context("app", advertised={})
    calls: list[str] = []

    def later_round(_results):
        return Plan([Call(Broker("c1", 1), REQUEST)], answered, delay_s=60.0,  # a retry backoff: the Task waits
                    abandoned=lambda: calls.append("abandoned"))

    async def run():
        loop = d.loop
        item = loop.create_future()
        answer = d._one_call(loop, Plan([Call(Broker("c1", 1), REQUEST)], later_round), item, 0, 7, None, None, ctx)
        item.set_result(object())
        await asyncio.sleep(0)  # the callback ran: the later round's Task is made, not started
        assert not answer.done() and answer.awaits is not None
        if cancel_when == "after the later round started":
            await asyncio.sleep(0)  # the Task took its first step: it waits out the later round's backoff
        answer.cancel()  # the client's connection went away
        await asyncio.wait({answer})
        for _ in range(3):
            await asyncio.sleep(0)  # the Task ends; its done-callback (`_pass_on`) runs
        assert answer.cancelled()

    asyncio.run(run())
    return calls


def test_a_later_round_cancelled_after_it_started_is_abandoned():
    """The control case: the Task ran, `_finish_rounds`'s except abandons the later plan, and `_pass_on` may too (the
    hook is called at least once; a second call does nothing more, as produce's `_Part.counted` makes sure)."""
    assert set(_run("after the later round started")) == {"abandoned"}


def test_a_later_round_cancelled_before_its_task_started_is_abandoned():
    """The defect: the Task was cancelled before its first step, nothing abandons the later plan (fails today:
    `calls` is empty; dispatch.py `_pass_on` handles `rounds.cancelled()` for the refusals only)."""
    assert set(_run("before the later round started")) == {"abandoned"}
