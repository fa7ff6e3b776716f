"""Review s35-rvdropped of s35-dropped (e28ed1b): a dropped (late) Fetch answer's records kept per connection
(`fetch._KeptAnswers` on `Session.fetch_kept`, charged to the process' memory budget's spare share) and given to the
connection's next Fetch asking exactly the same (broker, physical partition, offset, version, isolation level, view)
without a call (docs/DESIGN.md §3.1 "Kept answers").

The offset mapping holds (a kept answer is keyed by the physical offset asked and used only under the same view
object, translated as a call's own answer): no finding there. What the strict xfails below show is what the kept
answer is *not* compared with: its age, the request's max_bytes, and what it holds besides its records; and that the
bytes it holds are never given back to anyone but the connection's next Fetch. Handler-level, as
tests/consume/test_fetch_fairness_unit.py (whose set-ups they use).

Fixed (s35-fixdropped), the xfails removed: kept answers are given back before a reader would wait for the budget
(`MemoryBudget.give_back_on_wait`), expire after the dropping Fetch's max_wait (`OWED_WAIT_FLOOR_MS` at least, on the
session's clock), serve only a request asking no smaller max_bytes or one their records fit, and charge a fixed
per-entry overhead and each aborted transaction besides their records."""

from __future__ import annotations

import asyncio

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_type
from fedkafka.proxy.core.limits import ByteBudget
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import Plan
from fedkafka.security.session import Session

from .test_fetch_fairness_unit import (
    BUSY,
    KEPT,
    KEPT_CHARGE,
    SLOW,
    SLOW_PARTITION,
    keeping_plan,
    kept,
    offsets,
    still_clock,
)
from .test_handlers_unit import batch, fetch_answer, partitions


def test_a_request_waiting_for_the_memory_budget_gets_the_bytes_kept_answers_hold():
    """A connection kept a dropped answer and then stopped fetching (its consumer paused every partition it reads
    there: a backpressured Flink/Connect task; metadata requests keep the connection from the idle timeout). Later
    the process' budget fills and a client's request waits for bytes: the kept records, which no Fetch may ever ask
    for, are not given up for it. `take_spare` only refuses to *take* while someone waits; nothing releases what was
    taken when someone starts waiting (fetch.py `_KeptAnswers`: released only by `take`/`close`). Up to a quarter
    of --max-buffered-bytes (KEPT_BUDGET_SHARE) can so sit idle for hours, and while it does, every staging growth
    (`client_frames._grow`, share 4: a producer's 1 MiB step) and every other connection's keep is refused too."""

    async def scenario():
        session, budget = Session(clock=still_clock), ByteBudget(fetch.KEPT_BUDGET_SHARE * KEPT_CHARGE)
        kept(session, budget)  # ... and the connection fetches no more
        assert budget.used == KEPT_CHARGE
        request = asyncio.ensure_future(budget.acquire(budget.limit - KEPT_CHARGE + 1))  # a client's frame
        try:
            for _ in range(10):  # (yields: a release would grant it synchronously, `ByteBudget._grant`)
                await asyncio.sleep(0)
            assert request.done(), f"a request waits while kept answers hold {budget.used} bytes of {budget.limit}"
        finally:
            request.cancel()

    asyncio.run(scenario())


def test_a_kept_answer_is_not_given_long_after_its_broker_gave_it():
    """`_Kept.serves` compares the view, version, isolation level and partition max bytes, never the time: the answer
    the broker gave when the connection's first Fetch dropped it is given as the broker's answer to a Fetch sent ten
    minutes later (the connection's idle timeout; a consumer that polls metadata keeps it open longer). Kafka's
    broker reads the log when the Fetch comes: retention or a DeleteRecords (through this proxy, which does not
    touch the view, or at the cluster) moved the log start past the offset -> OFFSET_OUT_OF_RANGE, and the client
    resets; a physical topic re-created empty by an operator or the controller's scan (tests/consume/
    test_handlers_unit.py `Recreated`) holds other records there. The proxy gives the old records with the old log
    start and high watermark (lag, EOF), without asking. Fix: keep an answer at most about a round trip (e.g. the
    client's max_wait, or a few seconds): past it, ask the broker (it is owed). (The session's clock, which the kept
    answers read, is faked: it is the loop's, monotonic.)"""
    now = [1000.0]
    session, budget = Session(clock=lambda: now[0]), ByteBudget(1 << 20)
    kept(session, budget)
    now[0] += 600  # ten minutes later
    plan = keeping_plan(session, budget)
    assert isinstance(plan, Plan)
    assert SLOW in [c.target for c in plan.calls], "the broker is not asked: ten-minute-old records given as its answer"
    assert budget.used == 0  # and the expired answer given back


def test_a_kept_answer_gives_no_more_than_the_client_s_max_bytes_allow():
    """The dropped call asked max_bytes 1 MiB and got two batches; the next Fetch asks the same partition first with
    max_bytes 1. Kafka's broker reads the first partition with min(partition max bytes, max_bytes left) and at
    least one batch (KIP-74, LogSegment.read minOneMessage): the first batch only, at 75. `_Budget` lets the first
    non-empty partition's records through whole (right for a broker's answer, already cut to max_bytes), so the
    kept answer's two batches reach the client: a Fetch answer larger than the client asked (librdkafka sizes its
    receive buffer by fetch.max.bytes + receive.message.max.bytes)."""
    session, budget = Session(clock=still_clock), ByteBudget(1 << 20)
    kept(session, budget, fetch_answer("t", 1, batch(8, 1) + batch(9, 1), hw=10))
    plan = keeping_plan(session, budget, ("log", 0, 75), ("log", 1, 0), max_bytes=1)
    assert isinstance(plan, Plan)
    brokers = {SLOW: fetch_answer("t", 1, batch(8, 1), hw=10),  # (asked max_bytes 1: its first batch, KIP-74)
               BUSY: fetch_answer("t", 1, batch(0, 1), 1)}
    out = partitions(plan.finish([brokers[c.target] for c in plan.calls]))
    assert offsets(out[SLOW_PARTITION].records) in ([], [75]), "more than max_bytes: both kept batches given"


def test_what_a_kept_answer_holds_is_charged_to_the_memory_budget():
    """A READ_COMMITTED answer with one small batch and 10,000 aborted transactions (16 bytes each on the wire, a
    Python object each once read): `_Kept.nbytes = len(data.records)` (fetch.py `_Kept.__init__`) charges the ~70
    record bytes and holds the 10,000 objects (~1 MB) for as long as the answer is kept, uncharged (and so, per
    connection, as many partitions as it fetches). DESIGN §3.1: "every byte is charged"."""
    aborted = [{"producer_id": i, "first_offset": 8} for i in range(10_000)]
    committed = build(response_type(1, 12), {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 1, "error_code": ErrorCode.none, "high_watermark": 10, "last_stable_offset": 9,
         "log_start_offset": 0, "aborted_transactions": aborted, "preferred_read_replica": -1, "records": KEPT}]}]})
    session, budget = Session(clock=still_clock), ByteBudget(1 << 30)
    kept(session, budget, committed, isolation_level=1)
    assert session.fetch_kept.entries  # kept
    assert budget.used >= 16 * len(aborted), f"{budget.used} bytes charged for {len(aborted)} aborted transactions"
