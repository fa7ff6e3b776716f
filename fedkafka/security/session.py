"""The per-connection security state a handler reads and the SASL handler advances (docs/DESIGN.md §11).

The core makes one `Session` per client connection from its listener: the listener's security protocol,
the SASL mechanisms it enables, and for TLS the client certificate's subject. On a SASL listener only
ApiVersions, SaslHandshake and SaslAuthenticate are served until `authenticated` (the core's gate, as a
Kafka broker does); once `failed` is set the core answers the request and closes the connection.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

ANONYMOUS = "User:ANONYMOUS"
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")  # the default; OAUTHBEARER needs a JWKS file
ALL_SASL_MECHANISMS = (*SASL_MECHANISMS, "OAUTHBEARER")
# What an unauthenticated SASL connection may send: anything else closes it, as Kafka does.
PRE_AUTH_API_KEYS = frozenset({18, 17, 36})  # ApiVersions, SaslHandshake, SaslAuthenticate
_PROCESS_SECRET = secrets.token_bytes(32)  # made-up salts of unknown users stay stable within a process


@dataclass(slots=True)
class Session:
    protocol: str = "PLAINTEXT"
    mechanisms: tuple[str, ...] = ()  # enabled on this listener (SASL_* only)
    peer: str = ""
    host: str = ""  # the client's address, as ACLs name hosts
    principal: str = ANONYMOUS
    authenticated: bool = True  # False on SASL listeners until SaslAuthenticate succeeds
    mechanism: str | None = None  # chosen by SaslHandshake
    exchange: Any = None  # the mechanism's server state between SaslAuthenticate rounds
    claimed_user: str | None = None  # the user name a client gave (for the failure log line; never a password)
    failed: str | None = None  # why authentication failed (logged once; the connection then closes)
    oauth: Any = None  # the listener's JWT validator (OAUTHBEARER), shared by its connections
    secret: bytes = field(default_factory=lambda: _PROCESS_SECRET)

    @classmethod
    def for_listener(cls, protocol: str, mechanisms: tuple[str, ...] = SASL_MECHANISMS, peer: str = "",
                     principal: str = ANONYMOUS, host: str = "", oauth: Any = None) -> Session:
        sasl = protocol.startswith("SASL_")
        return cls(protocol=protocol, mechanisms=mechanisms if sasl else (), peer=peer, principal=principal,
                   authenticated=not sasl, host=host, oauth=oauth)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def succeed(self, principal: str) -> None:
        self.principal, self.authenticated, self.exchange = principal, True, None

    def chosen_mechanism(self) -> str:
        """The mechanism SaslHandshake chose, for a caller past that step (ValueError before it)."""
        if self.mechanism is None:
            raise ValueError("no SASL mechanism chosen yet")
        return self.mechanism

    def fail(self, reason: str) -> None:
        self.failed, self.exchange = reason, None

