"""Review s34-rvf1 of fetch fairness between a connection's clusters (DESIGN §3.1 "Fairness between clusters",
`fetch._fair_plan`, `Plan.awaited`, `Plan.answered_late`): each strict xfail shows a defect of the code it was written
against. The owed broker's call in the next Fetch is the client's own poll (its max_wait, its min_bytes, its
partitions), awaited until it ends: when that broker cannot answer it at once, the Fetch holds records another
cluster answered at once (Kafka's broker, and the proxy before fairness, answered them at once).
Fixed (s34-fixrvf1): the debt is per (broker, partition, offset), a call asking one awaited asks min_bytes 1, the wait
for it is bounded by the client's max_wait (`Plan.awaited_within_s`), and a throttle is owed nothing; (s35-dropped) a
dropped answer's records are kept for the next Fetch asking the same there (`fetch._KeptAnswers`), charged to the
process' memory budget: a context without one (`_plan`'s default) keeps nothing, and its debt is waited for.

Real `Dispatcher._send`/`_collect` and `UpstreamPool`; the brokers are fakes on loopback (consume/
test_abandoned_polls_unit.py) that answer as Kafka's broker does (at once with min_bytes of records or at max_wait 0,
else at the end of their max_wait, which the test plays by answering) or, hung, never. No timed assertion: each test
waits for the Fetch's answer only against a hang (HOLD_GUARD_S), then counts what the brokers were asked and still
hold."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid

from consume.test_abandoned_polls_unit import _batch, _Broker, _close, _setup, _until
from consume.test_fetch_fairness_unit import BUSY_PARTITION, SLOW, SLOW_PARTITION, still_clock
from consume.test_handlers_unit import CHAIN, IDENTITY, VIEW, Physical, fetch_request, partitions
from consume.test_s34_rvf23_review import read_batches
from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core.limits import ByteBudget
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import Context, Plan
from fedkafka.security.session import Session
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment

HOLD_GUARD_S = 5.0  # only against a hang: a Fetch answered at once is answered in milliseconds
MIN_BYTES = 500
BUSY_RECORDS = b"".join(_batch(i) for i in range(10))  # 690 bytes at the busy cluster: more than MIN_BYTES
TRICKLE = _batch(8)  # 69 bytes at the slow cluster's ("log", 0) (physical t/1 at 8): fewer than MIN_BYTES
THROTTLED, THROTTLE_MS = b"throttled", 2_000  # (a fake's answer) over a quota: throttled for 2 s
OTHER_PARTITION = ("log", 2)  # on the slow cluster's broker too (physical u/0), nothing written to it
THREE = dataclasses.replace(VIEW, topics={"log": LogicalTopic("log", uuid.uuid4().hex, (
    CHAIN, IDENTITY, PartitionChain(segments=(Segment(SLOW.cluster, "u", 0, 0, None, 0),))))})


class _Stocked(_Broker):
    """A broker whose partitions hold `stock` (physical (topic, partition) -> records). As Kafka's broker
    (DelayedFetch) it answers a Fetch at once when it holds at least min_bytes of records for it or its max_wait is 0;
    else the poll is held until the test ends it (`answer`, as at its max_wait). `hung`: it reads requests and
    answers none (a broker stalled, or a network that drops its packets)."""

    def __init__(self, stock: dict[tuple[str, int], bytes]):
        super().__init__()
        self.stock = stock
        self.hung = False
        self.muted: asyncio.Event | None = None  # set by a throttled answer (`THROTTLED`): cleared by `unmute`

    def unmute(self) -> None:
        if self.muted is not None:
            self.muted.set()

    async def _serve(self, reader, writer) -> None:
        self.serving.add(asyncio.current_task())  # type: ignore[arg-type]
        while True:
            try:
                size = int.from_bytes(await reader.readexactly(4), "big", signed=True)
                frame = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            header, request = codec.decode_request(frame)
            asked = request.topics[0]
            held = self.stock.get((asked.topic, asked.partitions[0].partition), b"")
            answer = asyncio.get_running_loop().create_future()
            self.requests.append((answer, request.max_wait.total_seconds() * 1000))
            self.out += 1
            if not self.hung and (request.max_wait.total_seconds() == 0 or len(held) >= request.min_bytes):
                answer.set_result(held)
            data = await answer  # one request of a connection at a time, as a broker serves them
            self.out -= 1
            if data is THROTTLED:  # Kafka's broker over a quota (KIP-219): no partition, the throttle time, and
                # the connection muted (its next request not read) for that time
                writer.write(b"".join(rec.fetch_response_parts(12, header.correlation_id, 0, 0, [], THROTTLE_MS)))
                self.muted = asyncio.Event()
                await self.muted.wait()
                continue
            writer.write(b"".join(rec.fetch_response_parts(12, header.correlation_id, 0, 0, [
                (asked.topic, [rec.FetchPartitionData(asked.partitions[0].partition, 0, 10, 10, 0, None, -1,
                                                      data)])])))


def _plan(session: Session, heard: list[int], *parts: tuple[str, int, int], max_wait_ms: int = 25_000,
          min_bytes: int = 1, budget: ByteBudget | None = None) -> Plan:
    """The fetch handler's plan of a Fetch of `parts` on the client connection of `session` (view THREE); `heard`
    gets the index of each dropped call whose late answer the plan was told of (`Plan.answered_late`); `budget`: the
    process' memory budget its context charges what it keeps (None: nothing kept)."""
    ctx = Context(view=THREE, me=THREE.proxies[0], advertised={}, physical=Physical(), producer_ids=None,
                  session=session, budget=budget)
    request = dataclasses.replace(fetch_request(*parts), max_wait=datetime.timedelta(milliseconds=max_wait_ms),
                                  min_bytes=min_bytes)
    plan = fetch.handle(ctx, None, request)
    if (late := plan.answered_late) is not None:
        def answered_late(index: int, result) -> None:
            late(index, result)
            heard.append(index)
        plan.answered_late = answered_late
    return plan


