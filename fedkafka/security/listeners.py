"""Client listeners (`PROTOCOL://HOST:PORT`) and the TLS contexts of the SSL ones.

Kafka's four security protocols: PLAINTEXT, SSL (TLS, optionally with client certificates: mTLS),
SASL_PLAINTEXT and SASL_SSL (SASL inside plain TCP or TLS). A proxy or name service runs any number of
listeners at once, each with its own protocol; SASL mechanisms and TLS files are shared by all of them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from fedkafka.security.x500 import rfc2253_name, subject_der
from fedkafka.view.model import SECURITY_PROTOCOLS

CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True, slots=True)
class Listener:
    protocol: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def __str__(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"


def parse_listener(value: str) -> Listener:
    """`SASL_SSL://0.0.0.0:9094` (ValueError with a readable message otherwise)."""
    protocol, sep, rest = value.partition("://")
    host, sep2, port = rest.rpartition(":")
    protocol = protocol.upper()
    if not sep or not sep2 or protocol not in SECURITY_PROTOCOLS or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listener must be PROTOCOL://HOST:PORT with PROTOCOL one of "
                         f"{', '.join(SECURITY_PROTOCOLS)}, got {value!r}")
    return Listener(protocol, host or "0.0.0.0", int(port))


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: this service's certificate chain and key, and the CA that client (or proxy) certificates
    must chain to. `client_auth` asks clients for a certificate (mTLS): none, requested or required. A listener
    looks at the files at most every `recheck_s` seconds and serves them again when they changed
    (`security.server_tls`)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    client_auth: str = "none"
    recheck_s: float = 5.0

    def problems(self, listeners: tuple[Listener, ...]) -> list[str]:
        out = []
        if any(listener.tls for listener in listeners) and (self.cert is None or self.key is None):
            out.append("an SSL or SASL_SSL listener needs --ssl-cert and --ssl-key")
        if self.client_auth not in CLIENT_AUTH:
            out.append(f"--ssl-client-auth must be one of {', '.join(CLIENT_AUTH)}")
        elif self.client_auth != "none" and self.ca is None:
            out.append("--ssl-client-auth needs --ssl-ca")
        out += [f"cannot read {p}" for p in (self.cert, self.key, self.ca) if p is not None and not p.is_file()]
        return out

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key), password=_encrypted_key)
        if self.ca is not None:
            ctx.load_verify_locations(cafile=str(self.ca))
        ctx.verify_mode = CLIENT_AUTH[self.client_auth]
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """For connecting to a TLS listener of a proxy (the name service's relay): verified against `ca`."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca) if self.ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


class EncryptedKey(ValueError):
    """The private key asks for a password (the services take unencrypted keys only)."""


def _encrypted_key() -> bytes:
    """OpenSSL asks for an encrypted key's password on the terminal, which would hold the event loop of a service
    reloading its certificate (security.server_tls): refused instead."""
    raise EncryptedKey("the private key is encrypted: --ssl-key must be an unencrypted PEM key")


def certificate_principal(certificate_der: bytes | None) -> str | None:
    """`User:CN=...,OU=...,O=...` from a verified client certificate (DER), exactly as Kafka's default principal
    builder names an mTLS client: `User:` + Java's X500Principal.getName() of the subject (RFC 2253, escaped;
    security/x500.py). None without a certificate."""
    if not certificate_der:
        return None
    name = rfc2253_name(subject_der(certificate_der))
    return "User:" + name if name else None
