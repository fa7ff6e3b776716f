"""How proxies and the controller reach the physical clusters' brokers: TLS and SASL per cluster.

One file (`--upstream-config`, JSON, mode 0600) holds librdkafka's own property names, so the controller hands
them to confluent-kafka as they are and the proxy reads the same ones:

    {"security.protocol": "SASL_SSL", "ssl.ca.location": "/etc/fedkafka/tls/kafka-ca.pem",
     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "fedkafka", "sasl.password": "...",
     "clusters": {"eu-2": {"sasl.username": "fedkafka-eu2", "sasl.password": "..."}}}

The top-level properties apply to every cluster; `clusters.<id>` overrides some of them for one cluster. Secrets
never reach a command line, a log or the view (docs/DESIGN.md §11).
"""

from __future__ import annotations

import json
import ssl
import stat
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from fedkafka.security.scram import MECHANISMS, AuthenticationFailed, ScramClient
from fedkafka.view.model import SECURITY_PROTOCOLS

UPSTREAM_MECHANISMS = ("PLAIN", *MECHANISMS)
ENDPOINT_IDENTIFICATION = ("https", "none")
PROPERTIES = ("security.protocol", "ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
              "ssl.endpoint.identification.algorithm", "sasl.mechanism", "sasl.username", "sasl.password")
ALIASES = {"sasl.mechanisms": "sasl.mechanism"}  # librdkafka accepts both names


class UpstreamConfigError(ValueError):
    """The upstream config cannot be used (the message names the property, never its secret value)."""


@dataclass(frozen=True, slots=True)
class UpstreamSecurity:
    """The settings of one cluster's connections (librdkafka's names in `properties`)."""

    protocol: str = "PLAINTEXT"
    ssl_ca: Path | None = None
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    verify_hostname: bool = True
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # made once from the files (`upstream_reload.UpstreamFile`): a rewritten file is used only once it loads;
    # None: made again for each connection
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def describe(self) -> str:
        """For logs: the protocol, mechanism and user, never the password."""
        return f"{self.protocol} {self.mechanism} user {self.username!r}" if self.sasl else self.protocol

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        if self.context is not None:
            return self.context
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_ca) if self.ssl_ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = self.verify_hostname
        if self.ssl_cert is not None:
            ctx.load_cert_chain(str(self.ssl_cert), str(self.ssl_key) if self.ssl_key else None)
        return ctx

    def librdkafka(self) -> dict[str, str]:
        """confluent-kafka settings for a client of this cluster (PLAINTEXT: none beyond the default)."""
        if self.protocol == "PLAINTEXT":
            return {}
        out = {"security.protocol": self.protocol}
        if self.tls:
            out["ssl.endpoint.identification.algorithm"] = "https" if self.verify_hostname else "none"
            for name, path in (("ssl.ca.location", self.ssl_ca), ("ssl.certificate.location", self.ssl_cert),
                               ("ssl.key.location", self.ssl_key)):
                if path is not None:
                    out[name] = str(path)
        if self.sasl:
            assert self.mechanism and self.username is not None and self.password is not None  # _security checks
            out |= {"sasl.mechanism": self.mechanism, "sasl.username": self.username,
                    "sasl.password": self.password}
        return out


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    default: UpstreamSecurity = field(default_factory=UpstreamSecurity)
    clusters: dict[str, UpstreamSecurity] = field(default_factory=dict)

    def for_cluster(self, cluster: str) -> UpstreamSecurity:
        return self.clusters.get(cluster, self.default)


PLAINTEXT = UpstreamConfig()


class UpstreamSource(Protocol):
    """Where a new upstream connection takes its settings: an `UpstreamConfig`, or the file it was loaded from,
    loaded again when it changes (`upstream_reload.UpstreamFile`)."""

    def for_cluster(self, cluster: str) -> UpstreamSecurity: ...


