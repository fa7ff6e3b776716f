"""Fairness between the clusters of a connection's fetches (docs/DESIGN.md §3.1): a Fetch over two clusters finishes
at the first answer Kafka's broker would give at once, and the slower cluster's call is dropped. When that dropped
call ends with records (or an error), the connection's next Fetch asking those partitions there waits for that
broker's answer too (`fetch._fair_plan`, `Plan.awaited`, `Plan.answered_late`), at most the client's max_wait
(`Plan.awaited_within_s`); when it ends empty (or throttled), nothing is owed and no Fetch waits for the quiet
cluster. Unit tests of the handler's record, of the core's rule, and end to end through the real
`Dispatcher._send`/`_collect` and fake brokers on loopback (consume/test_abandoned_polls_unit.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_type
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.limits import ByteBudget, Limits
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.handlers.fetch import OWED_WAIT_FLOOR_MS
from fedkafka.proxy.plan import UNANSWERED, AnyBroker, Broker, Call, Context, Plan, UpstreamError
from fedkafka.proxy.state import ProxyState
from fedkafka.security.session import Session
from fedkafka.view.model import View

from .test_abandoned_polls_unit import GUARD_S, SLOT, _batch, _Broker, _close, _setup, _until
from .test_handlers_unit import VIEW, Physical, batch, fetch_answer, fetch_request, partitions

SLOW, BUSY = Broker("c3", 7), Broker("c1", 7)  # ("log", 0) at 75 is read on c3, ("log", 1) on c1
SLOW_PARTITION, BUSY_PARTITION = ("log", 0), ("log", 1)


def still_clock() -> float:
    """A connection's session clock standing still: kept answers (`fetch._Kept.expires_at`) do not expire while a
    test runs, however loaded the machine (a test expiring them moves a clock of its own)."""
    return 0.0


def connection_ctx(session: Session, budget: ByteBudget | None = None, view: View = VIEW) -> Context:
    """A context of one client connection: its session (and so its fetch record) is the same for every request;
    `budget`: the process' memory budget, which what it keeps is charged to (None: nothing kept, only owed)."""
    return Context(view=view, me=view.proxies[0], advertised={}, physical=Physical(), producer_ids=None,
                   session=session, budget=budget)


def two_cluster_fetch(max_wait_ms: int = 25_000):
    """A Fetch of ("log", 0) on c3 and ("log", 1) on c1, waiting up to `max_wait_ms` (the fake brokers answer
    when the test says, or empty at that wait)."""
    request = fetch_request(("log", 0, 75), ("log", 1, 0))
    return dataclasses.replace(request, max_wait=datetime.timedelta(milliseconds=max_wait_ms))


def fetch_plan(session: Session, heard: list[int] | None = None) -> Plan:
    """The handler's plan of `two_cluster_fetch` on the connection of `session`; `heard` gets the index of each call
    the plan finished without once the core passed that call's late result on (`Plan.answered_late`)."""
    plan = fetch.handle(connection_ctx(session), None, two_cluster_fetch())
    assert [c.target for c in plan.calls] == [SLOW, BUSY]
    if heard is not None and (late := plan.answered_late) is not None:
        def answered_late(index: int, result) -> None:
            late(index, result)
            heard.append(index)
        plan.answered_late = answered_late
    return plan


async def fetch_through(d: Dispatcher, plan: Plan):
    """The plan's calls sent and collected as the core's first round does (`Dispatcher._complete`), then its answer."""
    sent = await d._send(plan.calls, SLOT)
    results = await asyncio.wait_for(
        d._collect(plan.calls, sent, plan.return_early, plan.awaited, plan.answered_late, plan.awaited_within_s),
        GUARD_S)
    return plan.finish(results)


def out_of_range(topic: str, partition: int):
    answer = fetch_answer(topic, partition, b"", hw=10)
    p = answer.responses[0].partitions[0]
    return dataclasses.replace(answer, responses=(dataclasses.replace(answer.responses[0], partitions=(
        dataclasses.replace(p, error_code=ErrorCode.offset_out_of_range),)),))


