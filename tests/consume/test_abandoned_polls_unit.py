"""Abandoned polls (docs/DESIGN.md §3.1): a Fetch over two clusters finishes at the first answer with data and leaves
the quiet cluster's long poll running. A client connection's next Fetch to that broker waits for that poll to end
before its own goes out (with what is left of its max_wait), holding no dedicated connection meanwhile, and is never
sent if its Fetch finishes early first. So a consumer fetching one request at a time holds at most one poll per
broker, never fills its `--max-dedicated-per-connection` semaphore nor the broker's pool, and an abandoned poll's
answer is never used for a later Fetch. Real `Dispatcher._send`/`_collect`, `UpstreamPool` and connections; the
brokers are fakes on loopback that answer when the test says so."""

from __future__ import annotations

import asyncio
import struct

import crc32c
from proxy.test_limits_unit import _dispatcher_to, _Physical

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import UNANSWERED, Broker, Call

GUARD_S = 20.0  # only against a hang
SLOT = 1
QUIET_WAIT_MS = 25_000  # the quiet broker answers a poll when the test says (or, without, at its max_wait)


def _batch(base_offset: int) -> bytes:
    body = struct.pack(">hiqqqhii", 0, 0, 0, 0, -1, -1, -1, 1) + b"r" * 8
    return struct.pack(">qiibI", base_offset, 9 + len(body), 0, 2, crc32c.crc32c(body)) + body


class _Broker:
    """Reads Fetch requests and answers each when `answer` is called for it (in order, as a broker does on one
    connection); `out` counts requests received and not yet answered, `most_out` the most there ever were."""

    def __init__(self, auto: bytes | None = None):
        self.auto = auto  # answer every request at once with these records
        self.requests: list[tuple[asyncio.Future, int]] = []  # (its answer's records, its max_wait_ms)
        self.out = self.most_out = 0
        self.serving: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def answer(self, n: int, records: bytes) -> None:
        assert not self.requests[n][0].done(), "answered at its max_wait already"
        self.requests[n][0].set_result(records)

    async def _serve(self, reader, writer) -> None:
        self.serving.add(asyncio.current_task())  # type: ignore[arg-type]
        while True:
            try:
                frame = await reader.readexactly(struct.unpack(">i", await reader.readexactly(4))[0])
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            header, request = codec.decode_request(frame)
            records = asyncio.get_running_loop().create_future()
            self.requests.append((records, request.max_wait.total_seconds() * 1000))
            self.out += 1
            self.most_out = max(self.most_out, self.out)
            if self.auto is not None:
                records.set_result(self.auto)
            try:  # a broker serves one request of a connection at a time
                data = await asyncio.wait_for(records, request.max_wait.total_seconds())
            except TimeoutError:
                data = b""
            self.out -= 1
            asked = request.topics[0]  # answered in its names (a fetch handler's translation looks for them)
            writer.write(b"".join(rec.fetch_response_parts(12, header.correlation_id, 0, 0, [
                (asked.topic, [rec.FetchPartitionData(asked.partitions[0].partition, 0, 10, 10, 0, None, -1, data)])])))


class _CountingSemaphore(asyncio.Semaphore):
    waited = 0

    async def acquire(self):
        if self.locked():
            _CountingSemaphore.waited += 1
        return await super().acquire()


def _calls(quiet_wait_ms: int = QUIET_WAIT_MS) -> list[Call]:
    def request(wait_ms: int) -> fetch.UpstreamFetch:
        return fetch.UpstreamFetch(12, wait_ms, 1, 1 << 20, 0,
                                   (rec.FetchTopicRequest("t", (rec.FetchPartitionRequest(0, 0, 1 << 20),)),))
    return [Call(Broker("quiet", 1), request(quiet_wait_ms), dedicated=True, timeout_s=quiet_wait_ms / 1000 + 20,
                 client_timeout=True),
            Call(Broker("busy", 1), request(QUIET_WAIT_MS), dedicated=True, timeout_s=QUIET_WAIT_MS / 1000 + 20,
                 client_timeout=True)]


async def _setup(busy: _Broker, quiet: _Broker, quiet_cluster: str = "quiet"):
    busy_port, quiet_port = await busy.start(), await quiet.start()
    pool = UpstreamPool()
    d = _dispatcher_to(0, pool, per_connection=16)

    class Physical(_Physical):
        def address(self, cluster, node):
            return "127.0.0.1", (quiet_port if cluster == quiet_cluster else busy_port)

    d.physical = Physical()
    d._dedicated_by_slot[SLOT] = _CountingSemaphore(16)
    _CountingSemaphore.waited = 0
    return d, pool, quiet_port


