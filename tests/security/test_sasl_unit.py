"""SCRAM and PLAIN on the server side: RFC 7677's exchange replayed, and each way a client can get it wrong."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import Future

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from fedkafka.proxy.handlers import sasl
from fedkafka.proxy.plan import Context, Plan
from fedkafka.security import password_checks, scram
from fedkafka.security.session import FAILED_AUTHENTICATION_DELAY_MS, Session
from fedkafka.view.model import ProxyInfo, View

from .sasl_plans import answered, no_sleep

# RFC 7677 section 3: user "user", password "pencil"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _rfc_exchange(credential) -> scram.ScramExchange:
    return scram.ScramExchange("SCRAM-SHA-256", lambda user: credential if user == "user" else None, b"k",
                               server_nonce=RFC_SERVER_NONCE)


def test_rfc7677_exchange_replays_byte_for_byte():
    cred = scram.make_credential("user", "SCRAM-SHA-256", "pencil", iterations=4096, salt=RFC_SALT)
    exchange = _rfc_exchange(cred)
    assert exchange.first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert exchange.final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_a_wrong_password_fails_at_the_proof():
    cred = scram.make_credential("user", "SCRAM-SHA-256", "not pencil", iterations=4096, salt=RFC_SALT)
    exchange = _rfc_exchange(cred)
    exchange.first(RFC_CLIENT_FIRST)
    with pytest.raises(scram.AuthenticationFailed, match="invalid credentials with SASL mechanism SCRAM-SHA-256"):
        exchange.final(RFC_CLIENT_FINAL)


def test_an_unknown_user_gets_a_stable_made_up_salt_and_fails_like_a_wrong_password():
    first = [scram.ScramExchange("SCRAM-SHA-512", lambda _u: None, b"secret").first(b"n,,n=ghost,r=abc")
             for _ in range(2)]
    salts = {m.decode().split(",")[1] for m in first}
    assert len(salts) == 1  # the same user name always gets the same salt: no way to tell it is made up
    exchange = scram.ScramExchange("SCRAM-SHA-512", lambda _u: None, b"secret")
    nonce = exchange.first(b"n,,n=ghost,r=abc").decode().split(",")[0][2:]
    with pytest.raises(scram.AuthenticationFailed, match="invalid credentials"):
        exchange.final(f"c=biws,r={nonce},p={base64.b64encode(bytes(64)).decode()}".encode())


@pytest.mark.parametrize("message", [b"", b"x", b"p=tls-unique,,n=user,r=abc", b"n,,r=abc", b"n,,n=user",
                                     b"n,,n=us=er,r=abc", b"\xff\xfe"])
def test_malformed_client_first_messages_are_refused(message):
    with pytest.raises(scram.MalformedMessage):
        scram.ScramExchange("SCRAM-SHA-256", lambda _u: None, b"k").first(message)


def test_a_replayed_nonce_is_refused():
    cred = scram.make_credential("user", "SCRAM-SHA-256", "pencil", iterations=4096, salt=RFC_SALT)
    exchange = scram.ScramExchange("SCRAM-SHA-256", lambda _u: cred, b"k")  # a random server nonce this time
    exchange.first(RFC_CLIENT_FIRST)
    with pytest.raises(scram.AuthenticationFailed, match="nonce"):
        exchange.final(RFC_CLIENT_FINAL)


def test_the_stored_credential_holds_no_password():
    cred = scram.make_credential("alice", "SCRAM-SHA-512", "s3cret-pass")
    assert b"s3cret-pass" not in repr(cred.to_dict()).encode()
    assert scram.password_matches(cred, "s3cret-pass") and not scram.password_matches(cred, "s3cret-pasS")
    assert len(cred.stored_key) == len(cred.server_key) == 64
    with pytest.raises(ValueError, match="iterations"):
        scram.make_credential("alice", "SCRAM-SHA-512", "x", iterations=1000)


# -- the handler: Kafka's error codes, and the session it leaves behind ------------------------------------------
def _ctx(session: Session, *users: tuple[str, str]) -> Context:
    creds = tuple(scram.make_credential(u, m, p, iterations=4096) for u, p in users
                  for m in ("SCRAM-SHA-256", "SCRAM-SHA-512"))
    return Context(view=View(version=1, credentials=creds), me=ProxyInfo(1, "h", 1), advertised={}, physical=None,
                   producer_ids=None, session=session)


def _handshake(ctx, mechanism):
    return sasl.handle(ctx, None, SaslHandshakeRequest(mechanism=mechanism))


def _authenticate(ctx, data: bytes, delays: list[float] | None = None):
    """The answer, once PLAIN's check (on the pool's threads) and a failure's delay are over."""
    return answered(sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=data)), delays=delays)