def test_a_dropped_answer_with_records_or_an_error_is_waited_for_by_the_next_fetch_only():
    session = Session(clock=still_clock)
    plan = fetch_plan(session)
    assert plan.awaited == ()  # nothing dropped yet: the first answer with records finishes it
    plan.answered_late(0, fetch_answer("t", 1, b"", hw=10))  # the slow poll ended empty: nothing was lost
    plan.answered_late(0, UpstreamError("c3", "request timed out"))  # nor when it failed
    plan = fetch_plan(session)
    assert plan.awaited == ()
    plan.answered_late(0, fetch_answer("t", 1, batch(8, 1), hw=10))  # records the client never got
    plan = fetch_plan(session)
    assert plan.awaited == (0,)  # this Fetch does not finish without c3's answer
    out = partitions(plan.finish([fetch_answer("t", 1, batch(8, 1), hw=10), fetch_answer("t", 1, batch(0, 1), 1)]))
    assert out[SLOW_PARTITION].records and out[BUSY_PARTITION].records
    assert fetch_plan(session).awaited == ()  # heard: owed no more
    plan = fetch_plan(session)
    plan.answered_late(0, out_of_range("t", 1))  # an error Kafka answers at once: dropped, it is owed too
    assert fetch_plan(session).awaited == (0,)


def test_a_debt_is_dropped_by_a_fetch_that_does_not_ask_its_broker_or_that_answers_it():
    session = Session(clock=still_clock)
    plan = fetch_plan(session)
    plan.answered_late(0, fetch_answer("t", 1, batch(8, 1), hw=10))
    only_busy = fetch.handle(connection_ctx(session), None, fetch_request(("log", 1, 0)))
    assert [c.target for c in only_busy.calls] == [BUSY] and only_busy.answered_late is None
    assert session.fetch_owed == set()  # the client no longer asks c3's partitions: nothing kept for them
    assert fetch_plan(session).awaited == ()

    session = Session(clock=still_clock)
    dropping = fetch_plan(session)
    answering = fetch_plan(session)  # the next Fetch is out before the dropped poll ended
    dropping.answered_late(0, fetch_answer("t", 1, batch(8, 1), hw=10))
    answering.finish([fetch_answer("t", 1, batch(8, 1), hw=10), UNANSWERED])  # ... and got c3's records itself
    assert fetch_plan(session).awaited == ()  # so the one after owes c3 nothing: it does not wait for it


def test_the_core_finishes_early_only_with_the_awaited_calls_and_passes_a_dropped_call_s_result_on():
    async def scenario():
        loop = asyncio.get_running_loop()
        owed, busy, quiet, never_sent = (loop.create_future() for _ in range(4))
        calls = [Call(AnyBroker(c), None) for c in ("owed", "busy", "quiet", "never_sent")]
        late: list[tuple[int, object]] = []
        d = Dispatcher.__new__(Dispatcher)
        collecting = asyncio.ensure_future(d._collect(calls, [owed, busy, quiet, never_sent], lambda r: r == "data",
                                                      (0,), lambda i, r: late.append((i, r))))
        busy.set_result("data")
        await asyncio.sleep(0.01)
        assert not collecting.done()  # data, but the awaited call has not answered
        owed.set_result("empty")
        assert await collecting == ["empty", "data", UNANSWERED, UNANSWERED]
        never_sent.cancel()  # e.g. a queued Fetch call its plan finished without: never sent, nothing to hear
        quiet.set_result("data")
        await asyncio.sleep(0.01)
        assert late == [(2, "data")]

    asyncio.run(scenario())


def test_a_slow_cluster_with_nothing_holds_up_no_fetch_of_a_busy_one():
    """The quiet cluster's poll is dropped at every Fetch but ends empty: no Fetch waits for it, and it is asked
    once per poll, as before fairness (consume/test_abandoned_polls_unit.py)."""

    async def main():
        busy, slow = _Broker(auto=_batch(0)), _Broker()
        d, pool, _ = await _setup(busy, slow, quiet_cluster=SLOW.cluster)
        session = Session(clock=still_clock)
        heard: list[int] = []
        for _ in range(5):
            out = partitions(await fetch_through(d, fetch_plan(session, heard)))
            assert out[BUSY_PARTITION].records and not out[SLOW_PARTITION].records
        await _until(lambda: len(slow.requests) == 1 and not d._poll_tasks)
        slow.answer(0, b"")  # the first poll ends with nothing (as at its max_wait)
        await _until(lambda: heard == [0])  # the proxy read that answer (and dropped it)
        for n in range(1, 4):  # each Fetch polls c3 anew and, c3 having nothing, finishes at c1's records
            out = partitions(await fetch_through(d, fetch_plan(session, heard)))
            assert out[BUSY_PARTITION].records and not out[SLOW_PARTITION].records
            await _until(lambda asked=n + 1: len(slow.requests) == asked)
            assert not slow.requests[n][0].done()  # its poll is still out: the Fetch did not wait for it
            slow.answer(n, b"")
            await _until(lambda asked=n + 1: len(heard) == asked and not d._poll_tasks)
        assert len(slow.requests) == 4
        await _close(pool, busy, slow)

    asyncio.run(main())


