"""Review s34-rvfetch of the consume path (Fetch over segment chains and clusters): each strict xfail shows a defect
on the code it was written against (a consumer that misses records, reads one twice, or is stuck)."""

from __future__ import annotations

import asyncio

import pytest

from consume.test_abandoned_polls_unit import _batch, _Broker, _calls, _close, _fetch, _setup, _until
from fedkafka.proxy.plan import UNANSWERED

FETCHES = 10


def _has_records(result) -> bool:
    return result is not UNANSWERED and any(p.records for t in result.responses for p in t.partitions)


@pytest.mark.xfail(strict=True, reason="review s34-rvfetch: a Fetch over two clusters finishes at the first answer "
                                       "with data, so a slower cluster's partitions starve while a faster one "
                                       "always has records (dispatch._collect, fetch._answers_at_once)")
def test_a_slower_cluster_s_records_reach_the_client_while_a_faster_cluster_always_has_records():
    """A consumer reads p1 (cluster "busy": a steady trickle, so its broker answers every Fetch at once with a record)
    and p2 (cluster "quiet" here only by name: it has a backlog, and answers every Fetch with records too, just later
    than busy: a farther or more loaded cluster). Kafka's broker answers every partition with data up to max_bytes;
    a Java client talking to two brokers keeps one Fetch in flight at each. The proxy finishes each Fetch at busy's
    answer and drops p2's (UNANSWERED: no records, `fetch._translate`); the next Fetch asks again, busy answers first
    again, and so on: p2's records never reach the client, its lag grows for as long as p1 is written to (DESIGN §3.1
    says the abandoned poll's data "reaches the client with its next Fetch after that poll ended": not when a faster
    cluster answers that Fetch first). Consequence: a stuck consumer for every partition of the slower cluster."""

    async def main():
        busy, slow = _Broker(auto=_batch(0)), _Broker()
        d, pool, slow_port = await _setup(busy, slow)
        delivered = 0
        for n in range(FETCHES):
            slow_result, busy_result = await _fetch(d, _calls())
            assert _has_records(busy_result)
            delivered += _has_records(slow_result)
            await _until(lambda asked=n + 1: len(slow.requests) == asked)
            if not slow.requests[n][0].done():
                slow.answer(n, _batch(100 + n))  # slow answers what it was asked, with records, after busy
            await _until(lambda: pool.dedicated_in_use("127.0.0.1", slow_port) == 0 and not d._poll_tasks)
        asked = len(slow.requests)
        await _close(pool, busy, slow)
        assert asked == FETCHES  # every Fetch asked the slow cluster, and it answered each with records
        assert delivered > 0, f"p2 got records in none of {FETCHES} Fetches; its cluster answered all {asked} with data"

    asyncio.run(main())
