"""The name service's Kafka endpoint: a client bootstraps here and is relayed to a proxy of its pool.

The first request's header carries the client.id; the resolver maps it to a pool, and the whole
connection is then relayed byte for byte to one proxy of that pool. The proxy's own Metadata answer
lists its pool's proxies as brokers, so the client moves there directly after bootstrap; any other
request it sends first (librdkafka up to 2.9 may send FindCoordinator, InitProducerId on the bootstrap
connection) is answered by that proxy too. Only the first frame is parsed, for the client.id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct

from fedkafka.nameservice.resolver import ProxyAddress, Resolver, ResolverError
from fedkafka.protocol.framing import DEFAULT_MAX_FRAME_BYTES, FrameError, read_frame, with_size_prefix

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


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(256 * 1024):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class NameServiceServer:
    def __init__(self, resolver: Resolver, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 connect_timeout: float = 3.0) -> None:
        self.resolver = resolver
        self.max_frame_bytes = max_frame_bytes
        self.connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connect(self, client_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        answer = await self.resolver.resolve(client_id)
        if not answer.proxies:
            raise ResolverError(f"pool {answer.pool!r} of client {client_id!r} has no live proxy")
        last: Exception | None = None
        for proxy in order_candidates(client_id, answer.proxies):
            try:
                return await asyncio.wait_for(asyncio.open_connection(proxy.host, proxy.port), self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                last = exc
                log.warning("proxy %s:%s of pool %s unreachable: %s", proxy.host, proxy.port, answer.pool, exc)
        raise ResolverError(f"no proxy of pool {answer.pool!r} reachable ({last})")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            frame = await read_frame(reader, self.max_frame_bytes)
            if frame is None:
                return
            client_id = client_id_of(frame)
            up_reader, up_writer = await self._connect(client_id)
        except (FrameError, ResolverError) as exc:
            log.warning("closing connection from %s: %s", peer, exc)
            writer.close()
            return
        except ConnectionError:
            writer.close()
            return
        up_writer.write(with_size_prefix(frame))
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
