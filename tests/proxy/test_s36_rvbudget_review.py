"""Review of s36-budget (the staging growth handed over to a large frame's chunks also with frames staged behind it:
`ClientFrames._keep_behind`, `ClientConnection._hold_waiting`; docs/DESIGN.md §4.12).

Findings (strict xfails below until s36-fixbudget, which fixed both: tests/proxy/test_s36_fixbudget_unit.py; it
renamed `_keep_behind` `_keep_unread` and replaced `holds_growth` by `ClientFrames.hand_over`):
1. Medium: a kept buffer (`_keep_behind`: the frames behind, its size less 16 KiB charged) may be charged a few
   bytes only, yet `holds_growth()` (any charge) hands the next large frame's chunk to it past the budget: a whole
   chunk (64 KiB) counted past the budget for the few bytes given back. DESIGN's bounds ("at most 16 KiB higher
   than before the hand-over", "the buffer ... is a whole number of chunks", "several connections' add up, bounded
   by the growths") no longer hold: N connections that each kept such a buffer (at different times: each growth
   charged when the budget had room) put the count N x ~64 KiB past the budget with N x 104 bytes of growth.
2. Low (the large-frame path of issue #20): every chunk of a large frame now goes through `_hold_waiting` (two
   `ByteBudget.acquire` calls, two `loop.time()`) even when both budgets have room; main's `_hold` took them with two
   `take_now` and no wait. ~1.7x the per-chunk hold cost in a microbenchmark on this (loaded) machine.

Checked and sound: `_keep_behind`'s copy (a size prefix split at the boundary, a zero-length frame, frames exactly
filling the buffer, several frames behind); every exit gives the charge back (served, closed mid-frame, cancelled,
timeout: `_client_done`, `connection_lost`, `drop_staging`); reading paused by a full kept buffer is resumed by every
wait for bytes not staged (`until_buffered`, `receive_into`) or by `_taken`; the small-frame fast path
(`take_whole`, `_hold`'s `take_now`s) is unchanged; the s34/s35 review cases pass."""

from __future__ import annotations

import asyncio

from fedkafka.proxy.core.client_frames import SMALL_FRAME_BYTES, STAGING_FIRST_BYTES
from fedkafka.proxy.core.limits import ByteBudget, Limits
from proxy.test_limits_unit import GUARD_S
from proxy.test_s34_fixbudget_unit import _connection
from proxy.test_s34_rvstaging_review import _frame
from proxy.test_s36_budget_unit import _staged

KiB = 1024


def test_kept_buffers_charged_a_few_bytes_each_take_a_whole_chunk_past_the_budget():
    """Eight connections, one after another while the 1 MiB process budget has room for a growth, each stage a
    200 000-byte frame and the start of a 300 000-byte one (its size and 16 484 bytes: 104 bytes more than a new
    buffer) in a staging buffer grown to 256 KiB; the budget full, the first frame is handed over and the bytes
    behind it kept in a buffer of their size, charged 104 bytes (the first frame then answered). The budget full
    again (other connections' frames), each reads its second frame: its first chunk is handed over, 64 KiB past the
    budget, for the 104 bytes its kept buffer gives back. DESIGN §4.12: each hand-over leaves the count at most 16
    KiB higher; here 8 x 65 432 bytes past the budget (half of it), with 832 bytes of growth charged."""
    limits = Limits(max_frame_bytes=1024 * KiB, max_inflight_bytes=1024 * KiB, max_buffered_bytes=1024 * KiB,
                    frame_timeout_s=1.0)
    first, large = _frame(200_000, 1), _frame(300_000, 2)
    behind = 4 + SMALL_FRAME_BYTES + 100
    n = 8

    async def scenario() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        budget = ByteBudget(limits.max_buffered_bytes)
        conns = []
        for _ in range(n):
            conn = _connection(limits, budget)
            _staged(conn, first + large[:behind])
            assert conn.reader._charged == STAGING_FIRST_BYTES - SMALL_FRAME_BYTES
            others = budget.limit - budget.used
            budget.charge(others)  # the budget full: the first frame is handed over
            assert conn.reader.take_size() == 200_000
            async with asyncio.timeout(GUARD_S):  # main: the first chunk waits for the budget for good
                assert bytes(await conn._read_body(200_000, loop.time())) == first[4:]
            conn._unhold(200_000)  # answered
            budget.release(others)
            conns.append(conn)
        kept = [conn.reader._charged for conn in conns]
        others = budget.limit - budget.used
        budget.charge(others)  # the budget full again
        reads = []
        for conn in conns:
            assert conn.reader.take_size() == 300_000
            reads.append(asyncio.ensure_future(conn._read_body(300_000, loop.time())))
        for _ in range(10):
            await asyncio.sleep(0)  # each took its staged bytes and waits for the socket's
        past = budget.used - budget.limit
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        budget.release(others)
        assert budget.used == 0
        return kept, past

    kept, past = asyncio.run(scenario())
    assert kept == [behind - SMALL_FRAME_BYTES] * n
    assert past <= n * SMALL_FRAME_BYTES, f"{past} bytes past the budget"


def test_a_large_frames_chunks_are_held_without_the_waiting_path_when_both_budgets_have_room(monkeypatch):
    """A 600 000-byte frame staged whole, both budgets (512 MiB) with room for it: its ten chunks are held by
    `take_now` (main's `_hold`), no `ByteBudget.acquire` (a coroutine each, the waiting path's clock read twice).
    On the branch each chunk awaits two `acquire`s: 20 calls."""
    limits = Limits(max_buffered_bytes=512 * 1024 * KiB)
    frame = _frame(600_000, 1)
    acquired: list[int] = []
    acquire = ByteBudget.acquire

    async def counted(self: ByteBudget, n: int, timeout: float | None = None) -> bool:
        acquired.append(n)
        return await acquire(self, n, timeout)

    async def scenario() -> bool:
        conn = _connection(limits, ByteBudget(limits.max_buffered_bytes))
        _staged(conn, frame)
        assert conn.reader.take_size() == 600_000
        body = await conn._read_body(600_000, asyncio.get_running_loop().time())
        conn._unhold(600_000)
        conn.reader.drop_staging()
        return bytes(body) == frame[4:]

    monkeypatch.setattr(ByteBudget, "acquire", counted)
    assert asyncio.run(scenario())
    assert acquired == []
