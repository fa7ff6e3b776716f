"""TLS listeners against hostile clients, over real sockets and real certificates to an in-process proxy (no Kafka
needed): a connection counts against the connection caps from the moment it is accepted, not once its TLS handshake
is done, and a handshake that never comes is cut at the frame timeout (asyncio's own default was 60 s).

No test depends on how fast the machine is: the guards around waits are only there so a regression fails instead of
hanging."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

import pytest
from cryptography import x509
from security.pki import Pki, make_pki

from fedkafka.protocol import codec
from fedkafka.proxy.core.limits import Limits
from fedkafka.security.listeners import Listener, TlsFiles
from proxy.test_limits_unit import GUARD_S, _Proxy, api_versions_frame, ask_api_versions, closed_by_peer

LOOPS = ["asyncio", "uvloop"]


def _run(loop: str, scenario) -> None:
    (asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run)(scenario())


class TlsClients:
    """The clients of a TLS listener on `self.port` (`self.pki`'s CA), and its server's connection counts."""

    async def silent(self, host: str = "127.0.0.1"):
        """A TCP connection that never sends a ClientHello."""
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(host, 0))

    async def tls(self, host: str = "127.0.0.1", certificate: bool = False):
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        if certificate:
            ctx.load_cert_chain(self.pki.client_cert, self.pki.client_key)
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(host, 0), ssl=ctx,
                                             server_hostname="localhost")

    async def until_counted(self, ip: str, n: int) -> bool:
        try:
            async with asyncio.timeout(GUARD_S):
                while self.server.counts.by_ip[ip] != n:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False
        return True


class TlsProxy(TlsClients, _Proxy):
    """A real ProxyServer in this event loop with one SSL listener on a free port (client certificates
    requested), an empty view file."""

    def __init__(self, tmp_path, pki: Pki, limits: Limits):
        self.pki = pki
        super().__init__(tmp_path, limits, listeners=(Listener("SSL", "127.0.0.1", 0),),
                         tls=TlsFiles(cert=pki.server_cert, key=pki.server_key, ca=pki.ca, client_auth="requested"))


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_connections_count_against_the_caps_before_their_handshake(tmp_path, loop):
    """Connections that never send a ClientHello take the per-address cap: the next one from that address is
    closed before any handshake (counted as refused); another address still gets a handshake and answers, its
    client certificate naming its principal as before."""
    pki = make_pki(tmp_path / "pki")

    async def scenario():
        async with TlsProxy(tmp_path, pki, Limits(max_connections_per_ip=3)) as px:
            silent = [await px.silent() for _ in range(3)]
            assert await px.until_counted("127.0.0.1", 3)
            assert px.server.connections == set()  # none was handed to a ClientConnection: no handshake yet
            refused_r, _ = await px.silent()
            assert await closed_by_peer(refused_r)
            assert px.server.counts.refused["max-connections-per-ip"] == 1
            r, w = await px.tls("127.0.0.2", certificate=True)
            assert await ask_api_versions(r, w) == 1
            (conn,) = px.server.connections
            subject = x509.load_pem_x509_certificate(pki.client_cert.read_bytes()).subject.rfc4514_string()
            assert conn.session.principal == f"User:{subject}" and conn.reader.over_tls
            assert px.server.counts.total == 4
            for _, sw in silent:  # they leave: counted no more
                sw.close()
            w.close()
            assert await px.until_counted("127.0.0.1", 0) and await px.until_counted("127.0.0.2", 0)
            assert px.server.counts.total == 0

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tls_handshake_that_never_comes_is_cut_at_the_frame_timeout_and_its_count_let_go(tmp_path, loop):
    """asyncio's default handshake timeout was 60 s: a connection that sends nothing held a socket and (now) a
    place under the caps that long. It gets the frame timeout, then the proxy closes it; a client that does
    handshake is served meanwhile."""
    pki = make_pki(tmp_path / "pki")

    async def scenario():
        async with TlsProxy(tmp_path, pki, Limits(frame_timeout_s=0.5)) as px:
            silent_r, _silent_w = await px.silent()
            half_r, half_w = await px.silent()
            half_w.write(b"\x16\x03\x01")  # the start of a TLS record, then nothing
            assert await px.until_counted("127.0.0.1", 2)
            r, w = await px.tls("127.0.0.2")
            assert await ask_api_versions(r, w) == 1
            assert await closed_by_peer(silent_r) and await closed_by_peer(half_r)
            assert await px.until_counted("127.0.0.1", 0)
            assert await ask_api_versions(r, w, 2) == 2  # the served one is not cut by the handshake timeout

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_frames_pipelined_right_after_the_handshake_arrive_whole_and_in_order(tmp_path, loop):
    """The connection starts TLS itself: bytes the client sends with its last handshake message may reach the
    reader before it has the TLS transport. Many requests written at once, more than the staging buffer holds,
    are all answered in order."""
    pki = make_pki(tmp_path / "pki")

    async def scenario():
        async with TlsProxy(tmp_path, pki, Limits()) as px:
            client = socket.socket()
            client.connect(("127.0.0.1", px.port))
            ctx = ssl.create_default_context(cafile=pki.ca)
            r, w = await asyncio.open_connection(sock=client, ssl=ctx, server_hostname="localhost")
            w.write(b"".join(api_versions_frame(c) for c in range(1, 5001)))  # ~300 KiB
            async with asyncio.timeout(GUARD_S):
                got = []
                for _ in range(5000):
                    size = struct.unpack(">i", await r.readexactly(4))[0]
                    got.append(codec.response_correlation_id(await r.readexactly(size)))
            assert got == list(range(1, 5001))

    _run(loop, scenario)
