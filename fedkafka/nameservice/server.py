"""The name service's Kafka endpoint: a client bootstraps here and is relayed to a proxy of its pool.

The first request's header carries the client.id; the resolver maps it to a pool, and the whole
connection is then relayed byte for byte to one proxy of that pool. The proxy's own Metadata answer
lists its pool's proxies as brokers, so the client moves there directly after bootstrap; any other
request it sends first (librdkafka up to 2.9 may send FindCoordinator, InitProducerId on the bootstrap
connection) is answered by that proxy too. Only the first frame is parsed, for the client.id.

Listeners (docs/DESIGN.md §11): a client is relayed only to a proxy listener of the security protocol it came
in with. TLS ends here and starts again towards the proxy (verified against the CA); SASL is not looked at:
its frames are relayed, and the proxy authenticates the client.

Limits (docs/OPERATIONS.md): open connections in total and per client address (over the cap a connection is
accepted and closed at once), and the first request must arrive within a deadline from the moment the
connection opened (a silent or trickling connection costs a socket for that long, not forever). On a TLS
listener a connection is counted as it is accepted, before its handshake, and the handshake is part of that
deadline (`security.tls_accept`, docs/DESIGN.md §11). A renewed certificate serves the handshakes after it
(`security.server_tls`: the files are looked at every few seconds, and on SIGHUP).

The client's address (docs/DESIGN.md §3.4): with `--send-proxy-header` each relayed connection to a proxy starts
with a PROXY protocol v2 header naming the client (`security.proxy_header`), which a proxy that trusts this host
(`--proxy-header-from`) takes as the connection's address. Without it the proxies see this host as every relayed
client's address.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import ssl
import struct

from fedkafka.nameservice.resolver import ProxyAddress, Resolver, ResolverError
from fedkafka.protocol.framing import FrameError, read_frame, with_size_prefix
from fedkafka.proxy.core.limits import ConnectionCounts
from fedkafka.security import proxy_header
from fedkafka.security.listeners import Listener, TlsFiles
from fedkafka.security.server_tls import ServerTls
from fedkafka.security.tls_accept import Accepting

# The first frame only needs to carry a request header (ApiVersions or Metadata in practice).
FIRST_FRAME_MAX_BYTES = 1024 * 1024

log = logging.getLogger("fedkafka.nameservice")
_HEADER_FIXED = struct.Struct(">hhih")  # api_key, api_version, correlation_id, client_id length


def client_id_of(frame: bytes) -> str:
    """client.id from a request header (v1 and v2 both carry it as a classic nullable string)."""
    if len(frame) < _HEADER_FIXED.size:
        raise FrameError(f"request header truncated ({len(frame)} bytes)")
    _key, _version, _corr, length = _HEADER_FIXED.unpack_from(frame)
    if length < 0:
        return ""
    end = _HEADER_FIXED.size + length
    if end > len(frame):
        raise FrameError("client.id runs past the end of the frame")
    return frame[_HEADER_FIXED.size:end].decode("utf-8", errors="replace")


def order_candidates(client_id: str, proxies: tuple[ProxyAddress, ...]) -> list[ProxyAddress]:
    """Deterministic preference per client (spreads clients, keeps one client on one proxy)."""
    def weight(p: ProxyAddress) -> bytes:
        return hashlib.blake2b(f"{client_id}\0{p.node_id}".encode(), digest_size=8).digest()
    return sorted(proxies, key=weight, reverse=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: dict, direction: str) -> None:
    try:
        while chunk := await reader.read(256 * 1024):
            counts[direction] += len(chunk)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class _ClientProtocol(asyncio.StreamReaderProtocol):
    """A client connection: counted as it is accepted, its TLS handshake (on a TLS listener) after that
    (`Accepting`), then served as a stream pair by `on_client(reader, writer, accepted_at)`; its count is let go
    when that ends."""

    def __init__(self, on_client, accepting: Accepting, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(asyncio.StreamReader(limit=64 * 1024, loop=loop), self._served, loop=loop)
        self._on_client = on_client
        self._accepting = accepting
        self._clock = loop.time
        self._accepted_at = 0.0

    def connection_made(self, transport) -> None:
        self._accepted_at = self._clock()
        self._accepting.accepted(transport, self, super().connection_made)

    async def _served(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._on_client(reader, writer, self._accepted_at)
        finally:
            self._accepting.left()


class NameServiceServer:
    def __init__(self, resolver: Resolver, max_frame_bytes: int = FIRST_FRAME_MAX_BYTES,
                 connect_timeout: float = 3.0, header_timeout: float = 10.0, max_connections: int = 10_000,
                 max_connections_per_ip: int = 1_000, tls: TlsFiles | None = None, proxy_header: bool = False,
                 relay_source: str | None = None) -> None:
        self.resolver = resolver
        # each relayed connection starts with a PROXY v2 header naming the client (the proxies must trust this
        # host: --proxy-header-from), so ACL hosts, per-IP caps and password checks see the client, not us
        self.proxy_header = proxy_header
        # the local address relayed connections leave from (None: the system's choice): one the proxies trust,
        # kept apart from this host's own clients, whose direct connections must not come from a trusted address
        self.relay_source = relay_source
        self.tls = tls or TlsFiles()
        self._to_proxies: tuple[int, ssl.SSLContext] | None = None  # made on the first TLS relay (and renewal)
        self.max_frame_bytes = max_frame_bytes
        self.connect_timeout = connect_timeout
        self.header_timeout = header_timeout
        self.counts = ConnectionCounts(max_connections, max_connections_per_ip)
        # read by metrics: connections relayed per pool, connections closed unrelayed per reason, bytes relayed
        self.relayed: collections.Counter[str] = collections.Counter()
        self.unrelayed: collections.Counter[str] = collections.Counter()
        self.relayed_bytes: collections.Counter[str] = collections.Counter({"in": 0, "out": 0})
        self._servers: list[asyncio.Server] = []
        self.server_tls: ServerTls | None = None  # the TLS listeners' certificate, renewed when its files change
        self.tls_listeners: list[Listener] = []

    async def start(self, host: str, port: int, protocol: str = "PLAINTEXT") -> tuple[str, int]:
        """Listen for clients using `protocol`; returns the bound address (port 0: a free one). A TLS listener
        accepts TCP: each connection is counted, then starts TLS within the header deadline (`_ClientProtocol`)."""
        listener = Listener(protocol, host, port)
        if listener.tls and self.server_tls is None:
            self.server_tls = ServerTls(self.tls)
        ssl_ctx = self.server_tls if listener.tls else None
        loop = asyncio.get_running_loop()
        on_client = functools.partial(self._handle, listener)

        def client() -> _ClientProtocol:
            return _ClientProtocol(on_client, Accepting(loop, self.counts.admission, ssl_ctx, self.header_timeout),
                                   loop)

        server = await loop.create_server(client, host, port, backlog=1024)
        self._servers.append(server)
        sock = server.sockets[0].getsockname()
        if listener.tls:
            self.tls_listeners.append(Listener(protocol, host, sock[1]))
        return sock[0], sock[1]

    def serving(self) -> bool:
        return bool(self._servers) and all(s.is_serving() for s in self._servers)

    async def serve_forever(self) -> None:
        await asyncio.gather(*(s.serve_forever() for s in self._servers))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()

    async def _connect(self, client_id: str, listener: Listener,
                       client: asyncio.StreamWriter) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
        answer = await self.resolver.resolve(client_id)
        candidates = [(p, e) for p in order_candidates(client_id, answer.proxies)
                      if (e := p.endpoint(listener.protocol)) is not None]
        if not candidates:
            raise ResolverError(f"pool {answer.pool!r} of client {client_id!r} has no live proxy with a "
                                f"{listener.protocol} listener")
        last: Exception | None = None
        for proxy, (host, port) in candidates:
            try:
                return answer.pool, *await asyncio.wait_for(self._open(host, port, listener, client),
                                                            self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                last = exc
                log.warning("proxy %s (%s:%s, %s) of pool %s unreachable: %s", proxy.node_id, host, port,
                            listener.protocol, answer.pool, exc)
        raise ResolverError(f"no proxy of pool {answer.pool!r} reachable ({last})")

    async def _open(self, host: str, port: int, listener: Listener, client: asyncio.StreamWriter):
        """A connection to the proxy at host:port for `client`'s relay: TLS on a TLS listener, and with
        `proxy_header` its PROXY v2 header first, in clear (before TLS), naming the client's address and port and
        the address it connected to."""
        local = (self.relay_source, 0) if self.relay_source else None
        if not self.proxy_header:
            if not listener.tls:
                return await asyncio.open_connection(host, port, local_addr=local)
            return await asyncio.open_connection(host, port, ssl=self._context_to_proxies(), server_hostname=host,
                                                 local_addr=local)
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        try:
            writer.write(proxy_header.encode(client.get_extra_info("peername"), client.get_extra_info("sockname")))
            await writer.drain()
            if listener.tls:
                await writer.start_tls(self._context_to_proxies(), server_hostname=host)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    def _context_to_proxies(self) -> ssl.SSLContext:
        """The TLS context towards the proxies: made again after the TLS files were renewed (a new CA verifies
        the proxies from then on)."""
        renewals = self.server_tls.renewals if self.server_tls is not None else 0
        if self._to_proxies is None or self._to_proxies[0] != renewals:
            self._to_proxies = renewals, self.tls.client_context()
        return self._to_proxies[1]

    async def _first_frame(self, reader: asyncio.StreamReader, accepted_at: float) -> bytes | None:
        try:
            async with asyncio.timeout_at(accepted_at + self.header_timeout):
                return await read_frame(reader, self.max_frame_bytes)
        except TimeoutError:
            raise FrameError(f"no complete first request within {self.header_timeout:g} s "
                             f"(--header-timeout)") from None

    async def _handle(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      accepted_at: float) -> None:
        """An admitted connection (its TLS handshake done), accepted at `accepted_at` (loop time): relayed to a
        proxy once its first request names its client.id. Any failure this does not expect closes the connection,
        counted (`unrelayed["error"]`) and logged in one line: a client must not be able to fill the log with
        tracebacks."""
        try:
            await self._relay(listener, reader, writer, accepted_at)
        except Exception as exc:  # the last line of defence of one connection's task
            self.unrelayed["error"] += 1
            log.error("closing connection from %s after an unexpected %s: %.200s", writer.get_extra_info("peername"),
                      type(exc).__name__, exc)
            writer.close()

    async def _relay(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     accepted_at: float) -> None:
        peer = writer.get_extra_info("peername")
        try:
            frame = await self._first_frame(reader, accepted_at)
            if frame is None:
                writer.close()
                return
            client_id = client_id_of(frame)
            pool, up_reader, up_writer = await self._connect(client_id, listener, writer)
        except (FrameError, ResolverError) as exc:
            self.unrelayed["frame" if isinstance(exc, FrameError) else "no_proxy"] += 1
            log.warning("closing connection from %s: %.300s", peer, exc)
            writer.close()
            return
        except ConnectionError:
            self.unrelayed["client_gone"] += 1
            writer.close()
            return
        self.relayed[pool] += 1
        try:
            up_writer.write(with_size_prefix(frame))
            self.relayed_bytes["in"] += len(frame) + 4
            await asyncio.gather(_pump(reader, up_writer, self.relayed_bytes, "in"),
                                 _pump(up_reader, writer, self.relayed_bytes, "out"))
        finally:
            up_writer.close()
