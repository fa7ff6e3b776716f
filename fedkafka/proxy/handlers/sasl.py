"""SaslHandshake and SaslAuthenticate: PLAIN and SCRAM-SHA-256/512 against the view's credentials.

Kafka's answers: ILLEGAL_SASL_STATE on a listener without SASL, after authentication or before a handshake;
UNSUPPORTED_SASL_MECHANISM for a mechanism the listener does not enable; SASL_AUTHENTICATION_FAILED for wrong
credentials. Every failure marks the session failed: the core answers, logs one line (no secret in it) and
closes the connection, as a broker does; a failed SaslAuthenticate is answered only after Kafka's
connection.failed.authentication.delay.ms (--failed-authentication-delay-ms). PLAIN's PBKDF2 runs on the
password pool's threads, never on the event loop, and the same for a user that does not exist (docs/DESIGN.md
§11). SaslHandshake v0 (raw SASL tokens without Kafka framing, before Kafka 1.0) is not implemented: clients use
v1 whenever it is advertised.

Re-authentication (KIP-368, docs/DESIGN.md §11): with --connections-max-reauth-ms a session gets a lifetime,
answered as session_lifetime_ms; a new SaslHandshake on an authenticated session starts the exchange over on the
live connection. It must keep the mechanism and the principal, as Kafka's SaslServerAuthenticator requires
(ReauthInfo.saslMechanismUnchanged, ensurePrincipalUnchanged); any failure closes the connection.
"""

from __future__ import annotations

import datetime
import logging
from concurrent.futures import Future

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import CloseConnection, Context, Plan
from fedkafka.security import oauth, password_checks, scram
from fedkafka.view.model import View

API_KEYS = {17: (1, 1), 36: (0, 2)}
ROLE = "any"
AUTHORIZES = True

log = logging.getLogger(__name__)


def handle(ctx: Context, header, request):
    if request.__api_key__ == 17:
        return _handshake(ctx, request)
    return _authenticate(ctx, request)


def _handshake(ctx: Context, request):
    session = ctx.session
    answer = response_schema(17, type(request).__version__)
    if session.may_reauthenticate():
        session.begin_reauthentication()
    elif not session.sasl or session.authenticated or session.mechanism is not None:
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
        _same_mechanism(session)
        if session.mechanism == "PLAIN":
            return _plain(ctx, request.auth_bytes, version)
        if session.mechanism == "OAUTHBEARER":
            token, lifetime_ms = _oauthbearer(ctx, request.auth_bytes)
        else:
            token, lifetime_ms = _scram_step(ctx, request.auth_bytes)
    except scram.AuthenticationFailed as e:
        return _failed(ctx, version, e)
    return _answer(version, ErrorCode.none, None, token, lifetime_ms)


def _failed(ctx: Context, version: int, error: scram.AuthenticationFailed):
    """SASL_AUTHENTICATION_FAILED, answered (and the connection closed) only after Kafka's
    connection.failed.authentication.delay.ms: a client guessing passwords gets one answer per delay. The wait
    is a barrier, so the connection's next request is not read meanwhile."""
    session = ctx.session
    who = f", user {session.claimed_user[:256]!r}" if session.claimed_user is not None else ""
    again = "re-authentication: " if session.reauthenticating is not None else ""
    session.fail(f"{again}{session.mechanism}{who}: {error}")
    answer = _answer(version, ErrorCode.sasl_authentication_failed, str(error))
    if session.failed_authentication_delay_ms <= 0:
        return answer
    return Plan((), lambda _results: answer, barrier=True, delay_s=session.failed_authentication_delay_ms / 1000)


def _same_mechanism(session) -> None:
    """Kafka's message for a re-authentication with another mechanism (it accepts the handshake and fails the
    exchange: the REAUTH_BAD_MECHANISM state of its SaslServerAuthenticator)."""
    if session.reauthenticating is not None and session.mechanism != session.reauthenticating[0]:
        raise scram.AuthenticationFailed(f"SASL mechanism '{session.mechanism}' requested by client is not "
                                         f"supported for re-authentication of mechanism "
                                         f"'{session.reauthenticating[0]}'")


def _succeed(ctx: Context, principal: str, credential_expires_at: float | None = None) -> int:
    """The session authenticated (again); returns its lifetime in ms (0: it does not expire)."""
    session = ctx.session
    again = session.reauthenticating is not None
    lifetime_ms = session.succeed(principal, credential_expires_at)
    if again:  # the principal quoted (repr), as the refusal lines quote it: its name is the client's (or its issuer's)
        log.info("client %s re-authenticated as %r on %s listener (%d times on this connection); session "
                 "lifetime %d ms", session.peer, principal, session.protocol, session.reauthentications, lifetime_ms)
    return lifetime_ms


def _plain(ctx: Context, message: bytes, version: int) -> Plan | CloseConnection:
    """The password is checked off the event loop (security/password_checks.py), against the user's costliest
    credential (`_plain_cost`); a user that does not exist gets the PBKDF2 of the view's costliest, against a
    made-up credential (security/scram.py made_up_credential), so the time an answer takes does not tell which
    user names exist while users have credentials alike (docs/DESIGN.md §11). The pool serves client networks in
    turn; a check it refuses (the network's share is full, or it would wait too long) is `_refused`."""
    session = ctx.session
    user, password = scram.parse_plain(message)
    session.claimed_user = user
    own = [c for c in ctx.view.credentials if c.user == user]
    if own:
        credential = max(own, key=_plain_cost)
    else:
        costliest = max(ctx.view.credentials, key=_plain_cost, default=None)
        credential = scram.made_up_credential(
            user, session.secret, costliest.iterations if costliest else scram.DEFAULT_ITERATIONS,
            costliest.mechanism if costliest else "SCRAM-SHA-512")
    try:
        check = session.password_checks.submit(credential, password, session.host)
    except password_checks.Refused as e:
        return _refused(session, str(e))
    return _when_checked(ctx, version, user if own else None, check, 0)