async def _fetch(d, plan: Plan) -> asyncio.Future:
    """The plan's calls sent and collected as the core's first round does (`Dispatcher._complete`): its answer, to
    come."""
    sent = await d._send(plan.calls, 1)  # test_abandoned_polls_unit.SLOT
    return asyncio.ensure_future(_answer(d, plan, sent))


async def _answer(d, plan: Plan, sent: list):
    return plan.finish(await d._collect(plan.calls, sent, plan.return_early, plan.awaited, plan.answered_late,
                                        plan.awaited_within_s))


async def _answered(fetching: asyncio.Future) -> bool:
    done, _ = await asyncio.wait({fetching}, timeout=HOLD_GUARD_S)
    return bool(done)


async def _owe_the_slow_broker(d, pool, busy: _Broker, slow: _Stocked, session: Session, slow_port: int,
                               late_answer: bytes = TRICKLE, budget: ByteBudget | None = None, **wait) -> None:
    """Fetch 1 of ("log", 0) (slow cluster) and ("log", 1) (busy cluster): busy answers at once with records, the
    Fetch finishes without slow's poll (slow answers later: a farther cluster), which then ends with the trickle:
    owed to the next Fetch."""
    slow.hung = True  # until the test answers
    first = await _fetch(d, _plan(session, [], ("log", 0, 75), ("log", 1, 0), budget=budget, **wait))
    out = partitions(await asyncio.wait_for(first, HOLD_GUARD_S))
    assert out[BUSY_PARTITION].records and not out[SLOW_PARTITION].records
    await _until(lambda: len(slow.requests) == 1)
    slow.hung = False
    slow.answer(0, late_answer)
    await _until(lambda: slow.out == 0 and pool.dedicated_in_use("127.0.0.1", slow_port) == 0)
    await asyncio.sleep(0.01)  # the proxy read that answer (and dropped it): its callbacks ran


async def _end(pool, busy: _Broker, slow: _Stocked, fetching: asyncio.Future):
    """Every held poll answered (empty), the Fetch's answer, the brokers and the pool closed."""
    slow.unmute()
    await asyncio.sleep(0.01)  # a muted connection's request read
    for answer, _ in slow.requests:
        if not answer.done():
            answer.set_result(b"")
    result = await asyncio.wait_for(fetching, HOLD_GUARD_S)
    await _close(pool, busy, slow)
    return partitions(result)


