"""One task pair per client connection: a reader that dispatches in order, a writer that answers in order (an answer
that heads the queue when it completes is written by its done-callback, without waking the writer task; see
"writing" below and docs/DESIGN.md §5.4).

Backpressure (docs/ARCHITECTURE.md): the reader takes a request slot before it reads a frame, and takes the
frame's bytes from the connection's budget and from the process' budget before they are received (a frame over
128 KiB 64 KiB at a time, as it arrives); while either is short it simply stops reading
(`client_frames.ClientFrames` pauses the socket once its staging buffer is full), so TCP pushes back on the
client. Bytes are given back when the answer was written; an answer's own bytes count from the moment it exists
until it was written, and with them the whole of each broker answer its record sets view (docs/DESIGN.md §4.12).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import struct
from collections.abc import Iterator

from fedkafka.protocol import codec, records
from fedkafka.protocol.framing import FrameError
from fedkafka.proxy.core.client_frames import SMALL_FRAME_BYTES, ClientFrames, IncompleteFrame
from fedkafka.proxy.core.dispatch import Dispatcher, ProtocolViolation
from fedkafka.proxy.core.limits import ByteBudget, Limits
from fedkafka.proxy.plan import CloseConnection
from fedkafka.security.proxy_header import is_signature_start
from fedkafka.security.session import Session

log = logging.getLogger(__name__)

_slots = itertools.count()
HELD_WHOLE_BYTES = 128 * 1024  # a frame up to this size is taken from the budgets whole, once its first bytes came
READ_CHUNK_BYTES = 64 * 1024  # a larger frame's bytes are taken from the budgets this much at a time
# a frame over SMALL_FRAME_BYTES holds nothing until this many of its bytes arrived: what a new staging buffer holds
# after its size (so a frame the socket had whole is still read into a buffer of its own past them, not staged)
ARRIVED_BEFORE_HELD = SMALL_FRAME_BYTES - 4


_SIZE = struct.Struct(">i")


class FrameTimeout(FrameError):
    """A frame (or an answer to the client) did not pass within the frame timeout: a slow or stalled peer."""


class IdleTimeout(Exception):
    """No request for the idle timeout while nothing was in flight."""


class ClientConnection:
    def __init__(self, reader: ClientFrames, writer: asyncio.StreamWriter, dispatcher: Dispatcher,
                 limits: Limits | None = None, budget: ByteBudget | None = None, session: Session | None = None):
        self.reader, self.writer, self.dispatcher = reader, writer, dispatcher
        self.session = session or Session()
        self.limits = limits or Limits()
        self.budget = budget or ByteBudget(self.limits.max_buffered_bytes)  # shared by the whole process
        self.held = ByteBudget(self.limits.max_inflight_bytes)  # this connection's share
        self.slot = next(_slots)
        # the client's (through a trusted relay: its PROXY header's), else the socket's
        self.peer = self.session.peer or writer.get_extra_info("peername")
        # request slots (a semaphore of the reader's own: asyncio.Semaphore's acquire and release were ~60
        # bytecodes a request); the reader waits on _slot_freed when none is left
        self._free_slots = self.limits.max_inflight_requests
        self._slot_freed: asyncio.Future | None = None
        self._in_flight = 0
        self._awaiting_request = False  # the reader waits for a next request's first byte (`_first_byte`)
        self._loop = asyncio.get_running_loop()
        # the requests read and not answered yet, in order (bounded by the request slots); an answer at its head is
        # written by its done-callback (`_InFlight._answered`) unless the writer task writes or TLS slices it
        self._responses: collections.deque[_InFlight] = collections.deque()
        self._wake: asyncio.Future | None = None  # the writer task's, while it waits with nothing to write
        self._writing = False  # the writer task writes a batch or waits for its drain: callbacks write nothing
        self._stalled: tuple[list[_InFlight], list[bytes | codec.Chunks], bool] | None = None  # for the task
        self._broken = False  # writing failed: the answers still due are dropped
        self._reader_done = False  # run(): the reader ended, the writer ends once every answer is out
        # a dispatcher with a Produce lane takes its requests without a coroutine (`Dispatcher.start_now`: the
        # lane's own start, read once here; a dispatcher's lane is made with it)
        self._start_now = getattr(dispatcher, "start_now", None)
        self._last_active = self._loop.time()
        self._read_task: asyncio.Task | None = None
        # set after a failed authentication (answer it, then close) or once a request's answer is a CloseConnection:
        # nothing more is read
        self._closing = False
        self._dispatching = False  # the reader is in dispatcher.start: a close lets it finish (_close_after)
        # drain() returns only once the transport holds nothing: an answer's bytes are given back when they are
        # written, and with the default marks (64/16 KiB) a transport still held views of broker frames then,
        # uncharged, for as long as the client did not read (uvloop keeps parts by reference)
        self._transport = writer.transport  # written to directly (StreamWriter.write only passes the bytes on)
        self._transport.set_write_buffer_limits(high=0)
        self._tls = reader.over_tls  # answers written in slices (_send_in_slices)

    async def run(self) -> None:
        """Read and answer until the client or the proxy closes; then the dispatcher forgets the connection and it
        closes, however run() ends (cancelled with the loop, or a bug in the writer task: never skipped)."""
        write_task = asyncio.create_task(self._write_loop())
        self._read_task = asyncio.create_task(self._read_loop())
        try:
            with contextlib.suppress(asyncio.CancelledError):  # stop_reading(): still answer what was read
                await self._read_task
            self.reader.drop_staging()  # nothing reads it any more; answers may be due for long (a long poll)
            self._reader_done = True
            self._wake_writer()
            await write_task
        finally:
            self.dispatcher.forget(self.slot)
            self.session.close()  # what its handlers keep for it (a dropped Fetch answer's records) given back
            self.writer.close()

    @property
    def in_flight(self) -> int:
        """Requests read and not yet answered."""
        return self._in_flight

    def stop_reading(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()

    # -- reading -------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        """Take a request slot, then a frame: staged whole with room in both budgets (`ClientFrames.take_whole`:
        one copy, no clock, no wait; pipelined requests usually are), else by the waiting path (`_read_frame`);
        offer it to the dispatcher's Produce lane first, synchronously (`Dispatcher.start_now`), else dispatch it
        (`_dispatch`). The usual Produce thus costs no coroutine and no Python call of the connection's own but
        the queueing of its answer (`_queued`)."""
        start_now = self._start_now  # a dispatcher with a Produce lane takes its requests without a coroutine
        frame: bytes | memoryview | None
        try:
            while not self._closing:
                if self._free_slots > 0:
                    self._free_slots -= 1
                else:
                    await self._take_slot()
                try:
                    limits = self.limits  # a larger frame before SASL authentication: the waiting path reports it
                    frame = self.reader.take_whole(limits.max_frame_bytes if self.session.authenticated else
                                                   min(limits.max_frame_bytes, limits.max_pre_auth_frame_bytes),
                                                   self.held, self.budget)
                    if frame is None:
                        frame = await self._read_frame()
                        if frame is None:  # the client closed cleanly
                            self._give_slot()
                            return
                    if start_now is not None:
                        try:
                            pending = start_now(frame, self.slot, self.session)
                        except BaseException:
                            self._unhold(len(frame))
                            raise
                        if pending is not None:  # the lane took it
                            self._queued(pending, len(frame))
                            continue
                    await self._dispatch(frame)
                except BaseException:
                    self._give_slot()
                    raise
        except IdleTimeout:
            log.info("closing client %s: idle for %.0f s", self.peer, self.limits.idle_timeout_s)
        except (FrameError, ProtocolViolation, codec.DecodeError) as e:
            log.warning("closing client %s: %s", self.peer, e)
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("closing client %s after an internal error", self.peer)

    async def _take_slot(self) -> None:
        while self._free_slots <= 0:
            self._slot_freed = self._loop.create_future()
            try:
                await self._slot_freed
            finally:
                self._slot_freed = None
        self._free_slots -= 1

    def _give_slot(self) -> None:
        self._free_slots += 1
        freed = self._slot_freed
        if freed is not None and not freed.done():
            freed.set_result(None)

    async def _dispatch(self, frame: bytes | memoryview) -> None:
        """Dispatch a frame the lane left (or with no lane) by the generic path, and queue its answer."""
        size = len(frame)
        self._dispatching = True
        try:
            if self._start_now is None:
                pending = await self.dispatcher.start(frame, self.slot, self.session)
            else:  # the lane left it already
                pending = await self.dispatcher.start(frame, self.slot, self.session, lane=False)
        except BaseException:
            self._unhold(size)
            raise
        finally:
            self._dispatching = False
        self._queued(pending, size)

    async def _read_frame(self) -> bytes | memoryview | None:
        """The next frame by the waiting path: its first byte, size and body, held in the budgets (None: the
        client closed cleanly)."""
        if not await self._first_byte():
            return None
        started = self._loop.time()
        await self._within(self.reader.until_buffered(4), started, "size", 4)
        size = self.reader.take_size()
        if is_signature_start(size):  # a relay this proxy does not trust, or a trusted one's second header
            raise FrameError("a PROXY protocol header, from an address not in --proxy-header-from (or after the "
                             "one read); the connection is not taken as relayed")
        if size < 0 or size > self.limits.max_frame_bytes:
            raise FrameError(f"frame size {size} outside 0..{self.limits.max_frame_bytes} (--max-frame-bytes)")
        # before SASL authentication (Kafka's sasl.server.max.receive.size): closed, one line
        if size > self.limits.max_pre_auth_frame_bytes and not self.session.authenticated:
            raise FrameError(f"frame size {size} larger than {self.limits.max_pre_auth_frame_bytes} before "
                             f"SASL authentication (--max-pre-auth-frame-bytes)")
        return await self._read_body(size, started)

    def _queued(self, pending: asyncio.Future, size: int) -> None:
        """A dispatched request's answer, queued for the writer in request order."""
        self._in_flight += 1
        item = _InFlight(self, pending, size)
        self._responses.append(item)
        if not pending.done():
            pending.add_done_callback(item._answered)
        else:  # answered at once (no upstream call): the writer task writes it
            item.charge()
            self._wake_writer()
            # known at once: nothing after it is read, the connection closes once the answers before it are written
            if not pending.cancelled() and pending.exception() is None and type(pending.result()) is CloseConnection:
                self._closing = True
        if self.session.failed is not None:  # one line, no secret: the reason names the mechanism and user only
            log.warning("authentication failed for client %s on %s listener: %s; closing", self.peer,
                        self.session.protocol, self.session.failed)
            self._closing = True

    async def _read_body(self, size: int, started: float) -> bytes | memoryview:
        """The frame's body, its bytes held in the budgets (nothing held if this raises).

        A frame over SMALL_FRAME_BYTES holds nothing until ARRIVED_BEFORE_HELD of its bytes arrived (they wait in
        the staging buffer, which every connection has uncharged): a size prefix alone, or a few bytes, hold
        nothing (they held up to 128 KiB: eight such prefixes took a 1 MiB budget, docs/DESIGN.md §4.12). A frame up to
        HELD_WHOLE_BYTES is then held whole and read (a large one into a buffer of its own size, which the socket
        reads into). A larger one is held a chunk at a time, each chunk's buffer held before it is allocated and
        received into, then joined: a client announcing 16 MiB and sending one byte a second holds one chunk,
        not 16 MiB."""
        what = f"frame of {size} bytes"
        if size > SMALL_FRAME_BYTES:
            await self._within(self.reader.until_buffered(ARRIVED_BEFORE_HELD), started, what, ARRIVED_BEFORE_HELD)
        if size <= HELD_WHOLE_BYTES:
            waited = await self._hold(size)
            try:
                return await self._within(self.reader.read_frame(size), started + waited, what, size)
            except BaseException:
                self._unhold(size)
                raise
        chunks: list[bytearray] = []
        got = 0
        waited = 0.0
        try:
            while got < size:
                chunk_bytes = min(size - got, READ_CHUNK_BYTES)
                want, handed_over = self._hold_chunk_now(chunk_bytes)
                if not want:
                    wait, want, handed_over = await self._hold_waiting(chunk_bytes, got, what, hand_over=True)
                    waited += wait
                try:
                    chunk = records.frame_buffer(want)  # every byte received before it is read
                    await self._within(self.reader.receive_into(chunk, let_go=handed_over), started + waited,
                                       what, want, got)
                except BaseException:
                    self._unhold(want)
                    raise
                chunks.append(chunk)
                got += want
        except BaseException:
            self._unhold(got)
            raise
        return b"".join(chunks)

    async def _first_byte(self) -> bool:
        """Wait for the next frame to start (False: the client closed); the idle clock runs only while nothing is
        in flight."""
        while True:
            if self.reader.buffered():  # a pipelined request: no idle clock to start
                return True
            # idle, or a buffer that never grew (a consumer's long poll due): it holds none. A grown one is kept
            # while answers are due, to spare its regrowth (`_finish` lets it go after the last)
            if not self._in_flight or not self.reader.grown():
                self.reader.release_staging()
            self._awaiting_request = True
            try:
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    await self.reader.until_buffered(1)
                return True
            except IncompleteFrame:
                return False
            except TimeoutError:
                idle = self._loop.time() - self._last_active
                if self._in_flight == 0 and idle >= self.limits.idle_timeout_s:
                    raise IdleTimeout() from None
            finally:
                self._awaiting_request = False

    async def _within(self, read, started: float, what: str, size: int = 0, before: int = 0):
        """`read` must finish within the frame timeout counted from the frame's first byte (no clock when its
        `size` bytes are staged already: it cannot wait). `before`: bytes of the frame read by earlier reads."""
        if size and self.reader.buffered() >= size:
            return await read
        try:
            async with asyncio.timeout_at(started + self.limits.frame_timeout_s):
                return await read
        except TimeoutError:
            raise FrameTimeout(f"{what} not received within {self.limits.frame_timeout_s:g} s of its first "
                               f"byte (--frame-timeout)") from None
        except IncompleteFrame as e:
            raise FrameError(f"truncated {what} ({before + e.got} bytes)") from None

    async def _hold(self, n: int, holding: int = 0, what: str = "frame") -> float:
        """Take n bytes from this connection's and the process' budgets; returns the seconds waited (the
        client's frame clock does not run while the proxy holds it back). A wait for the process budget while
        `holding` bytes of the frame are held already (its chunks so far) ends after the frame timeout, closing the
        connection (FrameTimeout): frames held in part by several connections past the process budget wait for
        each other, and ending one gives its bytes back to the others (docs/DESIGN.md §4.12). Waits ending in the
        same loop turn keep their places in line until each one's task runs (`ByteBudget.acquire`), so the first
        to close gives its bytes to the next in line, another such wait included. A wait holding nothing of its
        frame holds up nobody's bytes, and one for this connection's own budget waits for its own answers only
        (nobody waits on them): they wait as long as it takes."""
        if self.held.take_now(n):
            if self.budget.take_now(n):
                return 0.0
            self.held.release(n)
        waited, _, _ = await self._hold_waiting(n, holding, what)
        return waited

    def _hold_chunk_now(self, n: int) -> tuple[int, bool]:
        """A large frame's next chunk of up to n bytes held without a wait: n when both budgets have room (two
        `take_now`, as `_hold`: the usual case of a large frame, issue #20), or what of it is handed over past a
        short process budget (`_hand_over_staged`); 0 when it has to wait. Also whether it was handed over."""
        if not self.held.take_now(n):
            return 0, False
        if self.budget.take_now(n):
            return n, False
        handed = self._hand_over_staged(n)
        self.held.release(n - handed)
        return handed, bool(handed)

    async def _hold_waiting(self, n: int, holding: int, what: str,
                            hand_over: bool = False) -> tuple[float, int, bool]:
        """`_hold`'s waits: this connection's budget first (no clock), then the process budget. With `hand_over` (a
        large frame's chunk) a short process budget is first offered the staging buffer's growth
        (`_hand_over_staged`), once this connection's own budget had room. Returns the seconds waited, the bytes
        held (n, or what of it was handed over) and whether they were handed over."""
        before = self._loop.time()
        self.reader.settle()
        await self.held.acquire(n)
        try:
            handed = self._hand_over_staged(n) if hand_over and not self.budget.free_now(n) else 0
            if handed:
                self.held.release(n - handed)
                return self._loop.time() - before, handed, True
            if await self.budget.acquire(n, self.limits.frame_timeout_s if holding else None):
                return self._loop.time() - before, n, False
        except BaseException:
            self.held.release(n)
            raise
        self.held.release(n)
        raise FrameTimeout(f"{what} held back {self.limits.frame_timeout_s:g} s with {holding} bytes of it held, "
                           f"the process byte budget spent (--max-buffered-bytes; --frame-timeout)")

    def _hand_over_staged(self, n: int) -> int:
        """How many bytes of a large frame's next n-byte chunk (held in this connection's budget already) are
        charged to the process budget at once, past it, which is short: the frame's bytes its grown staging
        buffer holds, as far as the growth charged covers them (`ClientFrames.hand_over`). The chunk is then just
        those bytes: the chunks take them with no wait in between, and once they took the frame's staged rest the
        growth goes (`receive_into(let_go=True)`, in the same loop step): with the buffer if that emptied it, else
        less what a buffer just large enough for the frames behind is charged. So a hand-over takes past the
        budget at most what the growth is charged and gives back; waiting instead, a frame as large as the
        budget, or of over half of it with another frame staged behind, never fitted beside the growth
        (docs/DESIGN.md §4.12)."""
        handed = self.reader.hand_over(n)
        if handed:
            self.budget.charge(handed)
        return handed

    def _unhold(self, n: int) -> None:
        self.held.release(n)
        self.budget.release(n)

    # -- writing -------------------------------------------------------------------------------
    # Answers leave in request order, from the head of `_responses`. When the head's answer comes (its
    # done-callback, `_InFlight._answered`) and nothing is being written, the callback writes it and the answers
    # ready behind it (`_write_now`): no task wakes up for the usual answer. The writer task does what waits: the
    # drain of an answer the client did not take at once, TLS (written in slices), and answers that exist when
    # they are queued; while it writes (`_writing`), callbacks leave every answer to it.

    async def _write_loop(self) -> None:
        queue = self._responses
        while True:
            stalled = self._stalled
            if stalled is not None:  # written by a callback; the client has not taken all of it yet
                self._stalled = None
                await self._write_batch(stalled[0], stalled[1:])
            elif queue and queue[0].pending.done():
                self._writing = True
                await self._write_batch(self._take_ready())
            elif not queue and self._reader_done:
                return
            else:
                await self._parked()

    async def _parked(self) -> None:
        """Until a callback or the reader has something for the writer task (`_wake_writer`)."""
        self._wake = waiter = self._loop.create_future()
        try:
            await waiter
        except asyncio.CancelledError:  # the loop's teardown: the answer awaited is cancelled, as it always was
            if self._responses and not self._responses[0].pending.done():
                self._responses[0].pending.cancel()
            raise
        finally:
            self._wake = None

    def _wake_writer(self) -> None:
        waiter = self._wake
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _write_batch(self, batch: list[_InFlight],
                           written: tuple[list[bytes | codec.Chunks], bool] | None = None) -> None:
        """Write a batch of ready answers (`written`: a callback wrote them already, its frames and whether one
        failed: wait for the drain), then give back its bytes and slots."""
        self._writing = True
        try:
            if written is None:
                frames, failed = self._frames_of(batch)
                if frames and not self._broken:
                    self._broken = await self._send(frames)
            else:
                frames, failed = written
                self._broken = await self._send(frames, written=True)
            if failed:
                self.stop_reading()
                self._broken = True
        except Exception:  # a bug (an answer `_write` cannot write): the answers still due are dropped, not queued
            log.exception("closing client %s after an internal error writing its answers", self.peer)
            self._break_off()  # and the task goes on, giving back the bytes and slots of the answers still due
        finally:
            self._writing = False
            self._finish(batch)

    def _write_now(self, head: _InFlight) -> None:
        """`head`'s answer came, it heads the queue and the writer task writes nothing: write it and the ready
        answers behind it now, in one send, and give back their bytes and slots (from its done-callback). Over
        TLS, or with bytes still in the transport, it is charged and left to the task; an answer the client does
        not take at once is charged and its drain left to the task (`_stalled`)."""
        transport = self._transport
        if self._tls or transport.get_write_buffer_size():
            head.charge()
            self._wake_writer()
            return
        batch = self._take_ready()
        stalled = False
        try:
            frames, failed = self._frames_of(batch)
            if frames and not self._broken:
                try:
                    self._write(frames)
                except (ConnectionError, OSError):
                    self.stop_reading()
                    self._broken = True
                else:
                    if transport.get_write_buffer_size():  # held by the transport: charged until drained
                        for item in batch:
                            item.charge()
                        stalled = self._writing = True
                        self._stalled = (batch, frames, failed)
                        self._wake_writer()
                        return
            if failed:
                self.stop_reading()
                self._broken = True
        except BaseException:  # a bug: the connection closes rather than keep answers nobody writes
            self._break_off()
            raise  # logged by the loop, with its traceback
        finally:
            if not stalled:
                self._finish(batch)
                if not self._responses and self._reader_done:
                    self._wake_writer()  # to end

    def _break_off(self) -> None:
        """After a bug while writing answers: nothing more is read or written, and the client's connection closes
        now, not once every answer still due came (none would be written; they are dropped, their bytes and slots
        given back, as they come). Aborted: the transport holds at most part of the batch that failed (answers
        are written into an empty transport), and a client that does not read would keep a closing one open."""
        self.stop_reading()
        self._broken = True
        self._transport.abort()

    def _take_ready(self) -> list[_InFlight]:
        """The queue's head (its answer exists) and the requests behind it whose answers exist too (their upstream
        answers came in one read): written with one send instead of one each."""
        queue = self._responses
        batch = [queue.popleft()]
        while queue and queue[0].pending.done():
            batch.append(queue.popleft())
        return batch

    def _finish(self, batch: list[_InFlight]) -> None:
        """Give back the batch's bytes and slots, and let go of its answers: uncharged now, they (and the broker
        frames they view) must not stay alive in a local while the connection waits for its next request."""
        n = 0
        for done in batch:  # the bytes to give back once an answer was written (or dropped)
            done.finished = True  # a done-callback scheduled but not yet run must not charge any more
            n += done.size + done.answer_bytes
        self._unhold(n)
        self._in_flight -= len(batch)
        if not self._in_flight and self._awaiting_request:  # its last answer while it waits idle: no buffer held
            self.reader.release_staging()
        self._free_slots += len(batch)
        freed = self._slot_freed
        if freed is not None and not freed.done():
            freed.set_result(None)
        batch.clear()
        self._last_active = self._loop.time()

    def _frames_of(self, batch: list[_InFlight]) -> tuple[list[bytes | codec.Chunks], bool]:
        """The batch's answer frames to write, in order, and whether a request failed (logged; the answers from it
        on are not written, the connection closes). A CloseConnection writes nothing and closes after the
        answers due (`_close_after`)."""
        frames: list[bytes | codec.Chunks] = []
        for item in batch:
            try:
                frame = item.pending.result()
            except BaseException as error:  # its failure or cancellation (one call, not three, per answer)
                log.error("request from %s failed; closing", self.peer, exc_info=error)
                return frames, True
            if type(frame) is CloseConnection:
                self._close_after(frame, self._broken)  # the answers after it are still written
            elif frame is not None:
                frames.append(frame)
        return frames, False

    def _close_after(self, close: CloseConnection, broken: bool) -> None:
        """A handler's close (plan.CloseConnection): no request is read any more; the requests read before now are
        answered in order, then run() closes the connection. Those read after the closing request were forwarded
        already (the reader does not wait for an acks=0 produce's outcome, a broker processes one request of a
        connection at a time): a dropped answer would make the client send the request again (docs/DESIGN.md
        §5.4). A dispatch under way is let finish (it may have written upstream): the reader stops after it."""
        if not broken:
            log.info("closing client %s: %s", self.peer, close.reason)
        self._closing = True
        if not self._dispatching:
            self.stop_reading()

    async def _send(self, frames: list[bytes | codec.Chunks], written: bool = False) -> bool:
        """Write answer frames (`written`: a callback wrote them, wait for their drain); returns whether the
        connection broke."""
        try:
            if self._tls:
                async with asyncio.timeout(self.limits.frame_timeout_s * len(frames)):
                    await self._send_in_slices(frames)
            else:
                if not written:
                    self._write(frames)
                if self._transport.get_write_buffer_size():  # else written already: no clock, no wait
                    async with asyncio.timeout(self.limits.frame_timeout_s * len(frames)):  # each answer its own
                        await self.writer.drain()
        except TimeoutError:  # before OSError: TimeoutError is an OSError
            log.warning("closing client %s: it did not take a %d-byte answer within %g s (--frame-timeout)",
                        self.peer, sum(map(len, frames)), self.limits.frame_timeout_s)
            self._transport.abort()
            self.stop_reading()
            return True
        except (ConnectionError, OSError):
            self.stop_reading()
            return True
        return False

    async def _send_in_slices(self, frames: list[bytes | codec.Chunks]) -> None:
        """TLS: the TLS layer encrypts all it is given into the TCP transport below at once and then reports an
        empty buffer, so one write and drain() would end the answer's charge with its ciphertext still here. A
        slice at a time, waiting whenever the TLS layer holds bytes back (it does once TCP's buffer is full), the
        process holds at most about a slice and TCP's buffer beyond what is charged (docs/DESIGN.md §4.12)."""
        for piece in _slices(frames, TLS_SLICE_BYTES):
            self._write(piece)
            if self._transport.get_write_buffer_size():
                await self.writer.drain()

    def _write(self, frames: list[bytes | codec.Chunks]) -> None:
        transport = self._transport
        if transport.is_closing():  # the client went away: drain() would say so, write() would not
            raise ConnectionResetError("client connection closed")
        if len(frames) == 1 and not isinstance(frames[0], codec.Chunks):
            transport.write(frames[0])
            return
        parts: list = []  # uvloop: one writev, the record sets never copied into one frame, the frames not joined
        for frame in frames:
            if isinstance(frame, codec.Chunks):
                parts += frame.parts
            else:
                parts.append(frame)
        transport.writelines(parts)


