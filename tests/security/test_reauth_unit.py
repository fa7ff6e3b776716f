"""KIP-368 on the proxy's SASL listeners (--connections-max-reauth-ms): the session lifetime SaslAuthenticate
answers, re-authentication on the live connection, and what an expired session may still send. The clocks are
injected: nothing sleeps."""

from __future__ import annotations

import logging

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v0.request import SaslAuthenticateRequest as SaslAuthenticateV0
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from fedkafka.observe.logs import TEXT_FORMAT, MaskingFormatter
from fedkafka.proxy.handlers import sasl
from fedkafka.proxy.plan import Context
from fedkafka.security import scram
from fedkafka.security.oauth import JwtValidator, OAuthSettings
from fedkafka.security.session import Session
from fedkafka.view.model import ProxyInfo, View

from .jwks import AUDIENCE, ISSUER, Issuer, client_message
from .sasl_plans import InlineChecks, answered, no_sleep

PRODUCE, METADATA, API_VERSIONS, HANDSHAKE, AUTHENTICATE = 0, 3, 18, 17, 36
USERS = (("alice", "pw-a"), ("bob", "pw-b"))


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _ctx(max_reauth_ms: int = 3000, clock: Clock | None = None, oauth=None) -> Context:
    creds = tuple(scram.make_credential(u, m, p, iterations=4096) for u, p in USERS
                  for m in ("SCRAM-SHA-256", "SCRAM-SHA-512"))
    session = Session.for_listener("SASL_SSL", ("SCRAM-SHA-512", "PLAIN", "OAUTHBEARER"), peer="10.0.0.9:5000",
                                   max_reauth_ms=max_reauth_ms, clock=clock or Clock(), oauth=oauth)
    session.password_checks = InlineChecks()
    return Context(view=View(version=1, credentials=creds), me=ProxyInfo(1, "h", 1), advertised={}, physical=None,
                   producer_ids=None, session=session)


def _handshake(ctx, mechanism: str):
    return sasl.handle(ctx, None, SaslHandshakeRequest(mechanism=mechanism))


def _authenticate(ctx, request):
    """SaslAuthenticate's answer: PLAIN's check and a failure's delay are plans, run here without sleeping."""
    return answered(sasl.handle(ctx, None, request), no_sleep)


def _plain(ctx, user: str = "alice", password: str = "pw-a", request=SaslAuthenticateRequest):
    assert _handshake(ctx, "PLAIN").error_code == ErrorCode.none
    return _authenticate(ctx, request(auth_bytes=f"\0{user}\0{password}".encode()))


def _scram(ctx, user: str = "alice", password: str = "pw-a"):
    assert _handshake(ctx, "SCRAM-SHA-512").error_code == ErrorCode.none
    client = scram.ScramClient("SCRAM-SHA-512", user, password)
    first = sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=client.first()))
    assert first.error_code == ErrorCode.none and first.session_lifetime.total_seconds() == 0
    final = _authenticate(ctx, SaslAuthenticateRequest(auth_bytes=client.final(first.auth_bytes)))
    if final.error_code == ErrorCode.none:
        client.verify(final.auth_bytes)
    return final


def _lifetime_ms(answer) -> int:
    return round(answer.session_lifetime.total_seconds() * 1000)


def test_off_by_default_the_session_has_no_lifetime_and_a_second_handshake_is_illegal():
    ctx = _ctx(max_reauth_ms=0)
    assert _lifetime_ms(_plain(ctx)) == 0
    ctx.session.clock.now += 10**9
    assert ctx.session.refusal(PRODUCE) is None
    assert _handshake(ctx, "PLAIN").error_code == ErrorCode.illegal_sasl_state and ctx.session.failed


@pytest.mark.parametrize("authenticate", [_plain, _scram])
def test_the_configured_maximum_is_the_session_lifetime(authenticate):
    ctx = _ctx(max_reauth_ms=3000)
    answer = authenticate(ctx)
    assert answer.error_code == ErrorCode.none and _lifetime_ms(answer) == 3000
    assert ctx.session.expires_at == ctx.session.clock.now + 3.0


