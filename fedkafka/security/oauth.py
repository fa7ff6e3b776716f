"""OAUTHBEARER (RFC 7628, KIP-255): a JWT checked against a JWKS file, its issuer, audience and expiry.

The principal is `User:<sub>` (Kafka's default principal claim). The JWKS file is read again when it changes,
so keys rotate without a restart. Failure messages name the reason (expired, wrong audience, unknown key),
never the token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jwt

from fedkafka.security.scram import AuthenticationFailed, MalformedMessage, printable

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    jwks_file: Path
    issuer: str | None = None
    audience: str | None = None
    principal_claim: str = "sub"
    leeway_s: float = 30.0  # clock skew allowed on exp/nbf/iat

    def problems(self) -> list[str]:
        try:
            jwt.PyJWKSet.from_json(self.jwks_file.read_text())
        except (OSError, ValueError, jwt.PyJWKError) as e:
            return [f"--oauth-jwks-file {self.jwks_file}: {e}"]
        return []


class JwtValidator:
    def __init__(self, settings: OAuthSettings):
        self.settings = settings
        self._mtime = -1.0
        self._keys: dict[str | None, jwt.PyJWK] = {}

    def principal(self, token: str) -> str:
        """`User:<sub>` of a valid token; AuthenticationFailed with the reason otherwise."""
        return self.validate(token)[0]

    def validate(self, token: str) -> tuple[str, float]:
        """`User:<sub>` of a valid token and its `exp` (seconds since the epoch); AuthenticationFailed with the
        reason otherwise."""
        s = self.settings
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._key(kid)
            claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=s.audience, issuer=s.issuer,
                                leeway=s.leeway_s, options={"require": ["exp", s.principal_claim],
                                                            "verify_aud": s.audience is not None})
        except jwt.PyJWTError as e:
            raise AuthenticationFailed(f"invalid OAUTHBEARER token: {e}") from None
        subject = claims[s.principal_claim]
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed(f"invalid OAUTHBEARER token: claim {s.principal_claim!r} is not a name")
        return f"User:{subject}", float(claims["exp"])

    def _key(self, kid: str | None) -> jwt.PyJWK:
        self._reload()
        key = self._keys.get(kid) or (next(iter(self._keys.values())) if kid is None and len(self._keys) == 1
                                      else None)
        if key is None:
            raise jwt.InvalidKeyError(f"no key {kid!r} in the JWKS")
        return key

    def _reload(self) -> None:
        path = self.settings.jwks_file
        try:
            mtime = path.stat().st_mtime
            if mtime != self._mtime:
                keys = jwt.PyJWKSet.from_json(path.read_text())
                self._keys = {k.key_id: k for k in keys.keys}
                self._mtime = mtime
        except (OSError, ValueError, jwt.PyJWKError, json.JSONDecodeError):
            if not self._keys:  # keep the last good keys over a half-written file
                raise jwt.InvalidKeyError("the JWKS file cannot be read") from None


def parse_client_message(message: bytes) -> tuple[str, str]:
    """The bearer token and the authorization id ("" if none) of a client's first OAUTHBEARER message:
    `n,[a=<authzid>],\\x01auth=Bearer <token>\\x01...\\x01`."""
    try:
        text = message.decode()
    except UnicodeDecodeError:
        raise MalformedMessage("invalid OAUTHBEARER message") from None
    gs2, sep, rest = text.partition("\x01")
    if not sep or not gs2.startswith(("n,", "y,")) or not rest.endswith("\x01\x01"):
        raise MalformedMessage("invalid OAUTHBEARER message")
    authorization_id = _authorization_id(gs2)
    for pair in rest[:-2].split("\x01"):
        key, _, value = pair.partition("=")
        if key == "auth":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip(), authorization_id
    raise MalformedMessage("OAUTHBEARER message without a bearer token")


def _authorization_id(gs2: str) -> str:
    """The GS2 header's authorization id (`n,a=<authzid>,`), "" if it names none. Taken as sent, as Kafka's
    OAuthBearerClientInitialResponse takes it (its clients send it unescaped)."""
    field = gs2.split(",")[1]  # gs2 starts with "n," or "y,"
    if not field:
        return ""
    if not field.startswith("a=") or len(field) == 2:
        raise MalformedMessage("invalid OAUTHBEARER message")
    return field[2:]


def check_authorization_id(authorization_id: str, principal: str) -> None:
    """An authorization id other than the token's principal name fails the login, as Kafka's OAuthBearerSaslServer
    fails it, with its message; an empty one is the token's principal. A name not printable is quoted (repr): the
    message is also the failed-login log line's."""
    name = principal.removeprefix("User:")
    if authorization_id and authorization_id != name:
        raise AuthenticationFailed(
            f"Authentication failed: Client requested an authorization id ({printable(authorization_id)}) that is "
            f"different from the token's principal name ({printable(name)})")
