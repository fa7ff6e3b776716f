"""The core gives up a request whose handler keeps returning plans (dispatch.MAX_PLAN_ROUNDS).

Before the cap, a handler bug (such as produce's physical id ping-pong on a partition named twice) made the
core call clusters round after round, without end. Now the request fails after the cap, as any handler
failure does: HandlerLooping (a ProtocolViolation: the connection closes) and one warning."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest
from kio.schema.metadata.v12.request import MetadataRequest

from fedkafka.protocol import codec
from fedkafka.proxy.core import dispatch
from fedkafka.proxy.core.dispatch import MAX_PLAN_ROUNDS, Dispatcher, HandlerLooping, ProtocolViolation
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import produce
from fedkafka.proxy.plan import Plan
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import ProxyInfo, ProxyRole, View

METADATA = codec.encode_request(MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                include_topic_authorized_operations=False), 5, "test")[4:]


class _Looping:
    """A handler module (Metadata v12) whose plans never end: each round's finish returns another plan (no calls,
    so nothing leaves the process) until `answer_after` rounds were run."""

    API_KEYS = {3: (12, 12)}
    ROLE = "any"

    def __init__(self, barrier: bool, answer_after: int | None = None):
        self.barrier, self.answer_after, self.rounds = barrier, answer_after, 0

    def handle(self, ctx, header, request):
        return Plan([], self.finish, barrier=self.barrier)

    def finish(self, results):
        self.rounds += 1
        if self.rounds > 1000:  # the test's own bound: a core without a cap would never stop
            raise RuntimeError(f"the core ran {self.rounds} rounds and did not give up")
        if self.rounds == self.answer_after:
            return dispatch.NO_RESPONSE
        return Plan([], self.finish, barrier=self.barrier)


def _dispatcher(module) -> Dispatcher:
    state = ProxyState(view=View(version=1), me=ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY))
    return Dispatcher(state=state, physical=PhysicalClusters(), producer_ids=None, pool=UpstreamPool(),
                      modules=[module])


def _given_up(module, caplog) -> HandlerLooping:
    """The error a Metadata request to `module` ends with (warnings captured in `caplog`)."""
    async def scenario():
        with pytest.raises(HandlerLooping) as failed:
            await _dispatcher(module).start(METADATA, 0)
        return failed.value

    with caplog.at_level(logging.WARNING, logger=dispatch.__name__):
        return asyncio.run(scenario())


def test_a_handler_that_keeps_returning_barrier_plans_is_cut_off_after_the_cap(caplog):
    module = _Looping(barrier=True)

    error = _given_up(module, caplog)
    assert module.rounds == MAX_PLAN_ROUNDS  # the cap's worth of rounds run, not one more
    assert isinstance(error, ProtocolViolation)  # the connection closes, as for a malformed request
    assert "api_key=3" in str(error) and f"after {MAX_PLAN_ROUNDS} rounds" in str(error)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "_Looping.finish" in warnings[0].getMessage()


def test_follow_up_plans_after_the_first_answers_are_cut_off_too():
    module = _Looping(barrier=False)

    async def scenario():
        pending = await _dispatcher(module).start(METADATA, 0)
        with pytest.raises(HandlerLooping):
            await pending

    asyncio.run(scenario())
    assert module.rounds == MAX_PLAN_ROUNDS + 1  # the first plan's finish, then the cap's worth of follow-ups


def test_a_handler_that_answers_within_the_cap_is_answered():
    module = _Looping(barrier=True, answer_after=MAX_PLAN_ROUNDS)

    async def scenario():
        return await (await _dispatcher(module).start(METADATA, 0))

    assert asyncio.run(scenario()) is None  # NO_RESPONSE: answered (with nothing), not given up
    assert module.rounds == MAX_PLAN_ROUNDS


def test_the_cap_leaves_room_for_the_longest_legitimate_produce():
    """Leader waits, a sealed floor, InitProducerId retries and a first batch sent alone: each a round."""
    assert MAX_PLAN_ROUNDS > produce.LEADER_WAITS + 1 + produce.PID_ATTEMPTS + 1


class _Secret:
    def __repr__(self) -> str:
        return "SECRET-" + "x" * 100_000  # a Context's repr holds the whole view and the session's secret


def test_the_warning_names_a_partial_s_function_without_the_repr_of_its_arguments(caplog):
    """produce's forward plan finishes with functools.partial(_answer, ctx, request, routing): the warning named
    it by repr, which printed the Context (the whole view, the session with the process' secret) in one line."""
    module = _Looping(barrier=True)

    def looping(secret, results):
        return module.finish(results) and Plan([], functools.partial(looping, secret), barrier=True)

    module.handle = lambda ctx, header, request: Plan([], functools.partial(looping, _Secret()), barrier=True)

    error = _given_up(module, caplog)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "SECRET" not in warning and "SECRET" not in str(error) and len(warning) < 1000
    assert "looping" in warning  # the function the partial wraps
