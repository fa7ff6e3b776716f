"""The per-connection security state a handler reads and the SASL handler advances (docs/DESIGN.md §11).

The core makes one `Session` per client connection from its listener: the listener's security protocol,
the SASL mechanisms it enables, and for TLS the client certificate's subject. On a SASL listener, until
`authenticated`, the core serves what Kafka's SaslServerAuthenticator does in each state (`refusal`): first
ApiVersions (one answered) or SaslHandshake; after an answered ApiVersions, SaslHandshake; after SaslHandshake
(`mechanism` chosen), SaslAuthenticate only. Anything else closes the connection; once `failed` is set the core
answers the request and closes the connection.

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
from fedkafka.security.scram import AuthenticationFailed, printable

ANONYMOUS = "User:ANONYMOUS"
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")  # the default; OAUTHBEARER needs a JWKS file
ALL_SASL_MECHANISMS = (*SASL_MECHANISMS, "OAUTHBEARER")
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
# What an unauthenticated SASL connection may send, by how far it got (Kafka's SaslServerAuthenticator states
# HANDSHAKE_OR_VERSIONS_REQUEST, HANDSHAKE_REQUEST, AUTHENTICATE): anything else closes it, as Kafka does.
BEFORE_HANDSHAKE_API_KEYS = frozenset({API_VERSIONS, SASL_HANDSHAKE})
AFTER_API_VERSIONS_API_KEYS = frozenset({SASL_HANDSHAKE})
AFTER_HANDSHAKE_API_KEYS = frozenset({SASL_AUTHENTICATE})
SASL_API_KEYS = frozenset({SASL_HANDSHAKE, SASL_AUTHENTICATE})  # what an expired session may still send
# Kafka's KafkaChannel.maybeBeginServerReauthentication: at most one re-authentication a second; an earlier
# SaslHandshake is handled as on a session without re-authentication (ILLEGAL_SASL_STATE).
MIN_REAUTH_INTERVAL_S = 1.0
# Kafka's connection.failed.authentication.delay.ms (default 100): a failed SaslAuthenticate is answered, and its
# connection closed, this long after the failure was known, which slows a client guessing passwords
FAILED_AUTHENTICATION_DELAY_MS = 100
# keys PLAIN's made-up credential of an unknown user, which no client sees (only how long its PBKDF2 takes); SCRAM's
# made-up salts, which clients see, come from the view instead (scram.decoy_for): the same at every proxy process
_PROCESS_SECRET = secrets.token_bytes(32)


@dataclass(slots=True)
class Session:
    protocol: str = "PLAINTEXT"
    mechanisms: tuple[str, ...] = ()  # enabled on this listener (SASL_* only)
    peer: str = ""
    host: str = ""  # the client's address as Kafka writes it (ACLs name hosts so: security/acl.py kafka_host)
    principal: str = ANONYMOUS
    authenticated: bool = True  # False on SASL listeners until SaslAuthenticate succeeds
    mechanism: str | None = None  # chosen by SaslHandshake
    versions_answered: bool = False  # an ApiVersions was answered before SaslHandshake (Kafka answers one)
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
    # the proxy's producer ids of this connection (fedkafka.proxy.plan.ConnectionProducers), made on first use
    producers: Any = None
    # what this connection's fetches dropped, finished early without a broker's answer that had records or errors:
    # (broker, physical topic, partition, offset) of each such partition (fedkafka.proxy.handlers.fetch: its next
    # Fetch asking one of them there waits for that broker's answer too), made on first use
    fetch_owed: Any = None
    # the records of those dropped answers, kept for its next Fetch asking exactly the same there and charged to the
    # process' memory budget while kept (fedkafka.proxy.handlers.fetch._KeptAnswers, made on first use): given back
    # when the connection closes (`close`)
    fetch_kept: Any = None

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

    def close(self) -> None:
        """The connection closed (the core calls it once it wrote its last answer): what its handlers keep for it
        past a request is given back, and nothing more is kept (`fetch_kept`: a late answer arriving after this)."""
        if self.fetch_kept is not None:
            self.fetch_kept.close()

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
                # Kafka's message, a name not printable quoted: it is the failed-login line's too
                raise AuthenticationFailed(f"Cannot change principals during re-authentication from "
                                           f"{printable(before)}: {printable(principal)}")
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
        """Why a request must close the connection, or None: before authentication, what Kafka's
        SaslServerAuthenticator does not serve in the session's state (`authentication_refusal`); once the session
        expired, anything but a re-authentication (Kafka's SocketServer: `Disconnecting expired channel`)."""
        if not self.authenticated:
            return self.authentication_refusal(api_key)
        if self.expires_at is None or api_key in SASL_API_KEYS:
            return None
        late_s = self.clock() - self.expires_at
        if late_s <= 0:
            return None
        # the principal quoted (repr), as every log line quotes it: this reason is logged as the connection closes,
        # and a token subject is the client's (its issuer's) choice
        return (f"the SASL session of {self.principal!r} on the {self.protocol} listener expired "
                f"{late_s * 1000:.0f} ms ago without re-authentication (--connections-max-reauth-ms "
                f"{self.max_reauth_ms})")

    def authentication_refusal(self, api_key: int) -> str | None:
        """Before authentication: ApiVersions or SaslHandshake first, only SaslHandshake after an answered
        ApiVersions (Kafka: "Unexpected ApiVersions request received during SASL authentication state
        HANDSHAKE_REQUEST"), only SaslAuthenticate after SaslHandshake, in a re-authentication too (Kafka:
        "Unexpected Kafka request of type ... during SASL authentication")."""
        if self.in_exchange():
            expected, stage = AFTER_HANDSHAKE_API_KEYS, "after SaslHandshake only SaslAuthenticate"
        elif self.versions_answered:
            expected, stage = AFTER_API_VERSIONS_API_KEYS, "after ApiVersions only SaslHandshake"
        else:
            expected, stage = BEFORE_HANDSHAKE_API_KEYS, "first only ApiVersions or SaslHandshake"
        if api_key in expected:
            return None
        return f"api_key={api_key} before SASL authentication on {self.protocol} ({stage})"

    def in_exchange(self) -> bool:
        """Past SaslHandshake, not yet authenticated (again): Kafka's AUTHENTICATE state."""
        return not self.authenticated and self.mechanism is not None

    def answered_api_versions(self) -> None:
        """An ApiVersions answered (not refused for its version): before the handshake, Kafka answers one."""
        if not self.authenticated and self.mechanism is None:
            self.versions_answered = True

    def chosen_mechanism(self) -> str:
        """The mechanism SaslHandshake chose, for a caller past that step (ValueError before it)."""
        if self.mechanism is None:
            raise ValueError("no SASL mechanism chosen yet")
        return self.mechanism

    def fail(self, reason: str) -> None:
        self.failed, self.exchange = reason, None

