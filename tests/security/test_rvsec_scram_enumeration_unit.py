"""Review rvsec: SCRAM's first answer tells which user names exist (failing on main when written).

docs/DESIGN.md §11: "An unknown user gets a salt derived from a per-process secret and fails at the proof like a
wrong password, so SCRAM's first answer does not tell which names exist". It does tell, two ways:
- the made-up iteration count is always DEFAULT_ITERATIONS (scram.py `_salt_and_iterations`), whatever the view's
  users have (`fedkafka user create --iterations`, or Kafka's own default of 4096): a name answered with another
  count than the view's users is made up;
- the made-up salt comes from a secret drawn once per process (session.py `_PROCESS_SECRET`), while a real user's
  salt is the view's, the same at every proxy: a name whose salt differs between two proxies of a pool, two
  `--workers` children of one proxy (spawned: each draws its own secret, and SO_REUSEPORT spreads one address's
  connections over them) or before and after a restart is made up.
"""

from __future__ import annotations

import subprocess
import sys

from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from fedkafka.proxy.handlers import sasl
from fedkafka.proxy.plan import Context
from fedkafka.security import scram
from fedkafka.security.session import Session
from fedkafka.view.model import ProxyInfo, View

MECHANISM = "SCRAM-SHA-512"


def _server_first(view: View, user: str) -> dict[str, str]:
    """The attributes of the proxy's SCRAM server-first message to a client-first naming `user`."""
    ctx = Context(view=view, me=ProxyInfo(1, "h", 1), advertised={}, physical=None, producer_ids=None,
                  session=Session.for_listener("SASL_SSL"))
    assert sasl.handle(ctx, None, SaslHandshakeRequest(mechanism=MECHANISM)).error_code == ErrorCode.none
    answer = sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=f"n,,n={user},r=clientnonce".encode()))
    assert answer.error_code == ErrorCode.none
    return dict(part.split("=", 1) for part in answer.auth_bytes.decode().split(","))


def test_an_unknown_user_is_answered_with_the_iterations_the_views_users_have():
    for iterations in (4096, 16384):
        view = View(version=1, credentials=tuple(
            scram.make_credential(u, MECHANISM, "pw", iterations=iterations) for u in ("alice", "bob")))
        assert _server_first(view, "alice")["i"] == str(iterations)
        assert _server_first(view, "ghost")["i"] == str(iterations), f"view at {iterations} iterations"


_SALT_IN_A_FRESH_PROCESS = """
from fedkafka.proxy.handlers import sasl
from fedkafka.proxy.plan import Context
from fedkafka.security.session import Session
from fedkafka.view.model import ProxyInfo, View
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
ctx = Context(view=View(version=1), me=ProxyInfo(1, "h", 1), advertised={}, physical=None, producer_ids=None,
              session=Session.for_listener("SASL_SSL"))
sasl.handle(ctx, None, SaslHandshakeRequest(mechanism="SCRAM-SHA-512"))
answer = sasl.handle(ctx, None, SaslAuthenticateRequest(auth_bytes=b"n,,n=ghost,r=clientnonce"))
print(dict(p.split("=", 1) for p in answer.auth_bytes.decode().split(","))["s"])
"""


def _unknown_users_salt_in_a_fresh_process() -> str:
    """What a proxy process (another proxy of the pool, another worker, the same after a restart) answers."""
    done = subprocess.run([sys.executable, "-c", _SALT_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def test_an_unknown_users_salt_is_the_same_from_every_proxy_process_as_a_real_users_is():
    first, second = _unknown_users_salt_in_a_fresh_process(), _unknown_users_salt_in_a_fresh_process()
    assert first and second
    assert first == second  # a real user's salt (the view's) is the same from every process
