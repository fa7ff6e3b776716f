"""OAUTHBEARER: JWTs against a JWKS file (issuer, audience, expiry, key), and the SASL handler's answers."""

from __future__ import annotations

import os

import jwt as pyjwt
import pytest
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from fedkafka.proxy.handlers import sasl
from fedkafka.proxy.plan import Context
from fedkafka.security import oauth
from fedkafka.security.scram import AuthenticationFailed, MalformedMessage
from fedkafka.security.session import Session
from fedkafka.view.model import ProxyInfo, View

from .jwks import AUDIENCE, ISSUER, Issuer, client_message
from .sasl_plans import answered, no_sleep


@pytest.fixture
def issuer(tmp_path) -> Issuer:
    return Issuer(tmp_path / "jwks.json")


def _validator(issuer: Issuer, **kw) -> oauth.JwtValidator:
    return oauth.JwtValidator(oauth.OAuthSettings(issuer.jwks_file, ISSUER, AUDIENCE, leeway_s=0, **kw))


def test_a_valid_token_names_its_subject(issuer):
    assert _validator(issuer).principal(issuer.token("svc-orders")) == "User:svc-orders"


@pytest.mark.parametrize(("change", "reason"), [
    ({"lifetime_s": -10}, "expired"),
    ({"aud": "someone-else"}, "(?i)audience"),
    ({"iss": "https://evil.test"}, "(?i)issuer"),
    ({"foreign": True}, "Signature verification failed"),
    ({"kid": "unknown"}, "no key 'unknown'"),
])
def test_bad_tokens_fail_with_the_reason_and_without_the_token(issuer, change, reason):
    token = issuer.token(**change)
    with pytest.raises(AuthenticationFailed, match=reason) as raised:
        _validator(issuer).principal(token)
    assert token not in str(raised.value)


def test_garbage_and_a_missing_subject_fail(issuer):
    with pytest.raises(AuthenticationFailed):
        _validator(issuer).principal("not.a.jwt")
    no_sub = pyjwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": 2**40}, issuer.key, algorithm="RS256",
                          headers={"kid": issuer.kid})
    with pytest.raises(AuthenticationFailed, match="sub"):
        _validator(issuer).principal(no_sub)


def test_a_rotated_jwks_file_is_read_again(issuer, tmp_path):
    validator = _validator(issuer)
    assert validator.principal(issuer.token()) == "User:alice"
    rotated = Issuer(tmp_path / "rotated.json", kid="k2")
    issuer.jwks_file.write_text(rotated.jwks_file.read_text())
    os.utime(issuer.jwks_file, (1, 1))  # a different mtime, however fast the test runs
    assert validator.principal(rotated.token()) == "User:alice"
    with pytest.raises(AuthenticationFailed):
        validator.principal(issuer.token())


@pytest.mark.parametrize("message", [b"", b"n,,auth=Bearer x\x01\x01", b"n,,\x01auth=Basic x\x01\x01",
                                     b"n,,\x01auth=Bearer x\x01", b"\xff"])
def test_malformed_client_messages(message):
    with pytest.raises(MalformedMessage):
        oauth.parse_client_message(message)


def test_the_handler_authenticates_with_a_token_and_refuses_an_expired_one(issuer):
    def attempt(token: str) -> tuple:
        session = Session.for_listener("SASL_SSL", ("OAUTHBEARER",), oauth=_validator(issuer))
        ctx = Context(view=View(version=1), me=ProxyInfo(1, "h", 1), advertised={}, physical=None,
                      producer_ids=None, session=session)
        assert sasl.handle(ctx, None, SaslHandshakeRequest(mechanism="OAUTHBEARER")).error_code == ErrorCode.none
        answer = answered(sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=client_message(token))), no_sleep)
        return answer, session

    answer, session = attempt(issuer.token("bob"))
    assert answer.error_code == ErrorCode.none and session.principal == "User:bob" and session.authenticated
    expired = issuer.token("bob", lifetime_s=-60)
    answer, session = attempt(expired)
    assert answer.error_code == ErrorCode.sasl_authentication_failed and "expired" in answer.error_message
    assert not session.authenticated and "expired" in session.failed and expired not in session.failed
    assert expired not in repr(session)  # the session keeps no token