async def _fetch(d, calls):
    sent = await d._send(calls, SLOT)
    return await asyncio.wait_for(d._collect(calls, sent, return_early=fetch._answers_at_once), GUARD_S)


async def _until(condition) -> None:
    async with asyncio.timeout(GUARD_S):
        while not condition():
            await asyncio.sleep(0.001)


async def _close(pool, *brokers) -> None:
    for b in brokers:
        for records, _ in b.requests:
            if not records.done():
                records.set_result(b"")
    await _until(lambda: not any(pool.usage()[a]["dedicated_in_use"] for a in pool.usage()))
    pool.close()
    for b in brokers:
        b.server.close()
        await asyncio.wait(b.serving, timeout=GUARD_S)  # each sees its connection closed


def test_sequential_fetches_hold_one_poll_per_broker_and_never_wait_for_a_dedicated_connection():
    """The review's case: the busy cluster always has data, the quiet one none. On the old code each Fetch left one
    more poll running, up to 16 (then every 16th Fetch waited a whole max_wait for the semaphore)."""

    async def main():
        busy, quiet = _Broker(auto=_batch(0)), _Broker()
        d, pool, quiet_port = await _setup(busy, quiet)
        in_use: list[int] = []
        for _ in range(40):
            results = await _fetch(d, _calls())
            assert results[0] is UNANSWERED and fetch._answers_at_once(results[1])
            in_use.append(pool.dedicated_in_use("127.0.0.1", quiet_port))
            assert quiet.most_out <= 1 and len(quiet.requests) <= 1  # the first poll, still out; no other sent
            assert in_use[-1] == 1
            assert _CountingSemaphore.waited == 0
        await _until(lambda: len(quiet.requests) == 1)  # (it may have reached the broker after Fetch 1 answered)
        await _until(lambda: not d._poll_tasks)  # the 39 calls queued behind it left nothing behind
        assert not d._polls_by_slot[SLOT][("127.0.0.1", quiet_port)].queue
        quiet.answer(0, b"")  # it ends: the next Fetch polls the quiet broker again, on the same connection
        await _until(lambda: pool.dedicated_in_use("127.0.0.1", quiet_port) == 0)
        await _fetch(d, _calls())
        await _until(lambda: len(quiet.requests) == 2)
        assert quiet.most_out == 1 and pool.usage()[f"127.0.0.1:{quiet_port}"]["dedicated_in_use"] == 1
        await _close(pool, busy, quiet)

    asyncio.run(main())


def test_an_abandoned_poll_s_answer_is_never_used_the_next_fetch_asks_again_after_it():
    """Fetch 1 finishes early; Fetch 2 (no data on the busy cluster) waits for the quiet broker. Its call goes out
    only once the abandoned poll ended (whose records, 111, are dropped), with what is left of its max_wait, and
    Fetch 2 answers with its own call's records (222)."""

    async def main():
        busy, quiet = _Broker(), _Broker()
        d, pool, _ = await _setup(busy, quiet)
        first = asyncio.ensure_future(_fetch(d, _calls()))
        await _until(lambda: len(busy.requests) == 1 and len(quiet.requests) == 1)
        busy.answer(0, _batch(5))
        results = await first
        assert results[0] is UNANSWERED and fetch._answers_at_once(results[1])
        second = asyncio.ensure_future(_fetch(d, _calls()))
        await _until(lambda: len(busy.requests) == 2)
        busy.answer(1, b"")  # no data there: Fetch 2 waits for the quiet cluster
        await asyncio.sleep(0.05)
        assert len(quiet.requests) == 1 and not second.done()  # queued behind the abandoned poll, not sent
        quiet.answer(0, _batch(111))
        await _until(lambda: len(quiet.requests) == 2)
        assert quiet.requests[1][1] <= QUIET_WAIT_MS  # the rest of its max_wait
        quiet.answer(1, _batch(222))
        results = await second
        offsets = [struct.unpack_from(">q", bytes(p.records))[0] for t in results[0].responses for p in t.partitions]
        assert offsets == [222]
        assert _CountingSemaphore.waited == 0
        await _close(pool, busy, quiet)

    asyncio.run(main())


