"""SaslHandshake and SaslAuthenticate: PLAIN and SCRAM-SHA-256/512 against the view's credentials.

Kafka's answers: ILLEGAL_SASL_STATE on a listener without SASL, after authentication or before a handshake;
UNSUPPORTED_SASL_MECHANISM for a mechanism the listener does not enable; SASL_AUTHENTICATION_FAILED for wrong
credentials. Every failure marks the session failed: the core answers, logs one line (no secret in it) and
closes the connection, as a broker does. SaslHandshake v0 (raw SASL tokens without Kafka framing, before
Kafka 1.0) is not implemented: clients use v1 whenever it is advertised.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context
from fedkafka.security import oauth, scram

API_KEYS = {17: (1, 1), 36: (0, 2)}
ROLE = "any"
AUTHORIZES = True


def handle(ctx: Context, header, request):
    if request.__api_key__ == 17:
        return _handshake(ctx, request)
    return _authenticate(ctx, request)


def _handshake(ctx: Context, request):
    session = ctx.session
    answer = response_schema(17, type(request).__version__)
    if not session.sasl or session.authenticated or session.mechanism is not None:
        session.fail(f"SaslHandshake in an illegal state (listener {session.protocol})")
        return build(answer, {"error_code": ErrorCode.illegal_sasl_state, "mechanisms": []})
    if request.mechanism not in session.mechanisms:
        session.fail(f"unsupported SASL mechanism {request.mechanism[:64]!r}")
        return build(answer, {"error_code": ErrorCode.unsupported_sasl_mechanism,
                              "mechanisms": list(session.mechanisms)})
    session.mechanism = request.mechanism
    return build(answer, {"error_code": ErrorCode.none, "mechanisms": list(session.mechanisms)})


def _authenticate(ctx: Context, request):
    session = ctx.session
    version = type(request).__version__
    if not session.sasl or session.authenticated or session.mechanism is None:
        session.fail(f"SaslAuthenticate in an illegal state (listener {session.protocol})")
        return _answer(version, ErrorCode.illegal_sasl_state, "SaslAuthenticate is not expected now")
    try:
        if session.mechanism == "PLAIN":
            return _answer(version, ErrorCode.none, None, _plain(ctx, request.auth_bytes))
        if session.mechanism == "OAUTHBEARER":
            return _answer(version, ErrorCode.none, None, _oauthbearer(ctx, request.auth_bytes))
        return _answer(version, ErrorCode.none, None, _scram_step(ctx, request.auth_bytes))
    except scram.AuthenticationFailed as e:
        who = f", user {session.claimed_user[:256]!r}" if session.claimed_user is not None else ""
        session.fail(f"{session.mechanism}{who}: {e}")
        return _answer(version, ErrorCode.sasl_authentication_failed, str(e))


def _plain(ctx: Context, message: bytes) -> bytes:
    user, password = scram.parse_plain(message)
    ctx.session.claimed_user = user
    creds = [c for c in ctx.view.credentials if c.user == user]
    if not creds or not scram.password_matches(creds[0], password):
        raise scram.AuthenticationFailed("Authentication failed: Invalid username or password")
    ctx.session.succeed(f"User:{user}")
    return b""


def _oauthbearer(ctx: Context, message: bytes) -> bytes:
    """One round: a valid token names the principal; an invalid one fails at once (Kafka's server would first
    send an error document and wait for the client's empty reply: the client's outcome is the same)."""
    token = oauth.parse_client_message(message)
    ctx.session.succeed(ctx.session.oauth.principal(token))
    return b""


def _scram_step(ctx: Context, message: bytes) -> bytes:
    session = ctx.session
    if session.exchange is None:
        mechanism = session.chosen_mechanism()
        session.exchange = scram.ScramExchange(mechanism, lambda user: ctx.view.credential(user, mechanism),
                                               session.secret)
        first = session.exchange.first(message)
        session.claimed_user = session.exchange.user
        return first
    exchange = session.exchange
    final = exchange.final(message)
    session.succeed(f"User:{exchange.user}")
    return final


def _answer(version: int, code: ErrorCode, message: str | None, auth_bytes: bytes = b""):
    return build(response_schema(36, version), {"error_code": code, "error_message": message,
                                              "auth_bytes": auth_bytes})
