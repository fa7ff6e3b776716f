"""s36-fixbudget: a hand-over (`ClientConnection._hand_over_staged`, `ClientFrames.hand_over`) takes past the process
budget at most what the staging growth is charged and gives back, so the budget's count never exceeds the budget
plus the connections' staging growths charged (docs/DESIGN.md §4.12). The review cases are in
tests/proxy/test_s36_rvbudget_review.py."""

from __future__ import annotations

import asyncio

import pytest
from example_counts import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkafka.proxy.core.client_frames import SMALL_FRAME_BYTES, STAGING_FIRST_BYTES, ClientFrames
from fedkafka.proxy.core.limits import ByteBudget, Limits
from proxy.test_limits_unit import GUARD_S
from proxy.test_s34_fixbudget_unit import _connection
from proxy.test_s34_rvstaging_review import _frame, _served
from proxy.test_s36_budget_unit import _staged

KiB = 1024


class _Readers:
    """Every `ClientFrames` made, and the most the process budget ever counted past its limit and those readers'
    staging growths charged (`_BoundBudget`)."""

    def __init__(self):
        self.all: list[ClientFrames] = []
        self.worst = -(1 << 62)

    def frames(self, *args, **kwargs) -> ClientFrames:
        self.all.append(ClientFrames(*args, **kwargs))
        return self.all[-1]

    def budget(self, limit: int) -> ByteBudget:
        readers = self

        class _BoundBudget(ByteBudget):
            def __setattr__(self, name, value):
                object.__setattr__(self, name, value)
                if name == "used":
                    growths = sum(reader._charged for reader in readers.all)
                    readers.worst = max(readers.worst, value - self.limit - growths)

        return _BoundBudget(limit)


@st.composite
def _many(draw) -> tuple[Limits, list[list[int]]]:
    """1-8 connections, each sending 1-4 frames at once within limits `Limits.problems()` accepts: budgets from
    just a staging growth (480 KiB) to 1.5 MiB; frames of a few bytes, of 200 000 (a 256 KiB buffer then holds
    one with the start of the next behind it: a kept buffer charged a few bytes, the review case), up to the frame
    limit, often as large as the budget."""
    buffered = draw(st.sampled_from([480 * KiB, 500 * KiB, 1024 * KiB, 1536 * KiB]))
    frame_limit = draw(st.one_of(st.just(buffered), st.integers(256 * KiB, buffered)))
    limits = Limits(max_frame_bytes=frame_limit, max_inflight_bytes=buffered, max_buffered_bytes=buffered,
                    frame_timeout_s=0.2)
    size = st.one_of(st.integers(16, 2 * SMALL_FRAME_BYTES), st.just(min(200_000, frame_limit)),
                     st.integers(16, frame_limit), st.just(frame_limit))
    return limits, draw(st.lists(st.lists(size, min_size=1, max_size=4), min_size=1, max_size=8))


@settings(max_examples=examples(40), deadline=None)
@given(case=_many())
def test_the_budget_never_counts_past_its_limit_more_than_the_staging_growths_charged(case):
    """Property: any number of connections, each sending its frames at once, the process budget short (they wait
    for each other, or a frame timeout closes one): whenever the budget's count changes it is at most the budget
    plus the staging growths then charged (Σ `ClientFrames._charged`): everything else it counts, the frames'
    chunks included, fits within it. On s36-budget a kept buffer charged a few bytes had a whole 64 KiB chunk
    handed past the budget (the review's 8 connections: 523 456 bytes past it). Every byte is back once all
    ended."""
    limits, conns = case
    readers = _Readers()
    datas = [b"".join(_frame(size, corr) for corr, size in enumerate(sizes, 1)) for sizes in conns]
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr("proxy.test_s34_rvstaging_review.ByteBudget", readers.budget)
        patched.setattr("proxy.test_s34_rvstaging_review.ClientFrames", readers.frames)
        _, held, _, budget = asyncio.run(_served(datas, limits, answers=max(len(sizes) for sizes in conns)))
    assert readers.worst <= 0, f"{readers.worst} bytes past the budget and the growths"
    assert budget.used == 0 and all(reader._charged == 0 for reader in readers.all), held



@st.composite
def _kept(draw) -> tuple[list[tuple[int, int, int]], bool]:
    """1-8 connections, each staging a frame of 140 000-200 000 bytes and the first bytes of a larger one
    (200 000-600 000) behind it in a 256 KiB buffer, so a hand-over of the first keeps a buffer charged anything
    from nothing to tens of KiB; and whether the budget is full while the second frames are read."""
    specs = []
    for _ in range(draw(st.integers(1, 8))):
        first = draw(st.integers(140_000, 200_000))  # read in chunks (over 128 KiB)
        behind = draw(st.one_of(st.integers(4, STAGING_FIRST_BYTES - 4 - first),
                                st.integers(SMALL_FRAME_BYTES, SMALL_FRAME_BYTES + 200)))
        specs.append((first, behind, draw(st.integers(200_000, 600_000))))
    return specs, draw(st.booleans())


@settings(max_examples=examples(60), deadline=None)
@given(case=_kept())
def test_kept_buffers_hand_over_no_more_past_the_budget_than_they_are_charged(case):
    """Property, the review's case generalised: connections one after another (the 1 MiB budget sparing each its
    growth) stage a frame and the start of the next; the budget full, the first is handed over and the bytes behind
    it kept in a buffer their size. Then, the budget full again (or not), each reads its second frame. Whenever
    the count changes it is at most the budget plus the staging growths charged; every frame read whole, and once
    the reads are cancelled or answered every byte is back. On s36-budget a kept buffer charged 104 bytes had a
    whole 64 KiB chunk handed past the budget."""
    specs, full = case
    limits = Limits(max_frame_bytes=1024 * KiB, max_inflight_bytes=1024 * KiB, max_buffered_bytes=1024 * KiB,
                    frame_timeout_s=1.0)
    readers = _Readers()

    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        budget = readers.budget(limits.max_buffered_bytes)
        conns, read = [], []
        for corr, (first, behind, large) in enumerate(specs):
            conn = _connection(limits, budget)
            readers.all.append(conn.reader)
            _staged(conn, _frame(first, corr) + _frame(large, corr)[:behind])
            others = budget.limit - budget.used
            budget.charge(others)
            assert conn.reader.take_size() == first
            async with asyncio.timeout(GUARD_S):
                read.append(bytes(await conn._read_body(first, loop.time())) == _frame(first, corr)[4:])
            conn._unhold(first)
            budget.release(others)
            conns.append(conn)
        others = budget.limit - budget.used if full else 0
        budget.charge(others)
        reads = []
        for conn, (_, _, large) in zip(conns, specs, strict=True):
            assert conn.reader.take_size() == large
            reads.append(asyncio.ensure_future(conn._read_body(large, loop.time())))
        for _ in range(10):
            await asyncio.sleep(0)  # each took its staged bytes and waits for the socket's
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        budget.release(others)
        for conn in conns:
            conn.reader.drop_staging()
        assert budget.used == 0
        return read

    assert all(asyncio.run(scenario()))
    assert readers.worst <= 0, f"{readers.worst} bytes past the budget and the growths"
