"""Accepting a client connection, TLS or not: counted against the connection caps as it is accepted, then its TLS
handshake within a timeout (docs/DESIGN.md §11, "TLS after admission").

asyncio and uvloop call a TLS server's protocol only once the handshake is done (`create_server(ssl=...)`, within
60 s by default): a server that counted its connections there let TCP connections that never sent a ClientHello
hold a socket each, uncounted, for a minute. So a TLS listener accepts TCP, and its protocol's connection_made
hands the connection to `Accepting`: counted (`admit`), then TLS started on it (`loop.start_tls`) within the
handshake timeout. Used by the proxy (`proxy.core.client_frames.ClientFrames`) and the name service
(`nameservice.server`). Their handshakes take the listener's `ServerTls.current()` context, so a renewed
certificate serves the connections accepted after it (`security.server_tls`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from fedkafka.security import proxy_header
from fedkafka.security.server_tls import ServerTls

log = logging.getLogger(__name__)

# a connection's admission: given its peer address when it is accepted, None (refused) or what lets it go
Admit = Callable[[object], Callable[[], None] | None]


class Accepting:
    """One accepted connection's admission and TLS handshake, run by its protocol's connection_made (`accepted`).
    `admit(peername)` (None: every connection is served) is asked first; None refuses the connection (aborted at
    once). With `tls` (a server context, or a listener's `ServerTls`: its current one) the connection then starts
    TLS itself within `handshake_timeout` seconds (None: asyncio's 60); a failed or late handshake closes it and
    lets its admission go. `left()` lets the admission go (once; the protocol calls it when the connection it
    served ends).

    A connection from one of the `trusted` sources (a relay: the name service) must start with a PROXY v2 header
    (`ProxyHeaderReader`), in clear before TLS, within the handshake timeout: its address is then the client's
    (`peer`), admitted and served as the client's; the header is read before the admission, so a relayed client is
    counted under its own address. Without a valid header such a connection is closed, one line logged."""

    def __init__(self, loop: asyncio.AbstractEventLoop, admit: Admit | None = None,
                 tls: ssl.SSLContext | ServerTls | None = None, handshake_timeout: float | None = None,
                 trusted: proxy_header.TrustedSources | None = None):
        self._loop = loop
        self._admit = admit
        self._leave: Callable[[], None] | None = None  # what `admit` returned
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._trusted = trusted
        self.peer: Any = None  # the client's address: its socket's peer, or what a trusted PROXY header named

    def accepted(self, transport: Any, protocol: asyncio.BaseProtocol, serve: Callable[[Any], None]) -> None:
        """From `protocol`'s connection_made: `serve(transport)` once the connection is admitted and (over TLS) its
        handshake is done, with the transport to serve it over (TLS: start_tls's). From a trusted source, its PROXY
        header is read first (`protocol` takes the transport back after it)."""
        peer = transport.get_extra_info("peername")
        if self._trusted and self._trusted.trusts(peer):
            def read(client: Any) -> None:
                transport.set_protocol(protocol)
                self._admitted(transport, protocol, serve, client)
            timeout = self._handshake_timeout if self._handshake_timeout is not None else 60.0
            transport.set_protocol(ProxyHeaderReader(self._loop, transport, peer, timeout, read))
            return
        self._admitted(transport, protocol, serve, peer)

    def _admitted(self, transport: Any, protocol: asyncio.BaseProtocol, serve: Callable[[Any], None],
                  peer: Any) -> None:
        self.peer = peer
        if self._admit is not None:
            self._leave = self._admit(peer)
            if self._leave is None:
                transport.abort()
                return
        if self._tls is None:
            serve(transport)
            return
        context = self._tls if isinstance(self._tls, ssl.SSLContext) else self._tls.current()
        start_tls = self._loop.start_tls(transport, protocol, context, server_side=True,
                                         ssl_handshake_timeout=self._handshake_timeout)
        self._handshake_step(start_tls, transport, serve)

    def _handshake_step(self, start_tls, transport, serve: Callable[[Any], None]) -> None:
        """Run `loop.start_tls` a step: the first one now, in connection_made (uvloop starts reading the socket as
        connection_made returns: the ClientHello must find the TLS layer there, not the protocol, and a task's
        first step would run after that read), the next once the future it waits for is done. Done, the
        connection is served; failed (or not within the handshake timeout), it is closed and its admission let
        go."""
        try:
            waiting = start_tls.send(None)
        except StopIteration as done:
            if done.value is None:  # lost as the handshake ended
                self._handshake_failed(transport, ConnectionResetError("connection lost"))
            else:
                serve(done.value)
            return
        except BaseException as e:
            self._handshake_failed(transport, e)
            if not isinstance(e, Exception):
                raise
            return
        if asyncio.isfuture(waiting):
            waiting._asyncio_future_blocking = False  # what a Task does with a future it was handed
            waiting.add_done_callback(lambda _: self._handshake_step(start_tls, transport, serve))
        else:  # a bare yield (none in asyncio's or uvloop's start_tls)
            self._loop.call_soon(self._handshake_step, start_tls, transport, serve)

    def _handshake_failed(self, transport, error: BaseException) -> None:
        transport.abort()
        self.left()
        log.debug("TLS handshake with %s failed: %r", transport.get_extra_info("peername"), error)

    def left(self) -> None:
        leave, self._leave = self._leave, None
        if leave is not None:
            leave()


class ProxyHeaderReader(asyncio.BufferedProtocol):
    """A trusted relay's connection while its PROXY v2 header is read: the socket reads into buffers of exactly the
    header's size (its 16 fixed bytes, then the length they announce), so not one byte after it is taken: a TLS
    ClientHello or the first Kafka frame stays for the protocol that serves the connection. Done, `read(client)`
    gets the client's address (a LOCAL header: the socket's peer); invalid, closed early or not within `timeout`
    seconds, the connection is aborted with one warning line."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: Any, peer: Any, timeout: float,
                 read: Callable[[Any], None]):
        self._transport = transport
        self._peer = peer
        self._read = read
        self._fixed: bytes | None = None
        self._buffer = bytearray(proxy_header.FIXED_BYTES)
        self._filled = 0
        self._timer: asyncio.TimerHandle | None = loop.call_later(timeout, self._fail, f"no complete PROXY header "
                                                                  f"within {timeout:g} s")

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._filled < len(self._buffer):
            return
        try:
            if self._fixed is None:
                self._fixed = bytes(self._buffer)
                length = proxy_header.body_length(self._fixed)
                if length:
                    self._buffer, self._filled = bytearray(length), 0
                    return
                self._buffer = bytearray()
            client = proxy_header.client_address(self._fixed, bytes(self._buffer))
        except proxy_header.HeaderError as exc:
            self._fail(str(exc))
            return
        self._stop_timer()
        self._read(self._peer if client is None else client)

    def eof_received(self) -> bool:
        self._fail(f"closed after {self._filled} bytes of its PROXY header")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()

    def _fail(self, reason: str) -> None:
        self._stop_timer()
        log.warning("closing connection from %s (a trusted relay, --proxy-header-from): %s", self._peer, reason)
        self._transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
