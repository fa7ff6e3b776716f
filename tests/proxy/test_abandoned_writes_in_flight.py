"""A drained request (`writes_in_flight`, DESIGN §4.1 step 2) that `Dispatcher.start` gives up on (cancelled:
`stop_reading()` when its client connection broke): counted until ABANDONED_SETTLE_S after the cancellation when a
call of it was written (the broker may still append it), uncounted at once when none was (it never will be: a write,
`conn.send`, is synchronous, and the coroutine that would make it was cancelled at a connection's set-up). The rv2
review's `test_a_barrier_round_cancelled_mid_call_stays_counted_for_the_drain_while_the_broker_may_still_write_it`
shows the first half; these show the bound is reached and the second half."""

from __future__ import annotations

import asyncio
import collections
import types

from fedkafka.proxy.core import dispatch
from fedkafka.proxy.plan import Broker, Call
from proxy.test_hostile_requests_unit import dispatcher
from proxy.test_in_flight_abandoned_and_full import _generic_proxy_holding_p0
from proxy.test_produce_in_flight_fresh_id import _request, _routed
from proxy.test_produce_lane import PID, run

METADATA = types.SimpleNamespace(__api_key__=3)  # a call's request: only its api key is read before the write


def test_a_barrier_round_cancelled_mid_call_is_uncounted_for_the_drain_once_its_request_can_no_longer_be_written(
        monkeypatch):
    """The bound patched short: counted after the cancellation, then not (the drain acks then)."""
    monkeypatch.setattr(dispatch, "ABANDONED_SETTLE_S", 0.05, raising=False)

    async def scenario():
        now = [1000.0]
        async with _generic_proxy_holding_p0(now) as (table, _broker, d):
            started = asyncio.ensure_future(d.start(_request([(1, 15), (0, 6)]), 0, None))
            await _routed(table, (PID, 0, "t", 1), 16)
            started.cancel()
            for _ in range(5):
                await asyncio.sleep(0)
            assert started.cancelled() and sum(d.writes_in_flight.values()) == 1
            for _ in range(500):
                if not sum(d.writes_in_flight.values()):
                    break
                await asyncio.sleep(0.01)
            assert sum(d.writes_in_flight.values()) == 0, "the drain would wait for good"
    run(scenario)


class _Written:
    """An open pooled connection: `send` writes at once (synchronously) and returns the call's future."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.requests: list = []

    def send(self, request, expect_response=True, client_id=None):
        self.requests.append(request)
        return self.loop.create_future()


async def _cancelled_in_set_up(ready_first: bool) -> tuple[collections.Counter[int], list]:
    """A round of two calls to two brokers: the first to an open connection when `ready_first` (written at once),
    else both need a new one; cancelled while the connection of the call awaited is set up. The drain's counts after
    `start`'s failure path ran, and what was written."""
    loop = asyncio.get_running_loop()
    d = dispatcher()
    d._loop = loop
    conn = _Written(loop)
    setting_up = loop.create_future()

    async def send_to(*_args, **_kwargs):
        await setting_up  # a connect, a TLS handshake, a SASL login: never done here

    d.physical.address = lambda cluster, node: ("h", node)  # type: ignore[method-assign]
    d.pool.ready = lambda host, port, key: conn if ready_first and port == 1 else None  # type: ignore[method-assign]
    d._send_to = send_to  # type: ignore[method-assign]
    counts: collections.Counter[int] = collections.Counter({7: 1})
    sending = asyncio.ensure_future(d._send([Call(Broker("c1", 1), METADATA), Call(Broker("c1", 2), METADATA)], 0))
    await asyncio.sleep(0)
    sending.cancel()
    try:
        await sending
    except asyncio.CancelledError as e:
        dispatch._uncount_unless_written(counts, 7, e, loop, d.abandoned_writes)  # `start`'s failure path
    return counts, conn.requests


def test_a_round_cancelled_after_writing_a_call_stays_counted_one_cancelled_before_any_write_does_not():
    async def scenario():
        counts, written = await _cancelled_in_set_up(True)
        assert written == [METADATA] and counts[7] == 1, "uncounted with a request written to the broker"
        counts, written = await _cancelled_in_set_up(False)
        assert written == [] and counts[7] == 0, "nothing written, yet held back from the drain"
    run(scenario)


def test_the_lane_counts_every_batch_it_sends_or_sends_none(monkeypatch):
    """An uncounted batch must never be settled (its settle would uncount a later, counted batch of its key), and the
    lane has no place to remember one: with the in-flight table full (MAX_MAPPINGS patched to 2, another key and p0
    counted, p1 new), `lane_forwarded` counts nothing (p0's count back as it was) and raises LaneUncounted, so the
    generic path takes the request (its `_Part.counted` remembers)."""
    import pytest

    from fedkafka.protocol import records as rec
    from fedkafka.proxy.core import producer_ids as pids
    from fedkafka.proxy.handlers import produce as produce_handler
    from proxy.test_produce_lane import batch, frame, seeded, view

    monkeypatch.setattr(pids, "MAX_MAPPINGS", 2)
    request = rec.read_produce_request(frame({0: batch(1, PID, 0, 3), 1: batch(1, PID, 0, 9)}))
    headers = [rec.produce_batch(p.records) for t in request.topic_data for p in t.partition_data]
    routes = [produce_handler.lane_route(view(), True, "t", p) for p in (0, 1)]
    table = seeded({0: "steady", 1: "steady"}, {0: 3, 1: 9}, {})
    table.note_sent((PID + 1, 0, "t", 0))
    table.note_sent((PID, 0, "t", 0))
    before = dict(table._in_flight)
    producer = produce_handler.lane_producer(table, request, routes, headers)  # type: ignore[arg-type]
    assert producer is not None
    with pytest.raises(produce_handler.LaneUncounted):
        produce_handler.lane_forwarded(table, producer)
    assert dict(table._in_flight) == before, "a batch counted (or uncounted) by a request the lane did not send"
    table.note_settled((PID + 1, 0, "t", 0))  # room: the lane counts both
    assert len(produce_handler.lane_forwarded(table, producer)) == 2
    assert table._in_flight[(PID, 0, "t", 0)][0] == 2 and table._in_flight[(PID, 0, "t", 1)][0] == 1
