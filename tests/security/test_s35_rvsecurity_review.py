"""Review s35-rvsecurity (failing on main when written).

1. The group APIs answer the proxy's own coordinator conditions (no coordination cluster in the view, the proxy past
its fence, a coordination move's freeze) before they authorize.

Kafka's KafkaApis authorizes a group request before it asks the group coordinator anything: a group the principal
may not use is GROUP_AUTHORIZATION_FAILED (handleJoinGroupRequest, handleOffsetCommitRequest, ...: the first branch),
and an OffsetCommit topic it may not READ is TOPIC_AUTHORIZATION_FAILED; when no topic is left authorized, the
coordinator is not called at all (`authorizedTopicsRequest.isEmpty`: the response builder's errors are the answer),
so no coordinator condition (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE) can reach it.

groups.py `handle` answers COORDINATOR_NOT_AVAILABLE for a view without a coordination cluster before the group check
(consumer_groups.py `handle` likewise), and `_authorized` answers NOT_COORDINATOR past the fence and
COORDINATOR_LOAD_IN_PROGRESS under a frozen view before `_offset_commit` checks each topic. A principal without the
right thus gets a retriable error (the Java consumer looks the coordinator up again and retries, instead of raising
Group/TopicAuthorizationException), and the denial is neither counted nor logged as `auth`. No name or existence
leaks (every answer echoes only what the client named): low severity.

2. OAUTHBEARER ignores the authorization id of the client's GS2 header (`n,a=admin,`): oauth.py
`parse_client_message` reads only the token, and the session is the token's subject. Kafka's OAuthBearerSaslServer
fails the exchange when an authorization id is given that is not the token's principal name ("Authentication failed:
Client requested an authorization id ... that is different from the token's principal name"), as fedkafka's own
PLAIN (`parse_plain`) and SCRAM (`first`) do. No escalation (the principal stays the token's): informational.

3. SCRAM's user name check lets a malformed escape through: scram.py `_unescape_name` removes the valid escapes
before looking for a stray `=`, so `=3=2CD` (an `=` followed by `3=`) passes as `=3D` once `=2C` is removed, and is
taken as the user `=3,D`. RFC 5802 §5.1: a server receiving an `=` not followed by `2C` or `3D` MUST fail the
authentication (Kafka's saslname pattern refuses it). No escalation (the proof is still that user's): informational.

4. Least privilege of the controller tokens: name services are given the proxies' service token, whose scope writes
ACLs and topics and reads the view with every SCRAM verifier, though a name service calls one route (GET
/v1/client-routing). A compromised name service host (the client-facing bootstrap, which also ends clients' TLS) can
grant any principal anything and delete topics through the controller, bypassing every proxy's ACL check: medium.
Fixed: GET /v1/client-routing has a scope of its own (routing), opened by a routing token name services are given
(`fedkafka controller --routing-token-file`, fedkafka_controller_routing_token).

5. Log forging: the refusal line (observe.py `refused_together`, `refused`) writes client-chosen group ids, topic names
and the client.id with %s in the default text log format; a newline in one starts a line of the client's making.
Reachable without a login on a PLAINTEXT listener with --authorization (ANONYMOUS is refused and logged): low.

Pure handler and exchange calls, no brokers.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

import pytest
from consume.test_consumer_groups_unit import Header, heartbeat
from consume.test_consumer_groups_unit import ctx as kip848_ctx
from consume.test_handlers_unit import ctx as consume_ctx
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest

from fedkafka.controller.scopes import ROUTE_SCOPES, may
from fedkafka.observe.logs import TEXT_FORMAT, MaskingFormatter
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.observe import NullObserver
from fedkafka.proxy.handlers import consumer_groups, groups
from fedkafka.proxy.plan import Context, Plan, Refused, collect_refusal
from fedkafka.security import scram
from fedkafka.security.acl import Operation
from fedkafka.security.oauth import JwtValidator, OAuthSettings
from fedkafka.security.session import Session

from .jwks import AUDIENCE, ISSUER, Issuer, client_message
from .test_multi_group_authorization_unit import _allowed
from .test_reauth_unit import _authenticate, _ctx, _handshake

GAF, TAF = ErrorCode.group_authorization_failed, ErrorCode.topic_authorization_failed
REASON = ("groups.py answers its coordinator conditions (no coordination cluster, past the fence, frozen commits) "
          "before the group and topic ACL checks; Kafka authorizes first")


def _commit(group: str = "g"):
    return build(request_type(8, 8), {
        "group_id": group, "generation_id_or_member_epoch": 1, "member_id": "m", "group_instance_id": None,
        "retention_time": datetime.timedelta(milliseconds=-1), "topics": [{"name": "log", "partitions": [
            {"partition_index": p, "committed_offset": 5, "committed_leader_epoch": -1, "committed_metadata": None}
            for p in (0, 1)]}]})


def _join(group: str = "g"):
    return build(request_type(11, 5), {
        "group_id": group, "session_timeout": datetime.timedelta(seconds=10),
        "rebalance_timeout": datetime.timedelta(seconds=30), "member_id": "", "group_instance_id": None,
        "protocol_type": "consumer", "protocols": []})


def _commit_errors(answer) -> list[tuple[str, int, ErrorCode]]:
    return [(t.name, p.partition_index, p.error_code) for t in answer.topics for p in t.partitions]


def _may_read_group_only() -> Context:
    """User:ops may READ group g and only DESCRIBE topic log: an OffsetCommit of log is TOPIC_AUTHORIZATION_FAILED."""
    return _allowed(consume_ctx(), Operation.READ, "g")


def test_within_the_fence_a_commit_of_a_topic_without_read_is_topic_authorization_failed():
    """The reference, passing on main: authorized as Kafka, nothing sent (no topic left for the coordinator)."""
    answer = groups.handle(_may_read_group_only(), None, _commit())
    assert not isinstance(answer, Plan)
    assert _commit_errors(answer) == [("log", 0, TAF), ("log", 1, TAF)]


def test_past_the_fence_a_commit_of_a_topic_without_read_is_still_topic_authorization_failed():
    fenced = dataclasses.replace(_may_read_group_only(), lease_valid=False)
    answer = groups.handle(fenced, None, _commit())
    assert not isinstance(answer, Plan)
    assert _commit_errors(answer) == [("log", 0, TAF), ("log", 1, TAF)]  # main: NOT_COORDINATOR, retried for ever


def test_under_a_frozen_view_a_commit_of_a_topic_without_read_is_still_topic_authorization_failed():
    c = _may_read_group_only()
    frozen = dataclasses.replace(c, view=dataclasses.replace(c.view, commits_frozen=True))
    answer = groups.handle(frozen, None, _commit())
    assert not isinstance(answer, Plan)
    assert _commit_errors(answer) == [("log", 0, TAF), ("log", 1, TAF)]  # main: COORDINATOR_LOAD_IN_PROGRESS


def test_without_a_coordination_cluster_a_denied_group_is_group_authorization_failed():
    c = _allowed(consume_ctx(), Operation.READ, "g")  # h: no ACL
    nowhere = dataclasses.replace(c, view=dataclasses.replace(c.view, coordination_cluster=None))
    assert groups.handle(nowhere, None, _join("h")).error_code == GAF  # main: COORDINATOR_NOT_AVAILABLE
    assert {e for _, _, e in _commit_errors(groups.handle(nowhere, None, _commit("h")))} == {GAF}
    # the APIs naming several groups authorize first already under a frozen view (test_multi_group_authorization_unit
    # `test_delete_groups_deletes_the_allowed_groups_and_refuses_the_denied_one`), not without a coordination cluster
    delete = groups.handle(nowhere, None, build(request_type(42, 2), {"groups_names": ["g", "h"]}))
    assert [(r.group_id, r.error_code) for r in delete.results] == [("g", GAF), ("h", GAF)]  # READ is not DELETE


def test_without_a_coordination_cluster_a_denied_consumer_group_heartbeat_is_group_authorization_failed():
    c = _allowed(kip848_ctx(), Operation.READ, "g")
    nowhere = dataclasses.replace(c, view=dataclasses.replace(c.view, coordination_cluster=None))
    answer = consumer_groups.handle(nowhere, Header(), heartbeat(group_id="h"))
    assert answer.error_code == GAF  # main: COORDINATOR_NOT_AVAILABLE


# -- 2. OAUTHBEARER's authorization id -------------------------------------------------------------------

# its test, with Kafka's message: tests/security/test_s35_fixsecurity_unit.py


def test_an_oauthbearer_authorization_id_naming_the_tokens_subject_is_served(tmp_path):
    """The reference, passing on main (Kafka takes an authorization id equal to the principal name)."""
    issuer = Issuer(tmp_path / "jwks.json")
    ctx = _ctx(0, oauth=JwtValidator(OAuthSettings(issuer.jwks_file, ISSUER, AUDIENCE)))
    assert _handshake(ctx, "OAUTHBEARER").error_code == ErrorCode.none
    message = client_message(issuer.token(sub="alice")).replace(b"n,,", b"n,a=alice,", 1)
    assert _authenticate(ctx, SaslAuthenticateRequest(auth_bytes=message)).error_code == ErrorCode.none
    assert ctx.session.principal == "User:alice"


# -- 3. SCRAM user names ---------------------------------------------------------------------------------

def test_a_scram_user_name_with_an_equals_sign_not_starting_an_escape_is_refused():
    exchange = scram.ScramExchange("SCRAM-SHA-256", lambda _u: None, b"k")
    with pytest.raises(scram.MalformedMessage):
        exchange.first(b"n,,n==3=2CD,r=abc")
    assert exchange.user is None  # main: '=3,D'


# -- 4. The name service's controller token ------------------------------------------------------------

def test_the_name_services_only_route_is_not_in_the_scope_that_writes_acls_and_reads_credentials():
    """nameservice/resolver.py calls GET /v1/client-routing and nothing else. On s35-rvsecurity the only token it
    could hold besides the operator's was the service token, whose scope also opens POST /v1/acls (grant any
    principal anything), POST /v1/acls/delete, DELETE /v1/admin/topics/{name} and GET /v1/view (every user's
    StoredKey and ServerKey): a compromised name service host, the federation's client-facing bootstrap, held all of
    that. The routing token's scope is that route's (tests/controller/test_token_scopes.py: the controller's 403s)."""
    nameservice_scope = ROUTE_SCOPES[("GET", "/v1/client-routing")]
    assert may(nameservice_scope, "GET", "/v1/client-routing")
    for route in (("POST", "/v1/acls"), ("POST", "/v1/acls/delete"), ("DELETE", "/v1/admin/topics/{name}"),
                  ("GET", "/v1/view")):
        assert ROUTE_SCOPES[route] != nameservice_scope, route
        assert not may(nameservice_scope, route[0], route[1].replace("{name}", "t1")), route


# -- 5. Client-chosen names in the refusal log -----------------------------------------------------------

FORGED = "g\n2026-12-07 00:00:00,000 WARNING fedkafka.proxy[1] closing client 10.0.0.7: forged"


def test_a_refusal_line_holds_a_client_chosen_name_with_a_newline_on_one_line(caplog):
    """A denied FindCoordinator, JoinGroup or Produce names what the client chose; in the default text format
    (observe/logs.py TEXT_FORMAT) a newline in it starts a line of the client's making (CWE-117). The failed-login line
    quotes the claimed user with repr (sasl.py `_failed`); the refusal line, reachable by ANONYMOUS on a PLAINTEXT
    listener, does not."""
    refusals: dict[str, Refused] = {}
    collect_refusal(refusals, "auth", FORGED, -1, "no DESCRIBE on the group")
    with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
        NullObserver().refused_together(refusals["auth"], FORGED, Session(principal="User:ANONYMOUS"))
    (record,) = caplog.records
    text = MaskingFormatter(TEXT_FORMAT).format(record)
    assert "\n" not in text, text