def test_before_expiry_every_request_passes_after_it_only_a_re_authentication():
    ctx = _ctx(max_reauth_ms=3000)
    _plain(ctx)
    clock = ctx.session.clock
    clock.now += 2.999
    assert ctx.session.refusal(PRODUCE) is None and ctx.session.refusal(METADATA) is None
    clock.now += 0.002
    for api_key in (PRODUCE, METADATA, API_VERSIONS):
        reason = ctx.session.refusal(api_key)
        assert reason is not None and "User:alice" in reason and "expired 1 ms ago" in reason
        assert "pw-a" not in reason
    assert ctx.session.refusal(HANDSHAKE) is None and ctx.session.refusal(AUTHENTICATE) is None


@pytest.mark.parametrize("authenticate", [_plain, _scram])
def test_a_re_authentication_keeps_the_principal_and_renews_the_session(authenticate, caplog):
    ctx = _ctx(max_reauth_ms=3000)
    authenticate(ctx)
    for n in (1, 2):
        ctx.session.clock.now += 2.7  # librdkafka starts again at 90% of the lifetime
        with caplog.at_level(logging.INFO, logger=sasl.__name__):
            answer = authenticate(ctx)
        assert answer.error_code == ErrorCode.none and _lifetime_ms(answer) == 3000
        assert ctx.session.principal == "User:alice" and ctx.session.authenticated and ctx.session.failed is None
        assert ctx.session.reauthentications == n
        assert ctx.session.refusal(PRODUCE) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "re-authenticated as 'User:alice'" in lines[1] and "2 times" in lines[1]
    assert not any("pw-a" in line for line in lines)


def test_an_expired_session_may_still_re_authenticate():
    ctx = _ctx(max_reauth_ms=3000)
    _plain(ctx)
    ctx.session.clock.now += 60
    assert ctx.session.refusal(METADATA) is not None
    assert _plain(ctx).error_code == ErrorCode.none
    assert ctx.session.refusal(METADATA) is None


def test_during_a_re_authentication_only_sasl_requests_pass():
    ctx = _ctx(max_reauth_ms=3000)
    _plain(ctx)
    ctx.session.clock.now += 2
    assert _handshake(ctx, "PLAIN").error_code == ErrorCode.none
    assert ctx.session.refusal(PRODUCE) == ("api_key=0 before SASL authentication on SASL_SSL (after SaslHandshake "
                                            "only SaslAuthenticate)")
    assert ctx.session.refusal(API_VERSIONS) is not None and ctx.session.refusal(HANDSHAKE) is not None
    assert ctx.session.refusal(AUTHENTICATE) is None
    assert ctx.session.principal == "User:alice"  # requests already read keep their principal


@pytest.mark.parametrize("authenticate", [_plain, _scram])
def test_a_re_authentication_as_someone_else_fails_and_keeps_the_principal(authenticate):
    """Kafka's ReauthInfo.ensurePrincipalUnchanged: SASL_AUTHENTICATION_FAILED, then the connection closes."""
    ctx = _ctx(max_reauth_ms=3000)
    authenticate(ctx)
    ctx.session.clock.now += 2
    answer = authenticate(ctx, "bob", "pw-b")  # bob's own, right password
    assert answer.error_code == ErrorCode.sasl_authentication_failed
    assert answer.error_message == "Cannot change principals during re-authentication from User:alice: User:bob"
    assert ctx.session.failed and "re-authentication" in ctx.session.failed
    assert ctx.session.principal == "User:alice" and not ctx.session.authenticated


@pytest.mark.parametrize("authenticate", [_plain, _scram])
def test_a_re_authentication_with_a_wrong_password_fails(authenticate):
    ctx = _ctx(max_reauth_ms=3000)
    authenticate(ctx)
    ctx.session.clock.now += 2
    answer = authenticate(ctx, "alice", "guess-123")
    assert answer.error_code == ErrorCode.sasl_authentication_failed
    assert ctx.session.failed.startswith("re-authentication: ") and "guess-123" not in ctx.session.failed
    assert not ctx.session.authenticated and ctx.session.principal == "User:alice"


