"""SCRAM (RFC 5802, RFC 7677) as Kafka uses it: SCRAM-SHA-256 and SCRAM-SHA-512, credentials stored as hashes.

A stored credential is (salt, iterations, StoredKey, ServerKey): enough to check a client's proof and to prove
the server knows it, never enough to log in (that needs ClientKey, which only the password gives). PLAIN is
checked against the same credential, so no password is ever stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import Counter
from dataclasses import dataclass

from fedkafka.view.model import ScramCredential

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MIN_ITERATIONS = 4096  # Kafka's minimum
MAX_ITERATIONS = 16384  # Kafka's maximum: a broker asking for more is broken or hostile (PBKDF2 would stall the loop)
DEFAULT_ITERATIONS = 8192


class AuthenticationFailed(Exception):
    """The client's credentials do not check out (the message is safe to send and log: no secret in it)."""


def printable(name: str) -> str:
    """A client-chosen name for an AuthenticationFailed message (Kafka's words, also the failed-login log line's):
    as it is when printable, quoted (repr) otherwise, so a newline in it starts no log line of its making."""
    return name if name.isprintable() else repr(name)


class MalformedMessage(AuthenticationFailed):
    """A SASL message that does not parse."""


def _hmac(digest: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, digest).digest()


def salted_password(digest: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)


def make_credential(user: str, mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS,
                    salt: bytes | None = None) -> ScramCredential:
    """The stored form of `password` for `mechanism` (the password itself is not kept)."""
    digest = MECHANISMS[mechanism]
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"iterations must be at least {MIN_ITERATIONS}")
    salt = salt if salt is not None else secrets.token_bytes(32)
    salted = salted_password(digest, password, salt, iterations)
    client_key = _hmac(digest, salted, b"Client Key")
    return ScramCredential(user=user, mechanism=mechanism, salt=salt, iterations=iterations,
                           stored_key=hashlib.new(digest, client_key).digest(),
                           server_key=_hmac(digest, salted, b"Server Key"))


def password_matches(credential: ScramCredential, password: str) -> bool:
    """PLAIN's check: derive StoredKey from the password and compare in constant time."""
    digest = MECHANISMS[credential.mechanism]
    salted = salted_password(digest, password, credential.salt, credential.iterations)
    stored = hashlib.new(digest, _hmac(digest, salted, b"Client Key")).digest()
    return hmac.compare_digest(stored, credential.stored_key)


def made_up_credential(user: str, secret: bytes, iterations: int = DEFAULT_ITERATIONS,
                       mechanism: str = "SCRAM-SHA-512") -> ScramCredential:
    """What PLAIN checks an unknown user's password against: a credential made up from `secret` (as SCRAM's first
    answer makes up a salt) that no password fits. At a real user's mechanism and iterations, the PBKDF2 is the
    same as for that user, so the work done, and the time taken, does not tell which user names exist."""
    salt, key = (_hmac(digest, secret, f"PLAIN {what}\0{user}".encode()) for digest, what in
                 (("sha256", "salt"), ("sha512", "key")))
    return ScramCredential(user=user, mechanism=mechanism, salt=salt, iterations=iterations,
                           stored_key=key, server_key=key)


# Salt length of a made-up answer when the view holds no credential of the mechanism (make_credential's)
DECOY_SALT_LENGTH = 32


@dataclass(frozen=True, slots=True)
class Decoy:
    """What SCRAM's first answer says for a name without a credential (docs/DESIGN.md §11): a salt of `key` and
    the name, and the iterations and salt length most of the view's credentials of the mechanism have.

    `key` is the same at every proxy of the federation and across restarts and `--workers` children (made from the
    view, `decoy_for`), so a made-up name's salt is as stable as a real user's; it is secret as the view's keys
    are (only the controller and the proxies hold them), so a client cannot work a made-up salt out."""

    key: bytes
    iterations: int = DEFAULT_ITERATIONS
    salt_length: int = DECOY_SALT_LENGTH

    def salt(self, mechanism: str, user: str) -> bytes:
        return _hmac("sha512", self.key, f"SCRAM salt\0{mechanism}\0{user}".encode())[:self.salt_length]


