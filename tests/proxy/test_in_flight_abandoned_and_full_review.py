"""Reviewer (rv2) of the merge 5dd29bc (in-flight counts of DESIGN §5.3 rule 3: abandoned calls, a full table).
Each test fails on that merge and names the defect it shows."""

from __future__ import annotations

import asyncio
import functools

from fedkafka.proxy.core import producer_ids as pids
from fedkafka.proxy.core.producer_ids import IN_FLIGHT_LEAK_S, ProducerIdTable
from proxy.test_produce_in_flight_fresh_id import _held_proxy, _request
from proxy.test_produce_lane import PID, run

KEY = (PID, 0, "t", 0)


def _same_bucket(table: ProducerIdTable, key, n: int, avoid=()) -> list:
    """`n` keys of PID on topic t, other than `key` and `avoid`, in `key`'s hash bucket (string hashes are salted per
    process: found at run time)."""
    found = []
    p = 0
    while len(found) < n:
        other = (PID, 0, "t", p)
        if other != key and other not in avoid and table._bucket(other) == table._bucket(key):
            found.append(other)
        p += 1
    return found


def test_a_bucket_held_for_a_batch_sent_uncounted_is_released_once_no_uncounted_batch_of_it_may_be_in_flight(
        monkeypatch):
    """The table full once, a batch of a new key `c` goes uncounted and `c`'s bucket is held (fair: that batch may be
    in flight). Then the table drains to empty. A confirmed producer `d` of the same bucket sends one request at a
    time (each answered before the next: its count goes back to 0, its key leaves the table, so every send is a new
    key's), every 200 s. Each of d's batches is sent uncounted (`_count_new`: the bucket is held, so no key of it is
    counted afresh, room or not) and pushes the hold 300 s further: the hold never ends. Every batch the broker would
    not check of every key of the bucket (a new producer's first batch, any producer's first batch after a seal) is
    refused NOT_LEADER_OR_FOLLOWER for as long as `d` keeps producing, though nothing of theirs is in flight and the
    table has had room for 2,000 s. (producer_ids.py `_count_new`: the hold is extended by batches sent while the
    table has room.)"""
    monkeypatch.setattr(pids, "MAX_MAPPINGS", 2)
    now = [1000.0]
    table = ProducerIdTable(clock=lambda: now[0])
    a, b = (PID, 1, "t", 0), (PID, 1, "t", 1)
    table.note_sent(a)
    table.note_sent(b)
    c = (PID, 2, "t", 0)
    table.note_sent(c)  # full: c's batch goes uncounted, its bucket held until 1300
    assert c not in table._in_flight
    table.note_settled(c)
    table.note_settled(a)
    table.note_settled(b)
    assert not table._in_flight  # room again, for good
    d, newcomer = _same_bucket(table, c, 2, avoid=(a, b))
    for _ in range(10):  # 2,000 s of one request at a time, each answered
        now[0] += 200
        table.note_sent(d)
        table.note_settled(d)
    assert not table._in_flight and not table._abandoned
    # nothing of `newcomer` (or of c) was ever counted or sent since c's one batch, answered 2,000 s ago
    assert not table.in_flight(newcomer), \
        "a fresh-id batch of a key with nothing in flight is held back 2,000 s after the table had room again"
    assert not table.in_flight(c)


def test_a_lane_call_whose_answer_is_cancelled_stays_counted_while_the_broker_holds_its_request():
    """The lane's `_answered` runs `lane_settled` for a cancelled answer at once (cancelling `_Answer` cancels the
    upstream future, whose done-callback is `_answered`), not "once the broker answered" as DESIGN §5.3's table says,
    and not at `ABANDONED_SETTLE_S` as the generic path now does: the count is gone while the broker still holds the
    request (it is written after), so a fresh-id batch of the producer on the partition is let out behind it, the
    loss rule 3 prevents. (produce_lane.py `_answered`: `lane_settled` before `if answer.done()`.)"""
    async def scenario():
        async with _held_proxy(True, {}) as (table, broker, d):
            five = await d.start(_request([(0, 5)]), 0, None)
            assert d.lane.taken and table.in_flight(KEY)
            five.cancel()
            for _ in range(20):
                await asyncio.sleep(0)
            assert 5 not in broker.written.get(0, ())  # still held at the broker: it may yet be written
            assert table.in_flight(KEY), "a cancelled lane call uncounted while the broker still holds its request"
    run(scenario)


def test_the_leak_backstop_is_unchanged_for_a_key_never_abandoned():
    """Control (passes): a count no exit settles is dropped only past IN_FLIGHT_LEAK_S."""
    now = [1000.0]
    table = ProducerIdTable(clock=lambda: now[0])
    table.note_sent(KEY)
    now[0] += IN_FLIGHT_LEAK_S
    assert table.in_flight(KEY)


