"""The in-flight count of DESIGN §5.3 rule 3 ("An answer still pending") at its two edges: a generic call cancelled
mid-call (its client closed the connection: `finish` never runs, so `note_settled` never does), and the table full
(`MAX_MAPPINGS` keys counted). A count dropped while its batch may still be written lets a fresh physical id's batch
out behind it (written at any first sequence; librdkafka then acks the earlier one implicitly: a loss); a count kept
too long only holds the producer's fresh-id batches back (retriable)."""

from __future__ import annotations

import asyncio
import contextlib

from fedkafka.fencing import FENCE_GRACE_S, UPSTREAM_REQUEST_TIMEOUT_S
from fedkafka.proxy.core import producer_ids as pids
from fedkafka.proxy.core.producer_ids import IN_FLIGHT_LEAK_S, ProducerIdTable
from proxy.test_produce_in_flight_fresh_id import HeldSequenceBroker, _codes, _request, _routed
from proxy.test_produce_lane import PID, proxy, run, view
from proxy.test_produce_lane_review import _shut, _steady_table

KEY = (PID, 0, "t", 0)
# a cancelled call's request was written at most at its cancellation; had it not been cancelled, it would have ended
# (answered, or timed out and its connection closed) within the upstream request timeout, and the broker appends a
# request the proxy gave up on, if at all, within the fence grace (§4.1)
SETTLED_AFTER_CANCEL_S = UPSTREAM_REQUEST_TIMEOUT_S + FENCE_GRACE_S


@contextlib.asynccontextmanager
async def _generic_proxy_holding_p0(now: list[float]):
    """A steady producer's table on the clock `now`, a broker holding produce requests to p0 until released (then
    writing them), and a proxy in front of it without the lane (the generic path: the plan's `finish` settles)."""
    table = _steady_table(lambda: now[0])
    broker = await HeldSequenceBroker().start()
    d = await proxy(view(4), broker, lane=False, producer_ids=table)
    try:
        broker.held = {0}
        yield table, broker, d
    finally:
        broker.release.set()
        await _shut(d, broker)


def test_a_generic_call_cancelled_mid_call_is_uncounted_once_its_request_can_no_longer_be_written_not_300_s_later():
    """Batch 5 of p0 goes upstream on the generic path; the broker holds it; the client closes its connection (its
    answer is cancelled: `_translate` never runs). Before this change the count stayed until IN_FLIGHT_LEAK_S (300 s)
    after the key's last send, holding every fresh-id batch of the producer on p0 back. Now it is uncounted
    SETTLED_AFTER_CANCEL_S (80 s) after the cancellation, never sooner, and the broker's late answer changes nothing."""
    async def scenario():
        now = [1000.0]
        async with _generic_proxy_holding_p0(now) as (table, broker, d):
            five = await d.start(_request([(0, 5)]), 0, None)
            assert d.lane is None and table.in_flight(KEY)  # written upstream (`_send`), its answer held
            five.cancel()  # the client's connection closed
            for _ in range(20):
                await asyncio.sleep(0)
            now[0] += SETTLED_AFTER_CANCEL_S - 1
            assert table.in_flight(KEY), "uncounted while the cancelled request may still be written"
            now[0] += 2
            assert not table.in_flight(KEY), "a cancelled call held the producer's fresh-id batches back past 80 s"
            broker.release.set()  # the broker writes 5 after all and answers: dropped, nothing counted twice
            for _ in range(500):
                if 5 in broker.written.get(0, ()):
                    break
                await asyncio.sleep(0.01)
            for _ in range(20):
                await asyncio.sleep(0)
            assert 5 in broker.written[0] and not table._in_flight and not table._abandoned
            later = await d.start(_request([(0, 6)]), 0, None)  # the key counts again from zero
            assert _codes(await later) == {0: 0} and not table._in_flight
    run(scenario)


def test_a_barrier_round_cancelled_mid_call_is_uncounted_at_the_same_bound():
    """The same for a barrier round (the fresh physical id's first batch on p0 goes alone: `Dispatcher.start` awaits
    it before the client's next request is read): p1's forward jump takes a fresh id, and 6 of p0 goes out on it,
    held by the broker; the client closes its connection while `start` waits for it (cancelled)."""
    async def scenario():
        now = [1000.0]
        async with _generic_proxy_holding_p0(now) as (table, _broker, d):
            started = asyncio.ensure_future(d.start(_request([(1, 15), (0, 6)]), 0, None))
            await _routed(table, (PID, 0, "t", 1), 16)
            assert not started.done() and table.in_flight(KEY)
            started.cancel()
            for _ in range(20):
                await asyncio.sleep(0)
            assert started.cancelled()
            now[0] += SETTLED_AFTER_CANCEL_S - 1
            assert table.in_flight(KEY), "uncounted while the cancelled request may still be written"
            now[0] += 2
            assert not table.in_flight(KEY) and not table.in_flight((PID, 0, "t", 1))  # p1's 15 went with it
            assert not table._in_flight and not table._abandoned
    run(scenario)