def decoy_key(credentials: tuple[ScramCredential, ...], federation_id: str) -> bytes:
    """A key for made-up salts shared by every proxy of the federation: a hash of the view's whole SCRAM
    credential set (ServerKey and StoredKey included, which no client knows, and which one user's password gives
    only for that user) and the federation id. It changes whenever a credential does (a user created, deleted or
    given a new password), and with it every made-up salt while real users' salts stay: see DESIGN §11."""
    digest = hashlib.sha256(b"fedkafka SCRAM decoy\0" + federation_id.encode() + b"\0")
    for c in sorted(credentials, key=lambda c: (c.user, c.mechanism)):
        for part in (c.user.encode(), c.mechanism.encode(), c.salt, str(c.iterations).encode(), c.stored_key,
                     c.server_key):
            digest.update(len(part).to_bytes(4, "big") + part)
    return digest.digest()


def decoy_for(credentials: tuple[ScramCredential, ...], federation_id: str, mechanism: str) -> Decoy:
    """The decoy of `mechanism`: the iterations and salt length most of its credentials have (ties: the larger;
    none of the mechanism: those of all credentials; none at all: the defaults)."""
    own = [c for c in credentials if c.mechanism == mechanism] or list(credentials)
    if not own:
        return Decoy(decoy_key(credentials, federation_id))
    return Decoy(decoy_key(credentials, federation_id), _most_common([c.iterations for c in own]),
                 min(_most_common([len(c.salt) for c in own]), 64))


def _most_common(values: list[int]) -> int:
    counts = Counter(values)
    return max(counts, key=lambda value: (counts[value], value))