def test_a_later_round_cancelled_before_it_started_still_calls_its_plans_abandoned_hook():
    """`Plan.abandoned` is "called (at least once) when the core gives up on the plan before `finish` ran". A one-call
    plan (`_one_call`) whose `finish` returns another plan runs it in a Task (`_one_answered`: `rounds`); the client's
    answer cancelled before that Task's first step cancels it unstarted (`_Answer.cancel`), so `_finish_rounds`' own
    failure path, the only one that calls the later plan's hook, never runs, and `_abandon_unless_answered` calls
    only the first plan's. The later plan's counts (a handler counts at plan creation, as `_forward` does) stay until
    the 300 s backstop. Latent: produce's `_forward` plans come only from `start`'s barrier loop today.
    (dispatch.py `_one_answered` / `_finish_rounds`.)"""
    from fedkafka.proxy.core import dispatch
    from fedkafka.proxy.plan import Broker, Call, Plan
    from proxy.test_hostile_requests_unit import dispatcher

    async def scenario():
        loop = asyncio.get_running_loop()
        d = dispatcher()
        d._loop = loop
        abandoned: list[str] = []
        later = Plan([Call(Broker("c1", 1), object())], lambda results: None,
                     abandoned=lambda: abandoned.append("later"))
        first = Plan([Call(Broker("c1", 1), object())], lambda results: later,
                     abandoned=lambda: abandoned.append("first"))
        item = loop.create_future()
        answer = d._one_call(loop, first, item, 0, 1, None, None, None)
        answer.add_done_callback(functools.partial(dispatch._abandon_unless_answered, first))  # as `start` does
        item.set_result("the first call's answer")
        await asyncio.sleep(0)  # `_one_answered`: `first.finish` ran, `later` is in a Task not started yet
        assert answer.awaits is not None and not answer.done()
        answer.cancel()  # the client's answer cancelled
        for _ in range(10):
            await asyncio.sleep(0)
        assert answer.cancelled()
        assert "later" in abandoned, f"the later round's plan was given up on without its hook: {abandoned}"
    run(scenario)


def test_a_barrier_round_cancelled_mid_call_stays_counted_for_the_drain_while_the_broker_may_still_write_it():
    """Adjacent, not introduced by 5dd29bc (its `start` failure path sits next to the new `_abandon`): a barrier round
    cancelled mid-call (`stop_reading()` while `start` awaits it: the client's connection broke) gives its
    `writes_in_flight` count back at the cancellation, while the broker still holds the request, which 5dd29bc's own
    argument says may be written up to ABANDONED_SETTLE_S later. The drain (§4.1 step 2, `InflightProduce`) then acks
    a frozen view with that write unanswered; appended after the seal is read, above it, the client's retry on the
    new segment is answered DUPLICATE_SEQUENCE_NUMBER from the floor (§5.3 rule 4) and counted written: the loss
    DESIGN §4.1's (d) describes for a write given up on. (dispatch.py `start`: `counts[view_version] -= 1` in the
    failure path.)"""
    from proxy.test_in_flight_abandoned_and_full import _generic_proxy_holding_p0
    from proxy.test_produce_in_flight_fresh_id import _routed

    async def scenario():
        now = [1000.0]
        async with _generic_proxy_holding_p0(now) as (_table, broker, d):
            started = asyncio.ensure_future(d.start(_request([(1, 15), (0, 6)]), 0, None))
            await _routed(_table, (PID, 0, "t", 1), 16)
            assert not started.done() and sum(d.writes_in_flight.values()) == 1
            started.cancel()
            for _ in range(20):
                await asyncio.sleep(0)
            assert started.cancelled() and 6 not in broker.written.get(0, ())  # the broker still holds it
            assert sum(d.writes_in_flight.values()) == 1, \
                "the drain sees no write in flight while the broker may still append the cancelled round's batch"
    run(scenario)


async def _jump_after_steady_traffic(fill: bool) -> dict[int, int]:
    """Through the generic path: with `fill`, the in-flight table is full (MAX_MAPPINGS patched to 1) when batch 5 of
    p0 (the steady producer's, the broker checks it) goes up, uncounted; then the table drains for good. p0 goes on
    producing one request at a time, each answered, every 200 s for 2,000 s; then its batch at sequence 40 (a jump:
    it takes a fresh physical id, a batch the broker does not check). The codes of that last answer."""
    from proxy.test_in_flight_abandoned_and_full import _generic_proxy_holding_p0
    from proxy.test_produce_in_flight_fresh_id import _codes

    now = [1000.0]
    async with _generic_proxy_holding_p0(now) as (table, broker, d):
        broker.held = set()
        other = (PID + 1, 0, "t", 3)
        if fill:
            table.note_sent(other)
        seq = 5
        for _ in range(11):
            assert _codes(await (await d.start(_request([(0, seq)]), 0, None))) == {0: 0}
            if fill:
                table.note_settled(other)  # room again, for good
            seq += 1
            now[0] += 200
        assert not table._in_flight
        return _codes(await (await d.start(_request([(0, 40)]), 0, None)))


def test_a_fresh_id_batch_is_refused_long_after_the_table_was_full_once(monkeypatch):
    """The proxy-level outcome of the bucket hold that never ends: without the table ever full, p0's jump to a fresh
    id after 2,000 s of answered requests is forwarded (code 0); with the table full for one request 2,000 s before,
    it is refused NOT_LEADER_OR_FOLLOWER (6), nothing of p0 in flight, the table empty."""
    monkeypatch.setattr(pids, "MAX_MAPPINGS", 1)
    control = run_value(_jump_after_steady_traffic(False))
    assert control == {0: 0}
    assert run_value(_jump_after_steady_traffic(True)) == control, "held back 2,000 s after the table had room"


def run_value(coro):
    return asyncio.run(coro)
