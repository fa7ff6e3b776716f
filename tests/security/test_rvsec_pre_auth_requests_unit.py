"""Review rvsec: what an unauthenticated SASL connection may send once SaslHandshake chose a mechanism
(failing on main when written).

Kafka's SaslServerAuthenticator serves ApiVersions only before the handshake (HANDSHAKE_OR_VERSIONS_REQUEST; once
answered, the state moves on and another is an IllegalStateException); after SaslHandshake (state AUTHENTICATE)
anything but SaslAuthenticate is "Unexpected Kafka request of type ... during SASL authentication" and closes the
connection. session.py `refusal` lets ApiVersions through at any point before authentication: a client that
never logs in keeps its connection (and its slot under --max-connections) open for as long as it sends an
ApiVersions within each idle timeout, where a broker would have closed it.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

from fedkafka.proxy.handlers import sasl
from fedkafka.proxy.plan import Context
from fedkafka.security.session import Session
from fedkafka.view.model import ProxyInfo, View

API_VERSIONS, SASL_AUTHENTICATE = 18, 36


def test_after_the_handshake_only_sasl_authenticate_is_served_until_authenticated():
    session = Session.for_listener("SASL_PLAINTEXT")
    assert session.refusal(API_VERSIONS) is None  # before the handshake: as Kafka
    ctx = Context(view=View(version=1), me=ProxyInfo(1, "h", 1), advertised={}, physical=None, producer_ids=None,
                  session=session)
    assert sasl.handle(ctx, None, SaslHandshakeRequest(mechanism="SCRAM-SHA-512")).error_code == ErrorCode.none
    assert session.refusal(SASL_AUTHENTICATE) is None
    assert session.refusal(API_VERSIONS) is not None  # Kafka: unexpected request during SASL authentication