def test_a_fetch_owing_a_trickle_cluster_answers_the_busy_cluster_s_min_bytes_at_once():
    """A consumer with fetch.min.bytes 500 (throughput tuning; a Java client's fetch.min.bytes) reads p1 on a busy
    cluster (690 bytes ready at every Fetch) and p0 on a slow one that gets a trickle (69 bytes per max_wait). Kafka's
    broker answers such a Fetch at once (p1 alone has min_bytes), with p0's trickle; so did the proxy before fairness
    (the slow broker's poll dropped). Now slow's poll ends at its max_wait with the trickle, which the Fetch dropped:
    owed, the next Fetch waits for slow's answer, and slow, holding fewer than min_bytes, answers only at its
    max_wait: after each max_wait of Fetches answered at once, one holds the busy cluster's records for a whole
    max_wait (Java's default 500 ms; up to the proxy's 30 s clamp), about half the busy cluster's throughput.
    DESIGN §3.1: "its records are still at the broker, so it answers at once": not below min_bytes. Cause: fetch.py
    `_fair_plan` awaits the owed broker's call as the client asked it (`_upstream_request`: min_bytes, max_wait).
    Fix: the awaited call asks min_bytes 1 or max_wait 0 (its records are known to be there), or the wait for it
    ends with the client's min_bytes met by the others."""

    async def main():
        busy, slow = _Broker(auto=BUSY_RECORDS), _Stocked({("t", 1): TRICKLE})
        d, pool, slow_port = await _setup(busy, slow, quiet_cluster=SLOW.cluster)
        session = Session()
        await _owe_the_slow_broker(d, pool, busy, slow, session, slow_port, min_bytes=MIN_BYTES)
        fetching = await _fetch(d, _plan(session, [], ("log", 0, 75), ("log", 1, 0), min_bytes=MIN_BYTES))
        answered = await _answered(fetching)
        held = slow.out  # the slow broker's poll of this Fetch, still held (fewer than min_bytes there)
        out = await _end(pool, busy, slow, fetching)
        assert answered, f"the Fetch held busy's {len(BUSY_RECORDS)} bytes (min_bytes {MIN_BYTES}) until slow's " \
                         f"poll ended at its max_wait ({held} poll held)"
        assert out[BUSY_PARTITION].records or out[SLOW_PARTITION].records  # (whichever broker answered first)

    asyncio.run(main())


def test_a_fetch_owing_a_broker_for_a_partition_it_no_longer_asks_does_not_wait_for_that_broker_s_long_poll():
    """The dropped answer had p0's records; the client's next Fetch no longer asks p0 (paused, revoked by a
    cooperative rebalance, or moved by a view change or a leader change to another broker) but asks p2, which the
    same broker leads and which has nothing. The debt is kept per broker (`Session.fetch_owed`), so that Fetch
    waits for the broker's answer on p2: a long poll, ended only by its max_wait, while p1's records (busy cluster)
    were there at once. Cause: fetch.py `_fair_plan` awaits every call to an owed broker whatever it asks and with the
    client's max_wait. Fix: owe (broker, partition, offset) and await only a call asking one of those at that offset,
    or await the owed broker's call with max_wait 0."""

    async def main():
        busy, slow = _Broker(auto=BUSY_RECORDS), _Stocked({("t", 1): TRICKLE})  # nothing in u/0 (p2)
        d, pool, slow_port = await _setup(busy, slow, quiet_cluster=SLOW.cluster)
        session = Session()
        await _owe_the_slow_broker(d, pool, busy, slow, session, slow_port)
        plan = _plan(session, [], ("log", 1, 0), ("log", 2, 0))  # p0 paused: p1 (busy) and p2 (slow, empty)
        assert {c.target for c in plan.calls} == {SLOW, fetch.Broker("c1", 7)}
        fetching = await _fetch(d, plan)
        answered = await _answered(fetching)
        held = slow.out
        out = await _end(pool, busy, slow, fetching)
        assert answered, f"the Fetch held p1's records for the long poll of p2 ({held} poll held), which has nothing"
        assert out[BUSY_PARTITION].records and not out[OTHER_PARTITION].records

    asyncio.run(main())


def test_a_fetch_owing_a_broker_that_stopped_answering_is_answered_within_the_client_s_max_wait():
    """The slow broker's dropped answer had records (owed), then it stops answering (a stalled broker, a network
    dropping its packets: the connection stays open). The next Fetch (max_wait 100 ms) has p1's records from the busy
    cluster at once, and waits for the owed broker's call until that call times out: max_wait + WAIT_MARGIN_S (20.1 s
    here; 20.5 s with Java's default fetch.max.wait.ms, and with fetch.max.wait.ms >= 10 s past Java's request.timeout
    .ms of 30 s, so the client drops the connection and its fetch state). DESIGN §3.1 promises the wait is "within
    the client's max_wait"; before fairness the Fetch was answered at once. Cause: dispatch.py `_collect` waits for
    `awaited` with no bound of its own; fetch.py makes each call's timeout max_wait + WAIT_MARGIN_S. Fix: give
    `Plan.awaited` a deadline (what is left of the client's max_wait, the core owning the clock) after which the
    plan finishes without the awaited calls (dropped, heard late as any other)."""

    async def main():
        busy, slow = _Broker(auto=BUSY_RECORDS), _Stocked({("t", 1): TRICKLE})
        d, pool, slow_port = await _setup(busy, slow, quiet_cluster=SLOW.cluster)
        session = Session()
        await _owe_the_slow_broker(d, pool, busy, slow, session, slow_port, max_wait_ms=100)
        slow.hung = True
        fetching = await _fetch(d, _plan(session, [], ("log", 0, 75), ("log", 1, 0), max_wait_ms=100))
        answered = await _answered(fetching)
        held = slow.out  # the hung broker's request, unanswered
        out = await _end(pool, busy, slow, fetching)
        assert answered, f"a Fetch with max_wait 100 ms held busy's records past {HOLD_GUARD_S} s for the hung " \
                         f"owed broker ({held} request unanswered)"
        assert out[BUSY_PARTITION].records and not out[SLOW_PARTITION].records

    asyncio.run(main())


