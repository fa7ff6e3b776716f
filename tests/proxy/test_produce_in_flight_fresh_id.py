"""A batch in flight (its answer pending) when a later batch of its producer and partition goes out on a fresh
physical id (DESIGN §5.3 rule 3, "An answer still pending"). The broker takes any first sequence from an id it has
no state for, so the later batch is written whatever becomes of the earlier one; if the earlier one then fails
without being written, librdkafka acks it implicitly once the later one is answered written."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest
from kio.schema.errors import ErrorCode
from protocol.test_produce_frames import kio_request

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core.producer_ids import ABANDONED_SETTLE_S
from proxy.test_produce_lane import PHYSICAL, PID, batch, proxy, requests_of, run, view
from proxy.test_produce_lane_review import SequenceBroker, _shut, _steady_table


class HeldSequenceBroker(SequenceBroker):
    """The sequence-checking stand-in, one request of a connection at a time as a broker processes them: a produce
    request naming a partition of `held` waits for `release`, then is answered with `held_codes` (nothing appended
    for a partition given an error), and the connection's later requests are read only after it. `order`: the
    sequences appended, in the order they were."""

    def __init__(self):
        super().__init__({})
        self.held: set[int] = set()
        self.held_codes: dict = {}
        self.release = asyncio.Event()
        self.order: dict[int, list[int]] = {}  # logical partition -> sequences in the order they were appended

    async def _serve(self, reader, writer) -> None:
        async for body in requests_of(reader):
            api_key, version, correlation_id = struct.unpack_from(">hhi", body)
            if api_key != 0:
                self._other(api_key, body, correlation_id, writer)
                continue
            request = rec.read_produce_request(body)
            if any(p.index in self.held for t in request.topic_data for p in t.partition_data):
                await self.release.wait()
                self.held.clear()
                self.codes = self.held_codes
            self.frames.append(body[:4] + bytes(4) + body[8:])
            before = {p: set(s) for p, s in self.written.items()}
            topics = self.answers(request)
            for p, seqs in self.written.items():
                self.order.setdefault(p, []).extend(sorted(seqs - before.get(p, set())))
            self.codes = {}
            writer.write(rec.produce_response_frame(version, correlation_id, topics))


@contextlib.asynccontextmanager
async def _held_proxy(lane: bool, held_codes: dict):
    """A steady producer's table (physical 555), the holding stand-in and a proxy in front of it, produce requests
    to p0 held (then answered with `held_codes`); on the way out the held ones released and everything shut."""
    table = _steady_table(lambda: 1000.0)
    broker = await HeldSequenceBroker().start()
    d = await proxy(view(4), broker, lane=lane, producer_ids=table)
    try:
        broker.held, broker.held_codes = {0}, held_codes
        yield table, broker, d
    finally:
        broker.release.set()
        await _shut(d, broker)


def _request(parts: list[tuple[int, int]]) -> bytes:
    """A client's Produce request of PID (epoch 0): one batch of one record per (partition, sequence)."""
    topics = [("t", [(p, batch(1, PID, 0, seq)) for p, seq in parts])]
    return codec.encode_request(kio_request(9, None, -1, 5000, topics), 11, "app")[4:]


def _codes(answer) -> dict[int, int]:
    return {p.index: p.error_code for _, ps in rec.read_produce_response(bytes(answer)[4:], 9) for p in ps}


async def _routed(table, key, end: int) -> None:
    """Until the proxy forwarded `key` up to `end` on a fresh physical id (its request is routed, every partition of it
    in one pass, and on its way upstream)."""
    for _ in range(500):
        write = table._writes.get(key)
        if write is not None and write.end == end and write.producer_id != PHYSICAL[0]:
            for _ in range(10):  # its frame written to the socket
                await asyncio.sleep(0)
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} never forwarded up to {end} on a fresh physical id")


@pytest.mark.parametrize("error", [ErrorCode.not_enough_replicas, ErrorCode.not_leader_or_follower])
@pytest.mark.parametrize("lane", [True, False])
def test_a_batch_in_flight_is_not_acked_implicitly_when_a_later_one_goes_out_on_a_fresh_physical_id(lane, error):
    """A steady producer (physical 555, confirmed on p0 and p1 of c1) sends batch 5 of p0: forwarded on 555, its
    answer pending (the broker is busy with it). Its next request carries p1's batch 15, a forward jump (p1's leadership
    went to another proxy and back, 9..14 written there: rule 1), and p0's batch 6. The jump drops the producer's
    mapping on c1, a fresh physical id is taken (InitProducerId, on another connection), and 6 goes out on it as its
    first batch on p0, behind 5 on the producer's connection. Then the broker answers 5 with an error that wrote nothing
    (NOT_ENOUGH_REPLICAS: the ISR was short for a moment; NOT_LEADER_OR_FOLLOWER) and takes 6 at any first sequence
    (the fresh id has no state there): written. librdkafka acks 5 implicitly when 6 is answered written: 5 is lost.
    On 555 the broker would have refused 6 (OUT_OF_ORDER_SEQUENCE_NUMBER) and the client resent from 5."""
    async def scenario():
        async with _held_proxy(lane, {0: error}) as (table, broker, d):
            five = await d.start(_request([(0, 5)]), 0, None)  # in flight: the broker holds its answer
            later = asyncio.ensure_future(d.start(_request([(1, 15), (0, 6)]), 0, None))
            await _routed(table, (PID, 0, "t", 1), 16)  # p1's 15 and p0's 6 routed (one pass)
            broker.release.set()
            assert _codes(await five)[0] == error  # not written
            six = _codes(await (await later))
            assert six[0] != 0 or 5 in broker.written[0], \
                f"batch 6 of p0 answered written while 5 never was: librdkafka acks 5 implicitly, 5 is lost ({six})"
    run(scenario)


