"""What the core serves a SASL connection before it authenticates, by stage, as Kafka's SaslServerAuthenticator:
first ApiVersions (one answered) or SaslHandshake; after an answered ApiVersions only SaslHandshake; after
SaslHandshake (a re-authentication's too) only SaslAuthenticate. Before the handshake anything else closes the
connection unanswered; after it, the request is answered ILLEGAL_SASL_STATE and the connection closes."""

from __future__ import annotations

import asyncio

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.describe_cluster.v0.request import DescribeClusterRequest
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequest
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from proxy.test_hostile_requests_unit import dispatcher

from fedkafka.protocol import codec
from fedkafka.proxy.core.dispatch import ProtocolViolation
from fedkafka.security.session import Session

API_VERSIONS_V3 = ApiVersionsRequest(client_software_name="test", client_software_version="1")
METADATA = MetadataRequest(topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)
DESCRIBE_CLUSTER = DescribeClusterRequest(include_cluster_authorized_operations=False)
HANDSHAKE = SaslHandshakeRequest(mechanism="PLAIN")
AUTHENTICATE = SaslAuthenticateRequest(auth_bytes=b"\0alice\0pw-a")


def _frame(body, correlation_id: int = 1) -> bytes:
    return codec.encode_request(body, correlation_id)[4:]


def _send(d, session: Session, body):
    """The decoded answer, or the ProtocolViolation that closes the connection unanswered."""
    async def one():
        answer = await (await d.start(_frame(body), 0, session))
        return codec.decode_response(codec.response_type(body.__api_key__, body.__version__), answer[4:])[1]

    return asyncio.run(one())


def _api_versions_v99() -> bytes:
    """An ApiVersions of a version no one serves: Kafka answers it (as v0, UNSUPPORTED_VERSION), keeps its state."""
    frame = bytearray(_frame(API_VERSIONS_V3))
    frame[2:4] = (99).to_bytes(2, "big")
    return bytes(frame)


def test_one_api_versions_then_only_the_handshake():
    d, session = dispatcher(), Session.for_listener("SASL_PLAINTEXT")
    assert _send(d, session, API_VERSIONS_V3).error_code == ErrorCode.none
    with pytest.raises(ProtocolViolation, match=r"api_key=18 .*after ApiVersions only SaslHandshake"):
        _send(d, session, API_VERSIONS_V3)
    assert session.failed is None  # closed unanswered, as Kafka's IllegalStateException


def test_an_api_versions_refused_for_its_version_does_not_count():
    d, session = dispatcher(), Session.for_listener("SASL_PLAINTEXT")

    async def unsupported():
        return await (await d.start(_api_versions_v99(), 0, session))

    answer = asyncio.run(unsupported())
    assert codec.decode_response(codec.response_type(18, 0), answer[4:])[1].error_code == ErrorCode.unsupported_version
    assert _send(d, session, API_VERSIONS_V3).error_code == ErrorCode.none
    assert _send(d, session, HANDSHAKE).error_code == ErrorCode.none


@pytest.mark.parametrize("body", [METADATA, AUTHENTICATE])
def test_before_the_handshake_anything_else_closes_unanswered(body):
    d, session = dispatcher(), Session.for_listener("SASL_SSL")
    expected = f"api_key={body.__api_key__} .*first only ApiVersions or SaslHandshake"
    with pytest.raises(ProtocolViolation, match=expected):
        _send(d, session, body)


@pytest.mark.parametrize("body", [API_VERSIONS_V3, DESCRIBE_CLUSTER, HANDSHAKE])
def test_after_the_handshake_anything_but_sasl_authenticate_is_answered_illegal_state_and_closes(body):
    d, session = dispatcher(), Session.for_listener("SASL_PLAINTEXT")
    assert _send(d, session, API_VERSIONS_V3).error_code == ErrorCode.none
    assert _send(d, session, HANDSHAKE).error_code == ErrorCode.none
    assert _send(d, session, body).error_code == ErrorCode.illegal_sasl_state
    assert session.failed is not None and "after SaslHandshake only SaslAuthenticate" in session.failed
    assert not session.authenticated


@pytest.mark.parametrize("body", [API_VERSIONS_V3, DESCRIBE_CLUSTER])
def test_during_a_re_authentication_only_sasl_authenticate_follows_the_handshake(body):
    """KIP-368: the client sends SaslHandshake then SaslAuthenticate; Kafka's channel is re-authenticating from the
    handshake on, and its authenticator (state AUTHENTICATE) takes nothing else."""
    d, session = dispatcher(), Session.for_listener("SASL_PLAINTEXT", max_reauth_ms=60_000)
    assert _send(d, session, HANDSHAKE).error_code == ErrorCode.none
    session.succeed("User:alice")
    assert _send(d, session, API_VERSIONS_V3).error_code == ErrorCode.none  # authenticated: served as often as sent
    assert _send(d, session, API_VERSIONS_V3).error_code == ErrorCode.none
    assert _send(d, session, HANDSHAKE).error_code == ErrorCode.none  # the re-authentication begins
    assert _send(d, session, body).error_code == ErrorCode.illegal_sasl_state
    assert session.failed is not None and session.principal == "User:alice"