def test_a_dropped_answer_s_records_reach_the_next_fetch_asking_the_same_without_reading_them_again():
    """The slow cluster's dropped answer had p0's records; the client got none of them, so its next Fetch asks p0 at
    the same offset: exactly what that answer answers (`_still_routed` already translates an answer with the view as
    it is when it is used). The proxy throws the answer away and waits for a new poll of slow's broker for the same
    records: every record of a slower cluster is read twice across the network (up to the client's max_bytes per
    answer, cross-cluster traffic doubled), and each Fetch that gets them holds the busy cluster's records for one
    more of slow's round trips (with slow's round trip longer than busy's, the busy cluster's Fetches stall about half
    the time). It is also the root of the other tests here: no Fetch would need to wait for an owed broker. Cause:
    fetch.py `_note_dropped` keeps the broker, not its answer (DESIGN §3.1 "Abandoned polls": never given to a later
    Fetch, "the positions the client asks next may differ": they can be compared). Fix: keep the dropped answer with
    what it answered (broker, physical partitions and offsets), give it to the next Fetch asking the same there
    without a call, and bound what is kept (it holds record sets: charge the connection's byte budget).
    Fixed (s35-dropped): kept (`fetch._KeptAnswers`), charged to the process' memory budget until the answer that
    gives them is built."""

    async def main():
        busy, slow = _Broker(auto=BUSY_RECORDS), _Stocked({("t", 1): TRICKLE})
        d, pool, slow_port = await _setup(busy, slow, quiet_cluster=SLOW.cluster)
        session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
        await _owe_the_slow_broker(d, pool, busy, slow, session, slow_port, budget=budget)
        assert budget.used == len(TRICKLE) + fetch.KEPT_ENTRY_BYTES  # the dropped answer's records, kept
        fetching = await _fetch(d, _plan(session, [], ("log", 0, 75), ("log", 1, 0), budget=budget))  # p0 again
        answered = await _answered(fetching)
        out = await _end(pool, busy, slow, fetching)
        read: list[int] = []
        assert answered and read_batches(out[SLOW_PARTITION].records, read, 75) == 76 and read == [75]  # (physical
        # t/1 at 8): the record the first Fetch dropped
        assert len(slow.requests) == 1, f"slow's broker was asked {len(slow.requests)} times for one answer's records"
        assert budget.used == 0 and session.fetch_kept.nbytes == 0  # given back once, with the answer

    asyncio.run(main())


def test_a_fetch_owing_a_throttled_broker_is_not_held_for_the_throttle_on_its_muted_connection():
    """The slow cluster's dropped answer was a quota throttle (Kafka's broker over a quota of the proxy's principal:
    no partition, a throttle time, and the connection muted for that time, KIP-219). Owed (`_answers_at_once`: a
    throttle), the next Fetch waits for that broker; its call goes out on the same dedicated connection (the pool's
    idle one), which the broker reads only once the throttle time passed: the busy cluster's records, there at once,
    are held for the throttle time (and the client, told the throttle in that answer, backs off once more). Cause:
    fetch.py `_note_dropped` owes the broker for a throttle, and `_fair_plan` awaits it; the core writes to a broker
    connection its broker throttled. Fix: owe the throttle itself (the next Fetch answers its throttle_time_ms at once,
    KIP-219: the client backs off) rather than the broker, or do not await a throttled broker's call."""

    async def main():
        busy, slow = _Broker(auto=BUSY_RECORDS), _Stocked({("t", 1): TRICKLE})
        d, pool, slow_port = await _setup(busy, slow, quiet_cluster=SLOW.cluster)
        session = Session()
        await _owe_the_slow_broker(d, pool, busy, slow, session, slow_port, late_answer=THROTTLED)
        fetching = await _fetch(d, _plan(session, [], ("log", 0, 75), ("log", 1, 0)))
        answered = await _answered(fetching)
        unread = len(slow.requests) == 1  # the Fetch's call to slow, not read by its muted connection
        out = await _end(pool, busy, slow, fetching)
        assert answered, f"the Fetch held busy's records for slow's throttle on its muted connection ({unread=})"
        assert out[BUSY_PARTITION].records

    asyncio.run(main())
