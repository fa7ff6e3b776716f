"""What one client may cost a proxy: connections, bytes held, time, upstream connections.

Every limit answers "what does a hostile or broken client cost the others"; defaults are documented in
docs/OPERATIONS.md (section "Limits") and the backpressure design in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fedkafka.protocol.codec import MAX_REQUEST_ELEMENTS
from fedkafka.protocol.framing import DEFAULT_MAX_FRAME_BYTES

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES  # 16 MiB: see framing.py
    # on a SASL listener before authentication (Kafka's sasl.server.max.receive.size): a larger frame closes it
    max_pre_auth_frame_bytes: int = 512 * 1024
    # array elements (and tagged fields) in one request, all arrays together: see codec.py and bounds.py
    max_request_elements: int = MAX_REQUEST_ELEMENTS
    max_connections: int = 10_000  # per process; over it a connection is accepted and closed at once
    max_connections_per_ip: int = 1_000
    max_inflight_requests: int = 64  # per connection (librdkafka's max.in.flight default is 1,000,000)
    max_inflight_bytes: int = 64 * MiB  # per connection: requests read but not yet answered, plus answers
    max_buffered_bytes: int = 512 * MiB  # per process: the sum over all connections (the memory budget)
    frame_timeout_s: float = 30.0  # a frame must arrive (and an answer be taken) within this once started
    idle_timeout_s: float = 600.0  # a connection with nothing in flight and no request for this long is closed
    max_fetch_wait_ms: int = 30_000  # a Fetch's max_wait is clamped to this
    max_dedicated_per_broker: int = 256  # upstream connections for blocking calls, per broker
    # ... and per client connection (Kafka clients keep one Fetch per broker in flight; a client pipelining
    # many must not take every upstream connection of a broker from the others). Must cover the brokers one
    # Fetch spans (one call per cluster and leader), or such a Fetch waits for its own calls.
    max_dedicated_per_connection: int = 16
    dedicated_wait_s: float = 5.0  # how long a blocking call waits for one before a retriable error

    def problems(self) -> list[str]:
        """What is inconsistent (empty: fine). A frame must fit one connection's budget, and that the process'."""
        out = []
        if self.max_frame_bytes < 1024:
            out.append("--max-frame-bytes must be at least 1024")
        if self.max_pre_auth_frame_bytes < 1024:
            out.append("--max-pre-auth-frame-bytes must be at least 1024")
        if self.max_inflight_bytes < self.max_frame_bytes:
            out.append("--max-inflight-bytes must be at least --max-frame-bytes")
        if self.max_buffered_bytes < self.max_inflight_bytes:
            out.append("--max-buffered-bytes must be at least --max-inflight-bytes")
        if self.max_request_elements < 1000:
            out.append("--max-request-elements must be at least 1000")
        for name in ("max_connections", "max_connections_per_ip", "max_inflight_requests",
                     "max_dedicated_per_broker", "max_dedicated_per_connection"):
            if getattr(self, name) < 1:
                out.append(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("frame_timeout_s", "idle_timeout_s", "dedicated_wait_s"):
            if getattr(self, name) <= 0:
                out.append(f"--{name.removesuffix('_s').replace('_', '-')} must be positive")
        if self.max_fetch_wait_ms < 0:
            out.append("--max-fetch-wait-ms must not be negative")
        return out


class ByteBudget:
    """A count of bytes held, with waiters served first come first served (a large frame is never starved by
    a stream of small ones). `charge` takes bytes without waiting (an answer that already exists) and may
    overdraw; readers then wait until enough is released."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    def free_now(self, n: int) -> bool:
        return not self._waiters and self.used + n <= self.limit

    def take_now(self, n: int) -> bool:
        """`free_now(n)`, and then take them: whether it did."""
        if self._waiters or self.used + n > self.limit:
            return False
        self.used += n
        return True

    def take_with(self, other: ByteBudget, n: int) -> bool:
        """`take_now(n)` here and in `other` (a connection's budget and the process'), both or neither: whether it
        did (one call where two were made a request)."""
        if self._waiters or self.used + n > self.limit or other._waiters or other.used + n > other.limit:
            return False
        self.used += n
        other.used += n
        return True

    def take_spare(self, n: int, share: int = 2) -> bool:
        """Take n bytes for something a reader can do without (a larger staging buffer), only while nobody waits
        and at most 1/`share` of the limit is used after it: what such buffers take together never exceeds half
        the budget, so they never keep a waiting request (at most HELD_WHOLE_BYTES) from the other half
        (docs/DESIGN.md §4.12); a second growth asks with share 4, so the many connections it would serve never
        leave a new connection's first growth without room. Whether it did."""
        if self._waiters or self.used + n > self.limit // max(share, 2):
            return False
        self.used += n
        return True

    async def acquire(self, n: int, timeout: float | None = None) -> bool:
        """Take n bytes, waiting in line for them; whether it did: False once `timeout` seconds passed first,
        nothing taken. Such a wait keeps its place in line until its own task runs, not only until its timer
        fires: bytes given back in between (a wait timing out in the same loop turn, closing its connection) are
        still granted to it first come first served (a timer cancelling the future lost the place, and `_grant`
        gave the bytes to the next in line)."""
        if self.free_now(n):
            self.used += n
            return True
        fut = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            if timeout is None:
                await fut
            else:
                await asyncio.wait((fut,), timeout=timeout)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled
            else:
                # `_grant` drops an entry whose future is done (cancelled) as it reaches it: bytes released
                # between the cancellation and this handler (another cancelled reader's) left none to remove
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._grant()
            raise
        if fut.done():
            return True
        fut.cancel()
        self._waiters.remove(entry)  # not granted: still in line (`_grant` drops only done entries)
        self._grant()
        return False

    def charge(self, n: int) -> None:
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n
        if self._waiters:  # else nobody to grant to: no call (twice a request)
            self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self.used += n
                fut.set_result(None)


class ConnectionCounts:
    """Open client connections, in total and per address; refusals are counted and logged (at most once a
    second, with the count since the last line, so a flood does not flood the log)."""

    def __init__(self, max_total: int, max_per_ip: int):
        self.max_total, self.max_per_ip = max_total, max_per_ip
        self.by_ip: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.refused: collections.Counter[str] = collections.Counter()  # reason -> count since start
        self._unlogged = 0
        self._logged_at = 0.0

    def admit(self, ip: str) -> bool:
        if self.total >= self.max_total:
            self._refuse(ip, "max-connections", f"{self.total} open connections (cap {self.max_total})")
            return False
        if self.by_ip[ip] >= self.max_per_ip:
            self._refuse(ip, "max-connections-per-ip",
                         f"{self.by_ip[ip]} open connections from {ip} (cap {self.max_per_ip})")
            return False
        self.total += 1
        self.by_ip[ip] += 1
        return True

    def admission(self, peer) -> Callable[[], None] | None:
        """A connection as it is accepted (before any TLS handshake; `tls_accept.Admit`), by its peer address: what
        lets it go once it ended, or None: refused (closed at once, the client sees a closed connection)."""
        ip = peer[0] if isinstance(peer, tuple) else str(peer)
        if not self.admit(ip):
            return None
        return functools.partial(self.leave, ip)

    def leave(self, ip: str) -> None:
        self.total -= 1
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]

    def _refuse(self, ip: str, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            log.warning("refusing connection from %s: %s [%s]; %d refused since the last such line, %s",
                        ip, detail, reason, self._unlogged, dict(self.refused))
            self._logged_at, self._unlogged = now, 0