@pytest.mark.parametrize("lane", [True, False])
def test_a_later_batch_held_back_behind_one_in_flight_goes_on_the_fresh_id_once_it_is_answered_and_keeps_order(lane):
    """The same, but 5 is written (answered after 6 was routed): 6, held back (NOT_LEADER_OR_FOLLOWER, retriable) while
    5's answer was pending, is written when the client resends it, on the fresh id as its first batch on p0. The log
    holds 5 then 6, the client's order (per-key order, §4.2): the fresh id never carries a batch past one in flight,
    so nothing of the fresh id lands before an earlier batch on the old one."""
    async def scenario():
        async with _held_proxy(lane, {}) as (table, broker, d):
            five = await d.start(_request([(0, 5)]), 0, None)
            later = asyncio.ensure_future(d.start(_request([(1, 15), (0, 6)]), 0, None))
            await _routed(table, (PID, 0, "t", 1), 16)
            broker.release.set()
            assert _codes(await five)[0] == 0
            assert _codes(await (await later)) == {1: 0, 0: ErrorCode.not_leader_or_follower}
            assert 6 not in broker.written[0]
            assert not table.in_flight((PID, 0, "t", 0))  # every answer in: nothing holds back the resend
            assert _codes(await (await d.start(_request([(0, 6)]), 0, None))) == {0: 0}
            assert broker.order[0] == [5, 6]
            fresh = table._map[(PID, 0, "c1")][0]
            assert fresh != PHYSICAL[0] and broker.last[(fresh, "phys", 0)] == 6  # 6 went on the fresh id
    run(scenario)


@pytest.mark.parametrize("lane", [True, False])
def test_batches_the_broker_checks_are_not_held_back_by_one_in_flight(lane):
    """Only a batch the broker would not check waits for the answers in flight: the producer's pipeline on its
    confirmed id (6 behind 5, both on 555) goes on as before, and the broker's own check orders it."""
    async def scenario():
        async with _held_proxy(lane, {}) as (table, broker, d):
            five = await d.start(_request([(0, 5)]), 0, None)
            six = await d.start(_request([(0, 6)]), 0, None)  # not a barrier: routed and sent behind 5
            assert table.in_flight((PID, 0, "t", 0))
            broker.release.set()
            assert _codes(await five) == {0: 0} and _codes(await six) == {0: 0}
            assert broker.order[0] == [5, 6] and not table._in_flight
    run(scenario)


def test_a_count_an_exit_missed_is_dropped_only_once_no_batch_of_its_key_was_sent_for_longer_than_any_call_lasts():
    """Every call ends within its set-up and the upstream request timeout of its send and settles its batches; a
    count an exit missed (a request cancelled mid-call) is dropped once no batch of its key was sent for
    IN_FLIGHT_LEAK_S, not kept for good. Settled counts leave the table."""
    from fedkafka.fencing import UPSTREAM_REQUEST_TIMEOUT_S
    from fedkafka.proxy.core.producer_ids import IN_FLIGHT_LEAK_S, ProducerIdTable

    assert IN_FLIGHT_LEAK_S > 2 * UPSTREAM_REQUEST_TIMEOUT_S  # a call, behind a retiring connection's drain
    now = [1000.0]
    table = ProducerIdTable(clock=lambda: now[0])
    key = (PID, 0, "t", 0)
    table.note_sent(key)
    table.note_sent(key)
    table.note_settled(key)
    assert table.in_flight(key)
    table.note_settled(key)
    assert not table.in_flight(key) and not table._in_flight
    table.note_settled(key)  # a settle without its send (none missed here) changes nothing
    assert not table._in_flight
    table.note_sent(key)  # never settled
    assert table.in_flight(key)
    now[0] += IN_FLIGHT_LEAK_S - 1
    table.note_sent(key)  # a later batch sent: the clock runs from it
    table.note_settled(key)
    now[0] += IN_FLIGHT_LEAK_S
    assert table.in_flight(key)
    now[0] += 1
    assert not table.in_flight(key) and not table._in_flight


def test_a_lane_call_whose_client_answer_was_cancelled_settles_its_batches_once_its_request_can_no_longer_be_written():
    """The lane uncounts a call's batches whatever ended it: an answer cancelled once its request was written (the
    upstream future cancelled with it: the broker's answer, when it comes, is not seen) keeps them counted until
    ABANDONED_SETTLE_S (80 s) after the cancellation, as the generic path's abandoned calls (the broker may still
    write the request until then), and uncounts them then, not at IN_FLIGHT_LEAK_S (300 s). It used to uncount them
    at the cancellation (reviewer, rv2: `test_in_flight_abandoned_and_full_review.py`)."""
    async def scenario():
        now = [1000.0]
        table = _steady_table(lambda: now[0])
        broker = await HeldSequenceBroker().start()
        d = await proxy(view(4), broker, lane=True, producer_ids=table)
        try:
            broker.held = {0}
            five = await d.start(_request([(0, 5)]), 0, None)
            assert d.lane.taken and table.in_flight((PID, 0, "t", 0))
            five.cancel()
            broker.release.set()
            for _ in range(500):
                if 5 in broker.written.get(0, ()):
                    break
                await asyncio.sleep(0.01)
            assert 5 in broker.written[0]
            now[0] += ABANDONED_SETTLE_S
            assert table.in_flight((PID, 0, "t", 0)), "uncounted before its request could no longer be written"
            now[0] += 1
            assert not table.in_flight((PID, 0, "t", 0)) and not table._in_flight
        finally:
            broker.release.set()
            await _shut(d, broker)
    run(scenario)
