"""Review s37-rvfixwhole2 of s37-fixwhole (997cb299): an OffsetFetch the core refused at the write starts over
(`groups._via_coordinator`'s `finish`). Pure handler plans driven by hand; the core's refusal is its own
`Dispatcher._send` (refused before any connection: no broker, no network).
Both findings fixed in s37-fixwhole2 (`groups._Passes`: one refusal counted per request, its start-overs within
MAX_PLAN_ROUNDS)."""

from __future__ import annotations

import asyncio
import time

from kio.schema.errors import ErrorCode

from consume.test_group_offsets_past_the_fence_unit import _codes
from consume.test_handlers_unit import COORDINATOR
from consume.test_s37_offset_fetch_waits_for_renewal_unit import LIBRDKAFKA_FETCH, _context, _fenced_proxy
from fedkafka.proxy.core.dispatch import MAX_PLAN_ROUNDS
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import Plan, UpstreamError


class _Observer:
    def __init__(self, refusals: list):
        self.refusals = refusals

    def refused(self, reason, topic, partition, detail, client_id=None):
        self.refusals.append((reason, topic, partition))

    def refused_together(self, refused, client_id=None, session=None):
        raise AssertionError("not reached")


def test_an_offset_fetch_refused_at_the_write_past_a_fence_never_renewed_counts_one_lease_refusal():
    state, dispatcher, refusals = _fenced_proxy()
    dispatcher.observer = _Observer(refusals)
    state.lease_deadline = time.monotonic() + 3600
    lookup = groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH)
    plan = lookup.finish([COORDINATOR])
    assert isinstance(plan, Plan) and plan.calls
    state.lease_deadline = time.monotonic() - 0.1  # runs out while the call's connection opens; never renewed
    results = asyncio.run(dispatcher._send(plan.calls, 0))
    assert [type(r) for r in results] == [UpstreamError] and [r[0] for r in refusals] == ["lease"]
    answer = plan.finish(results)
    while isinstance(answer, Plan) and not answer.calls:  # the renewal waits, in vain
        answer = answer.finish([])
    assert _codes(answer) == {ErrorCode.coordinator_load_in_progress}  # retried by librdkafka too (session 38)
    assert [r[0] for r in refusals] == ["lease"], refusals


def test_an_offset_fetch_refused_at_every_write_stays_within_max_plan_rounds():
    state, dispatcher, refusals = _fenced_proxy()
    state.lease_deadline = time.monotonic() + 3600
    reply, rounds = groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH), 0
    while isinstance(reply, Plan):
        rounds += 1
        if not reply.calls:  # a wait: the fence renewed meanwhile
            state.lease_deadline = time.monotonic() + 3600
            reply = reply.finish([])
        elif reply.barrier:  # the lookup
            reply = reply.finish([COORDINATOR])
        else:  # the fence ran out while the call's connection opened: the core refuses it
            state.lease_deadline = time.monotonic() - 0.1
            reply = reply.finish(asyncio.run(dispatcher._send(reply.calls, 0)))
    # out of rounds: answered a code librdkafka retries on this proxy, NOT_COORDINATOR stalled the partitions (s38)
    assert _codes(reply) == {ErrorCode.coordinator_load_in_progress}
    assert rounds <= MAX_PLAN_ROUNDS, f"{rounds} rounds: HandlerLooping would close the client's connection"
