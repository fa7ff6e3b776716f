"""PROXY protocol v2 (haproxy's proxy-protocol.txt, section 2.2): the client's address, sent by a relay ahead of
the client's bytes (docs/DESIGN.md §3.4 and §11, "The client's address through the name service").

The name service relays a client's whole connection to a proxy from its own address; with `--send-proxy-header`
it first writes a v2 header naming the client (`encode`). A proxy reads one only on connections from the sources it
is told to trust (`--proxy-header-from`, `TrustedSources`), before any Kafka frame and before TLS (`ProxyHeader`
in `tls_accept`), and then takes the header's address as the client's: the session host ACLs match, the per-IP
connection cap and the password checks' client network. Only the binary v2 header is read (no v1 text header);
TLVs after the addresses are skipped.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED = struct.Struct(">12sBBH")  # signature, version and command, family and transport, length of the rest
FIXED_BYTES = FIXED.size  # 16
MAX_BODY_BYTES = 1024  # addresses (at most 216 bytes: AF_UNIX) and TLVs; a longer header is refused
VERSION = 0x2
LOCAL, PROXY = 0x0, 0x1  # commands
INET, INET6, UNIX = 0x1, 0x2, 0x3  # address families (high nibble); 0x0 UNSPEC
STREAM = 0x1  # transport (low nibble)
_INET = struct.Struct(">4s4sHH")
_INET6 = struct.Struct(">16s16sHH")
_ADDRESSES = {INET: _INET, INET6: _INET6}

Address = tuple[str, int]


class HeaderError(ValueError):
    """Not a valid PROXY v2 header (the message says how; no client bytes are quoted)."""


def encode(source: Address, destination: Address) -> bytes:
    """A PROXY v2 header, command PROXY over TCP: `source` is the client's address and port, `destination` the
    address it connected to. Both IPv4: AF_INET; else AF_INET6, an IPv4 address of the pair IPv4-mapped (the spec
    wants one family for both)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version == dst.version == 4:
        family, body = INET, _INET.pack(src.packed, dst.packed, source[1], destination[1])
    else:
        family, body = INET6, _INET6.pack(_as_v6(src).packed, _as_v6(dst).packed, source[1], destination[1])
    return FIXED.pack(SIGNATURE, VERSION << 4 | PROXY, family << 4 | STREAM, len(body)) + body


def _as_v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(f"::ffff:{address}")


def body_length(fixed: bytes) -> int:
    """From the header's first 16 bytes: how many bytes follow (addresses and TLVs). HeaderError if they are not
    a v2 header's, or announce more than MAX_BODY_BYTES."""
    if len(fixed) != FIXED_BYTES:
        raise HeaderError(f"PROXY header truncated ({len(fixed)} of {FIXED_BYTES} bytes)")
    signature, version_command, _family, length = FIXED.unpack(fixed)
    if signature != SIGNATURE:
        raise HeaderError("no PROXY protocol v2 signature")
    if version_command >> 4 != VERSION:
        raise HeaderError(f"PROXY protocol version {version_command >> 4} (only 2 is read)")
    if version_command & 0xF not in (LOCAL, PROXY):
        raise HeaderError(f"unknown PROXY command {version_command & 0xF:#x}")
    if length > MAX_BODY_BYTES:
        raise HeaderError(f"PROXY header announces {length} bytes after its first 16 (at most {MAX_BODY_BYTES})")
    return length


def client_address(fixed: bytes, body: bytes) -> Address | None:
    """The client's address and port a whole header (its first 16 bytes and the `body_length` after them) names;
    None for the LOCAL command (the relay's own connection, a health check: the spec has the receiver use the
    connection's real addresses, and skip whatever address block follows). A PROXY command must carry TCP over
    IPv4 or IPv6 (no UNIX, UDP or UNSPEC: no client IP to take) in a body long enough for its addresses. An
    IPv4-mapped IPv6 source is the IPv4 address (what `encode` makes of an IPv4 client and an IPv6 proxy)."""
    length = body_length(fixed)
    if len(body) != length:
        raise HeaderError(f"PROXY header body truncated ({len(body)} of {length} bytes)")
    _signature, version_command, family_transport, _length = FIXED.unpack(fixed)
    if version_command & 0xF == LOCAL:
        return None
    family, transport = family_transport >> 4, family_transport & 0xF
    layout = _ADDRESSES.get(family)
    if layout is None or transport != STREAM:
        raise HeaderError(f"PROXY header for address family/transport {family_transport:#04x} (only TCP over "
                          f"IPv4 or IPv6 is taken)")
    if length < layout.size:
        raise HeaderError(f"PROXY header's {length} bytes are shorter than its addresses ({layout.size})")
    source, _destination, source_port, _destination_port = layout.unpack_from(body)
    address = ipaddress.ip_address(source)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), source_port


class TrustedSources:
    """The addresses a PROXY header is read from (`--proxy-header-from`: addresses or CIDRs, e.g. the name
    service hosts); empty: none, every connection is its peer's own."""

    def __init__(self, networks: Iterable[str] = ()):
        self.networks = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, peer: object) -> bool:
        """Whether a connection from `peer` (a socket's peername, or a host) must start with a PROXY header."""
        host = peer[0] if isinstance(peer, tuple) else peer
        try:
            address = ipaddress.ip_address(str(host).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def parse_sources(values: Iterable[str]) -> tuple[str, ...]:
    """`--proxy-header-from` values (each may list several, comma-separated), checked; ValueError names a bad one."""
    out = []
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
            out.append(item)
    return tuple(out)


def is_signature_start(size_prefix: int) -> bool:
    """Whether a Kafka frame's size prefix is a PROXY v2 signature's first 4 bytes (a header sent to a proxy that
    does not trust its sender: the connection is closed with a line saying so)."""
    return size_prefix == struct.unpack(">i", SIGNATURE[:4])[0]

