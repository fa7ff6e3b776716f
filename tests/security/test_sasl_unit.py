"""SCRAM and PLAIN on the server side: RFC 7677's exchange replayed, and each way a client can get it wrong."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from fedkafka.protocol import codec
from fedkafka.proxy.core.client_frames import start_server
from fedkafka.proxy.core.connection import ClientConnection
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.limits import Limits
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.handlers import sasl
from fedkafka.proxy.plan import CloseConnection, Context, Plan
from fedkafka.proxy.state import ProxyState
from fedkafka.security import password_checks, scram
from fedkafka.security.session import FAILED_AUTHENTICATION_DELAY_MS, Session
from fedkafka.view.model import ProxyInfo, View

from .sasl_plans import BLOCKER, InlineChecks, answered, failing_starts, no_sleep

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
    assert pool._threads == 0  # started at the first check (in the worker process, after it forked)
    credential = scram.make_credential("alice", "SCRAM-SHA-512", "pw-a", iterations=4096)
    threads: set[str] = set()
    password_matches = scram.password_matches

    def recorded(cred, password):
        threads.add(threading.current_thread().name)
        return password_matches(cred, password)

    monkeypatch.setattr(scram, "password_matches", recorded)
    checks = [pool.submit(credential, f"guess-{i}", f"10.0.0.{i}") for i in range(24)]
    checks.append(pool.submit(credential, "pw-a", "10.0.1.1"))
    assert [c.result(60) for c in checks if c is not None] == [False] * 24 + [True]
    assert 1 <= len(threads) <= 2 and threading.current_thread().name not in threads
    # a check done is no longer counted against its address: its done-callback runs in the pool's thread right after
    # the result wakes this one, so it is waited for (a bounded wait for the callback, not a timing assertion)
    for _ in range(1000):
        if pool.held("10.0.1.1") == 0:
            break
        time.sleep(0.01)
    assert pool.held("10.0.1.1") == 0


class _Gate:
    """A pool of one thread whose checks are held until `open`: a queue still full when the handler's wait ends."""

    def __init__(self, per_client: int):
        self.pool = password_checks.PasswordChecks(workers=1, per_client=per_client)
        self.gate = threading.Event()
        self.holding = threading.Event()

    def hold(self):
        self.pool.submit(BLOCKER, "", "blocker")  # holds the one thread till open
        assert self.holding.wait(60)  # taken from the queue: ahead of nothing

    def open(self):
        self.gate.set()


@pytest.fixture
def gate(monkeypatch):
    password_matches = scram.password_matches
    gates: list[_Gate] = []

    def held_back(cred, password):
        if cred is BLOCKER:
            gates[0].holding.set()
        gates[0].gate.wait(60)
        return False if cred is BLOCKER else password_matches(cred, password)

    monkeypatch.setattr(scram, "password_matches", held_back)
    gates.append(_Gate(per_client=3))
    gates[0].hold()  # once held_back finds the gate
    yield gates[0]
    gates[0].open()


def _plain_session(gate: _Gate, host: str) -> Context:
    ctx = _ctx(Session.for_listener("SASL_SSL", host=host), ("alice", "pw-a"))
    ctx.session.password_checks = gate.pool
    _handshake(ctx, "PLAIN")
    return ctx


def test_a_login_behind_a_flood_is_closed_for_a_retry_not_failed(gate):
    """Checks queued past the handler's wait (a flood of junk logins, a restart with thousands of clients): the
    valid login is not answered SASL_AUTHENTICATION_FAILED (final for a client) but closed unanswered, which a
    client retries; its check is dropped from the queue. Once the queue drains, the same login succeeds."""
    flood = [sasl.handle(_plain_session(gate, "10.0.0.9"), None, SaslAuthenticateRequest(auth_bytes=b"\0x\0junk"))
             for _ in range(2)]
    ctx = _plain_session(gate, "10.0.0.1")
    delays: list[float] = []
    reply = answered(sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=b"\0alice\0pw-a")), no_sleep, delays)
    assert isinstance(reply, CloseConnection) and "password check queue" in reply.reason and "alice" in reply.reason
    assert ctx.session.failed is None and not ctx.session.authenticated  # no "authentication failed", no answer
    assert len(delays) == sasl.PLAIN_LOOKS and gate.pool.held("10.0.0.1") == 0  # every look; the check dropped
    gate.open()
    assert [answered(f).error_code for f in flood] == [ErrorCode.sasl_authentication_failed] * 2
    again = _plain_session(gate, "10.0.0.1")  # the client's retry
    assert _authenticate(again, b"\0alice\0pw-a").error_code == ErrorCode.none and again.session.authenticated


