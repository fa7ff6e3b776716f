"""Review of branch s36-groups (the re-authentication log line quotes the principal).

Finding 2: the branch quotes the principal in the re-authentication line, a token subject being the client's (its
issuer's) choice, but the line that closes an expired session still names it unquoted: once the session ends, any
request but a re-authentication is refused with `Session.refusal`'s reason ("the SASL session of <principal> on the
... listener expired"), raised as ProtocolViolation and logged by the connection as `closing client %s: %s`. A
subject with a newline forges a line there, the one OPERATIONS documents right after the re-authentication line."""

from __future__ import annotations

import logging

from kio.schema.errors import ErrorCode

from fedkafka.observe.logs import TEXT_FORMAT, MaskingFormatter

from .jwks import Issuer
from .test_reauth_unit import PRODUCE, _oauth_ctx, _oauthbearer


def test_the_expired_session_closing_line_quotes_a_principal_with_a_newline(tmp_path):
    issuer = Issuer(tmp_path / "jwks.json")
    forged = "alice\n2026-12-07 00:00:00,000 WARNING fedkafka.proxy[1] closing client 10.0.0.7: forged"
    ctx = _oauth_ctx(issuer, 3000)
    assert _oauthbearer(ctx, issuer.token(sub=forged)).error_code == ErrorCode.none
    ctx.session.clock.now += 4  # the session ended without a re-authentication
    reason = ctx.session.refusal(PRODUCE)
    assert reason is not None
    # as fedkafka/proxy/core/connection.py logs the ProtocolViolation raised with that reason
    record = logging.LogRecord("fedkafka.proxy.core.connection", logging.WARNING, __file__, 0,
                               "closing client %s: %s", ("10.0.0.9:5000", reason), None)
    text = MaskingFormatter(TEXT_FORMAT).format(record)
    assert "\n" not in text and repr(f"User:{forged}") in text, text


def test_a_re_authentication_as_a_principal_with_a_newline_fails_on_one_log_line(tmp_path):
    """The failed-login line of a re-authentication as someone else (Kafka's "Cannot change principals" message,
    logged by the connection as `authentication failed for client %s on %s listener: %s`) names both principals: a
    name not printable is quoted (repr), as the OAUTHBEARER authorization id's message quotes it."""
    issuer = Issuer(tmp_path / "jwks.json")
    forged = "bob\n2026-12-07 00:00:00,000 WARNING fedkafka.proxy[1] closing client 10.0.0.7: forged"
    ctx = _oauth_ctx(issuer, 3000)
    assert _oauthbearer(ctx, issuer.token(sub="alice")).error_code == ErrorCode.none
    ctx.session.clock.now += 2
    answer = _oauthbearer(ctx, issuer.token(sub=forged))
    assert answer.error_code == ErrorCode.sasl_authentication_failed
    # as fedkafka/proxy/core/connection.py logs a failed login
    record = logging.LogRecord("fedkafka.proxy.core.connection", logging.WARNING, __file__, 0,
                               "authentication failed for client %s on %s listener: %s; closing",
                               ("10.0.0.9:5000", "SASL_SSL", ctx.session.failed), None)
    text = MaskingFormatter(TEXT_FORMAT).format(record)
    assert "\n" not in text and f"from User:alice: {f'User:{forged}'!r}" in text, text
