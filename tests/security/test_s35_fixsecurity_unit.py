"""The fixes of review s35-rvsecurity (tests/security/test_s35_rvsecurity_review.py), beyond its own tests: the
authorized part of a group request still gets the proxy's coordinator conditions; OAUTHBEARER answers Kafka's
message for a foreign authorization id; SCRAM still reads the valid name escapes; a per-entry refusal line quotes
the client's names. Pure handler and exchange calls, no brokers."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from consume.test_consumer_groups_unit import Header
from consume.test_consumer_groups_unit import ctx as kip848_ctx
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest

from fedkafka.observe.logs import TEXT_FORMAT, MaskingFormatter
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.observe import NullObserver
from fedkafka.proxy.handlers import consumer_groups, groups
from fedkafka.proxy.plan import Plan
from fedkafka.security import oauth, scram
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.oauth import JwtValidator, OAuthSettings

from .jwks import AUDIENCE, ISSUER, Issuer, client_message
from .test_multi_group_authorization_unit import _allowed
from .test_reauth_unit import _authenticate, _ctx, _handshake
from .test_s35_rvsecurity_review import FORGED, _commit_errors, _may_read_group_only

NOT_COORDINATOR, TAF = ErrorCode.not_coordinator, ErrorCode.topic_authorization_failed


def _commit_of(*topics: tuple[str, tuple[int, ...]]):
    return build(request_type(8, 8), {
        "group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m", "group_instance_id": None,
        "topics": [{"name": name, "partitions": [
            {"partition_index": p, "committed_offset": 5, "committed_leader_epoch": -1, "committed_metadata": None}
            for p in ps]} for name, ps in topics]})


def test_past_the_fence_a_commit_s_readable_topic_is_not_coordinator_and_its_denied_one_topic_authorization_failed():
    """As Kafka: the denied topic is answered by KafkaApis, the readable one by the coordinator (here the proxy's
    own condition, its fence)."""
    bindings = tuple(AclBinding(kind, name, PatternType.LITERAL, "User:ops", "*", Operation.READ, Permission.ALLOW)
                     for kind, name in ((ResourceType.GROUP, "g"), (ResourceType.TOPIC, "log")))
    c = dataclasses.replace(_may_read_group_only(), authorizer=Authorizer(bindings), lease_valid=False)
    answer = groups.handle(c, None, _commit_of(("log", (0, 1)), ("secret", (0,))))
    assert not isinstance(answer, Plan)
    assert _commit_errors(answer) == [("log", 0, NOT_COORDINATOR), ("log", 1, NOT_COORDINATOR), ("secret", 0, TAF)]


def test_without_a_coordination_cluster_a_consumer_group_describe_answers_denied_and_allowed_groups_apart():
    c = _allowed(kip848_ctx(), Operation.DESCRIBE, "g")
    nowhere = dataclasses.replace(c, view=dataclasses.replace(c.view, coordination_cluster=None))
    request = build(request_type(69, 1), {"group_ids": ["g", "h"], "include_authorized_operations": False})
    answer = consumer_groups.handle(nowhere, Header(), request)
    assert [(g.group_id, g.error_code) for g in answer.groups] == [
        ("h", ErrorCode.group_authorization_failed), ("g", ErrorCode.coordinator_not_available)]


def test_an_oauthbearer_authorization_id_other_than_the_subject_is_answered_kafkas_message(tmp_path):
    issuer = Issuer(tmp_path / "jwks.json")
    ctx = _ctx(0, oauth=JwtValidator(OAuthSettings(issuer.jwks_file, ISSUER, AUDIENCE)))
    assert _handshake(ctx, "OAUTHBEARER").error_code == ErrorCode.none
    message = client_message(issuer.token(sub="alice")).replace(b"n,,", b"n,a=admin,", 1)
    answer = _authenticate(ctx, SaslAuthenticateRequest(auth_bytes=message))
    assert (answer.error_code, answer.error_message) == (
        ErrorCode.sasl_authentication_failed, "Authentication failed: Client requested an authorization id (admin) "
        "that is different from the token's principal name (alice)")
    assert not ctx.session.authenticated  # main: authenticated, as User:alice


@pytest.mark.parametrize("gs2", [b"n,b=admin,", b"n,a=,"])
def test_an_oauthbearer_gs2_header_whose_second_field_is_not_an_authorization_id_is_malformed(gs2):
    with pytest.raises(scram.MalformedMessage):
        oauth.parse_client_message(gs2 + b"\x01auth=Bearer x\x01\x01")


@pytest.mark.parametrize(("name", "user"), [("a=2Cb=3Dc", "a,b=c"), ("=3D=3D", "=="), ("=2C", ","), ("plain", "plain")])
def test_scram_user_names_with_valid_escapes_are_read(name, user):
    exchange = scram.ScramExchange("SCRAM-SHA-256", lambda _u: None, b"k")
    exchange.first(f"n,,n={name},r=abc".encode())
    assert exchange.user == user


@pytest.mark.parametrize("name", ["a=", "a=2", "=2c", "a=3d", "=41"])
def test_scram_user_names_with_an_equals_sign_starting_no_escape_are_refused(name):
    with pytest.raises(scram.MalformedMessage):
        scram.ScramExchange("SCRAM-SHA-256", lambda _u: None, b"k").first(f"n,,n={name},r=abc".encode())


def test_a_per_entry_refusal_line_holds_a_client_chosen_name_with_a_newline_on_one_line(caplog):
    """A context made by hand logs each refusal as it comes (`NullObserver.refused`): its names are quoted too."""
    with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
        NullObserver().refused("auth", FORGED, 0, "no READ on the topic", FORGED)
    (record,) = caplog.records
    text = MaskingFormatter(TEXT_FORMAT).format(record)
    assert "\n" not in text and repr(f"{FORGED}/0") in text, text
    assert record.refusal["topic"] == FORGED  # the structured fields are the names as they came
