"""The per-connection security state a handler reads and the SASL handler advances (docs/DESIGN.md §11).

The core makes one `Session` per client connection from its listener: the listener's security protocol,
the SASL mechanisms it enables, and for TLS the client certificate's subject. On a SASL listener only
ApiVersions, SaslHandshake and SaslAuthenticate are served until `authenticated` (the core's gate, as a
Kafka broker does); once `failed` is set the core answers the request and closes the connection.

Re-authentication (KIP-368, `--connections-max-reauth-ms`, docs/DESIGN.md §11): with a maximum set, a successful
authentication gives the session a lifetime, min(the maximum, the credential's own remaining lifetime), told to
the client in SaslAuthenticate v1+. Before it ends the client sends SaslHandshake + SaslAuthenticate again on the
live connection; once it ended, any other request closes the connection.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedkafka.security import password_checks
from fedkafka.security.acl import kafka_host
from fedkafka.security.scram import AuthenticationFailed

ANONYMOUS = "User:ANONYMOUS"
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")  # the default; OAUTHBEARER needs a JWKS file
ALL_SASL_MECHANISMS = (*SASL_MECHANISMS, "OAUTHBEARER")
# What an unauthenticated SASL connection may send: anything else closes it, as Kafka does.
PRE_AUTH_API_KEYS = frozenset({18, 17, 36})  # ApiVersions, SaslHandshake, SaslAuthenticate
SASL_API_KEYS = frozenset({17, 36})  # what an expired session may still send: a re-authentication
# Kafka's KafkaChannel.maybeBeginServerReauthentication: at most one re-authentication a second; an earlier
# SaslHandshake is handled as on a session without re-authentication (ILLEGAL_SASL_STATE).
MIN_REAUTH_INTERVAL_S = 1.0
# Kafka's connection.failed.authentication.delay.ms (default 100): a failed SaslAuthenticate is answered, and its
# connection closed, this long after the failure was known, which slows a client guessing passwords
FAILED_AUTHENTICATION_DELAY_MS = 100
_PROCESS_SECRET = secrets.token_bytes(32)  # made-up salts of unknown users stay stable within a process


@dataclass(slots=True)
class Session:
    protocol: str = "PLAINTEXT"
    mechanisms: tuple[str, ...] = ()  # enabled on this listener (SASL_* only)
    peer: str = ""
    host: str = ""  # the client's address as Kafka writes it (ACLs name hosts so: security/acl.py kafka_host)
    principal: str = ANONYMOUS
    authenticated: bool = True  # False on SASL listeners until SaslAuthenticate succeeds
    mechanism: str | None = None  # chosen by SaslHandshake
    exchange: Any = None  # the mechanism's server state between SaslAuthenticate rounds
    claimed_user: str | None = None  # the user name a client gave (for the failure log line; never a password)
    failed: str | None = None  # why authentication failed (logged once; the connection then closes)
    oauth: Any = None  # the listener's JWT validator (OAUTHBEARER), shared by its connections
    secret: bytes = field(default_factory=lambda: _PROCESS_SECRET)
    max_reauth_ms: int = 0  # --connections-max-reauth-ms; 0: sessions never expire, no re-authentication
    clock: Callable[[], float] = time.monotonic  # session expiry
    wall_clock: Callable[[], float] = time.time  # credential expiry (a JWT's exp)
    expires_at: float | None = None  # clock() time the session ends unless re-authenticated
    reauthenticating: tuple[str, str] | None = None  # (mechanism, principal) a running re-authentication keeps
    reauth_started_at: float | None = None
    reauthentications: int = 0  # successful ones on this connection
    failed_authentication_delay_ms: int = FAILED_AUTHENTICATION_DELAY_MS
    password_checks: Any = field(default_factory=lambda: password_checks.SHARED)  # PLAIN's PBKDF2, off the loop

    @classmethod
    def for_listener(cls, protocol: str, mechanisms: tuple[str, ...] = SASL_MECHANISMS, peer: str = "",
                     principal: str = ANONYMOUS, host: str = "", oauth: Any = None, max_reauth_ms: int = 0,
                     clock: Callable[[], float] = time.monotonic,
                     failed_authentication_delay_ms: int = FAILED_AUTHENTICATION_DELAY_MS) -> Session:
        sasl = protocol.startswith("SASL_")
        return cls(protocol=protocol, mechanisms=mechanisms if sasl else (), peer=peer, principal=principal,
                   authenticated=not sasl, host=kafka_host(host), oauth=oauth,
                   max_reauth_ms=max_reauth_ms if sasl else 0, clock=clock,
                   failed_authentication_delay_ms=failed_authentication_delay_ms)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def succeed(self, principal: str, credential_expires_at: float | None = None) -> int:
        """Authenticated as `principal` (its credential valid until `credential_expires_at`, wall clock);
        returns the session lifetime to tell the client, in ms (0: none).

        A re-authentication must keep the principal: Kafka's SaslServerAuthenticator.ReauthInfo
        .ensurePrincipalUnchanged refuses a change with SASL_AUTHENTICATION_FAILED and closes the connection."""
        if self.reauthenticating is not None:
            before = self.reauthenticating[1]
            if principal != before:
                raise AuthenticationFailed(f"Cannot change principals during re-authentication from {before}: "
                                           f"{principal}")
            self.reauthentications += 1
        self.principal, self.authenticated, self.exchange, self.reauthenticating = principal, True, None, None
        if self.max_reauth_ms <= 0:
            return 0
        lifetime_ms = self.max_reauth_ms
        if credential_expires_at is not None:  # Kafka: min(max reauth, credential expiry - now), never below 0
            lifetime_ms = max(0, min(lifetime_ms, int((credential_expires_at - self.wall_clock()) * 1000)))
        self.expires_at = self.clock() + lifetime_ms / 1000
        return lifetime_ms

    def may_reauthenticate(self) -> bool:
        """An authenticated session with a lifetime may start over (KIP-368), at most once a second."""
        if not (self.sasl and self.authenticated and self.expires_at is not None):
            return False
        return self.reauth_started_at is None or self.clock() - self.reauth_started_at >= MIN_REAUTH_INTERVAL_S

    def begin_reauthentication(self) -> None:
        """A SaslHandshake on an authenticated session: only SASL requests until SaslAuthenticate succeeds."""
        self.reauthenticating = (self.chosen_mechanism(), self.principal)
        self.reauth_started_at = self.clock()
        self.authenticated, self.mechanism, self.exchange = False, None, None

    def refusal(self, api_key: int) -> str | None:
        """Why a request must close the connection, or None: anything but SaslHandshake, SaslAuthenticate and
        ApiVersions before authentication; anything but a re-authentication once the session expired (Kafka's
        SocketServer closes such a connection: `Disconnecting expired channel`)."""
        if not self.authenticated:
            if api_key in PRE_AUTH_API_KEYS:
                return None
            return f"api_key={api_key} before SASL authentication on {self.protocol}"
        if self.expires_at is None or api_key in SASL_API_KEYS:
            return None
        late_s = self.clock() - self.expires_at
        if late_s <= 0:
            return None
        return (f"the SASL session of {self.principal} on the {self.protocol} listener expired {late_s * 1000:.0f} ms "
                f"ago without re-authentication (--connections-max-reauth-ms {self.max_reauth_ms})")

    def chosen_mechanism(self) -> str:
        """The mechanism SaslHandshake chose, for a caller past that step (ValueError before it)."""
        if self.mechanism is None:
            raise ValueError("no SASL mechanism chosen yet")
        return self.mechanism

    def fail(self, reason: str) -> None:
        self.failed, self.exchange = reason, None