def test_one_address_cannot_fill_the_password_check_queue(gate):
    """Past per_client checks of one address queued, its further logins are closed for a retry at once (no check
    queued); another address's login still gets its check and its answer."""
    flooding = [sasl.handle(_plain_session(gate, "10.0.0.9"), None,
                            SaslAuthenticateRequest(auth_bytes=f"\0junk-{i}\0x".encode())) for i in range(5)]
    delays: list[float] = []
    refused = [answered(r, no_sleep, delays) for r in flooding[3:]]
    assert delays == [FAILED_AUTHENTICATION_DELAY_MS / 1000] * 2  # closed after the failed-authentication delay
    assert all(isinstance(r, CloseConnection) and "10.0.0.9 has 3 password checks queued" in r.reason
               for r in refused)
    assert gate.pool.held("10.0.0.9") == 3
    ctx = _plain_session(gate, "10.0.0.1")
    reply = sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=b"\0alice\0pw-a"))
    assert isinstance(reply, Plan)
    gate.open()
    assert answered(reply).error_code == ErrorCode.none and ctx.session.principal == "User:alice"
    assert [answered(r).error_code for r in flooding[:3]] == [ErrorCode.sasl_authentication_failed] * 3


def _kdf_of_login(monkeypatch, credentials, data: bytes) -> tuple[str, int]:
    """(hash, iterations) of the one PBKDF2 a PLAIN login runs."""
    kdf_calls: list[tuple[str, int]] = []
    salted_password = scram.salted_password

    def counted(digest, password, salt, iterations):
        kdf_calls.append((digest, iterations))
        return salted_password(digest, password, salt, iterations)

    monkeypatch.setattr(scram, "salted_password", counted)
    ctx = Context(view=View(version=1, credentials=tuple(credentials)), me=ProxyInfo(1, "h", 1), advertised={},
                  physical=None, producer_ids=None, session=Session.for_listener("SASL_SSL"))
    ctx.session.password_checks = InlineChecks()
    _handshake(ctx, "PLAIN")
    answered(sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=data)), no_sleep)
    (kdf,) = kdf_calls
    return kdf


def test_an_unknown_user_costs_the_views_costliest_credential_whatever_order_it_comes_in(monkeypatch):
    """The made-up credential is not the first SCRAM-SHA-512 one the view lists but the costliest: SHA-512 before
    SHA-256, then the most iterations; a user who exists is checked against their own costliest the same way."""
    made = [scram.make_credential("bob", "SCRAM-SHA-256", "pw-b", iterations=16384),  # bob: SHA-256 only
            scram.make_credential("carol", "SCRAM-SHA-512", "pw-c", iterations=4096),
            scram.make_credential("dave", "SCRAM-SHA-256", "pw-d", iterations=8192),
            scram.make_credential("dave", "SCRAM-SHA-512", "pw-d", iterations=8192),
            scram.make_credential("dave", "SCRAM-SHA-512", "pw-d", iterations=12288)]
    for order in (made, made[::-1]):
        assert _kdf_of_login(monkeypatch, order, b"\0nobody\0x") == ("sha512", 12288)
        assert _kdf_of_login(monkeypatch, order, b"\0dave\0x") == ("sha512", 12288)
        assert _kdf_of_login(monkeypatch, order, b"\0bob\0x") == ("sha256", 16384)
    only_sha256 = [made[0], made[2]]
    assert _kdf_of_login(monkeypatch, only_sha256, b"\0nobody\0x") == ("sha256", 16384)
    assert _kdf_of_login(monkeypatch, [], b"\0nobody\0x") == ("sha512", scram.DEFAULT_ITERATIONS)


