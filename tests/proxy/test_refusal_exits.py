"""A request's refusals are reported once (one line and one count per reason), however the request ends: answered
(on the generic path's one-call callback, its task of several calls, a cached answer), its handler or a later round
failing, or cancelled (before or after its task or its later rounds started). Each scenario's handler refuses t/0
(frozen) and then ends the request its way; the dispatcher reports at its one completion point per path
(docs/DESIGN.md "Refusal log")."""

from __future__ import annotations

import asyncio
import logging

import pytest
from kio.schema.metadata.v12.request import MetadataRequest

from fedkafka.protocol import codec
from fedkafka.proxy.core import dispatch
from fedkafka.proxy.core.dispatch import Dispatcher, ProtocolViolation
from fedkafka.proxy.core.metrics import RequestMetrics
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.plan import Broker, Call, Plan
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import ProxyInfo, ProxyRole, View

REQUEST = MetadataRequest(topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)
METADATA = codec.encode_request(REQUEST, 5, "app")[4:]


class Broken(RuntimeError):
    pass


def fails(_results):
    raise Broken("the handler failed")


def cancelled(_results):
    raise asyncio.CancelledError()


def answered(_results):
    return dispatch.NO_RESPONSE


def then(finish):
    """A finish that returns one more round (no calls) ending with `finish`."""
    return lambda _results: Plan([], finish)


class Refusing:
    """A Metadata v12 handler module that refuses t/0 (frozen), then replies `reply(...)` (raising what it raises);
    `cached`: it has a cache key (its answers are remembered, `Dispatcher._answer_key`)."""

    API_KEYS = {3: (12, 12)}
    ROLE = "any"

    def __init__(self, reply, cached: bool = False):
        self.reply = reply
        if cached:
            self.cache_key = lambda ctx, request: "all"

    def handle(self, ctx, header, request):
        ctx.refused("frozen", "t", 0, "frozen for a move")
        return self.reply()


def dispatcher(module=None) -> Dispatcher:
    state = ProxyState(view=View(version=1), me=ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY))
    return Dispatcher(state=state, physical=PhysicalClusters(), producer_ids=None, pool=UpstreamPool(),
                      modules=[module or Refusing(lambda: None)], observer=RequestMetrics())


def reported_once(caplog, d: Dispatcher) -> None:
    lines = [r.getMessage() for r in caplog.records if r.name == "fedkafka.refusals"]
    assert d.observer.refusals == {"frozen": 1}, (d.observer.refusals, lines)
    assert len(lines) == 1 and "t/0" in lines[0] and "client='app'" in lines[0], lines


def handler_failing():
    raise Broken("the handler failed")


def handler_misreading():
    raise codec.DecodeError("opaque bytes past their bound")


# -- through `start`: the handler's reply (no upstream call: the plans have none, so several rounds are a task) --

START = {
    "the handler fails": (handler_failing, Broken, False),
    "the handler fails to decode": (handler_misreading, ProtocolViolation, False),
    "a barrier round fails": (lambda: Plan([], fails, barrier=True), Broken, False),
    "the task's first answer fails": (lambda: Plan([], fails), Broken, False),
    "a later round of the task fails": (lambda: Plan([], then(fails)), Broken, False),
    "the task is answered": (lambda: Plan([], answered), None, False),
    "a later round of the task is answered": (lambda: Plan([], then(answered)), None, False),
    "a cached answer": (lambda: dispatch.NO_RESPONSE, None, True),
}


@pytest.mark.parametrize("scenario", list(START))
def test_a_request_started_reports_its_refusals_once(caplog, scenario):
    reply, error, cached = START[scenario]
    d = dispatcher(Refusing(reply, cached))

    async def run():
        pending = await d.start(METADATA, 0)
        return await pending

    with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
        if error is None:
            assert asyncio.run(run()) is None  # NO_RESPONSE: answered with nothing
        else:
            with pytest.raises(error):
                asyncio.run(run())
    reported_once(caplog, d)


def test_a_task_cancelled_before_it_starts_reports_its_handler_s_refusals(caplog):
    d = dispatcher(Refusing(lambda: Plan([], answered)))

    async def run():
        pending = await d.start(METADATA, 0)
        pending.cancel()  # the client's connection went away in the same loop step
        with pytest.raises(asyncio.CancelledError):
            await pending

    with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
        asyncio.run(run())
    reported_once(caplog, d)


# -- the one-call callback (`Dispatcher._one_call`): the broker's answer, then the handler's finish ---------------

ONE_CALL = {
    "answered": (answered, None),
    "its finish fails": (fails, Broken),
    "its finish is cancelled": (cancelled, asyncio.CancelledError),
    "a later round is answered": (then(answered), None),
    "a later round fails": (then(fails), Broken),
    "cancelled while the broker holds it": (answered, "cancel before the answer"),
    "cancelled before its later round starts": (then(answered), "cancel after the answer"),
}


@pytest.mark.parametrize("scenario", list(ONE_CALL))
def test_a_request_of_one_call_reports_its_refusals_once(caplog, scenario):
    finish, outcome = ONE_CALL[scenario]
    d = dispatcher()
    ctx = d.context("app", advertised={})

    async def run():
        loop = d.loop
        item = loop.create_future()
        ctx.refused("frozen", "t", 0, "frozen for a move")  # the handler's, before its call went out
        answer = d._one_call(loop, Plan([Call(Broker("c1", 1), REQUEST)], finish), item, 0, 7, None, None, ctx)
        if outcome == "cancel before the answer":
            answer.cancel()
            await asyncio.sleep(0)  # the call's callback runs
        else:
            item.set_result(object())
            if outcome == "cancel after the answer":
                await asyncio.sleep(0)  # the callback ran: the later round's task is made, not started
                assert not answer.done()
                answer.cancel()
        await asyncio.wait({answer})  # its later round's task and what it hands the answer, if any
        await asyncio.sleep(0)  # a cancelled later round's task ends (it was never started)
        if outcome is None:
            assert await answer is None
        elif isinstance(outcome, str) or outcome is asyncio.CancelledError:
            assert answer.cancelled()
        else:
            assert isinstance(answer.exception(), outcome)

    with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
        asyncio.run(run())
    reported_once(caplog, d)
