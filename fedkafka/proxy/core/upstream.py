"""Connections to physical brokers: pipelined requests, responses matched in order (aiokafka's conn.py model).

With an upstream config (`--upstream-config`, docs/DESIGN.md §11) a connection opens TLS and logs in with SASL
before anything else is sent on it; a connection whose broker gave a session lifetime (KIP-368) is replaced
before it runs out.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import socket
import struct
from typing import Any, Literal, overload

from fedkafka.fencing import UPSTREAM_REQUEST_TIMEOUT_S
from fedkafka.protocol import codec, records
from fedkafka.protocol.framing import FrameError
from fedkafka.proxy.core.limits import ByteBudget
from fedkafka.security.scram import AuthenticationFailed
from fedkafka.security.upstream import PLAINTEXT, UpstreamSecurity, UpstreamSource, sasl_exchange

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = UPSTREAM_REQUEST_TIMEOUT_S
MAX_RESPONSE_BYTES = 1 << 30
PRODUCE_API_KEY = 0
MAX_IDLE_DEDICATED = 64  # per broker; more are closed on release
SESSION_USE = 0.8  # of a SASL session's lifetime a connection is used for new requests; then it is replaced
# cluster -> the settings and failure logged last (a wrong password: one line); the settings object too, so
# that a reloaded password the brokers refuse as well is logged again (`upstream_reload.UpstreamFile`)
_last_auth_failure: dict[str, tuple[UpstreamSecurity, str]] = {}


class PoolBusy(Exception):
    """Every dedicated connection to a broker is in use and none came free in time (not a broker fault)."""


class FrameProtocol(asyncio.BufferedProtocol):
    """Size-prefixed frames read with as few copies as the sizes allow (no StreamReader).

    Small frames are cut out of one staging buffer that the socket reads into; a frame larger than the staging
    buffer gets a buffer of its own size that the socket reads the rest of it into directly, so a fetch
    answer of 50 MB is not copied again and again while it arrives (a StreamReader copies it into its buffer,
    then out of it twice, then moves what is left). `on_frame(frame)` gets each frame without its prefix
    (bytes, or a read-only memoryview); `on_lost(reason)` once, when the connection ends or a frame is refused.

    A large frame's own buffer is not zero-filled (`records.frame_buffer`: the fill was ~5% of a consume's CPU),
    and with the malloc thresholds pinned (`server.pin_malloc_thresholds`) it comes from the heap, so it may hold
    bytes of an earlier answer, another client's. None of them can leave here: bytes [0, _filled) are the only
    ones written (the frame's start, copied from the staging buffer, then each read adds exactly the `nbytes`
    the transport wrote at the front of get_buffer's view, which starts at _filled); the frame goes to on_frame
    only once _filled is its size, every byte received; a connection lost, aborted or refused inside the frame
    drops the buffer unread (the reason carries none of it), and no buffer serves two frames.

    A large frame's buffer is charged to `budget` (the process' memory budget) from its allocation until it was
    delivered or dropped: it may overdraw, and then clients' requests are not read until bytes come back. Once
    delivered, the client answer that views it is charged instead (`codec.Chunks.held_bytes`).
    """

    STAGING_BYTES = 256 * 1024

    def __init__(self, on_frame, on_lost, max_bytes: int = MAX_RESPONSE_BYTES, budget: ByteBudget | None = None):
        self.on_frame, self.on_lost, self.max_bytes, self.budget = on_frame, on_lost, max_bytes, budget
        self.transport: asyncio.Transport | None = None
        self._staging = bytearray(self.STAGING_BYTES)
        self._start = self._end = 0  # unread bytes of the staging buffer
        self._large: bytearray | None = None  # the frame being read into a buffer of its own
        self._filled = 0  # bytes of `_large` read so far
        self._lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large is not None:
            return memoryview(self._large)[self._filled:]
        if self._end == len(self._staging):  # full: keep the unread tail, at the front
            tail = self._end - self._start
            view = memoryview(self._staging)  # one memmove (a bytearray slice would be copied, then copied in)
            view[:tail] = view[self._start:self._end]
            self._start, self._end = 0, tail
        return memoryview(self._staging)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._filled += nbytes
            if self._filled == len(self._large):
                frame, self._large = self._large, None
                try:
                    self._deliver(memoryview(frame).toreadonly())  # kio reads read-only buffers only
                finally:
                    self._uncharge(len(frame))
            return
        self._end += nbytes
        self._cut_frames()

    def _cut_frames(self) -> None:
        buf = self._staging
        start, end, max_bytes = self._start, self._end, self.max_bytes  # locals: fewer loads a frame (for speed)
        while not self._lost and end - start >= 4:
            (size,) = _SIZE.unpack_from(buf, start)
            if size < 0 or size > max_bytes:
                self._refuse(FrameError(f"frame size {size} outside 0..{max_bytes}"))
                return
            have = end - start - 4
            if have >= size:
                begin = start + 4
                self._start = start = begin + size
                frame = bytes(memoryview(buf)[begin:start])  # one copy (a slice would be two)
                try:  # _deliver, without the call (once per answer)
                    self.on_frame(frame)
                except Exception as e:
                    self._failed(e)
            elif size + 4 > len(buf):  # never fits: read the rest straight into its own buffer
                self._large = records.frame_buffer(size)  # not zero-filled: see above
                if self.budget is not None:
                    self.budget.charge(size)
                memoryview(self._large)[:have] = memoryview(buf)[start + 4:end]  # one copy
                self._filled = have
                self._start = self._end = 0
                return
            else:
                return
        if start == end:
            self._start = self._end = 0

    def _deliver(self, frame: bytes | memoryview) -> None:
        try:
            self.on_frame(frame)
        except Exception as e:
            self._failed(e)

    def _failed(self, error: Exception) -> None:
        """`on_frame` raised: the connection is refused."""
        if isinstance(error, ConnectionError):  # the handler's own verdict: this connection is out of step
            self._refuse(error)
        else:  # never leave a half-dead connection in the pool: its futures would hang
            log.exception("upstream frame handler failed")  # called in the except clause
            self._refuse(ConnectionError(f"reader failed: {error!r}"))

    def _uncharge(self, size: int) -> None:
        if self.budget is not None:
            self.budget.release(size)

    def _drop_large(self) -> None:
        """A frame lost half read: its buffer goes unread, and its charge with it."""
        if self._large is not None:
            large, self._large = self._large, None
            self._uncharge(len(large))

    def _refuse(self, reason: BaseException) -> None:
        self._drop_large()
        self._notify_lost(reason)
        if self.transport is not None:
            self.transport.abort()

    def _notify_lost(self, reason: BaseException) -> None:
        if not self._lost:
            self._lost = True
            self.on_lost(reason)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._large is not None or self._end > self._start:
            exc = exc or FrameError("connection closed inside a frame")
        self._drop_large()
        self._notify_lost(exc or ConnectionError("connection closed by broker"))


_SIZE = struct.Struct(">i")


_KINDS: dict[type, tuple[bool, bool]] = {}  # request type -> (writes its own frame, reads its own answer)


def _kind(request_type: type) -> tuple[bool, bool]:
    """Whether requests of this type write their own frame (`frame_parts`: records.py's Produce and Fetch requests)
    and read their broker's answer themselves (`read_response`, handlers/produce.py), worked out once per type:
    `send` looks in _KINDS first and calls this only for a type not there yet (a kind is a pair: never falsy)."""
    kind = _KINDS[request_type] = (hasattr(request_type, "frame_parts"), hasattr(request_type, "read_response"))
    return kind


class UpstreamConnection:
    """One TCP connection to one broker. `send` writes at once (order = call order) and returns a future."""

    def __init__(self, host: str, port: int, label: str, security: UpstreamSecurity | None = None,
                 cluster: str = "", budget: ByteBudget | None = None):
        self.host, self.port, self.label = host, port, label
        self.budget = budget  # charged with each large answer while it arrives (FrameProtocol)
        self.security, self.cluster = security or PLAINTEXT.default, cluster
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by connect: send needs no get_running_loop()
        # (correlation id, what reads the answer: kio's response type, or the request itself when it has
        # `read_response`, future)
        self._pending: collections.deque[tuple[int, Any, asyncio.Future]] = collections.deque()
        self._ids = itertools.count(1)
        self.closed = False
        self.use_until: float | None = None  # loop time after which new requests go to a new connection
        self.retired = False  # replaced: closes once its pending requests are answered

    async def connect(self) -> None:
        try:
            await self._open()
        except BaseException:
            self.close()  # a login that timed out or lost its connection must not leave the socket open
            raise

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = self.security.ssl_context()
        transport, _ = await asyncio.wait_for(loop.create_connection(
            lambda: FrameProtocol(self._on_frame, self._on_lost, budget=self.budget), self.host, self.port, ssl=ctx,
            server_hostname=self.host if ctx else None), CONNECT_TIMEOUT_S)
        self._transport, self._loop = transport, loop
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small produce requests must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.security.sasl:
            await self._log_in()

    async def _log_in(self) -> None:
        """SASL before any other request (a broker closes a connection that sends one first). A refusal is
        logged once per cluster and reason and raised as a ConnectionError: to clients the cluster is down."""
        exchange = sasl_exchange(self.security)
        try:
            request = next(exchange)
            while True:
                answer = await asyncio.wait_for(self.send(request), CONNECT_TIMEOUT_S)
                request = exchange.send(answer)
        except StopIteration as done:
            lifetime_ms = done.value
        except AuthenticationFailed as e:
            self.close()
            last = _last_auth_failure.get(self.cluster)
            if last is None or last[0] is not self.security or last[1] != str(e):  # once, not at every retry
                _last_auth_failure[self.cluster] = (self.security, str(e))
                log.error("cluster %s (%s:%d): SASL authentication as %s failed: %s", self.cluster, self.host,
                          self.port, self.security.describe(), e)
            raise ConnectionError(f"SASL {self.security.mechanism} authentication refused") from None
        _last_auth_failure.pop(self.cluster, None)
        if lifetime_ms > 0:
            self.use_until = asyncio.get_running_loop().time() + lifetime_ms / 1000 * SESSION_USE

    def expiring(self) -> bool:
        """Its SASL session is near its end: no new requests (the broker would close it mid-way)."""
        return self.use_until is not None and asyncio.get_running_loop().time() >= self.use_until

    async def answered(self, timeout: float) -> None:
        """Until every request sent is answered or failed; past `timeout` the rest fail. A replacement must not
        carry a client's next request while an earlier one may still be appended here: a broker orders nothing
        across connections (an idempotent producer would see OUT_OF_ORDER_SEQUENCE_NUMBER)."""
        pending = [fut for _, _, fut in self._pending]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            if late:
                self.close()

    def retire(self) -> None:
        """No new requests; closed once the ones sent are answered."""
        self.retired = True
        if not self._pending:
            self.close()

    @overload
    def send(self, request: Any, expect_response: Literal[True] = ..., client_id: str | None = ...
             ) -> asyncio.Future: ...
    @overload
    def send(self, request: Any, expect_response: bool, client_id: str | None = ...) -> asyncio.Future | None: ...

    def send(self, request: Any, expect_response: bool = True, client_id: str | None = None) -> asyncio.Future | None:
        transport = self._transport
        if self.closed or transport is None:  # _open sets _transport and _loop together
            raise ConnectionError(f"{self.label}: connection closed")
        corr = next(self._ids) & 0x7FFFFFFF
        writes_own, reads_own = _KINDS.get(type(request)) or _kind(type(request))  # the dict first: a call less
        if client_id is None:
            client_id = codec.PROXY_CLIENT_ID
        if writes_own:  # its parts as `codec.encode_request_chunks` would give them, without a Chunks around them
            transport.writelines(request.frame_parts(corr, client_id))
        else:
            frame = codec.encode_request_chunks(request, corr, client_id)
            if isinstance(frame, codec.Chunks):
                transport.writelines(frame.parts)  # uvloop: one writev, the record sets not copied into a frame
            else:
                transport.write(frame)
        if not expect_response:
            return None
        fut = self._loop.create_future()  # type: ignore[union-attr]  # no get_running_loop(): a getpid() in 3.11
        # A request that reads its own answer (`read_response`, handlers/produce.py) is kept in place of kio's
        # response type: it carries __api_key__ as well (has_pending).
        resp_t = request if reads_own else codec.response_schema(request.__api_key__, request.__version__)
        self._pending.append((corr, resp_t, fut))
        return fut

    def has_pending(self, api_key: int) -> bool:
        return any(resp_t.__api_key__ == api_key for _, resp_t, _ in self._pending)

    def owns(self, future: asyncio.Future) -> bool:
        return any(f is future for _, _, f in self._pending)

    def _on_frame(self, frame: bytes | memoryview) -> None:
        (corr,) = _SIZE.unpack_from(frame, 0)  # the correlation id: an int32 as the size prefix is
        pending = self._pending
        if not pending or pending[0][0] != corr:
            raise ConnectionError(f"unexpected correlation id {corr}")
        _, resp_t, fut = pending.popleft()
        if self.retired and not pending:
            self.close()
        if fut.done():
            return
        try:
            if isinstance(resp_t, type):  # kio's response type
                fut.set_result(codec.decode_response(resp_t, frame)[1])
            else:  # the request itself, which reads its own answer
                fut.set_result(resp_t.read_response(frame))
        except codec.DecodeError as e:
            fut.set_exception(e)
        except Exception as e:  # a reader's bug: this call fails now, not at its timeout (it left _pending)
            log.exception("reading an answer from %s", self.label)
            fut.set_exception(codec.DecodeError(f"unreadable answer: {e}"))

    def _on_lost(self, reason: BaseException) -> None:
        self._fail_all(ConnectionError(f"{self.label}: {reason}"))

    def _fail_all(self, reason: BaseException) -> None:
        self.closed = True
        while self._pending:
            _, _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(reason)
        if self._transport is not None:
            # abort, not close: close() writes out what is buffered first and reports the loss only then, so with
            # a broker that stopped reading a half-read answer stayed allocated and charged, and requests whose
            # calls failed just now (perhaps retried elsewhere) would still reach the broker when it read again
            self._transport.abort()

    def close(self) -> None:
        self._fail_all(ConnectionError(f"{self.label}: closed"))


class UpstreamPool:
    """A few connections per broker; a client connection sticks to one slot so its requests keep their order."""

    def __init__(self, slots: int = 4, max_dedicated: int = 256, dedicated_wait_s: float = 5.0,
                 upstream: UpstreamSource = PLAINTEXT, budget: ByteBudget | None = None):
        self.slots = slots
        self.budget = budget  # the process' memory budget: large answers are charged to it while they arrive
        self.upstream = upstream
        self._retiring: set[UpstreamConnection] = set()  # replaced before their SASL session ends
        self.max_dedicated, self.dedicated_wait_s = max_dedicated, dedicated_wait_s
        self._conns: dict[tuple[str, int, int], UpstreamConnection] = {}
        self._locks: dict[tuple[str, int, int], asyncio.Lock] = {}
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._dedicated_slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._lent: set[UpstreamConnection] = set()  # dedicated connections in use

    def _new(self, host: str, port: int, label: str, cluster: str) -> UpstreamConnection:
        return UpstreamConnection(host, port, label, self.upstream.for_cluster(cluster), cluster, self.budget)

    def ready(self, host: str, port: int, slot: int) -> UpstreamConnection | None:
        """`get`'s connection when it is open and usable now (None: `get` must connect or replace it)."""
        conn = self._conns.get((host, port, slot % self.slots))
        # expiring() called only for a connection with a session lifetime (for speed: once a request)
        if conn is not None and not conn.closed and (conn.use_until is None or not conn.expiring()):
            return conn
        return None

    async def get(self, host: str, port: int, slot: int, cluster: str = "") -> UpstreamConnection:
        key = (host, port, slot % self.slots)
        conn = self._conns.get(key)
        if conn is not None and not conn.closed and not conn.expiring():
            return conn
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and not conn.closed and conn.expiring():
                self._retire(conn)
                await conn.answered(REQUEST_TIMEOUT_S)  # order: the slot's next request waits for these
            if conn is None or conn.closed or conn.retired:
                conn = self._new(host, port, f"{host}:{port}#{key[2]}", cluster)
                await conn.connect()
                self._conns[key] = conn
        return conn

    def _retire(self, conn: UpstreamConnection) -> None:
        self._retiring = {c for c in self._retiring if not c.closed}
        self._retiring.add(conn)
        conn.retire()

    async def dedicated(self, host: str, port: int, cluster: str = "") -> UpstreamConnection:
        """An idle connection used by nobody else until `release` (for calls that block at the broker).

        At most `max_dedicated` per broker: further callers queue, and raise PoolBusy after `dedicated_wait_s`.
        """
        slots = self._dedicated_slots.setdefault((host, port), asyncio.Semaphore(self.max_dedicated))
        try:
            async with asyncio.timeout(self.dedicated_wait_s):
                await slots.acquire()
        except TimeoutError:
            raise PoolBusy(f"all {self.max_dedicated} dedicated connections to {host}:{port} busy for "
                           f"{self.dedicated_wait_s:g} s") from None
        try:
            conn = await self._idle_or_new(host, port, cluster)
        except BaseException:
            slots.release()
            raise
        self._lent.add(conn)
        return conn

    async def _idle_or_new(self, host: str, port: int, cluster: str) -> UpstreamConnection:
        idle = self._idle.setdefault((host, port), [])
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.expiring():
                return conn
            conn.close()
        conn = self._new(host, port, f"{host}:{port}#dedicated", cluster)
        await conn.connect()
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn not in self._lent:
            return  # already released (a timeout closed it before its broker answered)
        self._lent.discard(conn)
        self._dedicated_slots[(conn.host, conn.port)].release()
        idle = self._idle.setdefault((conn.host, conn.port), [])
        if conn.closed or conn._pending or conn.expiring() or len(idle) >= MAX_IDLE_DEDICATED:  # pending: timed out
            conn.close()
        else:
            idle.append(conn)

    def usage(self) -> dict[str, dict[str, int]]:
        """Per broker address: pooled connections open, dedicated ones lent out and idle (read by metrics)."""
        out: dict[str, dict[str, int]] = {}

        def entry(host: str, port: int) -> dict[str, int]:
            return out.setdefault(f"{host}:{port}", {"pooled": 0, "dedicated_in_use": 0, "dedicated_idle": 0})
        for (host, port, _slot), conn in list(self._conns.items()):
            entry(host, port)["pooled"] += not conn.closed
        for conn in list(self._lent):
            entry(conn.host, conn.port)["dedicated_in_use"] += 1
        for (host, port), idle in list(self._idle.items()):
            entry(host, port)["dedicated_idle"] += len(idle)
        return out

    def dedicated_in_use(self, host: str, port: int) -> int:
        return sum(1 for c in self._lent if (c.host, c.port) == (host, port))

    def close_for(self, future: asyncio.Future, reason: str = "a request timed out") -> None:
        """Close the connection that owns `future` (its broker stopped answering, or the call ran out of
        time: its later answers would be matched to the wrong requests; or the drain closes an abandoned write's
        connection): `reason` is logged."""
        for conn in list(self._lent):
            if conn.owns(future):
                log.warning("closing upstream %s (dedicated): %s", conn.label, reason)
                conn.close()
                self.release(conn)
        for conn in [*self._conns.values(), *self._retiring]:
            if conn.owns(future):
                log.warning("closing upstream %s: %s", conn.label, reason)
                conn.close()

    def close_pending(self, api_key: int) -> int:
        """Close every connection with a request of `api_key` unanswered (its requests fail); returns how many."""
        busy = [c for c in (*self._conns.values(), *self._retiring)  # produce: pooled only
                if not c.closed and c.has_pending(api_key)]
        for conn in busy:
            log.warning("closing upstream %s: api %d requests still unanswered", conn.label, api_key)
            conn.close()
        return len(busy)

    def close(self) -> None:
        for conn in [*self._conns.values(), *self._retiring]:
            conn.close()
        self._conns.clear()
        self._retiring.clear()
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