def test_the_debt_is_a_partition_at_the_offset_asked_and_its_call_asks_min_bytes_1_within_the_client_s_max_wait():
    """Review s34-rvf1: what a dropped answer leaves owed is each partition it answered with records or an error, at
    the offset asked (`Session.fetch_owed`); the next Fetch waits only for a call asking one of them there, which asks
    min_bytes 1 (its records are at the broker: answered at once whatever the client's min_bytes), and at most the
    client's max_wait (`Plan.awaited_within_s`, `OWED_WAIT_FLOOR_MS` at least). A throttle is owed nothing (its
    broker muted that connection, KIP-219)."""
    def plan_of(session: Session, *parts: tuple[str, int, int], min_bytes: int = 500, max_wait_ms: int = 2_000):
        request = dataclasses.replace(fetch_request(*parts), min_bytes=min_bytes,
                                      max_wait=datetime.timedelta(milliseconds=max_wait_ms))
        return fetch.handle(connection_ctx(session), None, request)

    session = Session(clock=still_clock)
    plan_of(session, ("log", 0, 75), ("log", 1, 0)).answered_late(0, fetch_answer("t", 1, batch(8, 1), hw=10))
    assert session.fetch_owed == {(SLOW, "t", 1, 8)}  # physical t/1 at 8: logical ("log", 0) at 75
    plan = plan_of(session, ("log", 0, 75), ("log", 1, 0))
    assert plan.awaited == (0,) and plan.awaited_within_s == 2.0
    assert [c.request.min_bytes for c in plan.calls] == [1, 500]  # the busy cluster's call as the client asked
    assert [c.request.max_wait_ms for c in plan.calls] == [2_000, 2_000]

    plan_of(session, ("log", 0, 75), ("log", 1, 0)).answered_late(0, fetch_answer("t", 1, batch(8, 1), hw=10))
    plan = plan_of(session, ("log", 0, 76), ("log", 1, 0))  # the client seeked p0: what was dropped is not asked
    assert plan.awaited == () and plan.awaited_within_s is None
    assert [c.request.min_bytes for c in plan.calls] == [500, 500]

    plan_of(session, ("log", 0, 75), ("log", 1, 0)).answered_late(0, fetch_answer("t", 1, batch(8, 1), hw=10))
    plan = plan_of(session, ("log", 0, 75), ("log", 1, 0), max_wait_ms=0)
    assert plan.awaited == (0,) and plan.awaited_within_s == fetch.OWED_WAIT_FLOOR_MS / 1000  # a round trip's time

    throttled = build(response_type(1, 12), {"throttle_time": datetime.timedelta(seconds=2), "responses": []})
    assert fetch._answers_at_once(throttled)  # the Fetch it is part of finishes at once: the client backs off
    plan_of(session, ("log", 0, 75), ("log", 1, 0)).answered_late(0, throttled)
    assert session.fetch_owed == set() and plan_of(session, ("log", 0, 75), ("log", 1, 0)).awaited == ()


def test_the_core_waits_for_an_awaited_call_at_most_awaited_within_s_then_drops_it():
    """A stalled owed broker: past `awaited_within_s` the plan finishes without its call, dropped and heard late as
    any other (review s34-rvf1: it was waited for until its own timeout, max_wait + WAIT_MARGIN_S)."""
    async def scenario():
        loop = asyncio.get_running_loop()
        owed, busy = loop.create_future(), loop.create_future()
        calls = [Call(AnyBroker(c), None) for c in ("owed", "busy")]
        late: list[tuple[int, object]] = []
        d = Dispatcher.__new__(Dispatcher)
        collecting = asyncio.ensure_future(d._collect(calls, [owed, busy], lambda r: r == "data", (0,),
                                                      lambda i, r: late.append((i, r)), 0.05))
        busy.set_result("data")
        assert await asyncio.wait_for(collecting, GUARD_S) == [UNANSWERED, "data"]
        owed.set_result("data")
        await asyncio.sleep(0.01)
        assert late == [(0, "data")]

    asyncio.run(scenario())