def _plain_cost(credential) -> tuple[bool, int]:
    """PLAIN's pick among credentials: SCRAM-SHA-512 before SCRAM-SHA-256 (a costlier hash), then the most
    iterations."""
    return credential.mechanism == "SCRAM-SHA-512", credential.iterations


def _retry(session, why: str) -> CloseConnection:
    """The login is not answered: the connection closes, which a client takes for a network error and retries
    after its backoff (an answered SASL_AUTHENTICATION_FAILED is final: Java clients raise it to the
    application). Kafka under such a flood of logins is slow, not refusing. One log line (the core's)."""
    who = f" of user {session.claimed_user[:256]!r}" if session.claimed_user is not None else ""
    return CloseConnection(f"PLAIN login{who} not checked, closed for the client to retry: {why}")


def _refused(session, why: str) -> Plan | CloseConnection:
    """A login whose check the pool would not queue (its client network's share is full, or the check would not
    end within the handler's wait): closed for a retry as `_retry`, after the failed-authentication delay as a
    failure is answered, so a flooding client's refused connections cost it as much time as its failed ones.
    No check runs: a refusal costs no PBKDF2."""
    closing = _retry(session, why)
    if session.failed_authentication_delay_ms <= 0:
        return closing
    return Plan((), lambda _results: closing, barrier=True, delay_s=session.failed_authentication_delay_ms / 1000)


# While a password check runs the handler looks again after PLAIN_WAIT_S, doubling up to PLAIN_WAIT_MAX_S, at most
# PLAIN_LOOKS times (~5.5 s: under the core's MAX_PLAN_ROUNDS, with a round to spare for a failure's delay; a client
# waits for a slow broker's login as long); a check still queued then (a flood of logins) is dropped and the
# connection closed unanswered, for the client to retry. The pool refuses at once a check it expects to end later
# than its patience (password_checks.PATIENCE_S, under this wait), so a dropped check is the exception: a network's
# further check pushed back by networks that came after it, checks slower than measured so far, or a check that
# alone outlasts the wait (the pool runs a check with nothing ahead of it whatever its estimate).
PLAIN_WAIT_S, PLAIN_WAIT_MAX_S, PLAIN_LOOKS = 0.002, 0.25, 28


def _when_checked(ctx: Context, version: int, user: str | None, check: Future[bool], looks: int) -> Plan:
    """`user`: None for a user that does not exist (its made-up credential fits no password all the same)."""

    def finish(_results: list):
        if not check.done():
            if looks + 1 < PLAIN_LOOKS:
                return _when_checked(ctx, version, user, check, looks + 1)
            check.cancel()
            return _retry(ctx.session, "the password check queue was too long (too many logins at once)")
        try:
            if not check.result() or user is None:
                raise scram.AuthenticationFailed("Authentication failed: Invalid username or password")
            lifetime_ms = _succeed(ctx, f"User:{user}")
        except scram.AuthenticationFailed as e:
            return _failed(ctx, version, e)
        return _answer(version, ErrorCode.none, None, b"", lifetime_ms)

    return Plan((), finish, barrier=True, delay_s=min(PLAIN_WAIT_S * 2 ** looks, PLAIN_WAIT_MAX_S))


def _oauthbearer(ctx: Context, message: bytes) -> tuple[bytes, int]:
    """One round: a valid token names the principal; an invalid one fails at once (Kafka's server would first
    send an error document and wait for the client's empty reply: the client's outcome is the same). The
    session lasts no longer than the token (its exp), as Kafka's does."""
    token, authorization_id = oauth.parse_client_message(message)
    principal, expires_at = ctx.session.oauth.validate(token)
    oauth.check_authorization_id(authorization_id, principal)
    return b"", _succeed(ctx, principal, expires_at)


def _scram_step(ctx: Context, message: bytes) -> tuple[bytes, int]:
    session = ctx.session
    if session.exchange is None:
        mechanism = session.chosen_mechanism()
        decoy = _decoy(ctx.view, mechanism)
        session.exchange = scram.ScramExchange(mechanism, lambda user: ctx.view.credential(user, mechanism),
                                               decoy.key, decoy.iterations, decoy.salt_length)
        first = session.exchange.first(message)
        session.claimed_user = session.exchange.user
        return first, 0
    exchange = session.exchange
    final = exchange.final(message)
    return final, _succeed(ctx, f"User:{exchange.user}")


def _decoy(view: View, mechanism: str) -> scram.Decoy:
    """The view's made-up SCRAM answer for `mechanism` (scram.decoy_for), worked out once per view object: the
    same at every proxy and worker serving this view, and after a restart."""
    return view.derived(f"scram_decoy {mechanism}",
                        lambda v: scram.decoy_for(v.credentials, v.federation_id, mechanism))


def _answer(version: int, code: ErrorCode, message: str | None, auth_bytes: bytes = b"", lifetime_ms: int = 0):
    """session_lifetime_ms exists from v1 (KIP-368); a v0 client is not told, its session ends all the same."""
    return build(response_schema(36, version), {"error_code": code, "error_message": message,
                                              "auth_bytes": auth_bytes,
                                              "session_lifetime": datetime.timedelta(milliseconds=lifetime_ms)})
