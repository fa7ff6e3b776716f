"""SCRAM's first answer to a name without a credential looks like a real user's (docs/DESIGN.md §11).

A made-up answer has the iterations and salt length most of the view's credentials of the mechanism have, and a
salt made from the view's credential set (scram.decoy_key): every proxy of the federation, every `--workers`
child and a restarted proxy answer a name the same, as they answer a real user with the view's salt. The login
fails at the proof, as a wrong password does.
"""

from __future__ import annotations

import base64
import dataclasses

from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from fedkafka.proxy.handlers import sasl
from fedkafka.proxy.plan import Context
from fedkafka.security import scram
from fedkafka.security.session import Session
from fedkafka.view.model import ProxyInfo, View

from .sasl_plans import answered, no_sleep

SHA256, SHA512 = "SCRAM-SHA-256", "SCRAM-SHA-512"


def _credentials() -> tuple[scram.ScramCredential, ...]:
    """SCRAM-SHA-256 mostly at 4096 iterations with 26-byte salts (as Kafka's kafka-configs makes them),
    SCRAM-SHA-512 mostly at 16384 with 32-byte salts; one user apart at 8192."""
    made = [scram.make_credential(u, SHA256, "pw", iterations=4096, salt=u.encode().ljust(26, b"s"))
            for u in ("alice", "bob", "carol")]
    made += [scram.make_credential(u, SHA512, "pw", iterations=16384) for u in ("alice", "bob", "carol")]
    made += [scram.make_credential("dave", m, "pw", iterations=8192) for m in (SHA256, SHA512)]
    return tuple(sorted(made, key=lambda c: (c.user, c.mechanism)))


def _ctx(view: View, session: Session | None = None) -> Context:
    return Context(view=view, me=ProxyInfo(1, "h", 1), advertised={}, physical=None, producer_ids=None,
                   session=session or Session.for_listener("SASL_SSL"))


def _server_first(ctx: Context, mechanism: str, client: scram.ScramClient | None = None) -> bytes:
    assert sasl.handle(ctx, None, SaslHandshakeRequest(mechanism=mechanism)).error_code == ErrorCode.none
    first = client.first() if client else b"n,,n=ghost,r=clientnonce"
    answer = sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=first))
    assert answer.error_code == ErrorCode.none
    return answer.auth_bytes


def _salt_and_iterations(view: View, mechanism: str, session: Session | None = None) -> tuple[bytes, int]:
    attrs = dict(part.split("=", 1) for part in _server_first(_ctx(view, session), mechanism).decode().split(","))
    return base64.b64decode(attrs["s"]), int(attrs["i"])


def test_a_made_up_answer_has_the_iterations_and_salt_length_most_of_the_mechanisms_users_have():
    view = View(version=1, credentials=_credentials())
    salt, iterations = _salt_and_iterations(view, SHA256)
    assert (len(salt), iterations) == (26, 4096)
    salt, iterations = _salt_and_iterations(view, SHA512)
    assert (len(salt), iterations) == (32, 16384)


def test_every_proxy_process_answers_a_made_up_name_with_the_same_salt():
    """Two proxies (or workers, or one before and after a restart) hold equal views, as separate objects, and
    draw their own per-process secrets: a made-up name's salt is the same from each, as a real user's is."""
    here = View(version=1, credentials=_credentials())
    there = View.from_dict(here.to_dict())

    def other_process() -> Session:
        session = Session.for_listener("SASL_SSL")
        session.secret = b"another process's random secret"
        return session

    assert _salt_and_iterations(here, SHA512) == _salt_and_iterations(there, SHA512, other_process())
    assert _salt_and_iterations(here, SHA256) == _salt_and_iterations(there, SHA256, other_process())
    assert _salt_and_iterations(here, SHA256)[0] != _salt_and_iterations(here, SHA512)[0]


def test_a_made_up_name_fails_at_the_proof_as_a_wrong_password_does():
    view = View(version=1, credentials=_credentials())
    outcomes = []
    for user, password in (("ghost", "pw"), ("alice", "wrong")):
        ctx, client = _ctx(view), scram.ScramClient(SHA512, user, password)
        final = client.final(_server_first(ctx, SHA512, client))
        answer = answered(sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=final)), sleep=no_sleep)
        outcomes.append((answer.error_code, answer.error_message, ctx.session.authenticated))
    assert outcomes[0] == outcomes[1] == (ErrorCode.sasl_authentication_failed, scram._invalid(SHA512), False)


def test_the_made_up_salt_needs_the_views_keys_and_moves_when_a_credential_changes():
    """The salt is keyed by every credential's StoredKey and ServerKey, which no client holds, so user names,
    salts and iterations (all a client can learn) do not give it. The limit (DESIGN §11): a changed credential
    moves every made-up salt, while real users' salts stay."""
    credentials = _credentials()
    changed = tuple(dataclasses.replace(c, server_key=bytes(len(c.server_key))) if c.user == "dave" else c
                    for c in credentials)
    before, after = View(version=1, credentials=credentials), View(version=2, credentials=changed)
    assert _salt_and_iterations(before, SHA512) != _salt_and_iterations(after, SHA512)
    alice = scram.ScramClient(SHA512, "alice", "pw")
    assert (_server_first(_ctx(before), SHA512, alice).split(b",")[1]
            == _server_first(_ctx(after), SHA512, alice).split(b",")[1])


def test_a_view_without_credentials_still_answers_with_the_defaults():
    salt, iterations = _salt_and_iterations(View(version=1), SHA512)
    assert (len(salt), iterations) == (scram.DECOY_SALT_LENGTH, scram.DEFAULT_ITERATIONS)
