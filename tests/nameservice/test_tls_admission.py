"""The name service's TLS listener against hostile clients, over real sockets and real certificates, relaying to a
real in-process proxy (no Kafka needed): a connection counts against the connection caps from the moment it is
accepted, not once its TLS handshake is done, and a handshake that never comes is cut at the header deadline
(asyncio's own default was 60 s).

No test depends on how fast the machine is: the guards around waits are only there so a regression fails instead of
hanging."""

from __future__ import annotations

import asyncio
import logging

import pytest
from proxy.test_limits_unit import GUARD_S, ask_api_versions, closed_by_peer
from proxy.test_tls_admission_unit import LOOPS, TlsClients, TlsProxy
from security.pki import Pki, make_pki

from fedkafka.nameservice.resolver import ProxyAddress, StaticResolver
from fedkafka.nameservice.server import NameServiceServer
from fedkafka.proxy.core.limits import Limits
from fedkafka.security.listeners import TlsFiles


def _run(loop: str, scenario) -> None:
    (asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run)(scenario())


class _TlsNameService(TlsClients):
    """A NameServiceServer in this event loop with one SSL listener on a free port, relaying every client to the
    SSL listener of the proxy on `proxy_port`."""

    def __init__(self, pki: Pki, proxy_port: int, **limits):
        proxy = ProxyAddress(1, "127.0.0.1", proxy_port, listeners=(("SSL", "127.0.0.1", proxy_port),))
        self.pki = pki
        self.server = NameServiceServer(StaticResolver([proxy]), **limits,
                                        tls=TlsFiles(cert=pki.server_cert, key=pki.server_key, ca=pki.ca))

    async def __aenter__(self):
        _host, self.port = await self.server.start("127.0.0.1", 0, "SSL")
        return self

    async def __aexit__(self, *exc):
        await self.server.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_connections_count_against_the_caps_before_their_handshake(tmp_path, loop, caplog):
    """Connections that never send a ClientHello take the per-address cap: the next one from that address is
    closed before any handshake (counted as refused); another address still gets a handshake and is relayed to
    the proxy, which answers."""
    pki = make_pki(tmp_path / "pki")

    async def scenario():
        async with TlsProxy(tmp_path, pki, Limits()) as px, \
                _TlsNameService(pki, px.port, max_connections_per_ip=3, header_timeout=GUARD_S * 2) as ns:
            silent = [await ns.silent() for _ in range(3)]
            assert await ns.until_counted("127.0.0.1", 3)
            assert ns.server.relayed == {}
            refused_r, _ = await ns.silent()
            assert await closed_by_peer(refused_r)
            assert ns.server.counts.refused == {"max-connections-per-ip": 1}
            r, w = await ns.tls("127.0.0.2")
            assert await ask_api_versions(r, w) == 1  # answered by the proxy, through the name service
            assert ns.server.relayed == {"default": 1} and ns.server.counts.total == 4
            for _, sw in silent:  # they leave: counted no more
                sw.close()
            w.close()
            assert await ns.until_counted("127.0.0.1", 0) and await ns.until_counted("127.0.0.2", 0)
            assert ns.server.counts.total == 0

    with caplog.at_level(logging.WARNING):
        _run(loop, scenario)
    assert "[max-connections-per-ip]" in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tls_handshake_that_never_comes_is_cut_at_the_header_deadline_and_its_count_let_go(tmp_path, loop):
    """asyncio's default handshake timeout was 60 s: a connection that sends nothing held a socket and (now) a
    place under the caps that long. The handshake gets the header deadline (--header-timeout), then the name
    service closes the connection; a client that handshakes but sends no request is closed at the same deadline;
    a client that does send one is relayed meanwhile, and not cut by either."""
    pki = make_pki(tmp_path / "pki")

    async def scenario():
        async with TlsProxy(tmp_path, pki, Limits()) as px, _TlsNameService(pki, px.port, header_timeout=0.5) as ns:
            silent_r, _silent_w = await ns.silent()
            half_r, half_w = await ns.silent()
            half_w.write(b"\x16\x03\x01")  # the start of a TLS record, then nothing
            assert await ns.until_counted("127.0.0.1", 2)
            mute_r, _mute_w = await ns.tls("127.0.0.3")  # a handshake, then no request
            r, w = await ns.tls("127.0.0.2")
            assert await ask_api_versions(r, w) == 1
            assert await closed_by_peer(silent_r) and await closed_by_peer(half_r)
            assert await ns.until_counted("127.0.0.1", 0)
            assert await closed_by_peer(mute_r) and await ns.until_counted("127.0.0.3", 0)
            assert ns.server.unrelayed == {"frame": 1}
            assert await ask_api_versions(r, w, 2) == 2  # the relayed one is not cut by either deadline
            w.close()

    _run(loop, scenario)
