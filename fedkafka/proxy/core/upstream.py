"""Connections to physical brokers: pipelined requests, responses matched in order (aiokafka's conn.py model)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import socket
from typing import Any, Literal, overload

from kio.static.protocol import ResponsePayload

from fedkafka.fencing import UPSTREAM_REQUEST_TIMEOUT_S
from fedkafka.protocol import codec
from fedkafka.protocol.framing import FrameError, read_frame

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = UPSTREAM_REQUEST_TIMEOUT_S
MAX_RESPONSE_BYTES = 1 << 30
PRODUCE_API_KEY = 0
MAX_IDLE_DEDICATED = 64  # per broker; more are closed on release


class PoolBusy(Exception):
    """Every dedicated connection to a broker is in use and none came free in time (not a broker fault)."""


class UpstreamConnection:
    """One TCP connection to one broker. `send` writes at once (order = call order) and returns a future."""

    def __init__(self, host: str, port: int, label: str):
        self.host, self.port, self.label = host, port, label
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: collections.deque[tuple[int, type[ResponsePayload], asyncio.Future]] = collections.deque()
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task | None = None
        self.closed = False

    async def connect(self) -> None:
        self._reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 20), CONNECT_TIMEOUT_S)
        self._writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:  # small produce requests must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader_task = asyncio.create_task(self._read_loop(), name=f"upstream-{self.label}")

    @overload
    def send(self, request: Any, expect_response: Literal[True] = ..., client_id: str | None = ...
             ) -> asyncio.Future: ...
    @overload
    def send(self, request: Any, expect_response: bool, client_id: str | None = ...) -> asyncio.Future | None: ...

    def send(self, request: Any, expect_response: bool = True, client_id: str | None = None) -> asyncio.Future | None:
        if self.closed or self._writer is None:
            raise ConnectionError(f"{self.label}: connection closed")
        corr = next(self._ids) & 0x7FFFFFFF
        if client_id is None:
            self._writer.write(codec.encode_request(request, corr))
        else:
            self._writer.write(codec.encode_request(request, corr, client_id))
        if not expect_response:
            return None
        fut = asyncio.get_running_loop().create_future()
        resp_t = codec.response_schema(request.__api_key__, request.__version__)
        self._pending.append((corr, resp_t, fut))
        return fut

    def has_pending(self, api_key: int) -> bool:
        return any(resp_t.__api_key__ == api_key for _, resp_t, _ in self._pending)

    def owns(self, future: asyncio.Future) -> bool:
        return any(f is future for _, _, f in self._pending)

    async def drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    async def _read_loop(self) -> None:
        reason: BaseException = ConnectionError(f"{self.label}: connection closed by broker")
        assert self._reader is not None  # connect() sets it before it starts this loop
        try:
            while True:
                frame = await read_frame(self._reader, MAX_RESPONSE_BYTES)
                if frame is None:
                    break
                corr = codec.response_correlation_id(frame)
                if not self._pending or self._pending[0][0] != corr:
                    reason = ConnectionError(f"{self.label}: unexpected correlation id {corr}")
                    break
                _, resp_t, fut = self._pending.popleft()
                if fut.done():
                    continue
                try:
                    fut.set_result(codec.decode_response(resp_t, frame)[1])
                except codec.DecodeError as e:
                    fut.set_exception(e)
        except (OSError, FrameError, asyncio.IncompleteReadError) as e:
            reason = ConnectionError(f"{self.label}: {e}")
        except asyncio.CancelledError:
            reason = ConnectionError(f"{self.label}: closed")
        except Exception as e:  # never leave a half-dead connection in the pool: its futures would hang
            log.exception("upstream %s: reader failed", self.label)
            reason = ConnectionError(f"{self.label}: reader failed: {e!r}")
        self._fail_all(reason)

    def _fail_all(self, reason: BaseException) -> None:
        self.closed = True
        while self._pending:
            _, _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(reason)
        if self._writer is not None:
            self._writer.close()

    def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._fail_all(ConnectionError(f"{self.label}: closed"))


class UpstreamPool:
    """A few connections per broker; a client connection sticks to one slot so its requests keep their order."""

    def __init__(self, slots: int = 4, max_dedicated: int = 256, dedicated_wait_s: float = 5.0):
        self.slots = slots
        self.max_dedicated, self.dedicated_wait_s = max_dedicated, dedicated_wait_s
        self._conns: dict[tuple[str, int, int], UpstreamConnection] = {}
        self._locks: dict[tuple[str, int, int], asyncio.Lock] = {}
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._dedicated_slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._lent: set[UpstreamConnection] = set()  # dedicated connections in use

    async def get(self, host: str, port: int, slot: int) -> UpstreamConnection:
        key = (host, port, slot % self.slots)
        conn = self._conns.get(key)
        if conn is not None and not conn.closed:
            return conn
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is None or conn.closed:
                conn = UpstreamConnection(host, port, f"{host}:{port}#{key[2]}")
                await conn.connect()
                self._conns[key] = conn
        return conn

    async def dedicated(self, host: str, port: int) -> UpstreamConnection:
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
            conn = await self._idle_or_new(host, port)
        except BaseException:
            slots.release()
            raise
        self._lent.add(conn)
        return conn

    async def _idle_or_new(self, host: str, port: int) -> UpstreamConnection:
        idle = self._idle.setdefault((host, port), [])
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        conn = UpstreamConnection(host, port, f"{host}:{port}#dedicated")
        await conn.connect()
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn not in self._lent:
            return  # already released (a timeout closed it before its broker answered)
        self._lent.discard(conn)
        self._dedicated_slots[(conn.host, conn.port)].release()
        idle = self._idle.setdefault((conn.host, conn.port), [])
        if conn.closed or conn._pending or len(idle) >= MAX_IDLE_DEDICATED:  # pending: timed out, unusable
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

    def close_for(self, future: asyncio.Future) -> None:
        """Close the connection that owns `future` (its broker stopped answering, or the call ran out of
        time): its later answers would be matched to the wrong requests."""
        for conn in list(self._lent):
            if conn.owns(future):
                conn.close()
                self.release(conn)
        for conn in list(self._conns.values()):
            if conn.owns(future):
                log.warning("closing upstream %s: a request timed out", conn.label)
                conn.close()

    def close_pending(self, api_key: int) -> int:
        """Close every connection with a request of `api_key` unanswered (its requests fail); returns how many."""
        busy = [c for c in self._conns.values() if not c.closed and c.has_pending(api_key)]  # produce: pooled only
        for conn in busy:
            log.warning("closing upstream %s: api %d requests still unanswered", conn.label, api_key)
            conn.close()
        return len(busy)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