TLS_SLICE_BYTES = 64 * 1024


def _slices(frames: list[bytes | codec.Chunks], size: int) -> Iterator[list[bytes | codec.Chunks]]:
    """The frames' bytes in lists of views of at most `size` bytes together, in order (nothing copied)."""
    piece: list[bytes | codec.Chunks] = []
    filled = 0
    for frame in frames:
        for part in frame.parts if isinstance(frame, codec.Chunks) else (frame,):
            view, at = memoryview(part), 0
            while at < len(view):
                take = min(size - filled, len(view) - at)
                piece.append(view[at:at + take])  # type: ignore[arg-type]  # written like bytes
                filled, at = filled + take, at + take
                if filled == size:
                    yield piece
                    piece, filled = [], 0
    if piece:
        yield piece


class _InFlight:
    """A request read and not yet answered: its bytes, and its answer's bytes once the answer exists and waits."""

    __slots__ = ("answer_bytes", "conn", "finished", "pending", "size")

    def __init__(self, conn: ClientConnection, pending: asyncio.Future, size: int):
        """Queued by `ClientConnection._queued`: `_answered` is its answer's done-callback, or it is charged at once."""
        self.conn = conn
        self.pending = pending
        self.size = size
        self.answer_bytes = 0
        self.finished = False

    def _answered(self, _pending: asyncio.Future) -> None:
        """The answer exists: written now when it heads the queue and nothing is being written
        (`ClientConnection._write_now`), else charged until the answers before it are written."""
        if self.finished:  # written (or dropped) with an answer before it already
            return
        conn = self.conn
        if not conn._writing and conn._responses and conn._responses[0] is self:
            conn._write_now(self)
        else:
            self.charge()

    def charge(self) -> None:
        """Charge the answer's bytes to the budgets until it was written (once; none for no answer)."""
        if self.finished or self.answer_bytes:
            return
        try:
            answer = self.pending.result()
        except BaseException:  # failed or cancelled: no answer
            return
        if answer is None or type(answer) is CloseConnection:
            return
        # a frame of chunks keeps whole broker answers alive, not only the record sets it forwards from them
        self.answer_bytes = answer.held_bytes() if isinstance(answer, codec.Chunks) else len(answer)
        self.conn.held.charge(self.answer_bytes)
        self.conn.budget.charge(self.answer_bytes)