def test_a_re_authentication_with_another_mechanism_fails_with_kafkas_message():
    ctx = _ctx(max_reauth_ms=3000)
    _scram(ctx)
    ctx.session.clock.now += 2
    answer = _plain(ctx)
    assert answer.error_code == ErrorCode.sasl_authentication_failed
    assert answer.error_message == ("SASL mechanism 'PLAIN' requested by client is not supported for "
                                    "re-authentication of mechanism 'SCRAM-SHA-512'")
    assert ctx.session.failed and ctx.session.principal == "User:alice"


def test_at_most_one_re_authentication_a_second():
    """Kafka's KafkaChannel.maybeBeginServerReauthentication: an earlier SaslHandshake is handled as on a
    session without re-authentication."""
    ctx = _ctx(max_reauth_ms=3000)
    _plain(ctx)
    _plain(ctx)  # the first re-authentication: no earlier one to count from
    ctx.session.clock.now += 0.5
    assert _handshake(ctx, "PLAIN").error_code == ErrorCode.illegal_sasl_state and ctx.session.failed


def test_a_v0_client_is_not_told_the_lifetime_but_its_session_ends_all_the_same():
    ctx = _ctx(max_reauth_ms=3000)
    answer = _plain(ctx, request=SaslAuthenticateV0)
    assert answer.error_code == ErrorCode.none and not hasattr(answer, "session_lifetime")
    ctx.session.clock.now += 3.001
    assert ctx.session.refusal(PRODUCE) is not None


@pytest.fixture
def issuer(tmp_path) -> Issuer:
    return Issuer(tmp_path / "jwks.json")


def _oauth_ctx(issuer: Issuer, max_reauth_ms: int) -> Context:
    return _ctx(max_reauth_ms, oauth=JwtValidator(OAuthSettings(issuer.jwks_file, ISSUER, AUDIENCE)))


def _oauthbearer(ctx, token: str):
    assert _handshake(ctx, "OAUTHBEARER").error_code == ErrorCode.none
    return _authenticate(ctx, SaslAuthenticateRequest(auth_bytes=client_message(token)))


@pytest.mark.parametrize(("max_reauth_ms", "token_s", "expected_ms"), [(3000, 300, 3000), (600_000, 60, 60_000)])
def test_oauthbearer_sessions_last_no_longer_than_the_token(issuer, max_reauth_ms, token_s, expected_ms):
    ctx = _oauth_ctx(issuer, max_reauth_ms)
    answer = _oauthbearer(ctx, issuer.token(lifetime_s=token_s))
    assert answer.error_code == ErrorCode.none
    assert abs(_lifetime_ms(answer) - expected_ms) <= 1000  # exp has whole seconds; the wall clock runs
    assert _lifetime_ms(answer) <= expected_ms


def test_oauthbearer_re_authenticates_with_a_fresh_token_of_the_same_subject(issuer):
    ctx = _oauth_ctx(issuer, 3000)
    _oauthbearer(ctx, issuer.token())
    ctx.session.clock.now += 2
    assert _oauthbearer(ctx, issuer.token()).error_code == ErrorCode.none
    assert ctx.session.reauthentications == 1
    ctx.session.clock.now += 2
    answer = _oauthbearer(ctx, issuer.token(sub="bob"))
    assert answer.error_code == ErrorCode.sasl_authentication_failed and ctx.session.principal == "User:alice"


def test_the_re_authentication_line_quotes_a_principal_with_a_newline(issuer, caplog):
    """The token's subject is the client's (its issuer's) choice: quoted (repr) as the refusal and failed-login lines
    quote client-chosen names, so a newline in it starts no line of its making (session-35 log-forging fix)."""
    forged = "alice\n2026-12-07 00:00:00,000 WARNING fedkafka.proxy[1] closing client 10.0.0.7: forged"
    ctx = _oauth_ctx(issuer, 3000)
    assert _oauthbearer(ctx, issuer.token(sub=forged)).error_code == ErrorCode.none
    ctx.session.clock.now += 2
    with caplog.at_level(logging.INFO, logger=sasl.__name__):
        assert _oauthbearer(ctx, issuer.token(sub=forged)).error_code == ErrorCode.none
    (record,) = caplog.records
    text = MaskingFormatter(TEXT_FORMAT).format(record)
    assert "\n" not in text and f"re-authenticated as {f'User:{forged}'!r}" in text, text
