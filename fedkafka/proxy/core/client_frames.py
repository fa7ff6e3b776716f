"""A client connection's bytes, received by the kernel into the buffers its frames end up in (no StreamReader).

`ClientFrames` is the connection's protocol: a BufferedProtocol for reading, and the protocol of the connection's
StreamWriter, whose `drain()` waits on it (`_drain_helper`, as asyncio's FlowControlMixin: that one is an
asyncio.Protocol, and uvloop feeds an asyncio.Protocol through `data_received` even when it has `get_buffer`). Bytes the
connection has not asked for yet land in a staging buffer (`STAGING_BYTES`); a frame found there whole is taken
out of it with one copy (pipelined requests usually are). A frame over SMALL_FRAME_BYTES that is not is given a
buffer of its own size (`read_frame`): what of it the staging buffer holds is copied there, and the socket reads
the rest straight into it. A StreamReader copied every byte into its buffer and out again (and uvloop into a
bytes object before that), and paused and resumed the socket as its buffer filled (issue #20;
`upstream.FrameProtocol` does the same for broker answers).

The staging buffer grows to 256 KiB (like the upstream reader's) once 16 KiB fill it, and to 1 MiB once those
256 KiB fill too: with 16 KiB only, a socket holding several pipelined 64 KiB frames filled it at every frame, and
each pause and resume cost a loop round trip (twice the reader's CPU per frame in a microbenchmark); at 256 KiB a
pipelining producer still filled it every ~3 requests (a read, a pause, a resume, a read by the waiting path
each), at 1 MiB every ~15 (plain produce CPU per GB -13%, system calls per request 4.95 -> 3.32: bench/README.md).
A client that trickles keeps it at 16 KiB: a frame over 16 KiB arriving alone fills it with its size and first bytes,
which the reader copies into the frame's own buffer; only bytes staged past the frame being taken (its size told by
`take_size`) grow it at its end (below). Each growth (240 KiB, then 768 KiB) is charged to the process budget
(`ByteBudget.take_spare`: only while half the budget stays free, for the second step three quarters, so staging
never keeps a request from being read) until the buffer is let go: when the connection waits for a new frame with
nothing staged and no answer due (or a buffer that never grew), or its last answer is written while it waits
(`release_staging`), when its read loop ends (`drop_staging`: nothing reads it again), when it ends, and mid-frame
once a large frame's staged rest was taken into the frame's chunks while the budget is short
(`receive_into(let_go=True)`, `ClientConnection._hand_over_staged`: frames staged behind it are kept in a buffer just
their size); the charge given back is both steps' (less what a buffer kept for the frames behind is charged).
Refused, the buffer keeps its size: at 16 KiB it holds every frame the connection waits for in it (at most
SMALL_FRAME_BYTES), and fills and pauses more often; at 256 KiB likewise. So a
connection holds at most 16 KiB uncharged, an idle one none (docs/DESIGN.md §4.12). It is not zero-filled
(`records.frame_buffer`): only the bytes the socket wrote, [_start, _end), are ever read.

Backpressure: once reading reaches the staging buffer's end with more than half of it unread (full, or a producer
whose unanswered requests stay just under its size) and it cannot grow (at 1 MiB, or the budget refused), and the
connection does not wait for bytes not all staged (its request slots or byte budgets are taken), reading is paused
and the kernel's buffers fill, so TCP slows the client. A buffer that can still grow grows there (it would fill
anyway), but only when some unread bytes lie past the frame the reader is taking (pipelining): its rest alone (a
large frame trickling in) never grows it, and pauses reading only if it fills the buffer or the reader does not wait
(held back by the budgets before a large frame's next chunk, or before a whole frame of up to 128 KiB whose rest
fills the 16 KiB buffer: read on, it was moved to the front again and again, ~3
bytes per byte read); while the reader waits it is moved to the front by the next read, once per frame.
It resumes once the connection took bytes out so that at most half the buffer is unread
(`_taken`: moving the unread rest to its front then costs at most the bytes read into the room it makes; resumed at
each frame taken, a buffer held full by a producer taking one frame per freed request slot moved ~960 KiB for each
64 KiB read at 1 MiB, and paused only when full, one kept just under full moved 2-14 bytes per byte read), or at
once when it waits for bytes not all staged (`until_buffered`) or gives the socket a buffer of its own to read into
(`receive_into`), so no wait for bytes depends on half the buffer being taken.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct

from fedkafka.protocol import records
from fedkafka.proxy.core.limits import ByteBudget
from fedkafka.security.proxy_header import TrustedSources
from fedkafka.security.server_tls import ServerTls
from fedkafka.security.tls_accept import Accepting, Admit

log = logging.getLogger(__name__)

STAGING_BYTES = 1024 * 1024  # at most, per connection; beyond SMALL_FRAME_BYTES charged (docs/DESIGN.md §4.12)
STAGING_FIRST_BYTES = 256 * 1024  # the first growth's size; the second, to STAGING_BYTES, once this fills too
SMALL_FRAME_BYTES = 16 * 1024  # a frame up to this size waits in the staging buffer; a larger one gets its own
_NO_STAGING = bytearray()
_SIZE = struct.Struct(">i")


class IncompleteFrame(EOFError):
    """The client closed its side after `got` bytes of what the connection waited for."""

    def __init__(self, got: int):
        super().__init__(f"connection closed after {got} bytes")
        self.got = got


class ClientFrames(asyncio.BufferedProtocol):
    """A client connection's reader: the connection waits for bytes in the staging buffer (`until_buffered`),
    takes them (`take`), or has the socket fill a buffer of its own (`receive_into`). One waiter at a time (the
    connection's read loop)."""

    def __init__(self, on_client, staging_bytes: int = STAGING_BYTES, loop: asyncio.AbstractEventLoop | None = None,
                 budget: ByteBudget | None = None, admit: Admit | None = None,
                 tls: ssl.SSLContext | ServerTls | None = None,
                 handshake_timeout: float | None = None, trusted: TrustedSources | None = None):
        self._loop = loop or asyncio.get_running_loop()
        self._on_client = on_client
        # `admit` is asked when the connection is accepted (None: every connection is served); with `tls` (server
        # side) the handshake runs after it, within `handshake_timeout` seconds; let go once the connection ends.
        # From a `trusted` relay a PROXY header is read first, within the same timeout, and names the client
        self._accepting = Accepting(self._loop, admit, tls, handshake_timeout, trusted)
        self._staging_bytes = staging_bytes
        self._budget = budget  # the process': charged with the staging buffer's growth (None: not charged)
        self._staging = _NO_STAGING  # allocated when the socket has bytes for it
        self._charged = 0  # of the staging buffer's bytes, to the budget
        self._handed = 0  # of that charge, what a large frame's chunks took past the budget for it (`hand_over`)
        self._start = self._end = 0  # unread bytes of the staging buffer
        # of the frame whose size the reader took (`take_size`), the bytes it has not taken yet: the unread bytes
        # past these are frames behind it (a backlog), which alone make growing or pausing at the end worth it
        self._frame_left = 0
        self._target: bytearray | None = None  # a buffer the socket reads into directly, and how much it has
        self._filled = 0
        self._need = 0  # staged bytes the waiter waits for (0: it waits for `_target` to fill)
        self._waiter: asyncio.Future | None = None
        self._eof = False
        self._error: BaseException | None = None
        self._paused = False  # reading
        self._writing_paused = False
        self._drained: asyncio.Future | None = None  # the writer's, in drain()
        self.over_tls = False  # whether the connection is TLS: decided here once, asked by the connection too
        self._closed: asyncio.Future | None = None  # StreamWriter.wait_closed()'s
        self._lost = False
        self._task: asyncio.Task | None = None
        self.transport: asyncio.Transport | None = None

    @property
    def peer(self):
        """The client's address: its socket's peer, or what a trusted relay's PROXY header named."""
        return self._accepting.peer

    # -- asyncio's side ---------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        """Accepted: counted (`admit`) before anything else, on a TLS listener before the handshake too, which then
        runs within the handshake timeout (`tls_accept.Accepting`, docs/DESIGN.md §11); refused, aborted at once."""
        self._accepting.accepted(transport, self, self._connected)

    def _connected(self, transport) -> None:
        """Serve the connection: its task (`on_client`) starts. Over TLS the first bytes after the handshake may
        have been handed over before (get_buffer and buffer_updated run without a transport to pause): a
        staging buffer they filled, or left at its end more than half unread, pauses reading now."""
        self.transport = transport
        if self._past_half_at_end():
            self._pause()
        self.over_tls = transport.get_extra_info("sslcontext") is not None
        writer = asyncio.StreamWriter(transport, self, None, self._loop)
        self._task = self._loop.create_task(self._on_client(self, writer))
        self._task.add_done_callback(self._client_done)

    def _client_done(self, task: asyncio.Task) -> None:
        """As asyncio's StreamReaderProtocol: a connection whose task ended with an exception it did not handle is
        reported and closed, not left open unread (its client would hang, its socket stay in CLOSE_WAIT). Nothing
        reads the staging buffer any more: it goes, and its charge with it (and bytes read after this, before the
        transport closes, charge nothing)."""
        self._start = self._end = self._frame_left = 0
        self.release_staging()
        self._budget = None
        self._accepting.left()
        if not task.cancelled():
            if (exc := task.exception()) is None:
                return
            self._loop.call_exception_handler({"message": "Unhandled exception in a client connection",
                                               "exception": exc, "transport": self.transport})
        if self.transport is not None:
            self.transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._target is not None:
            return memoryview(self._target)[self._filled:]
        if not self._staging:
            self._staging = records.frame_buffer(min(SMALL_FRAME_BYTES, self._staging_bytes))
        elif self._end == len(self._staging):  # at its end: keep the unread tail, at the front
            tail = self._end - self._start
            view = memoryview(self._staging)  # one memmove (a bytearray slice would be copied, then copied in)
            view[:tail] = view[self._start:self._end]
            self._start, self._end = 0, tail
        return memoryview(self._staging)[self._end:]  # never empty: full, it grew or reading was paused

    def _grow(self) -> bool:
        """The staging buffer, its end reached with more than half of it unread and frames behind the one being
        taken staged (`buffer_updated`), grown a step (16 KiB → 256 KiB → `staging_bytes`), the growth charged
        first; whether it grew. Refused, it keeps its size (a grown one stays grown)."""
        size = len(self._staging)
        target = min(self._staging_bytes, STAGING_FIRST_BYTES) if size < STAGING_FIRST_BYTES else self._staging_bytes
        growth = target - size
        if growth <= 0:
            return False
        if self._budget is not None:
            # the second step within a quarter of the budget: fast producers holding 1 MiB leave the second
            # quarter to other connections' first step (256 KiB), which pipelining needs far more
            if not self._budget.take_spare(growth, share=2 if size < STAGING_FIRST_BYTES else 4):
                return False
            self._charged += growth  # both steps': release_staging gives back the sum
        staging = records.frame_buffer(target)
        memoryview(staging)[:self._end - self._start] = memoryview(self._staging)[self._start:self._end]
        self._staging, self._start, self._end = staging, 0, self._end - self._start
        return True

    def buffer_updated(self, nbytes: int) -> None:
        if self._target is not None:
            self._filled += nbytes
            if self._filled == len(self._target):
                self._target = None
                self._wake()
            return
        self._end = end = self._end + nbytes
        size = len(self._staging)
        if end == size and 2 * (end - self._start) > size:  # _past_half_at_end, inline
            self._at_end_past_half(end - self._start, size)
        if self._end - self._start >= self._need:
            self._wake()

    def _at_end_past_half(self, unread: int, size: int) -> None:
        """Reading reached the staging buffer's end with more than half of it unread. Frames staged behind the one
        the reader takes (pipelining) grow it, or, refused, pause reading. The rest of the frame being taken only
        (a large frame trickling in, which the reader copies into a buffer of its own) does neither: growth would
        go unused, and while the reader waits a pause would cost a resume per frame: the next read moves it to the
        front, once per frame. It pauses if it fills the buffer (no room to give) or the reader does not wait (held
        back by the budgets before a large frame's next chunk or a whole frame of up to 128 KiB: reading on moved
        it to the front again and again, ~3 bytes per byte read); the reader's next wait for bytes not staged, or
        its taking half, resumes reading."""
        if unread <= self._frame_left:
            if unread == size or self._waiter is None:
                self._pause()
            return
        if self._grow():
            return
        # not while the waiter waits for bytes not all staged (they need the move); a full buffer pauses
        # anyway: get_buffer would have no room to give
        if unread == size or self._waiter is None or unread >= self._need:
            self._pause()

    def _past_half_at_end(self) -> bool:
        """Whether reading reached the staging buffer's end with more than half of it unread: reading on would
        first move the unread rest to its front, more bytes than the room that makes (full: no room at all)."""
        size = len(self._staging)
        return self._end == size and 2 * (self._end - self._start) > size

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return not self.over_tls  # plain TCP: keep the write side open for the answers to what was read

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drained is not None and not self._drained.done():
            if exc is None:
                self._drained.set_result(None)
            else:
                self._drained.set_exception(exc)
        self._eof = self._lost = True
        self._error = exc
        if exc is not None:  # a broken connection: requests staged but not taken are not dispatched (as a
            self._start = self._end = self._frame_left = 0  # StreamReader's readexactly raised first)
            self.release_staging()
        self._target = None  # a frame lost half read is dropped unread
        self._wake()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def _drain_helper(self) -> None:
        """StreamWriter.drain(): until the transport's write buffer is below its high-water mark."""
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._writing_paused:
            return
        self._drained = self._loop.create_future()
        try:
            await self._drained
        finally:
            self._drained = None

    def _get_close_waiter(self, stream) -> asyncio.Future:
        """StreamWriter.wait_closed()."""
        if self._closed is None:
            self._closed = self._loop.create_future()
            if self._lost:
                self._closed.set_result(None)
        return self._closed

    # -- the connection's side --------------------------------------------------------------------------
    def buffered(self) -> int:
        """Bytes in the staging buffer not taken yet."""
        return self._end - self._start

    def grown(self) -> bool:
        """Whether the staging buffer is larger than a new one (it grew): only such a buffer is worth keeping while
        answers are due, to spare its regrowth (a new one costs nothing to keep out of)."""
        return len(self._staging) > min(SMALL_FRAME_BYTES, self._staging_bytes)

    def drop_staging(self) -> None:
        """The connection reads nothing any more (its read loop ended): what is staged is dropped unread and the
        buffer let go with its charge, now rather than once its last answers are written. Bytes the socket still
        hands over land in a new buffer that no longer grows (at most 16 KiB, uncharged, then reading pauses)."""
        self._start = self._end = self._frame_left = 0
        self.release_staging()
        self._staging_bytes = min(SMALL_FRAME_BYTES, self._staging_bytes)

    def hand_over(self, n: int) -> int:
        """How many bytes of a large frame's next n-byte chunk may be charged past the process budget, which is
        short (`ClientConnection._hand_over_staged`): the frame's bytes staged here, as far as the growth charged
        covers them beyond what earlier chunks took so (`_handed`), for the growth goes once the chunks took them
        (`receive_into(let_go=True)`: the buffer goes, or a smaller one keeps the frames staged behind). So the
        chunks never take past the budget more than this buffer is charged and gives back (docs/DESIGN.md §4.12).
        With nothing of the frame staged, or no such cover left, the buffer is first shrunk to its unread bytes
        (`_keep_unread`), its growth given back but for theirs: a wait for the budget then holds no growth beyond
        the bytes the frame still needs, so a lone connection's frame as large as the budget fits."""
        if not self._charged:
            return 0
        staged = min(self._end - self._start, self._frame_left)
        if not staged or self._charged <= self._handed:
            self._keep_unread()
        handed = min(n, staged, self._charged - self._handed)
        self._handed += handed
        return handed

    def settle(self) -> None:
        """Before the reader waits (for its budgets) with bytes handed over past the budget for the growth
        (`hand_over`): the buffer shrunk to its unread bytes now (`_keep_unread`), the growth given back but for
        theirs, so bytes the socket adds meanwhile do not keep it (the growth would then no longer cover them)."""
        if self._handed:
            self._keep_unread()

    def _keep_unread(self) -> None:
        """The grown staging buffer replaced by one just large enough for its unread bytes (at least a new one's
        size; none if nothing is unread): the growth is given back but for the new buffer's own (its size less a
        new one's). After a large frame's staged rest went into its chunks while the process budget was short, it
        keeps the frames staged behind that frame, so the chunks and the staged bytes are each counted once
        (docs/DESIGN.md §4.12). Full, it pauses reading until the reader took half (`_taken`)."""
        unread = self._end - self._start
        if not unread:
            self.release_staging()
            return
        small = min(SMALL_FRAME_BYTES, self._staging_bytes)
        size = max(small, unread)
        if size >= len(self._staging):
            return
        staging = records.frame_buffer(size)
        memoryview(staging)[:unread] = memoryview(self._staging)[self._start:self._end]
        self._staging, self._start, self._end = staging, 0, unread
        if self._charged > size - small:
            self._give_back(self._charged - (size - small))
        if self._past_half_at_end():
            self._pause()

    def release_staging(self) -> None:
        """Let the staging buffer go if it holds nothing (the next bytes get a new one, small), and its charge."""
        if self._start == self._end:
            self._staging = _NO_STAGING
            self._start = self._end = 0
            if self._charged:
                self._give_back(self._charged)

    def _give_back(self, n: int) -> None:
        """n bytes of the staging buffer's charge given back; chunks that took bytes past the budget for it
        (`hand_over`) are answered for by the growth given back first."""
        if self._budget is not None:
            self._budget.release(n)
        self._charged -= n
        self._handed = max(self._handed - n, 0)

    def take_whole(self, max_bytes: int, held: ByteBudget, budget: ByteBudget) -> bytes | None:
        """The next frame (without its size prefix) when the prefix and all its bytes are staged and both budgets
        have room for it now: taken from them and from the staging buffer with one copy, in one call (for speed:
        `whole_frame`, `take` and two `take_now` were four calls a request). None when it is not staged whole, its
        size is outside 0..max_bytes (the waiting path reports that) or a budget is short: nothing taken."""
        start = self._start
        end = self._end
        if end - start < 4:
            return None
        (size,) = _SIZE.unpack_from(self._staging, start)
        if size < 0 or size > max_bytes or end - start - 4 < size or not held.take_with(budget, size):
            return None
        begin = start + 4
        self._start = start = begin + size
        data = bytes(memoryview(self._staging)[begin:start])
        if start == end:
            self._start = self._end = 0
        if self._paused:  # _taken's own first check, without the call
            self._taken()
        return data

    def take_size(self) -> int:
        """The next frame's size prefix (4 staged bytes), taken: its body is the frame the reader takes next (by
        `take`, `read_frame`, `receive_into`); the unread bytes past it are a backlog (`_at_end_past_half`)."""
        (size,) = _SIZE.unpack(self.take(4))
        self._frame_left = max(size, 0)
        return size

    def take(self, n: int, skip: int = 0) -> bytes:
        """The next n staged bytes after `skip` (dropped), with one copy; the staging buffer must hold them."""
        if self._frame_left:
            self._frame_left = max(self._frame_left - n - skip, 0)
        begin = self._start + skip
        self._start = begin + n
        data = bytes(memoryview(self._staging)[begin:self._start])
        if self._start == self._end:
            self._start = self._end = 0
        if self._paused:  # _taken's own first check, without the call
            self._taken()
        return data

    async def read_frame(self, size: int) -> bytes | memoryview:
        """A frame's next `size` bytes: out of the staging buffer with one copy when they are few (SMALL_FRAME_BYTES)
        or staged already, else received into a buffer of their own, returned as a read-only view of it (kio reads
        read-only buffers only). That buffer is not zero-filled (`records.frame_buffer`): `receive_into` writes
        every byte of it before it is returned, and drops it unreturned otherwise."""
        if size <= SMALL_FRAME_BYTES or self._end - self._start >= size:
            await self.until_buffered(size)
            return self.take(size)
        buffer = records.frame_buffer(size)
        await self.receive_into(buffer)
        return memoryview(buffer).toreadonly()

    async def until_buffered(self, n: int) -> None:
        """Until the staging buffer holds n bytes (n at most its size). IncompleteFrame if the client closed
        first; the connection's error if it broke."""
        while self._end - self._start < n:
            self._check_open(self._end - self._start)
            self._need = n
            self._resume()
            await self._wait()

    async def receive_into(self, buffer: bytearray, let_go: bool = False) -> None:
        """Fill `buffer`: with what is staged, then straight from the socket. Nothing else receives into it, and a
        buffer left half filled (the client closed, or the wait was cancelled) is not received into any more.
        `let_go`: once the staging buffer holds nothing more of the frame, its growth goes now: it goes if this
        empties it (`release_staging`), else the frames staged behind are kept in a smaller one (`_keep_unread`)."""
        if self._frame_left:  # the frame's bytes it receives are the reader's: not staged behind it
            self._frame_left = max(self._frame_left - len(buffer), 0)
        # chunks took bytes past the budget for the growth (`hand_over`): it goes once the frame's staged bytes are
        # taken, also by a chunk the budgets had room for, before the socket refills the buffer
        let_go = let_go or self._handed > 0
        have = min(len(buffer), self._end - self._start)
        memoryview(buffer)[:have] = memoryview(self._staging)[self._start:self._start + have]
        self._start += have
        if self._start == self._end:
            self._start = self._end = 0
            if let_go:
                self.release_staging()
        elif let_go and not self._frame_left:
            self._keep_unread()
        if have == len(buffer):
            self._taken()
            return
        self._target, self._filled = buffer, have
        try:
            while self._target is buffer:
                self._check_open(self._filled)
                self._need = 0
                self._resume()
                await self._wait()
        finally:
            if self._target is buffer:
                self._target = None
        if self._filled < len(buffer):
            self._check_open(self._filled)

    def _check_open(self, got: int) -> None:
        if self._error is not None:
            raise self._error
        if self._eof:
            raise IncompleteFrame(got)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause(self) -> None:
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = True
            self.transport.pause_reading()

    def _taken(self) -> None:
        """Bytes were taken out of the staging buffer and nothing waits for more: reading paused at the buffer's
        end (`_past_half_at_end`) resumes once at most half of it is unread, so that the move of the unread rest to
        its front (`get_buffer`) is paid for by at least as many bytes read. Resumed at once, a buffer held full by
        a connection that takes one frame at a time (its request slots or the budgets taken) moved ~960 KiB for
        each 64 KiB read at 1 MiB.
        A connection that waits for bytes not all staged resumes reading itself (`until_buffered`,
        `receive_into`): no wait depends on this one."""
        if 2 * (self._end - self._start) <= len(self._staging):
            self._resume()

    def _resume(self) -> None:
        """Resume reading (the connection waits for bytes not all staged, or `_taken` found half the buffer free)
        unless the staging buffer is still full (a read that took nothing: a zero-size frame, an empty buffer):
        get_buffer would hand the socket an empty buffer, a fatal error for the transport."""
        if not self._paused:  # first: the common case, and the check below is ~20 bytecodes
            return
        full = self._target is None and len(self._staging) and self._end - self._start == len(self._staging)
        if not full and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()


async def start_server(on_client, host: str | None = None, port: int | None = None, *,
                       staging_bytes: int = STAGING_BYTES, budget: ByteBudget | None = None,
                       admit: Admit | None = None, ssl: ssl.SSLContext | ServerTls | None = None,
                       ssl_handshake_timeout: float | None = None, trusted: TrustedSources | None = None,
                       **kwargs) -> asyncio.Server:
    """`asyncio.start_server` with a ClientFrames reader for each connection: `on_client(reader, writer)`; `budget`
    (the process') is charged with their staging buffers' growth. `admit(peername)` is asked as each connection is
    accepted, before a TLS handshake: None refuses it (aborted at once), else a callable run once it ended. With
    `ssl` the listener accepts TCP and each connection starts TLS itself (`loop.start_tls`) after `admit`, within
    `ssl_handshake_timeout` seconds (None: asyncio's 60). A connection from a `trusted` relay starts with a PROXY
    v2 header, read first (before `admit`, which is given the client's address it names; `ClientFrames.peer`)."""
    loop = asyncio.get_running_loop()
    tls = ssl

    def protocol() -> ClientFrames:
        return ClientFrames(on_client, staging_bytes, loop, budget, admit, tls, ssl_handshake_timeout, trusted)

    return await loop.create_server(protocol, host, port, **kwargs)
