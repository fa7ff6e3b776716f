"""One task pair per client connection: a reader that dispatches in order, a writer that answers in order.

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
        self.peer = writer.get_extra_info("peername")
        # request slots (a semaphore of the reader's own: asyncio.Semaphore's acquire and release were ~60
        # bytecodes a request); the reader waits on _slot_freed when none is left
        self._free_slots = self.limits.max_inflight_requests
        self._slot_freed: asyncio.Future | None = None
        self._in_flight = 0
        self._loop = asyncio.get_running_loop()
        self._responses = _Queue(self._loop)  # bounded by the request slots
        self._last_active = self._loop.time()
        self._read_task: asyncio.Task | None = None
        # set after a failed authentication (answer it, then close) or once a request's answer is a CloseConnection:
        # nothing more is read
        self._closing = False
        self._dispatching = False  # the reader is in dispatcher.start: a close lets it finish (_close_after)
        # drain() returns only once the transport holds nothing: an answer's bytes are given back when they are
        # written, and with the default marks (64/16 KiB) a transport still held views of broker frames then,
        # uncharged, for as long as the client did not read (uvloop keeps parts by reference)
        writer.transport.set_write_buffer_limits(high=0)
        self._tls = reader.over_tls  # answers written in slices (_send_in_slices)

    async def run(self) -> None:
        write_task = asyncio.create_task(self._write_loop())
        self._read_task = asyncio.create_task(self._read_loop())
        with contextlib.suppress(asyncio.CancelledError):  # stop_reading(): still answer what was read
            await self._read_task
        self._responses.put_nowait(None)
        await write_task
        self.dispatcher.forget(self.slot)
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
        try:
            while not self._closing:
                if self._free_slots > 0:
                    self._free_slots -= 1
                else:
                    await self._take_slot()
                try:
                    if not await self._read_one():
                        self._give_slot()
                        return
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

    async def _read_one(self) -> bool:
        """Read and dispatch one frame (False: the client closed cleanly)."""
        frame: bytes | memoryview | None = self._buffered_frame()
        if frame is not None:
            size = len(frame)
        else:
            if not await self._first_byte():
                return False
            started = self._loop.time()
            await self._within(self.reader.until_buffered(4), started, "size", 4)
            (size,) = _SIZE.unpack(self.reader.take(4))
            if size < 0 or size > self.limits.max_frame_bytes:
                raise FrameError(f"frame size {size} outside 0..{self.limits.max_frame_bytes} (--max-frame-bytes)")
            # before SASL authentication (Kafka's sasl.server.max.receive.size): closed, one line
            if size > self.limits.max_pre_auth_frame_bytes and not self.session.authenticated:
                raise FrameError(f"frame size {size} larger than {self.limits.max_pre_auth_frame_bytes} before "
                                 f"SASL authentication (--max-pre-auth-frame-bytes)")
            frame = await self._read_body(size, started)
        self._dispatching = True
        try:
            pending = await self.dispatcher.start(frame, self.slot, self.session)
        except BaseException:
            self._unhold(size)
            raise
        finally:
            self._dispatching = False
        self._in_flight += 1
        self._responses.put_nowait(_InFlight(self, pending, size))
        # known at once: nothing after it is read, the connection closes once the answers before it are written
        if pending.done() and not pending.cancelled() and pending.exception() is None and \
                type(pending.result()) is CloseConnection:
            self._closing = True
        if self.session.failed is not None:  # one line, no secret: the reason names the mechanism and user only
            log.warning("authentication failed for client %s on %s listener: %s; closing", self.peer,
                        self.session.protocol, self.session.failed)
            self._closing = True
        return True

    def _buffered_frame(self) -> bytes | None:
        """The next frame when it is staged whole and both budgets have room for it now, held and taken with
        one copy, no clock and no wait (pipelined requests usually are here whole: their size, body and
        holds were three reads, two timers' checks and a hold); None: read it by the waiting path."""
        limits = self.limits
        size = self.reader.whole_frame(limits.max_frame_bytes if self.session.authenticated else
                                       min(limits.max_frame_bytes, limits.max_pre_auth_frame_bytes))
        if size < 0 or not self.held.take_now(size):
            return None
        if not self.budget.take_now(size):
            self.held.release(size)
            return None
        return self.reader.take(size, 4)

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
                want = min(size - got, READ_CHUNK_BYTES)
                waited += await self._hold(want)
                try:
                    chunk = records.frame_buffer(want)  # every byte received before it is read
                    await self._within(self.reader.receive_into(chunk), started + waited, what, want, got)
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
            self.reader.release_staging()  # a connection waiting for its next request holds no buffer
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

    async def _hold(self, n: int) -> float:
        """Take n bytes from this connection's and the process' budgets; returns the seconds waited (the
        client's frame clock does not run while the proxy holds it back)."""
        if self.held.take_now(n):
            if self.budget.take_now(n):
                return 0.0
            self.held.release(n)
        before = self._loop.time()
        await self.held.acquire(n)
        try:
            await self.budget.acquire(n)
        except BaseException:
            self.held.release(n)
            raise
        return self._loop.time() - before

    def _unhold(self, n: int) -> None:
        self.held.release(n)
        self.budget.release(n)

    # -- writing -------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        broken = False
        item = await self._responses.get()
        while item is not None:  # None: the reader ended
            batch = [item]  # released below even if waiting for its answer raises
            try:
                batch, item = await self._ready_batch(item)
                broken = await self._answer(batch, broken)
            finally:
                self._finish(batch)
            if item is _QUEUE_EMPTY:
                item = await self._responses.get()

    def _finish(self, batch: list[_InFlight]) -> None:
        """Give back the batch's bytes and slots, and let go of its answers: uncharged now, they (and the broker
        frames they view) must not stay alive in a local while the connection waits for its next request."""
        for done in batch:
            self._unhold(done.done())
            self._in_flight -= 1
            self._give_slot()
        batch.clear()
        self._last_active = self._loop.time()

    async def _ready_batch(self, first: _InFlight) -> tuple[list[_InFlight], _InFlight | object | None]:
        """`first` once its answer exists, with the queued requests behind it whose answers exist too (their
        upstream answers came in one read): written with one send instead of one each. Returns the batch and the
        item taken from the queue after it (a request not answered yet, None: the reader ended, or
        `_QUEUE_EMPTY`)."""
        await _settled(first.pending)
        batch = [first]
        while not self._responses.empty():
            following = self._responses.get_nowait()
            if following is None or not following.pending.done():
                return batch, following
            batch.append(following)
        return batch, _QUEUE_EMPTY

    async def _answer(self, batch: list[_InFlight], broken: bool) -> bool:
        """Write the batch's answers (in order, with one send); returns whether the connection is broken (then
        later answers are dropped)."""
        frames: list[bytes | codec.Chunks] = []
        failed = False
        for item in batch:
            error = asyncio.CancelledError() if item.pending.cancelled() else item.pending.exception()
            if error is not None:
                log.error("request from %s failed; closing", self.peer, exc_info=error)
                failed = True
                break
            frame = item.pending.result()
            if type(frame) is CloseConnection:
                self._close_after(frame, broken)  # the answers after it are still written
            elif frame is not None:
                frames.append(frame)
        if frames and not broken:
            broken = await self._send(frames)
        if failed:
            self.stop_reading()
            return True
        return broken

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

    async def _send(self, frames: list[bytes | codec.Chunks]) -> bool:
        """Write answer frames; returns whether the connection broke."""
        try:
            if self._tls:
                async with asyncio.timeout(self.limits.frame_timeout_s * len(frames)):
                    await self._send_in_slices(frames)
            else:
                self._write(frames)
                if self.writer.transport.get_write_buffer_size():  # else written already: no clock, no wait
                    async with asyncio.timeout(self.limits.frame_timeout_s * len(frames)):  # each answer its own
                        await self.writer.drain()
        except TimeoutError:  # before OSError: TimeoutError is an OSError
            log.warning("closing client %s: it did not take a %d-byte answer within %g s (--frame-timeout)",
                        self.peer, sum(map(len, frames)), self.limits.frame_timeout_s)
            self.writer.transport.abort()
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
            if self.writer.transport.get_write_buffer_size():
                await self.writer.drain()

    def _write(self, frames: list[bytes | codec.Chunks]) -> None:
        if self.writer.transport.is_closing():  # the client went away: drain() would say so, write() would not
            raise ConnectionResetError("client connection closed")
        if len(frames) == 1 and not isinstance(frames[0], codec.Chunks):
            self.writer.write(frames[0])
            return
        parts: list = []  # uvloop: one writev, the record sets never copied into one frame, the frames not joined
        for frame in frames:
            if isinstance(frame, codec.Chunks):
                parts += frame.parts
            else:
                parts.append(frame)
        self.writer.writelines(parts)


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


_QUEUE_EMPTY = object()  # the write loop took nothing from the queue after a batch


class _Queue:
    """The part of asyncio.Queue the connection uses, for its one reader and one writer: a deque and the
    writer's waiter (asyncio.Queue's counters, Event, waiter deques and loop check were ~100 bytecodes a
    request)."""

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._items: collections.deque = collections.deque()
        self._loop = loop
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def get_nowait(self):
        return self._items.popleft()

    async def get(self):
        while not self._items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


async def _settled(pending: asyncio.Future) -> None:
    """Until `pending` is done; its failure or cancellation is not raised (_answer reports it). Awaited directly:
    `asyncio.wait` cost a waiter future, a set, a closure, a getpid() and one more loop step per answer. A
    cancellation of the waiting task itself is raised (and, as with any await of a task, cancels `pending`: only
    at the loop's teardown)."""
    if pending.done():
        return
    try:
        await pending
    except BaseException:
        task = asyncio.current_task()
        if not pending.done() or (task is not None and task.cancelling()):
            raise


class _InFlight:
    """A request read and not yet answered: its bytes, and its answer's bytes once the answer exists."""

    __slots__ = ("answer_bytes", "conn", "finished", "pending", "size")

    def __init__(self, conn: ClientConnection, pending: asyncio.Future, size: int):
        self.conn, self.pending, self.size, self.answer_bytes = conn, pending, size, 0
        self.finished = False
        if pending.done():
            self._charge(pending)
        else:
            pending.add_done_callback(self._charge)

    def done(self) -> int:
        """The bytes to give back once the answer was written (or dropped)."""
        self.finished = True  # a done-callback scheduled but not yet run must not charge any more
        return self.size + self.answer_bytes

    def _charge(self, pending: asyncio.Future) -> None:
        if self.finished or pending.cancelled() or pending.exception() is not None:
            return
        answer = pending.result()
        if answer is None or type(answer) is CloseConnection:
            return
        # a frame of chunks keeps whole broker answers alive, not only the record sets it forwards from them
        self.answer_bytes = answer.held_bytes() if isinstance(answer, codec.Chunks) else len(answer)
        self.conn.held.charge(self.answer_bytes)
        self.conn.budget.charge(self.answer_bytes)