@pytest.mark.parametrize("refused", [False, True])
def test_the_proxy_closes_a_login_whose_check_stays_queued_without_an_answer(gate, monkeypatch, caplog, refused):
    """Over loopback, through the core (dispatcher rounds, barrier waits, the client connection): the handshake is
    answered, the login behind a full queue gets no answer at all, the connection closes, one log line names the
    queue, and no "authentication failed" line is written (the session is not marked failed). The check is either
    queued and dropped when the handler's wait ends, or (`refused`: three networks' checks wait ahead, too many
    for the pool's patience) not queued at all, the connection closed after the failed-authentication delay."""
    monkeypatch.setattr(sasl, "PLAIN_WAIT_S", 0.0)  # every look at once: the rounds, not the wait, are tested
    if refused:
        gate.pool.patience_s, gate.pool.cost_s = 1.0, 0.5  # 0.25 s a check of 4096 iterations
        for i in range(3):
            sasl.handle(_plain_session(gate, f"10.0.1.{i}"), None, SaslAuthenticateRequest(auth_bytes=b"\0x\0junk"))
    session = Session.for_listener("SASL_PLAINTEXT", host="10.0.0.1")
    session.password_checks = gate.pool
    state = ProxyState(view=_ctx(session, ("alice", "pw-a")).view, me=ProxyInfo(1, "127.0.0.1", 9092))

    async def scenario() -> tuple[bytes, bytes]:
        d = Dispatcher(state=state, physical=PhysicalClusters(), producer_ids=None, pool=None)

        async def on_client(reader, writer):
            await ClientConnection(reader, writer, d, Limits(), None, session).run()

        server = await start_server(on_client, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(codec.encode_request(SaslHandshakeRequest(mechanism="PLAIN"), 1))
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 20), "big")
        handshake = await asyncio.wait_for(reader.readexactly(size), 20)
        writer.write(codec.encode_request(SaslAuthenticateRequest(auth_bytes=b"\0alice\0pw-a"), 2))
        rest = await asyncio.wait_for(reader.read(), 20)  # b"": closed by the proxy, no answer
        writer.close()
        server.close()
        return handshake, rest

    with caplog.at_level(logging.INFO):
        handshake, rest = asyncio.run(scenario())
    assert codec.response_correlation_id(handshake) == 1 and rest == b""
    lines = [r.getMessage() for r in caplog.records if "10.0.0.1" in r.getMessage() or "alice" in r.getMessage()]
    reason = "3 password checks of 3 client networks wait ahead" if refused else "password check queue was too long"
    assert len(lines) == 1 and reason in lines[0] and "authentication failed" not in lines[0]
    assert session.failed is None and not session.authenticated and gate.pool.held("10.0.0.1") == 0


def test_the_pools_patience_is_under_the_handlers_wait():
    """A check the pool admits ends before the handler stops waiting for it (or it would be dropped after all)."""
    waits = sum(min(sasl.PLAIN_WAIT_S * 2 ** look, sasl.PLAIN_WAIT_MAX_S) for look in range(sasl.PLAIN_LOOKS))
    assert waits > password_checks.PATIENCE_S + 0.5


@pytest.mark.parametrize("delay_ms", [250, 0])
def test_a_login_whose_check_would_wait_too_long_is_refused_at_once_after_the_failed_authentication_delay(
        gate, delay_ms):
    """Three networks' checks waiting, one thread, 0.25 s a check and 1 s of patience: a fourth network's login is
    not queued (no check to drop 5.5 s later). It is closed unanswered for a retry as a login dropped from the
    queue is (not SASL_AUTHENTICATION_FAILED: nothing was wrong with its password), after the configured
    failed-authentication delay, with one reason naming the queue; no check of it runs."""
    gate.pool.patience_s, gate.pool.cost_s = 1.0, 0.5  # 0.25 s a check of 4096 iterations
    waiting = [sasl.handle(_plain_session(gate, f"10.0.0.{i}"), None,
                           SaslAuthenticateRequest(auth_bytes=b"\0x\0junk")) for i in range(3)]
    ctx = _ctx(Session.for_listener("SASL_SSL", host="2001:db8::1", failed_authentication_delay_ms=delay_ms),
               ("alice", "pw-a"))
    ctx.session.password_checks = gate.pool
    _handshake(ctx, "PLAIN")
    delays: list[float] = []
    reply = answered(sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=b"\0alice\0pw-a")), no_sleep, delays)
    assert delays == ([delay_ms / 1000] if delay_ms else [])
    assert isinstance(reply, CloseConnection) and "alice" in reply.reason
    assert "3 password checks of 3 client networks wait ahead" in reply.reason and "pw-a" not in reply.reason
    assert ctx.session.failed is None and not ctx.session.authenticated and gate.pool.held("2001:db8::1") == 0
    gate.open()
    assert [answered(w).error_code for w in waiting] == [ErrorCode.sasl_authentication_failed] * 3