def test_a_queued_call_whose_fetch_finished_early_is_never_sent():
    async def main():
        busy, quiet = _Broker(auto=_batch(0)), _Broker()
        d, pool, quiet_port = await _setup(busy, quiet)
        for _ in range(3):
            assert (await _fetch(d, _calls()))[0] is UNANSWERED
        await _until(lambda: not d._poll_tasks)  # the queued calls found their Fetch answered: gone
        assert not d._polls_by_slot[SLOT][("127.0.0.1", quiet_port)].queue
        await _until(lambda: len(quiet.requests) == 1)
        quiet.answer(0, _batch(111))  # the abandoned poll ends with records: dropped
        await _until(lambda: pool.dedicated_in_use("127.0.0.1", quiet_port) == 0)
        await _until(lambda: not d._poll_tasks)
        assert len(quiet.requests) == 1  # nothing was sent after it
        await _close(pool, busy, quiet)

    asyncio.run(main())


def test_a_queued_call_sent_then_given_up_by_its_client_closes_its_connection_and_frees_the_turn():
    """Fetch 2 (the quiet broker only) goes out after the abandoned poll; its client goes away (the Fetch is
    cancelled): its upstream call is cancelled and its dedicated connection closed (a request is pending there),
    not lent on, and the connection's next Fetch to the broker goes out at once, answered with its own records."""

    async def main():
        busy, quiet = _Broker(auto=_batch(0)), _Broker()
        d, pool, quiet_port = await _setup(busy, quiet)
        assert (await _fetch(d, _calls()))[0] is UNANSWERED
        await _until(lambda: len(quiet.requests) == 1)
        second = asyncio.ensure_future(_fetch(d, _calls()[:1]))
        await asyncio.sleep(0.05)
        assert len(quiet.requests) == 1 and not second.done()
        quiet.answer(0, _batch(111))
        await _until(lambda: len(quiet.requests) == 2)
        second.cancel()
        await _until(lambda: pool.dedicated_in_use("127.0.0.1", quiet_port) == 0)
        assert pool.usage()[f"127.0.0.1:{quiet_port}"]["dedicated_idle"] == 0  # closed, not kept
        third = asyncio.ensure_future(_fetch(d, _calls()[:1]))
        await _until(lambda: len(quiet.requests) == 3)
        quiet.answer(2, _batch(333))
        (result,) = await third
        assert [struct.unpack_from(">q", bytes(p.records))[0] for t in result.responses for p in t.partitions] == [333]
        assert _CountingSemaphore.waited == 0
        await _close(pool, busy, quiet)

    asyncio.run(main())


def test_a_zero_wait_call_is_sent_at_once_beside_an_abandoned_poll_and_takes_no_turn():
    """Review (h-late): a call whose max_wait is 0 (fetch.handle's, when a gap skip already answered a partition;
    or a client's max_wait 0) was queued behind the connection's abandoned poll and its answer held for that
    poll's whole wait (up to 30 s; here past the test's guard). It goes out at once, reaching the quiet broker
    while the abandoned poll is still out there, and leaves the turn to the poll: a later long poll still waits."""

    async def main():
        busy, quiet = _Broker(auto=_batch(0)), _Broker()
        d, pool, _ = await _setup(busy, quiet)
        assert (await _fetch(d, _calls()))[0] is UNANSWERED  # the quiet poll (25 s) abandoned
        await _until(lambda: len(quiet.requests) == 1)
        zero_wait = _calls()[:1]
        zero_wait[0] = Call(Broker("quiet", 1), zero_wait[0].request.waiting_at_most(0), dedicated=True,
                            timeout_s=20, client_timeout=True)
        (result,) = await _fetch(d, zero_wait)
        assert result is not UNANSWERED and [w for _, w in quiet.requests] == [QUIET_WAIT_MS, 0]
        assert quiet.most_out == 2  # it reached the broker while the abandoned poll was out (main: after it ended)
        assert not quiet.requests[0][0].done()  # (the abandoned poll is still out: nothing answered it)
        long_poll = asyncio.ensure_future(_fetch(d, _calls()[:1]))
        await _until(lambda: bool(d._poll_tasks))  # queued behind the abandoned poll, not sent
        assert len(quiet.requests) == 2 and not long_poll.done()
        quiet.answer(0, b"")
        await _until(lambda: len(quiet.requests) == 3)  # the abandoned poll ended: the queued one goes out
        assert quiet.most_out == 2
        quiet.answer(2, _batch(333))
        (result,) = await long_poll
        assert [struct.unpack_from(">q", bytes(p.records))[0] for t in result.responses for p in t.partitions] == [333]
        await _close(pool, busy, quiet)

    asyncio.run(main())
