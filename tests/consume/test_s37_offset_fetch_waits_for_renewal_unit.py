"""An OffsetFetch that finds the proxy past its fence waits for the fence's renewal before it is refused
(docs/DESIGN.md §4.9 F2). Pure handler plans driven by hand, no brokers, no clock: the core owns the delays.

Found by tests/workflows/test_coordination_move.py under load (session 37): proxy 1's first heartbeat after its
registration came 2.4 s late (lease 2 s), and the consumer that had just been assigned partitions 3-5 asked their
committed offsets in that second. The proxy answered NOT_COORDINATOR at once; librdkafka does not retry that error
for its assignment's OffsetFetch (rd_kafka_assignment_apply_offsets: "Do nothing for request-level errors"), so the
group stayed Stable with those partitions assigned and never fetched: no record of them consumed, none committed,
for as long as the group did not rebalance."""

from __future__ import annotations

import time

from kio.schema.errors import ErrorCode

from consume.test_group_offsets_past_the_fence_unit import _codes
from consume.test_handlers_unit import COORDINATOR, VIEW, Physical
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.dispatch import MAX_PLAN_ROUNDS, Dispatcher
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import AnyBroker, Broker, Plan
from fedkafka.proxy.state import ProxyState

LIBRDKAFKA_FETCH = build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": [
    {"name": "log", "partition_indexes": [3, 4, 5]}]}], "require_stable": True})


def _fenced_proxy() -> tuple[ProxyState, Dispatcher, list[tuple]]:
    """A proxy whose fence ran out a moment ago, and the refusals its contexts count."""
    state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() - 0.1)
    dispatcher = Dispatcher(state=state, physical=Physical(), producer_ids=None, pool=None)  # type: ignore[arg-type]
    return state, dispatcher, []


def _context(dispatcher: Dispatcher, refusals: list[tuple]):
    context = dispatcher.context(None, advertised={})
    context.on_refusal, context.on_refusals = lambda *a: refusals.append(a[:3]), None
    return context


def _wait_rounds(plan, until=lambda rounds: False) -> tuple[object, int]:
    """Run the proxy's own waits (barrier plans without calls) as the core would, `until(rounds)` run between two:
    the reply they end in, and how many there were."""
    rounds = 0
    while isinstance(plan, Plan) and plan.barrier and not plan.calls:
        assert plan.delay_s > 0, "a wait without a delay would spin the loop"
        rounds += 1
        until(rounds)
        plan = plan.finish([])
    return plan, rounds


def test_an_offset_fetch_past_the_fence_is_sent_once_the_fence_is_renewed_not_refused():
    state, dispatcher, refusals = _fenced_proxy()
    reply = groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH)
    assert isinstance(reply, Plan), f"refused at once: {_codes(reply)}; librdkafka never asks these partitions again"

    def renewed_at_the_second_round(rounds: int) -> None:
        if rounds == 2:
            state.lease_deadline = time.monotonic() + 3600  # the late heartbeat's answer
    lookup, rounds = _wait_rounds(reply, renewed_at_the_second_round)
    assert rounds == 2 and isinstance(lookup, Plan) and lookup.barrier  # then the FindCoordinator round, as ever
    sent = lookup.finish([COORDINATOR])
    assert isinstance(sent, Plan) and [c.target for c in sent.calls] == [Broker("c1", 4)]
    assert refusals == []  # nothing refused: a renewal a moment late is no refusal


def test_an_offset_fetch_whose_fence_runs_out_during_the_lookup_waits_too():
    state, dispatcher, refusals = _fenced_proxy()
    state.lease_deadline = time.monotonic() + 3600
    lookup = groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH)
    assert isinstance(lookup, Plan) and lookup.calls  # within the fence: the lookup
    state.lease_deadline = time.monotonic() - 0.1  # runs out while the coordinator is looked up

    def renewed(rounds: int) -> None:
        if rounds == 3:
            state.lease_deadline = time.monotonic() + 3600
    again, rounds = _wait_rounds(lookup.finish([COORDINATOR]), renewed)
    # it starts over with the view of then (tests/consume/test_s37_offsets_after_a_move_during_the_lookup_unit.py):
    # the coordinator looked up again, on the same cluster here
    assert rounds == 3 and isinstance(again, Plan) and [c.target for c in again.calls] == [AnyBroker("c1")]
    sent = again.finish([COORDINATOR])
    assert isinstance(sent, Plan) and [c.target for c in sent.calls] == [Broker("c1", 4)]
    assert refusals == []


def test_an_offset_fetch_whose_fence_is_not_renewed_is_refused_after_the_wait_and_sent_nowhere():
    """A proxy cut off from the controller: the view may name a coordination cluster a move has left, so the fetch
    is refused (one `lease` refusal), after the wait, before and after the lookup, within the core's cap on a
    request's rounds. Refused COORDINATOR_LOAD_IN_PROGRESS (session 38), which librdkafka retries on this proxy until
    it is renewed: NOT_COORDINATOR was the stall of the module's docstring, only later
    (tests/workflows/test_offset_fetch_past_the_fence.py)."""
    state, dispatcher, refusals = _fenced_proxy()
    answer, before = _wait_rounds(groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH))
    assert not isinstance(answer, Plan) and _codes(answer) == {ErrorCode.coordinator_load_in_progress}
    assert refusals == [("lease", "g", -1)]
    state.lease_deadline = time.monotonic() + 3600
    lookup = groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH)
    state.lease_deadline = time.monotonic() - 0.1
    answer, after = _wait_rounds(lookup.finish([COORDINATOR]))
    assert not isinstance(answer, Plan) and _codes(answer) == {ErrorCode.coordinator_load_in_progress}
    assert refusals == [("lease", "g", -1)] * 2
    assert before + 1 + after <= MAX_PLAN_ROUNDS  # the core gives a request up past its cap (HandlerLooping)


def test_an_offset_commit_past_the_fence_is_still_refused_at_once():
    """A commit is not held: it counts in the drain of the view it came under (a move's acks wait for it), and a
    refused auto-commit is sent again at the next interval."""
    _state, dispatcher, refusals = _fenced_proxy()
    commit = build(request_type(8, 9), {
        "group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m", "group_instance_id": None,
        "topics": [{"name": "log", "partitions": [{"partition_index": 0, "committed_offset": 5,
                                                   "committed_leader_epoch": -1, "committed_metadata": None}]}]})
    answer = groups.handle(_context(dispatcher, refusals), None, commit)
    assert not isinstance(answer, Plan)
    assert [p.error_code for t in answer.topics for p in t.partitions] == [ErrorCode.not_coordinator]