def test_plain_accepts_the_right_password_and_names_the_principal():
    ctx = _ctx(Session.for_listener("SASL_SSL"), ("alice", "pw-a"))
    assert _handshake(ctx, "PLAIN").error_code == ErrorCode.none
    answer = _authenticate(ctx, b"\0alice\0pw-a")
    assert answer.error_code == ErrorCode.none
    assert ctx.session.authenticated and ctx.session.principal == "User:alice" and ctx.session.failed is None


def test_plain_with_a_wrong_password_fails_after_kafkas_delay_and_the_reason_holds_no_password():
    ctx = _ctx(Session.for_listener("SASL_PLAINTEXT"), ("alice", "pw-a"))
    _handshake(ctx, "PLAIN")
    delays: list[float] = []
    answer = _authenticate(ctx, b"\0alice\0guess-123", delays)
    assert answer.error_code == ErrorCode.sasl_authentication_failed
    assert not ctx.session.authenticated and "alice" in ctx.session.failed  # failed: the core closes the connection
    assert "guess-123" not in ctx.session.failed and "guess-123" not in answer.error_message
    # connection.failed.authentication.delay.ms: the answer (and the close) waits 100 ms once the check failed
    assert delays[-1] == FAILED_AUTHENTICATION_DELAY_MS / 1000 == 0.1


@pytest.mark.parametrize("data", [b"\0mallory\0guess-123", b"\0alice\0guess-123", b"\0alice\0pw-a"])
def test_plain_runs_one_pbkdf2_off_the_loop_thread_whether_the_user_exists_or_not(monkeypatch, data):
    """The check runs on the password pool's threads, never on the thread that called the handler (the event
    loop's); a user that does not exist gets the same PBKDF2 (digest, iterations) as one that does."""
    kdf_calls: list[tuple[str, int, str]] = []
    salted_password = scram.salted_password

    def counted(digest, password, salt, iterations):
        kdf_calls.append((digest, iterations, threading.current_thread().name))
        return salted_password(digest, password, salt, iterations)

    ctx = _ctx(Session.for_listener("SASL_SSL"), ("alice", "pw-a"))
    monkeypatch.setattr(scram, "salted_password", counted)
    ctx.session.password_checks = password_checks.PasswordChecks()
    _handshake(ctx, "PLAIN")
    reply = sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=data))
    answer = answered(reply)
    assert answer.error_code == (ErrorCode.none if data.endswith(b"pw-a") else ErrorCode.sasl_authentication_failed)
    ((digest, iterations, thread),) = kdf_calls
    assert (digest, iterations) == ("sha512", 4096)  # alice's SCRAM-SHA-512 credential, or one made up alike
    assert thread.startswith("fedkafka-password-check") and thread != threading.current_thread().name
    assert isinstance(reply, Plan)  # the handler returned at once, the loop then waits for the check


def test_a_scram_failure_waits_kafkas_delay_too():
    ctx = _ctx(Session.for_listener("SASL_SSL"), ("alice", "pw-a"))
    _handshake(ctx, "SCRAM-SHA-512")
    client = scram.ScramClient("SCRAM-SHA-512", "alice", "guess-123")
    first = _authenticate(ctx, client.first())
    final = sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=client.final(first.auth_bytes)))
    assert isinstance(final, Plan) and final.barrier and final.delay_s == 0.1 and not final.calls
    assert final.finish([]).error_code == ErrorCode.sasl_authentication_failed and ctx.session.failed


