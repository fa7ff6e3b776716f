"""PROXY protocol v2 between the name service and the proxies (docs/DESIGN.md §3.4 and §11, "The client's address
through the name service"): the header's parsing, a real ProxyServer reading it only from trusted relays (before
any frame, before TLS) and taking its address for the session host and the per-IP cap, and a real NameServiceServer
sending it, over PLAINTEXT and TLS, on asyncio and uvloop. No broker: ApiVersions is answered by the proxy itself.

No test depends on how fast the machine is: the guards around waits only turn a hang into a failure."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import struct

import pytest
from proxy.test_limits_unit import GUARD_S, _Proxy, api_versions_frame, ask_api_versions, closed_by_peer
from proxy.test_tls_admission_unit import LOOPS

from fedkafka.nameservice.resolver import ProxyAddress, StaticResolver
from fedkafka.nameservice.server import NameServiceServer
from fedkafka.proxy.core.limits import Limits
from fedkafka.security import proxy_header
from fedkafka.security.listeners import Listener, TlsFiles
from fedkafka.security.password_checks import client_group
from fedkafka.security.proxy_header import FIXED, SIGNATURE, HeaderError, TrustedSources
from security.pki import make_pki

RELAY = "127.0.0.1"  # the trusted relay's address (the name service's, in production)
OTHER = "127.0.0.5"  # an address no proxy below trusts


def _run(loop: str, scenario) -> None:
    (asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run)(scenario())


def _header(command: int = 0x1, family: int = 0x11, body: bytes | None = None, length: int | None = None,
            signature: bytes = SIGNATURE, version: int = 2) -> bytes:
    """A v2 header by hand: by default PROXY, TCP over IPv4, 10.0.0.1:40000 -> 10.9.9.9:9092."""
    if body is None:
        body = struct.pack(">4s4sHH", bytes([10, 0, 0, 1]), bytes([10, 9, 9, 9]), 40000, 9092)
    return FIXED.pack(signature, version << 4 | command, family, len(body) if length is None else length) + body


def _read(header: bytes) -> tuple[str, int] | None:
    """A whole header parsed as the proxy does: its fixed part, then the length it announces."""
    length = proxy_header.body_length(header[:16])
    return proxy_header.client_address(header[:16], header[16:16 + length])


# -- the header ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("client", "destination"), [
    (("10.0.0.1", 40000), ("10.9.9.9", 9092)),
    (("2001:db8::7", 40001), ("2001:db8::1", 9092)),
    (("10.0.0.1", 40002), ("2001:db8::1", 9092)),  # mixed: sent as IPv6, IPv4-mapped; read back as IPv4
    (("2001:db8::7", 40003), ("10.9.9.9", 9092)),
])
def test_an_encoded_header_reads_back_as_the_clients_address(client, destination):
    header = proxy_header.encode(client, destination)
    assert header.startswith(SIGNATURE) and header[12] == 0x21  # version 2, PROXY
    both_v4 = all(ipaddress.ip_address(a[0]).version == 4 for a in (client, destination))
    assert header[13] == (0x11 if both_v4 else 0x21) and len(header) == 16 + (12 if both_v4 else 36)
    assert _read(header) == client


def test_tlvs_after_the_addresses_are_skipped():
    body = struct.pack(">4s4sHH", bytes([10, 0, 0, 1]), bytes([10, 9, 9, 9]), 40000, 9092) + b"\x04\x00\x01x"
    assert _read(_header(body=body)) == ("10.0.0.1", 40000)


@pytest.mark.parametrize("header", [
    _header(command=0x0),  # LOCAL with an address block: skipped, not read
    _header(command=0x0, family=0x00, body=b""),  # LOCAL, UNSPEC, nothing after
    _header(command=0x0, family=0x31, body=bytes(216)),  # LOCAL whatever the family
])
def test_a_local_header_names_no_client(header):
    assert _read(header) is None  # the proxy then keeps the connection's own peer (haproxy's spec)


@pytest.mark.parametrize(("header", "message"), [
    (_header()[:15], "truncated (15 of 16 bytes)"),
    (_header(signature=b"\r\n\r\n\x00\r\nQUIT!"), "no PROXY protocol v2 signature"),
    (b"PROXY TCP4 10.0.0.1 10.9.9.9 40000 9092\r\n", "no PROXY protocol v2 signature"),  # v1 text: not read
    (_header(version=1), "version 1"),
    (_header(command=0x2), "unknown PROXY command 0x2"),
    (_header(length=proxy_header.MAX_BODY_BYTES + 1), "announces 1025 bytes"),
    (_header()[:20], "body truncated (4 of 12 bytes)"),
    (_header(body=bytes(8)), "shorter than its addresses"),  # IPv4 with 8 bytes
    (_header(family=0x21, body=bytes(12)), "shorter than its addresses"),  # IPv6 needs 36
    (_header(family=0x31, body=bytes(216)), "family/transport 0x31"),  # AF_UNIX: no client IP
    (_header(family=0x00, body=b""), "family/transport 0x00"),  # UNSPEC with PROXY
    (_header(family=0x12), "family/transport 0x12"),  # UDP
    (_header(family=0x41), "family/transport 0x41"),  # no such family
])
def test_malformed_headers_are_refused(header, message):
    with pytest.raises(HeaderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _read(header)


def test_trusted_sources_are_addresses_and_networks_and_none_by_default():
    trusted = TrustedSources(["10.1.0.0/16", "192.0.2.7", "2001:db8::/64"])
    assert trusted.trusts(("10.1.200.3", 5)) and trusted.trusts("192.0.2.7") and trusted.trusts("::ffff:10.1.0.9")
    assert trusted.trusts(("2001:db8::99", 5, 0, 0))
    assert not trusted.trusts("10.2.0.1") and not trusted.trusts("192.0.2.8") and not trusted.trusts("/tmp/sock")
    assert not TrustedSources() and not TrustedSources().trusts(RELAY)
    assert proxy_header.parse_sources(["10.0.0.0/8, 127.0.0.1", "::1"]) == ("10.0.0.0/8", "127.0.0.1", "::1")
    with pytest.raises(ValueError, match="'ns-host' is not an IP address"):
        proxy_header.parse_sources(["ns-host"])


# -- a proxy reading it ------------------------------------------------------------------------------------------

def _relayed(client: str, port: int = 40000) -> bytes:
    return proxy_header.encode((client, port), ("127.0.0.1", 9092))


async def _until(condition) -> bool:
    try:
        async with asyncio.timeout(GUARD_S):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("loop", LOOPS)
def test_a_trusted_relays_header_names_the_client_for_the_session_and_the_per_ip_cap(tmp_path, loop):
    """Three connections from the relay's address, each with a header: counted under the client address it names
    (cap 1 per address: the second naming 10.0.0.1 is refused, 10.0.0.2 is not), never under the relay's; the
    session host (ACLs, password checks) is the client's. The header is read exactly: sent with the first frame
    in one write, or a byte at a time, the frame after it is answered."""
    async def scenario():
        async with _Proxy(tmp_path, Limits(max_connections_per_ip=1), proxy_header_from=(RELAY,)) as px:
            r1, w1 = await px.connect(RELAY)
            w1.write(_relayed("10.0.0.1"))
            assert await ask_api_versions(r1, w1) == 1  # the frame follows the header in the same write
            r2, w2 = await px.connect(RELAY)
            w2.write(_relayed("10.0.0.1", 40001))
            assert await closed_by_peer(r2)
            r3, w3 = await px.connect(RELAY)
            for byte in _relayed("10.0.0.2"):
                w3.write(bytes([byte]))
                await w3.drain()
                await asyncio.sleep(0)
            assert await ask_api_versions(r3, w3) == 1
            assert dict(px.server.counts.by_ip) == {"10.0.0.1": 1, "10.0.0.2": 1}
            assert px.server.counts.refused == {"max-connections-per-ip": 1}
            assert {c.session.host for c in px.server.connections} == {"10.0.0.1", "10.0.0.2"}
            assert {client_group(c.session.host) for c in px.server.connections} == {"10.0.0.1", "10.0.0.2"}
            for w in (w1, w3):
                w.close()
            assert await _until(lambda: px.server.counts.total == 0)

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_local_header_is_the_relays_own_connection(tmp_path, loop):
    async def scenario():
        async with _Proxy(tmp_path, Limits(), proxy_header_from=(RELAY,)) as px:
            r, w = await px.connect(RELAY)
            w.write(_header(command=0x0, family=0x00, body=b""))
            assert await ask_api_versions(r, w) == 1
            (conn,) = px.server.connections
            assert conn.session.host == RELAY and dict(px.server.counts.by_ip) == {RELAY: 1}
            w.close()

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(("sent", "logged"), [
    (b"", "no PROXY protocol v2 signature"),  # a Kafka frame straight away (the ApiVersions request below)
    (_header()[:10], "closed after 10 bytes of its PROXY header"),  # truncated, then EOF
    (_header(body=bytes(8)), "shorter than its addresses"),  # wrong length
    (_header(family=0x31, body=bytes(216)), "family/transport 0x31"),  # unknown (unusable) family
    (_header(signature=b"X" * 12), "no PROXY protocol v2 signature"),
])
def test_a_trusted_source_without_a_valid_header_is_closed_with_one_line(tmp_path, loop, sent, logged, caplog):
    """Never served, never counted, one warning line naming the relay and why."""
    async def scenario():
        async with _Proxy(tmp_path, Limits(), proxy_header_from=(RELAY,)) as px:
            r, w = await px.connect(RELAY)
            if sent:
                w.write(sent)
                if len(sent) < 16:
                    w.write_eof()
            else:
                w.write(api_versions_frame())
            assert await closed_by_peer(r)
            assert px.server.connections == set() and px.server.counts.total == 0
            w.close()

    with caplog.at_level(logging.WARNING):
        _run(loop, scenario)
    assert "(a trusted relay, --proxy-header-from)" in caplog.text and logged in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
def test_a_trusted_connection_that_sends_no_header_is_closed_at_the_frame_timeout(tmp_path, loop, caplog):
    async def scenario():
        async with _Proxy(tmp_path, Limits(frame_timeout_s=0.2), proxy_header_from=(RELAY,)) as px:
            r, w = await px.connect(RELAY)
            assert await closed_by_peer(r)
            assert px.server.counts.total == 0
            w.close()

    with caplog.at_level(logging.WARNING):
        _run(loop, scenario)
    assert "no complete PROXY header within 0.2 s" in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("trusted", [(), (OTHER,)])
def test_a_header_from_an_untrusted_source_is_not_taken(tmp_path, loop, trusted, caplog):
    """A client that sends a header itself (to pass for another address) is a client like any other: its header is
    not read, the connection is counted under its own address and closed with a line saying why."""
    async def scenario():
        async with _Proxy(tmp_path, Limits(), proxy_header_from=trusted) as px:
            r, w = await px.connect("127.0.0.2")
            assert await _until(lambda: px.server.counts.by_ip["127.0.0.2"] == 1)
            w.write(_relayed("10.0.0.1") + api_versions_frame())
            assert await closed_by_peer(r)
            assert "10.0.0.1" not in px.server.counts.by_ip
            w.close()

    with caplog.at_level(logging.WARNING):
        _run(loop, scenario)
    assert "a PROXY protocol header, from an address not in --proxy-header-from" in caplog.text


def _tls_proxy(tmp_path, pki, limits: Limits, **config) -> _Proxy:
    return _Proxy(tmp_path, limits, listeners=(Listener("SSL", "127.0.0.1", 0),),
                  tls=TlsFiles(cert=pki.server_cert, key=pki.server_key, ca=pki.ca), **config)


@pytest.mark.parametrize("loop", LOOPS)
def test_on_a_tls_listener_the_header_comes_in_clear_before_the_handshake(tmp_path, loop):
    pki = make_pki(tmp_path / "pki")

    async def scenario():
        async with _tls_proxy(tmp_path, pki, Limits(), proxy_header_from=(RELAY,)) as px:
            r, w = await px.connect(RELAY)
            w.write(_relayed("10.0.0.3"))
            await w.drain()
            await w.start_tls(ssl.create_default_context(cafile=pki.ca), server_hostname="localhost")
            assert await ask_api_versions(r, w) == 1
            (conn,) = px.server.connections
            assert conn.reader.over_tls and conn.session.host == "10.0.0.3"
            assert dict(px.server.counts.by_ip) == {"10.0.0.3": 1}
            w.close()

    _run(loop, scenario)


# -- the name service sending it -------------------------------------------------------------------------------

class _NameService:
    def __init__(self, proxy_port: int, protocol: str = "PLAINTEXT", tls: TlsFiles | None = None, **options):
        proxy = ProxyAddress(0, "127.0.0.1", proxy_port, listeners=((protocol, "127.0.0.1", proxy_port),))
        self.protocol = protocol
        self.server = NameServiceServer(StaticResolver([proxy]), tls=tls, **options)

    async def __aenter__(self) -> _NameService:
        _host, self.port = await self.server.start("127.0.0.1", 0, self.protocol)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.sleep(0.1)  # let the relays see their clients' EOF before the listener closes
        await self.server.close()

    async def connect(self, host: str, tls: ssl.SSLContext | None = None):
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(host, 0), ssl=tls,
                                             server_hostname="localhost" if tls else None)


@pytest.mark.parametrize("loop", LOOPS)
def test_relayed_clients_keep_their_own_address_for_the_per_ip_cap_and_password_checks(tmp_path, loop):
    """Through the name service (which connects from 127.0.0.1), two clients from two addresses under a cap of one
    connection per address: both are served, each in its own password-check share; a second connection from one
    of them is refused. Without the header all three were 127.0.0.1's: the second client was refused."""
    async def scenario():
        async with _Proxy(tmp_path, Limits(max_connections_per_ip=1), proxy_header_from=(RELAY,)) as px, \
                _NameService(px.port, proxy_header=True) as ns:
            r2, w2 = await ns.connect("127.0.0.2")
            assert await ask_api_versions(r2, w2) == 1
            r3, w3 = await ns.connect("127.0.0.3")
            assert await ask_api_versions(r3, w3) == 1
            again_r, again_w = await ns.connect("127.0.0.2")
            again_w.write(api_versions_frame())
            assert await closed_by_peer(again_r)
            assert dict(px.server.counts.by_ip) == {"127.0.0.2": 1, "127.0.0.3": 1}
            assert px.server.counts.refused == {"max-connections-per-ip": 1}
            hosts = {c.session.host for c in px.server.connections}
            assert hosts == {"127.0.0.2", "127.0.0.3"} and {client_group(h) for h in hosts} == hosts
            for w in (w2, w3, again_w):
                w.close()

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tls_client_relayed_by_the_name_service_keeps_its_address(tmp_path, loop):
    """The name service ends the client's TLS, writes the header in clear and starts TLS towards the proxy."""
    pki = make_pki(tmp_path / "pki")
    files = TlsFiles(cert=pki.server_cert, key=pki.server_key, ca=pki.ca)

    async def scenario():
        async with _tls_proxy(tmp_path, pki, Limits(), proxy_header_from=(RELAY,)) as px, \
                _NameService(px.port, "SSL", files, proxy_header=True) as ns:
            r, w = await ns.connect("127.0.0.2", ssl.create_default_context(cafile=pki.ca))
            assert await ask_api_versions(r, w) == 1
            (conn,) = px.server.connections
            assert conn.reader.over_tls and conn.session.host == "127.0.0.2"
            w.close()

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_name_service_sending_headers_to_a_proxy_that_does_not_trust_it_fails_loudly(tmp_path, loop, caplog):
    """A misconfiguration (the proxies not told to trust the name service) closes each relay with a line on the
    proxy, rather than silently serving every client as the name service's address."""
    async def scenario():
        async with _Proxy(tmp_path, Limits()) as px, _NameService(px.port, proxy_header=True) as ns:
            r, w = await ns.connect("127.0.0.2")
            w.write(api_versions_frame())
            assert await closed_by_peer(r)
            w.close()

    with caplog.at_level(logging.WARNING):
        _run(loop, scenario)
    assert "a PROXY protocol header, from an address not in --proxy-header-from" in caplog.text