def test_an_abandoned_batch_is_uncounted_at_its_own_bound_and_leaves_the_others_counted():
    """Two batches of the key in flight, one of them abandoned: past the abandoned one's bound the other still counts
    (a fresh-id batch waits for it); it settles normally. A key whose count was dropped takes its abandonment as a
    no-op; the IN_FLIGHT_LEAK_S backstop still drops a count an exit missed."""
    now = [1000.0]
    table = ProducerIdTable(clock=lambda: now[0])
    table.note_sent(KEY)
    table.note_sent(KEY)
    table.note_abandoned(KEY)
    now[0] += SETTLED_AFTER_CANCEL_S + 1
    assert table.in_flight(KEY), "the batch not abandoned is still in flight"
    table.note_settled(KEY)
    assert not table.in_flight(KEY) and not table._in_flight and not table._abandoned
    table.note_abandoned(KEY)  # nothing counted: nothing to settle later
    assert not table._abandoned
    table.note_sent(KEY)  # an exit missed (never settled nor abandoned)
    now[0] += IN_FLIGHT_LEAK_S
    assert table.in_flight(KEY)
    now[0] += 1
    assert not table.in_flight(KEY)


def test_a_full_table_never_pushes_out_a_key_whose_batches_may_be_in_flight(monkeypatch):
    """With MAX_MAPPINGS keys counted, a new key used to push out the oldest, its batches still unanswered: a fresh-id
    batch of that key then went out behind one in flight. Now only a key whose count the backstop (or an abandonment's
    bound) would drop leaves; with none, the new key's batch goes uncounted and every fresh-id batch of its bucket waits
    (retriable) until IN_FLIGHT_LEAK_S after the last batch so sent, the bound any such batch's call has ended by."""
    monkeypatch.setattr(pids, "MAX_MAPPINGS", 2)
    now = [1000.0]
    table = ProducerIdTable(clock=lambda: now[0])
    a, b, c, e = ((PID, 0, "t", p) for p in range(4))
    table.note_sent(a)
    now[0] += 1
    table.note_sent(b)
    assert not table.note_sent(c)  # full: a and b both live; uncounted, and its caller told so
    assert table.in_flight(a) and table.in_flight(b), "a live key pushed out of a full table"
    assert table.in_flight(c), "a batch sent uncounted let a fresh-id batch of its key out behind it"
    table.note_settled(c)  # its call ended: nothing counted, nothing to uncount
    assert table.in_flight(a) and table.in_flight(b) and table.in_flight(c)
    table.note_settled(b)  # room again: c's bucket stays held while an uncounted batch of it may be in flight,
    assert table.note_sent(c)  # but c is counted as any key (its callers settle only what was counted: rv2)
    assert table.in_flight(c) and c in table._in_flight
    table.note_settled(c)  # that counted batch answered; the uncounted one may still be in flight
    assert table.in_flight(c) and c not in table._in_flight
    now[0] += IN_FLIGHT_LEAK_S + 1
    assert not table.in_flight(c)  # every uncounted batch ended by now
    table.note_sent(e)  # room: b left
    table.note_sent(c)  # full (a and e): a's count is one the backstop drops, it makes room
    assert a not in table._in_flight and c in table._in_flight and e in table._in_flight
    assert table.in_flight(c) and table.in_flight(e)
    table.note_settled(c)
    table.note_settled(e)
    assert not table._in_flight and not table.in_flight(c) and not table.in_flight(e)


def test_a_full_table_frees_the_room_of_an_abandoned_batch_at_its_bound(monkeypatch):
    """An abandoned batch's key leaves a full table once the abandonment's bound passed (not IN_FLIGHT_LEAK_S)."""
    monkeypatch.setattr(pids, "MAX_MAPPINGS", 1)
    now = [1000.0]
    table = ProducerIdTable(clock=lambda: now[0])
    a, b = (PID, 0, "t", 0), (PID, 0, "t", 1)
    table.note_sent(a)
    table.note_abandoned(a)
    now[0] += SETTLED_AFTER_CANCEL_S + 1
    table.note_sent(b)
    assert b in table._in_flight and a not in table._in_flight and not table._abandoned
    assert not table.in_flight(a) and table.in_flight(b)
