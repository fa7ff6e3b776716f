"""Review of s34-staging (`ClientFrames._at_end_past_half`: the rest of the frame being taken also pauses reading at
the staging buffer's end while the reader does not wait, `_waiter is None`; docs/DESIGN.md §4.12).

No defect found in the change. Checked (scripts outside pytest, counts only):
- No stall: the new pause happens only while the reader is away from `ClientFrames` in the middle of a frame, i.e.
  in `ClientConnection._hold` waiting for the budgets (`_hold` does not yield when they have room; the frame's size
  is taken, its body read and `_frame_left` back to 0 before any other await). Its next step resumes reading:
  `receive_into` (sets `_target`, then `_resume`, never refused as "full"), `read_frame`/`until_buffered` (waits
  only for bytes not staged, resuming first) or `take`/`receive_into` of staged bytes (`_taken` once at most half is
  unread; the frame's staged rest runs out first, then the buffer is empty). rv7's Hypothesis harness (a hold of
  0-30 loop turns before each chunk, bursts of reads, every budget) run for 2 900 seeds: no stall, every frame in
  order, the new branch taken 111 times in the first 400. The real `ClientConnection` over a fake transport (random
  sizes 20 B - 2 MiB + 7, budgets down to the largest frame + 1 MiB, read sizes 1 B - unlimited, bursts, the lane
  and the generic path, 1/2/64 slots): 1 500 seeds, no stall, same as e9d31f3. Over real sockets (asyncio/uvloop,
  plain/TLS, a 10-64 MiB budget holding back an 8 MiB frame between 64 KiB ones): every frame and answer in order.
- Pauses at defaults: 64 KiB requests, 64 slots, client windows 1/5/64/1000, answer latency 1/5/50 turns, reads of
  63 712 B / 3 x 64 KiB / 256 KiB / unlimited, lane and generic path, 512 MiB and 2 MiB budgets (192 cases), and
  200 KiB / 1 MiB requests (96 cases): pause_reading counts identical to e9d31f3 in every case.
- rv7's large-frame grid (0/3/20 frames before, 200 KB / 1 MiB / 4 MiB, three budgets, four read patterns):
  bytes moved never more than e9d31f3 (down to a third), at most 3 pauses more per large frame.

Found on the way, all older than the change (e9d31f3 fails them too), in the budget's path the brief asked to check:
1. Stall: `test_a_frame_as_large_as_the_process_budget_is_read_by_a_lone_connection` (the staging buffer's growth
   stays charged while a frame is held chunk by chunk).
2. Stall / doc: `test_large_frames_half_held_past_the_process_budget_are_ended_by_the_frame_timeout` (`_hold` has
   no clock; ARCHITECTURE.md says the frame timeout ends such a wait).
3. Low: `test_a_budget_waiter_cancelled_as_bytes_come_back_is_cancelled` (ValueError from `ByteBudget.acquire`).
All three fixed in s34-fixbudget (markers removed; comments below say how).
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from fedkafka.proxy.core.client_frames import STAGING_FIRST_BYTES, ClientFrames
from fedkafka.proxy.core.connection import ClientConnection
from fedkafka.proxy.core.limits import ByteBudget, Limits
from proxy.test_client_frames_unit import _Transport
from proxy.test_limits_unit import frame_of

_TURNS = 20_000  # loop turns without progress that count as a stall (a right run needs a few hundred in all)
_FRAME_TIMEOUT_S = 0.2  # short, so that a stall's wait (4 of them) is short; a right run never waits for a clock


class _Socket(_Transport):
    """A fake transport for both sides of `ClientConnection`: records pauses (a pause while paused, or a resume while
    reading, allowed), keeps what is written."""

    def __init__(self):
        super().__init__()
        self.written = bytearray()

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data) -> None:
        self.written += data

    def writelines(self, items) -> None:
        for item in items:
            self.written += item


class _Answering:
    """A dispatcher answering each request the loop turn after it started."""

    def __init__(self):
        self.frames: list[bytes] = []

    async def start(self, frame, slot, session=None):
        self.frames.append(bytes(frame))
        fut = asyncio.get_running_loop().create_future()
        corr = struct.unpack_from(">i", frame, 4)[0]
        asyncio.get_running_loop().call_soon(fut.set_result, struct.pack(">ii", 4, corr))
        return fut

    def forget(self, slot) -> None:
        pass


async def _served(datas: list[bytes], limits: Limits, d: _Answering | None = None,
                  answers: int = 1) -> tuple[list[bytes], str, list[ClientConnection], ByteBudget]:
    """Each of `datas` (`answers` frames each, one frame unless told, all sent at once) read by a `ClientConnection`
    of its own with `limits`, their process budget `max_buffered_bytes` (as server.py), each socket reading whatever
    its staging buffer gives, once a loop turn; until every frame is answered (by `d`, else `_Answering`), or
    nothing moved for _TURNS turns and 4 frame timeouts (so a frame timeout could end a wait). Returns the frames
    dispatched, what was held then (bytes of the process budget, of each connection's, each staging buffer's
    growth charged), the connections and the budget (read once every connection ended)."""
    loop = asyncio.get_running_loop()
    budget = ByteBudget(limits.max_buffered_bytes)
    d = d or _Answering()
    clients = []
    for data in datas:
        socket = _Socket()
        frames = ClientFrames(lambda r, w: None, loop=loop, budget=budget)
        frames.transport = socket  # type: ignore[assignment]
        conn = ClientConnection(frames, asyncio.StreamWriter(socket, frames, None, loop), d, limits, budget)  # type: ignore
        clients.append((data, socket, frames, conn, loop.create_task(conn.run())))
    sent = [0] * len(datas)
    idle, last, moved_at = 0, None, loop.time()
    while not (idle >= _TURNS and loop.time() - moved_at > 4 * limits.frame_timeout_s):
        if all(len(c[1].written) >= 8 * answers or c[4].done() for c in clients):
            break
        for i, (data, socket, frames, _, _) in enumerate(clients):
            if socket.reading and sent[i] < len(data):
                view = frames.get_buffer(-1)
                n = min(len(view), len(data) - sent[i])
                view[:n] = data[sent[i]:sent[i] + n]
                del view
                frames.buffer_updated(n)
                sent[i] += n
        await asyncio.sleep(0)
        state = (tuple(sent), len(d.frames), budget.used, tuple(c[4].done() for c in clients))
        if state != last:
            idle, last, moved_at = 0, state, loop.time()
        idle += 1
    held = f"budget {budget.used} of {budget.limit}; " + ", ".join(
        f"connection {c[3].held.used} (staging growth {c[2]._charged})" for c in clients)
    for c in clients:
        c[3].stop_reading()
        c[4].cancel()
    await asyncio.gather(*(c[4] for c in clients), return_exceptions=True)
    return d.frames, held, [c[3] for c in clients], budget


def _frame(size: int, corr: int = 1) -> bytes:
    frame = bytearray(frame_of(corr, size))
    frame[16:] = random.Random(size + corr).randbytes(len(frame) - 16)
    return bytes(frame)


# FIXED (s34-fixbudget: `ClientConnection._hand_over_staged`: the chunks take the grown buffer's staged rest of the
# frame at once, past the budget for a moment, and the buffer goes with its growth's charge once emptied).
# DEFECT (stall, older than s34-staging: e9d31f3 fails it too; the budget's path). `Limits.problems()` accepts a
# process budget as large as a frame ("A frame must fit one connection's budget, and that the process'"), but a
# lone idle client's frame over HELD_WHOLE_BYTES sent at once first grows the staging buffer to 256 KiB (the idle
# gap of s33 rv7: 245 760 bytes charged by `ClientFrames._grow`, kept until the buffer is empty), then is held
# 64 KiB a chunk (`ClientConnection._read_body`): the charge and the chunks never fit, and `_hold` waits for bytes
# nobody will give back. No clock ends it (`_within` does not count time held back; ARCHITECTURE.md's "the frame
# timeout ends it" is about this wait), the connection holds the budget for good and, waiters being served first
# come first served, every other connection's request waits behind it: the whole process stops reading.
@pytest.mark.parametrize("size", [2 * STAGING_FIRST_BYTES, 1024 * 1024])
def test_a_frame_as_large_as_the_process_budget_is_read_by_a_lone_connection(size):
    """One connection, nothing else in the process; --max-frame-bytes, --max-inflight-bytes and
    --max-buffered-bytes all `size` (a configuration `Limits.problems()` accepts); the client sends one frame of
    `size` bytes at once. It is dispatched whole and answered, and every byte comes back to the budget. Fails on
    e9d31f3 and s34-staging: the connection waits in `_hold` for its last chunks for good (245 760 bytes of the
    budget are the staging buffer's growth), nothing dispatched."""
    limits = Limits(max_frame_bytes=size, max_inflight_bytes=size, max_buffered_bytes=size,
                    frame_timeout_s=_FRAME_TIMEOUT_S)
    assert limits.problems() == []
    frame = _frame(size)

    got, held, conns, budget = asyncio.run(_served([frame], limits))
    assert got == [frame[4:]], f"not dispatched; held: {held}"
    assert budget.used == 0 and conns[0].held.used == 0


# FIXED (s34-fixbudget: a wait in `ClientConnection._hold` while part of the frame is held ends after the frame
# timeout, closing that connection; a last look at the budgets first, so that waits ending in the same loop turn do
# not close every one of them).
# DEFECT (stall, older than s34-staging; doc): docs/ARCHITECTURE.md ("Limits and backpressure") says of reading a
# large frame chunk by chunk "a possible livelock when many large frames are half read and the process budget is
# spent; the frame timeout ends it". It does not: `ClientConnection._hold` waits with no clock (`_read_body` runs
# the frame timeout only around reads, from `started + waited`), so two connections whose frames each fit the
# budget but not together, each half held, wait for each other for good, and every request of every other
# connection waits behind them (first come first served). With the defaults: 33 clients sending 16 MiB requests at
# once (33 x 16 MiB > 512 MiB) stop the whole process.
def test_large_frames_half_held_past_the_process_budget_are_ended_by_the_frame_timeout():
    """Two connections, each sending one 1 MiB frame at once; --max-frame-bytes and --max-inflight-bytes 1 MiB,
    --max-buffered-bytes 1.5 MiB (accepted by `Limits.problems()`): both are read chunk by chunk, alternately, until
    the budget is spent with neither whole. The frame timeout ends one (as documented), the other is then
    dispatched whole, and every byte comes back. Fails on e9d31f3 and s34-staging: both wait in `_hold` for good,
    nothing dispatched, the budget spent."""
    size = 1024 * 1024
    limits = Limits(max_frame_bytes=size, max_inflight_bytes=size, max_buffered_bytes=3 * size // 2,
                    frame_timeout_s=_FRAME_TIMEOUT_S)
    assert limits.problems() == []
    first, second = _frame(size, 1), _frame(size, 2)

    got, held, conns, budget = asyncio.run(_served([first, second], limits))
    assert got and set(got) <= {first[4:], second[4:]}, f"nothing dispatched; held: {held}"
    assert budget.used == 0 and all(conn.held.used == 0 for conn in conns)


# FIXED (s34-fixbudget: the cancelled `acquire` removes its entry only if `_grant` did not drop it).
# DEFECT (low, older than s34-staging; seen cancelling the two connections above): `ByteBudget._grant` pops a
# cancelled waiter's entry (fedkafka/proxy/core/limits.py `_grant`: `popleft()`, then `if not fut.done()`), and
# the cancelled `acquire` then removes its entry again (`self._waiters.remove(entry)`): ValueError instead of
# CancelledError, whenever bytes are released between a waiter's cancellation and its handler (another cancelled
# reader giving back its chunks, an answer written, in the same loop turn). `ClientConnection._read_loop` logs it as
# "closing client ... after an internal error", with a traceback, for a reader that was merely stopped.
def test_a_budget_waiter_cancelled_as_bytes_come_back_is_cancelled():
    """Two readers wait for 4 of a 10-byte budget spent whole; both are cancelled, and the 10 bytes given back in
    the same loop turn. Both end cancelled, nothing taken, nobody left waiting. Fails on e9d31f3 and s34-staging:
    both raise ValueError ("not in deque")."""

    async def scenario() -> tuple[list[str], int, int]:
        budget = ByteBudget(10)
        assert budget.take_now(10)
        waiting = [asyncio.ensure_future(budget.acquire(4)) for _ in range(2)]
        await asyncio.sleep(0)
        for task in waiting:
            task.cancel()
        budget.release(10)
        await asyncio.gather(*waiting, return_exceptions=True)
        ends = ["cancelled" if t.cancelled() else type(t.exception()).__name__ for t in waiting]
        return ends, budget.used, len(budget._waiters)

    assert asyncio.run(scenario()) == (["cancelled", "cancelled"], 0, 0)