def load_upstream_config(path: Path) -> UpstreamConfig:
    """Read and check the file; UpstreamConfigError with a readable message (no secret in it)."""
    try:
        mode = path.stat().st_mode
        doc = json.loads(path.read_text())
    except OSError as e:
        raise UpstreamConfigError(f"cannot read the upstream config {path}: {e.strerror}") from None
    except UnicodeDecodeError:  # before ValueError: its message quotes a byte of the file (of a password) and where
        raise UpstreamConfigError(f"the upstream config {path} is not UTF-8 text") from None
    except ValueError as e:  # json's message names a line and column, never the text
        raise UpstreamConfigError(f"the upstream config {path} is not JSON: {e}") from None
    except RecursionError:
        raise UpstreamConfigError(f"the upstream config {path} is not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise UpstreamConfigError(f"the upstream config {path} must be a JSON object of librdkafka properties")
    overrides = doc.pop("clusters", {})
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise UpstreamConfigError("'clusters' must map cluster ids to objects of properties")
    base = _properties(doc, "the upstream config")
    config = UpstreamConfig(_security(base, "the upstream config"),
                            {cid: _security(base | _properties(props, f"cluster {cid}"), f"cluster {cid}")
                             for cid, props in overrides.items()})
    secret = any(s.password for s in (config.default, *config.clusters.values()))
    if secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UpstreamConfigError(f"the upstream config {path} holds a password and is readable by others "
                                  f"(mode {stat.S_IMODE(mode):04o}): chmod 600 it")
    return config


def _properties(doc: dict[str, Any], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in doc.items():
        name = ALIASES.get(key, key)
        if name not in PROPERTIES:
            raise UpstreamConfigError(f"{where}: unknown property {key!r} (known: {', '.join(PROPERTIES)})")
        if not isinstance(value, str):
            raise UpstreamConfigError(f"{where}: {key} must be a string")
        try:  # JSON's \ud800 escapes load as text no login can send (a SASL exchange encodes it): refused here,
            value.encode()  # not at every login after a reload took it
        except UnicodeEncodeError:
            raise UpstreamConfigError(f"{where}: {key} is not UTF-8 text") from None
        out[name] = value
    return out


def _security(props: dict[str, str], where: str) -> UpstreamSecurity:
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise UpstreamConfigError(f"{where}: security.protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
    identification = props.get("ssl.endpoint.identification.algorithm", "https").lower()
    if identification not in ENDPOINT_IDENTIFICATION:
        raise UpstreamConfigError(f"{where}: ssl.endpoint.identification.algorithm must be https or none")

    def path(name: str) -> Path | None:
        value = props.get(name)
        if value is None:
            return None
        if not Path(value).is_file():
            raise UpstreamConfigError(f"{where}: {name} {value} is not a readable file")
        return Path(value)

    security = UpstreamSecurity(protocol, path("ssl.ca.location"), path("ssl.certificate.location"),
                                path("ssl.key.location"), identification == "https", props.get("sasl.mechanism"),
                                props.get("sasl.username"), props.get("sasl.password"))
    if security.ssl_key is not None and security.ssl_cert is None:
        raise UpstreamConfigError(f"{where}: ssl.key.location needs ssl.certificate.location")
    if security.sasl:
        if security.mechanism not in UPSTREAM_MECHANISMS:
            raise UpstreamConfigError(f"{where}: sasl.mechanism must be one of {', '.join(UPSTREAM_MECHANISMS)}")
        if not security.username or security.password is None:
            raise UpstreamConfigError(f"{where}: {protocol} needs sasl.username and sasl.password")
    return security


# -- the SASL exchange with a broker (KIP-152 framing: SaslHandshake v1, then SaslAuthenticate v2) -----------

SaslExchange = Generator[Any, Any, int]


def sasl_exchange(security: UpstreamSecurity) -> SaslExchange:
    """Yields each request to send and receives its answer; returns the session lifetime the broker gave
    (KIP-368, ms; 0: none). AuthenticationFailed with the broker's message (never a secret) on a refusal.

    Both drivers, the proxy's asyncio connections and the controller's blocking socket, run this one exchange."""
    mechanism = security.mechanism
    assert mechanism is not None and security.username is not None and security.password is not None
    handshake = yield SaslHandshakeRequest(mechanism=mechanism)
    if handshake.error_code != ErrorCode.none:
        raise AuthenticationFailed(f"the broker does not enable {mechanism} (it offers "
                                   f"{', '.join(handshake.mechanisms) or 'none'})")
    if mechanism == "PLAIN":
        answer = yield _authenticate(f"\0{security.username}\0{security.password}".encode())
        _check(answer, mechanism)
        return _lifetime_ms(answer)
    scram = ScramClient(mechanism, security.username, security.password)
    first = yield _authenticate(scram.first())
    _check(first, mechanism)
    final = yield _authenticate(scram.final(first.auth_bytes))
    _check(final, mechanism)
    scram.verify(final.auth_bytes)
    return _lifetime_ms(final)


def _authenticate(token: bytes) -> SaslAuthenticateRequest:
    return SaslAuthenticateRequest(auth_bytes=token)


def _lifetime_ms(answer) -> int:
    return int(answer.session_lifetime.total_seconds() * 1000)


def _check(answer, mechanism: str) -> None:
    if answer.error_code != ErrorCode.none:
        raise AuthenticationFailed(f"{mechanism}: {answer.error_message or ErrorCode(answer.error_code).name}")