def parse_plain(message: bytes) -> tuple[str, str]:
    """(user, password) of a PLAIN message `authzid NUL authcid NUL passwd` (RFC 4616)."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise MalformedMessage("invalid PLAIN message")
    try:
        authzid, user, password = (p.decode() for p in parts)
    except UnicodeDecodeError:
        raise MalformedMessage("invalid PLAIN message") from None
    if not user or (authzid and authzid != user):
        raise MalformedMessage("PLAIN authorization id must be empty or the user itself")
    return user, password


def _attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise MalformedMessage("invalid SCRAM message")
        out[key] = value
    return out


_ESCAPES = {"2C": ",", "3D": "="}  # a user name's escapes (RFC 5802 §5.1)


def _unescape_name(name: str) -> str:
    """RFC 5802 §5.1: each '=' starts '=2C' (',') or '=3D' ('='); any other '=' fails the authentication. Read
    escape by escape: removing the valid ones first joined '=3=2CD' into '=3D'."""
    first, *escaped = name.split("=")
    out = [first]
    for part in escaped:
        if part[:2] not in _ESCAPES:
            raise MalformedMessage("invalid SCRAM user name")
        out.append(_ESCAPES[part[:2]] + part[2:])
    return "".join(out)


@dataclass(slots=True)
class ScramExchange:
    """The server side of one SCRAM exchange: `first(client_first)` then `final(client_final)`.

    `lookup(user)` returns the user's credential for this mechanism, or None. An unknown user gets a made-up
    salt derived from `secret` (the view's `decoy_key`), at the iterations and salt length of `decoy` (the view's
    users'), and fails only at the proof, as a wrong password does, so the answers do not tell which user names
    exist."""

    mechanism: str
    lookup: object  # Callable[[str], ScramCredential | None]
    secret: bytes
    decoy_iterations: int = DEFAULT_ITERATIONS
    decoy_salt_length: int = DECOY_SALT_LENGTH
    user: str | None = None
    server_nonce: str | None = None  # None: random (a fixed one only to replay RFC test vectors)
    _credential: ScramCredential | None = None
    _nonce: str = ""
    _client_first_bare: str = ""
    _server_first: str = ""

    def first(self, message: bytes) -> bytes:
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise MalformedMessage("invalid SCRAM message") from None
        gs2, sep, bare = text.partition(",")
        authzid, sep2, bare = bare.partition(",")
        if not sep or not sep2 or gs2 not in ("n", "y") or (authzid and not authzid.startswith("a=")):
            raise MalformedMessage("invalid SCRAM client-first message (channel binding is not supported)")
        attrs = _attributes(bare)
        if "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise MalformedMessage("invalid SCRAM client-first message")
        self.user = _unescape_name(attrs["n"])
        if authzid and _unescape_name(authzid[2:]) != self.user:
            raise AuthenticationFailed("authorization id must be the user itself")
        self._credential = self.lookup(self.user)  # type: ignore[operator]
        salt, iterations = self._salt_and_iterations()
        self._nonce = attrs["r"] + (self.server_nonce or secrets.token_urlsafe(24))
        self._client_first_bare = bare
        self._server_first = f"r={self._nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        return self._server_first.encode()

    def final(self, message: bytes) -> bytes:
        """The server-final message; AuthenticationFailed when the proof is wrong."""
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise MalformedMessage("invalid SCRAM message") from None
        without_proof, sep, proof_attr = text.rpartition(",p=")
        if not sep:
            raise MalformedMessage("invalid SCRAM client-final message")
        attrs = _attributes(without_proof)
        if attrs.get("r") != self._nonce:
            raise AuthenticationFailed("invalid SCRAM nonce")
        try:
            proof = base64.b64decode(proof_attr, validate=True)
        except ValueError:
            raise MalformedMessage("invalid SCRAM proof") from None
        digest = MECHANISMS[self.mechanism]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        cred = self._credential
        if cred is None or len(proof) != len(cred.stored_key):
            raise AuthenticationFailed(_invalid(self.mechanism))
        signature = _hmac(digest, cred.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(digest, client_key).digest(), cred.stored_key):
            raise AuthenticationFailed(_invalid(self.mechanism))
        server_signature = _hmac(digest, cred.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)

    def _salt_and_iterations(self) -> tuple[bytes, int]:
        if self._credential is not None:
            return self._credential.salt, self._credential.iterations
        decoy = Decoy(self.secret, self.decoy_iterations, self.decoy_salt_length)
        return decoy.salt(self.mechanism, self.user or ""), decoy.iterations


def _invalid(mechanism: str) -> str:
    return f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"


class ScramClient:
    """The client side of one SCRAM exchange (RFC 5802), for the proxy's and controller's logins to brokers:
    `first()`, then `final(server_first)`, then `verify(server_final)` (the broker proves it knows the key too)."""

    def __init__(self, mechanism: str, user: str, password: str, nonce: str | None = None):
        self.digest = MECHANISMS[mechanism]
        self.mechanism = mechanism
        self._password = password
        name = user.replace("=", "=3D").replace(",", "=2C")
        self._nonce = nonce or secrets.token_urlsafe(24)
        self._client_first_bare = f"n={name},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        try:
            text = server_first.decode()
            attrs = _attributes(text)
            salt, iterations, nonce = base64.b64decode(attrs["s"], validate=True), int(attrs["i"]), attrs["r"]
        except (UnicodeDecodeError, KeyError, ValueError):
            raise MalformedMessage("invalid SCRAM server-first message") from None
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise AuthenticationFailed("SCRAM server-first message with a foreign nonce (RFC 5802: ours + its own)")
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise AuthenticationFailed(f"SCRAM server-first message asks for {iterations} iterations (Kafka allows "
                                       f"{MIN_ITERATIONS}-{MAX_ITERATIONS})")
        salted = salted_password(self.digest, self._password, salt, iterations)
        client_key = _hmac(self.digest, salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        signature = _hmac(self.digest, hashlib.new(self.digest, client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(self.digest, _hmac(self.digest, salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        """AuthenticationFailed unless the broker's signature proves it holds this user's ServerKey."""
        text = server_final.decode(errors="replace")
        if text.startswith("e="):
            raise AuthenticationFailed(f"broker refused the SCRAM proof: {text[2:]}")
        expected = b"v=" + base64.b64encode(self._server_signature)
        if not hmac.compare_digest(server_final, expected):
            raise AuthenticationFailed("the broker's SCRAM signature does not match (not the broker holding "
                                       "this user's credential)")