def test_the_password_checks_keep_clear_of_the_cores_round_cap():
    from fedkafka.proxy.core.dispatch import MAX_PLAN_ROUNDS

    assert sasl.PLAIN_LOOKS + 1 < MAX_PLAN_ROUNDS  # every look a round, and one for the failure's delay


def test_an_unknown_mechanism_is_answered_with_the_enabled_ones():
    ctx = _ctx(Session.for_listener("SASL_SSL", ("SCRAM-SHA-512",)))
    answer = _handshake(ctx, "PLAIN")
    assert answer.error_code == ErrorCode.unsupported_sasl_mechanism
    assert list(answer.mechanisms) == ["SCRAM-SHA-512"] and ctx.session.failed


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_sasl_on_a_listener_without_it_is_an_illegal_state(protocol):
    ctx = _ctx(Session.for_listener(protocol))
    assert _handshake(ctx, "PLAIN").error_code == ErrorCode.illegal_sasl_state
    assert _authenticate(_ctx(Session.for_listener(protocol)), b"x").error_code == ErrorCode.illegal_sasl_state


def test_authenticate_before_the_handshake_and_a_second_handshake_are_illegal():
    ctx = _ctx(Session.for_listener("SASL_SSL"), ("alice", "pw-a"))
    assert _authenticate(ctx, b"\0alice\0pw-a").error_code == ErrorCode.illegal_sasl_state
    ctx = _ctx(Session.for_listener("SASL_SSL"), ("alice", "pw-a"))
    _handshake(ctx, "PLAIN")
    _authenticate(ctx, b"\0alice\0pw-a")
    assert _handshake(ctx, "PLAIN").error_code == ErrorCode.illegal_sasl_state


def test_the_chosen_mechanism_exists_only_after_the_handshake():
    session = Session.for_listener("SASL_PLAINTEXT")
    with pytest.raises(ValueError):
        session.chosen_mechanism()
    session.mechanism = "SCRAM-SHA-256"
    assert session.chosen_mechanism() == "SCRAM-SHA-256"


def test_a_flood_of_checks_queues_on_the_pools_few_threads(monkeypatch):
    pool = password_checks.PasswordChecks(workers=2)
    assert pool._pool is None  # made at the first check (in the worker process, after it forked)
    credential = scram.make_credential("alice", "SCRAM-SHA-512", "pw-a", iterations=4096)
    threads: set[str] = set()
    password_matches = scram.password_matches

    def recorded(cred, password):
        threads.add(threading.current_thread().name)
        return password_matches(cred, password)

    monkeypatch.setattr(scram, "password_matches", recorded)
    checks = [pool.submit(credential, f"guess-{i}") for i in range(24)] + [pool.submit(credential, "pw-a")]
    assert [c.result(60) for c in checks] == [False] * 24 + [True]
    assert 1 <= len(threads) <= 2 and threading.current_thread().name not in threads


def test_a_check_still_queued_after_the_last_look_fails_the_login_and_is_dropped():
    class Stuck:
        def __init__(self):
            self.future: Future[bool] = Future()

        def submit(self, credential, password):
            return self.future

    ctx = _ctx(Session.for_listener("SASL_SSL"), ("alice", "pw-a"))
    stuck = ctx.session.password_checks = Stuck()
    _handshake(ctx, "PLAIN")
    delays: list[float] = []
    answer = answered(sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=b"\0alice\0pw-a")), no_sleep, delays)
    assert answer.error_code == ErrorCode.sasl_authentication_failed and "waited too long" in answer.error_message
    assert stuck.future.cancelled() and ctx.session.failed and not ctx.session.authenticated
    assert len(delays) == sasl.PLAIN_LOOKS + 1 and max(delays) == 0.1  # every look, then the failure's delay