# -- s35-dropped: a dropped answer's records kept for the next Fetch asking the same (`fetch._KeptAnswers`) ----------

KEPT = batch(8, 1)  # the slow cluster's dropped answer of physical t/1 at 8: logical ("log", 0) at 75
KEPT_CHARGE = len(KEPT) + fetch.KEPT_ENTRY_BYTES  # what keeping it charges (its records and the entry)


def keeping_plan(session: Session, budget: ByteBudget, *parts: tuple[str, int, int], view: View = VIEW,
                 **asked) -> Plan:
    """The handler's plan of a Fetch of `parts` (default: `two_cluster_fetch`'s) on the connection of `session`, whose
    context charges `budget`; `asked`: the request's fields changed (a partition's too: partition_max_bytes,
    current_leader_epoch)."""
    request = fetch_request(*(parts or (("log", 0, 75), ("log", 1, 0))))
    for name in ("partition_max_bytes", "current_leader_epoch"):
        if name in asked:
            value = asked.pop(name)
            request = dataclasses.replace(request, topics=tuple(dataclasses.replace(t, partitions=tuple(
                dataclasses.replace(p, **{name: value}) for p in t.partitions)) for t in request.topics))
    return fetch.handle(connection_ctx(session, budget, view), None, dataclasses.replace(request, **asked))


def kept(session: Session, budget: ByteBudget, answer=None, **asked) -> None:
    """A Fetch of `two_cluster_fetch`'s partitions whose slow call is dropped, then ends with `answer` (KEPT)."""
    plan = keeping_plan(session, budget, **asked)
    plan.answered_late(0, fetch_answer("t", 1, KEPT, hw=10) if answer is None else answer)


def offsets(records) -> list[int]:
    """Every record's offset in an answer's `records`, as a consumer reads them."""
    from .test_s34_rvf23_review import read_batches  # (here: that module imports this one, through rvfetch's)

    read: list[int] = []
    read_batches(records, read, 0)
    return read


def test_a_dropped_answer_s_records_are_given_to_the_next_fetch_asking_the_same_once_and_charged_until_then():
    session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
    kept(session, budget)
    assert budget.used == KEPT_CHARGE == session.fetch_kept.nbytes  # kept, charged to the process' budget
    plan = keeping_plan(session, budget)
    assert [c.target for c in plan.calls] == [BUSY]  # no call for p0: its records are here
    assert plan.calls[0].request.max_wait_ms == 0 and plan.awaited == ()  # (records to give: no long poll)
    assert budget.used == KEPT_CHARGE  # still held by the Fetch
    out = partitions(plan.finish([fetch_answer("t", 1, batch(0, 1), 1)]))
    assert offsets(out[SLOW_PARTITION].records) == [75] and offsets(out[BUSY_PARTITION].records) == [0]
    assert budget.used == 0 and session.fetch_kept.nbytes == 0  # given back with the answer (the core charges it)
    plan.abandoned()  # the core giving up on it after all releases nothing twice
    assert budget.used == 0
    again = keeping_plan(session, budget)  # the client asks p0 at 75 again (that answer lost): read from the broker
    assert [c.target for c in again.calls] == [SLOW, BUSY] and again.awaited == ()

    kept(session, budget)
    only_kept = keeping_plan(session, budget, ("log", 0, 75))  # every partition kept: answered without a call
    assert not isinstance(only_kept, Plan) and offsets(partitions(only_kept)[SLOW_PARTITION].records) == [75]
    assert budget.used == 0


def test_a_kept_answer_serves_for_the_dropping_fetch_s_max_wait_then_its_broker_is_asked_again():
    """Kept as long as a Fetch waits for an owed call (the client's max_wait, `OWED_WAIT_FLOOR_MS` at least) from
    when its call ended: the client's next Fetch comes about a round trip after the answer that dropped it; later,
    the broker's log may no longer be what it answered (it is owed: its call is waited for)."""
    now = [100.0]
    session, budget = Session(clock=lambda: now[0]), ByteBudget(1 << 20)
    two_seconds = datetime.timedelta(seconds=2)
    kept(session, budget, max_wait=two_seconds)
    now[0] += 2
    served = keeping_plan(session, budget)
    assert [c.target for c in served.calls] == [BUSY]
    served.abandoned()
    kept(session, budget, max_wait=datetime.timedelta(0))  # max_wait 0: the floor
    now[0] += OWED_WAIT_FLOOR_MS / 1000 + 0.001
    expired = keeping_plan(session, budget)
    assert [c.target for c in expired.calls] == [SLOW, BUSY] and expired.awaited == (0,) and budget.used == 0