def test_a_login_whose_check_gets_no_thread_is_closed_for_a_retry_and_the_retry_is_checked(monkeypatch):
    """The pool's thread cannot start (a limit on threads or memory): the login is closed unanswered for a retry,
    after the failed-authentication delay, with the reason (not SASL_AUTHENTICATION_FAILED, not an exception out
    of the handler); the client's retry starts the thread and its login succeeds. Before, the pool counted the
    thread it had not got and every later PLAIN login waited for it (~5.5 s), then was closed."""
    failing_starts(monkeypatch, 1)
    pool = password_checks.PasswordChecks(workers=1)
    ctx = _ctx(Session.for_listener("SASL_SSL", host="10.0.0.1"), ("alice", "pw-a"))
    ctx.session.password_checks = pool
    _handshake(ctx, "PLAIN")
    delays: list[float] = []
    reply = answered(sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=b"\0alice\0pw-a")), no_sleep, delays)
    assert isinstance(reply, CloseConnection) and "alice" in reply.reason and "pw-a" not in reply.reason
    assert "no thread for the password check: can't start new thread" in reply.reason
    assert delays == [FAILED_AUTHENTICATION_DELAY_MS / 1000]
    assert ctx.session.failed is None and not ctx.session.authenticated and pool.held("10.0.0.1") == 0
    again = _ctx(Session.for_listener("SASL_SSL", host="10.0.0.1"), ("alice", "pw-a"))
    again.session.password_checks = pool
    _handshake(again, "PLAIN")
    looks: list[float] = []
    assert _authenticate(again, b"\0alice\0pw-a", looks).error_code == ErrorCode.none
    assert again.session.principal == "User:alice" and len(looks) < sasl.PLAIN_LOOKS  # checked, not given up on


def _recorded_checks(monkeypatch, gate: threading.Event, ran: list[str]) -> None:
    """scram.password_matches replaced: a check of BLOCKER holds the pool's thread until `gate`; a junk
    check (password "junk ...") is recorded and fails; any other is recorded as "login" and really checked."""
    password_matches = scram.password_matches

    def recorded(credential, password):
        if credential is BLOCKER:
            return gate.wait(60)
        ran.append(password if password.startswith("junk") else "login")
        return False if password.startswith("junk") else password_matches(credential, password)

    monkeypatch.setattr(scram, "password_matches", recorded)


def test_a_plain_login_through_the_proxy_is_served_in_its_turn_during_a_flood(monkeypatch):
    """Over loopback, through the core: 8 addresses have their 64 junk checks each queued when a client logs in
    with PLAIN; its check runs after one check of each address (first come first served, after all 512, ~11 s of
    PBKDF2 at 22 ms a check: past the handler's wait), and the login succeeds."""
    gate, ran = threading.Event(), []
    _recorded_checks(monkeypatch, gate, ran)
    pool = password_checks.PasswordChecks(workers=1)
    pool.cost_s = 0.0  # the order is tested, not the bound on the wait
    pool.submit(BLOCKER, "blocker", "198.51.100.1")
    credential = scram.make_credential("junk", "SCRAM-SHA-512", "x", iterations=4096)
    flood = [pool.submit(credential, f"junk {a} {i}", f"10.0.0.{a}") for a in range(8) for i in range(64)]
    session = Session.for_listener("SASL_PLAINTEXT", host="192.0.2.1")
    session.password_checks = pool
    state = ProxyState(view=_ctx(session, ("alice", "pw-a")).view, me=ProxyInfo(1, "127.0.0.1", 9092))

    async def scenario() -> bytes:
        d = Dispatcher(state=state, physical=PhysicalClusters(), producer_ids=None, pool=None)

        async def on_client(reader, writer):
            await ClientConnection(reader, writer, d, Limits(), None, session).run()

        server = await start_server(on_client, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(codec.encode_request(SaslHandshakeRequest(mechanism="PLAIN"), 1))
        await asyncio.wait_for(reader.readexactly(int.from_bytes(await reader.readexactly(4), "big")), 20)
        writer.write(codec.encode_request(SaslAuthenticateRequest(auth_bytes=b"\0alice\0pw-a"), 2))
        for _ in range(2000):  # until the handler has queued the login's check behind the flood's
            if pool.held("192.0.2.1"):
                break
            await asyncio.sleep(0.01)
        gate.set()
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 60), "big")
        answer = await asyncio.wait_for(reader.readexactly(size), 20)
        writer.close()
        server.close()
        return answer

    try:
        frame = asyncio.run(scenario())
    finally:
        gate.set()
    _header, answer = codec.decode_response(codec.response_schema(36, 2), frame)
    assert answer.error_code == ErrorCode.none and session.authenticated and session.principal == "User:alice"
    assert ran.index("login") == 8  # one check of each flooding address ran before it, not 512
    assert all(f.result(60) is False for f in flood)
