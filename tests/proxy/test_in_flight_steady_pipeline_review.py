"""Review rv2: `ProducerIdTable.in_flight` starts its 30 s "missed exit" clock on any query, and the produce handler
queries it for every idempotent batch (`_producer_refusal` asks `in_flight` before `broker_checked`), also for the
broker-checked batches of a steady pipeline that are never held back. A producer that keeps batches in flight without
pause (max.in.flight 5, continuous load on the generic path) never brings the count to 0, so 30 s after the first
query the count is dropped while batches are in flight, and a later batch on a fresh physical id is let through while
an earlier one is unanswered: the loss ac410f1 prevents."""

from __future__ import annotations

from fedkafka.proxy.core.producer_ids import REFUSAL_MEMORY_S, ProducerIdTable

KEY = (7, 0, "orders", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_steady_pipeline_never_held_back_keeps_its_batches_counted_in_flight():
    clock = Clock()
    ids = ProducerIdTable(clock=clock)
    # two pipelined batches out; each later broker-checked batch is routed while earlier ones are unanswered, and
    # the handler asks `in_flight` for it (then `broker_checked` lets it through: nothing is held back)
    ids.note_sent(KEY)
    ids.note_sent(KEY)
    for _ in range(int(REFUSAL_MEMORY_S) + 5):  # one answer and one new batch a second: never 0 in flight
        clock.now += 1.0
        ids.in_flight(KEY)  # a broker-checked batch's routing query, as `_producer_refusal` makes it
        ids.note_sent(KEY)
        ids.note_settled(KEY)
    # two batches are still unanswered: a batch the broker would not check (a fresh physical id) must wait
    assert ids.in_flight(KEY), "count dropped while 2 batches are in flight: a fresh-id batch would go out now"


def test_a_batch_held_behind_a_call_still_within_the_upstream_timeout_is_not_let_through():
    """The drop's bound (REFUSAL_MEMORY_S, 30 s) is shorter than an upstream produce call may legitimately last
    (UPSTREAM_REQUEST_TIMEOUT_S, 40 s): a fresh-id batch held at once is let through at 31 s while the call it waits
    for can still end unwritten."""
    clock = Clock()
    ids = ProducerIdTable(clock=clock)
    ids.note_sent(KEY)
    ids.note_sent(KEY)
    ids.note_sent(KEY)  # three in flight
    ids.in_flight(KEY)  # a fresh-id batch held back: the clock starts
    clock.now += REFUSAL_MEMORY_S + 1  # a slow cluster: the three are still in flight (upstream timeout 40 s)
    ids.in_flight(KEY)
    ids.note_sent(KEY)  # a fourth goes out
    ids.note_settled(KEY)  # the first is answered; three remain unanswered
    assert ids.in_flight(KEY), "3 batches unanswered, yet none counted in flight"