def test_a_kept_answer_serves_only_a_fetch_asking_exactly_what_its_call_asked():
    """Another offset (the client seeked), isolation level, a smaller partition max bytes or max_bytes than its
    records, a view change, or a leader epoch refused: the kept answer is released, never given; its partition, when
    asked, is read from the broker (waited for, as owed, when asked at that offset)."""
    two = (("log", 0, 75), ("log", 1, 0))
    cases = [(dict(parts=(("log", 0, 76), ("log", 1, 0))), ()), (dict(isolation_level=1), (0,)),
             (dict(partition_max_bytes=len(KEPT) - 1), (0,)), (dict(max_bytes=len(KEPT) - 1), (0,)),
             (dict(view=dataclasses.replace(VIEW)), (0,))]
    for changes, awaited in cases:
        session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
        kept(session, budget)
        plan = keeping_plan(session, budget, *changes.pop("parts", two), **changes)
        assert budget.used == 0, changes  # released
        assert [c.target for c in plan.calls] == [SLOW, BUSY] and plan.awaited == awaited, changes
    session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
    kept(session, budget)
    refused = partitions(keeping_plan(session, budget, current_leader_epoch=1))  # older than the chain's (2)
    assert refused[SLOW_PARTITION].error_code == ErrorCode.fenced_leader_epoch and not refused[SLOW_PARTITION].records
    assert budget.used == 0

    # a larger partition max bytes: fewer records than it allows
    session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
    kept(session, budget)
    assert [c.target for c in keeping_plan(session, budget, partition_max_bytes=2 << 20).calls] == [BUSY]
    # a smaller max_bytes its records fit in, or a larger one: the answer a call asking it may get
    for max_bytes in (len(KEPT), 2 << 20):
        session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
        kept(session, budget)
        assert [c.target for c in keeping_plan(session, budget, max_bytes=max_bytes).calls] == [BUSY], max_bytes


def test_a_kept_read_committed_answer_gives_its_own_last_stable_offset_and_aborted_transactions():
    committed = build(response_type(1, 12), {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 1, "error_code": ErrorCode.none, "high_watermark": 10, "last_stable_offset": 9,
         "log_start_offset": 0, "aborted_transactions": [{"producer_id": 5, "first_offset": 8}],
         "preferred_read_replica": -1, "records": KEPT}]}]})
    busy = fetch_answer("t", 1, batch(0, 1), 1)
    direct = partitions(fetch.handle(connection_ctx(Session(clock=still_clock)), None, dataclasses.replace(
        fetch_request(("log", 0, 75), ("log", 1, 0)), isolation_level=1)).finish([committed, busy]))
    session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
    kept(session, budget, committed, isolation_level=1)
    plan = keeping_plan(session, budget, isolation_level=1)
    assert [c.target for c in plan.calls] == [BUSY]
    out = partitions(plan.finish([busy]))[SLOW_PARTITION]
    expected = direct[SLOW_PARTITION]  # what the call's own answer gives
    assert (out.high_watermark, out.last_stable_offset, out.log_start_offset) == \
        (expected.high_watermark, expected.last_stable_offset, expected.log_start_offset) == (77, 76, 0)
    assert [(a.producer_id, a.first_offset) for a in out.aborted_transactions] == [(5, 75)]
    assert offsets(out.records) == offsets(expected.records) == [75]


def test_a_kept_answer_counts_against_the_client_s_max_bytes():
    session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
    kept(session, budget, max_bytes=len(KEPT))  # (kept from a call asking that max_bytes: it serves one asking it)
    plan = keeping_plan(session, budget, ("log", 1, 0), ("log", 0, 75), max_bytes=len(KEPT))  # busy's first
    assert [c.target for c in plan.calls] == [BUSY]
    out = partitions(plan.finish([fetch_answer("t", 1, batch(0, 1), 1)]))
    assert out[BUSY_PARTITION].records and not out[SLOW_PARTITION].records  # the first always fits, no more
    assert budget.used == 0


