"""s34-fixbudget: the process byte budget's waits (`ClientConnection._hold`) and the staging growth's hand-over
(`ClientConnection._hand_over_staged`); docs/DESIGN.md §4.12. The reviewer's cases are in
tests/proxy/test_s34_rvstaging_review.py; these pin what the fix added."""

from __future__ import annotations

import asyncio

from fedkafka.proxy.core.client_frames import SMALL_FRAME_BYTES, STAGING_FIRST_BYTES, ClientFrames
from fedkafka.proxy.core.connection import READ_CHUNK_BYTES, ClientConnection, FrameTimeout
from fedkafka.proxy.core.limits import ByteBudget, Limits
from proxy.test_s34_rvstaging_review import _Answering, _frame, _served, _Socket

_CHUNK = READ_CHUNK_BYTES


def _connection(limits: Limits, budget: ByteBudget) -> ClientConnection:
    loop = asyncio.get_running_loop()
    frames = ClientFrames(lambda r, w: None, loop=loop, budget=budget)
    socket = _Socket()
    frames.transport = socket  # type: ignore[assignment]
    return ClientConnection(frames, asyncio.StreamWriter(socket, frames, None, loop), _Answering(),  # type: ignore
                            limits, budget)


HALF_HELD_LIMITS = Limits(max_frame_bytes=1024 * 1024, max_inflight_bytes=1024 * 1024,
                          max_buffered_bytes=1024 * 1024, frame_timeout_s=0.05)


async def reading(conn: ClientConnection) -> str:
    """A connection holding two chunks of its frame waits for a third: "held", or "closed" at the frame timeout
    (its chunks given back, as `_read_body` does)."""
    try:
        await conn._hold(_CHUNK, 2 * _CHUNK, "frame")
    except FrameTimeout:
        conn._unhold(2 * _CHUNK)
        return "closed"
    return "held"


def test_waits_holding_part_of_their_frames_that_end_in_the_same_loop_turn_close_one_connection_only():
    """Two connections each hold two chunks of a frame, the process budget (four chunks) spent by them, and both
    wait for a third chunk, their waits started in the same loop turn so that both end in the same turn. The first
    to end closes (FrameTimeout) and gives its chunks back, as `_read_body` does; the other, still in line (s35:
    `ByteBudget.acquire`'s timeout keeps its place until its task runs; s34 took a last look), then gets its
    chunk. Without either both closed, nothing of either frame read."""
    limits = HALF_HELD_LIMITS

    async def scenario() -> tuple[list[str], int]:
        budget = ByteBudget(4 * _CHUNK)
        conns = [_connection(limits, budget) for _ in range(2)]
        for conn in conns:
            assert await conn._hold(2 * _CHUNK) == 0.0
        ends = await asyncio.gather(*(reading(conn) for conn in conns))
        return sorted(ends), budget.used

    assert asyncio.run(scenario()) == (["closed", "held"], 3 * _CHUNK)


class _PeakBudget(ByteBudget):
    """A process budget that records the most it ever counted."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self.peak = 0

    def __setattr__(self, name, value):
        if name == "used":
            object.__setattr__(self, "peak", max(getattr(self, "peak", 0), value))
        object.__setattr__(self, name, value)


def test_a_frame_as_large_as_the_budget_goes_past_it_by_at_most_its_staging_growth_then_none(monkeypatch):
    """One connection, --max-buffered-bytes = --max-frame-bytes = 1 MiB, a 1 MiB frame sent at once (its staging
    buffer grew to 256 KiB first): the frame is dispatched whole; the budget went past its limit (the grown
    buffer's staged bytes handed to the frame's chunks) by at most the buffer's growth charged (240 KiB: since
    s36-fixbudget, a buffer and a chunk before), and every byte came back. On the old code it waited for good,
    nothing dispatched."""
    size = 1024 * 1024
    limits = Limits(max_frame_bytes=size, max_inflight_bytes=size, max_buffered_bytes=size, frame_timeout_s=0.2)
    frame = _frame(size, 3)
    budgets: list[_PeakBudget] = []

    def counted(limit: int) -> _PeakBudget:
        budgets.append(_PeakBudget(limit))
        return budgets[-1]

    monkeypatch.setattr("proxy.test_s34_rvstaging_review.ByteBudget", counted)
    got, held, _, budget = asyncio.run(_served([frame], limits))
    assert got == [frame[4:]], held
    assert budget.used == 0
    assert size <= budgets[0].peak <= size + STAGING_FIRST_BYTES - SMALL_FRAME_BYTES, budgets[0].peak