def test_what_is_kept_is_bounded_per_connection_and_by_the_process_budget_s_spare_share(monkeypatch):
    """Past either bound nothing is kept: the partition is owed as before (its next call waited for)."""
    session, budget = Session(clock=still_clock), ByteBudget(fetch.KEPT_BUDGET_SHARE * KEPT_CHARGE - 1)  # too small
    kept(session, budget)
    assert budget.used == 0 and not session.fetch_kept.entries
    assert keeping_plan(session, budget).awaited == (0,)

    budget = ByteBudget(1 << 20)
    budget.used = budget.limit // fetch.KEPT_BUDGET_SHARE  # the rest of the process holds a quarter already
    session = Session(clock=still_clock)
    kept(session, budget)
    assert budget.used == budget.limit // fetch.KEPT_BUDGET_SHARE and not session.fetch_kept.entries

    monkeypatch.setattr(fetch, "KEPT_BYTES_PER_CONNECTION", 2 * KEPT_CHARGE - 1)
    session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
    first, second = keeping_plan(session, budget), keeping_plan(session, budget, ("log", 0, 76), ("log", 1, 0))
    first.answered_late(0, fetch_answer("t", 1, KEPT, hw=10))
    second.answered_late(0, fetch_answer("t", 1, batch(9, 1), hw=10))  # past the connection's bound
    assert budget.used == KEPT_CHARGE and len(session.fetch_kept.entries) == 1


def test_kept_answers_are_given_back_when_the_connection_closes_and_nothing_is_kept_after():
    session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
    kept(session, budget)
    taking = keeping_plan(session, budget)  # a Fetch that took the kept answer, not answered yet
    dropping = keeping_plan(session, budget, ("log", 0, 76), ("log", 1, 0))
    dropping_late = dropping.answered_late
    assert budget.used == KEPT_CHARGE
    session.close()
    dropping_late(0, fetch_answer("t", 1, batch(9, 1), hw=10))  # its dropped call ends after the close
    assert budget.used == KEPT_CHARGE  # nothing kept after the close; the taken one is still the Fetch's
    taking.abandoned()  # the connection's Fetch given up on (cancelled with it)
    assert budget.used == 0 and session.fetch_kept.nbytes == 0


def test_kept_answers_are_given_back_to_a_request_that_would_wait_and_their_partitions_are_owed_again():
    """A request the process' budget has no room for gets the kept bytes at once (`MemoryBudget.give_back_on_wait`);
    the connection's next Fetch waits for the broker that answered them (owed, as an answer never kept)."""
    async def scenario():
        session, budget = Session(clock=still_clock), ByteBudget(fetch.KEPT_BUDGET_SHARE * KEPT_CHARGE)
        kept(session, budget)
        request = asyncio.ensure_future(budget.acquire(budget.limit))
        await asyncio.sleep(0)  # (its task ran: granted at once, no wait)
        assert request.done() and session.fetch_kept.nbytes == 0 and not session.fetch_kept.entries
        budget.release(budget.limit)
        plan = keeping_plan(session, budget)
        assert [c.target for c in plan.calls] == [SLOW, BUSY] and plan.awaited == (0,)
        kept(session, budget)  # kept again, then taken by the next Fetch: nothing left to give back, none asked
        keeping_plan(session, budget).abandoned()
        assert budget.used == 0 and not budget._give_backs

    asyncio.run(scenario())


def test_a_connection_closes_its_session_and_the_dispatcher_charges_the_process_budget():
    """The core's side: `ClientConnection.run` ends with `Session.close`, and `Dispatcher.context` gives handlers
    the process' memory budget (the pool's) with the connection's session only: a throwaway one is never closed."""
    from proxy.test_connection_callbacks_unit import client, serve, until
    from proxy.test_limits_unit import _HeldDispatcher

    async def scenario():
        budget = ByteBudget(1 << 20)
        server, port, conns = await serve(_HeldDispatcher(), Limits(), budget)
        _reader, writer = await client(port)
        await until(lambda: conns)
        session = conns[0].session
        kept(session, budget)
        assert budget.used == KEPT_CHARGE
        writer.close()
        await until(lambda: budget.used == 0)
        assert session.fetch_kept.closed
        server.close()
        await server.wait_closed()
        pool = UpstreamPool(budget=budget)
        d = Dispatcher(state=ProxyState(view=VIEW, me=VIEW.proxies[0]), physical=Physical(),  # type: ignore[arg-type]
                       producer_ids=None, pool=pool)
        assert d.context(None, Session(), advertised={}).budget is budget
        assert d.context(None, advertised={}).budget is None
        pool.close()

    asyncio.run(scenario())
