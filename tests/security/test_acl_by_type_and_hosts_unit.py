"""Kafka's `Authorizer.authorizeByResourceType` (the default StandardAuthorizer keeps; `Authorizer.allowed_any`) and
hosts matched in Kafka's form (`InetAddress.getHostAddress()`: IPv6 uncompressed, IPv4-mapped as IPv4), whichever
way a binding writes them; DescribeAcls answers a binding's host as it was written."""

from __future__ import annotations

import dataclasses

import pytest
from kio.schema.errors import ErrorCode
from proxy.test_handlers import ctx as produce_ctx

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.handlers import acls
from fedkafka.security.acl import (
    AclBinding,
    Authorizer,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    kafka_host,
)
from fedkafka.security.session import Session

T = ResourceType.TOPIC
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY
WRITE = Operation.WRITE
ALICE = "User:alice"
HOST = "10.0.0.1"


def _b(name: str, permission: Permission, pattern: PatternType = LIT, principal: str = ALICE, host: str = "*",
       operation: Operation = WRITE) -> AclBinding:
    return AclBinding(T, name, pattern, principal, host, operation, permission)


def _any(*bindings: AclBinding, super_users: frozenset[str] = frozenset(), host: str = HOST) -> bool:
    return Authorizer(bindings, super_users).allowed_any(ALICE, host, WRITE, T)


@pytest.mark.parametrize("bindings, expected", [
    ((_b("orders", ALLOW),), True),
    ((_b("*", ALLOW),), True),
    ((_b("*", ALLOW), _b("orders", DENY)), True),  # a wildcard ALLOW grants unless the DENY is on `*`
    ((_b("*", ALLOW), _b("*", DENY)), False),
    ((_b("orders", ALLOW), _b("payments", DENY)), True),
    ((_b("orders", ALLOW), _b("orders", DENY, PRE)), False),  # a prefix as long as the name dominates
    ((_b("orders", ALLOW), _b("orders-x", DENY, PRE)), True),  # a longer prefix does not
    ((_b("ord", ALLOW, PRE), _b("orders", DENY, PRE)), True),  # prefixed ALLOW: only a shorter-or-equal prefix
    ((_b("ord", ALLOW, PRE), _b("or", DENY, PRE)), False),
    ((_b("ord", ALLOW, PRE), _b("ord", DENY)), True),  # a literal DENY does not dominate a prefixed ALLOW
    ((_b("orders", ALLOW), _b("orders", DENY), _b("payments", ALLOW)), True),  # one ALLOW left standing
    ((_b("orders", ALLOW), _b("orders", DENY, operation=Operation.ALL)), False),  # DENY ALL is a DENY of WRITE
    ((_b("orders", ALLOW, operation=Operation.ALL),), True),
    ((_b("orders", ALLOW, operation=Operation.READ),), False),  # another operation: no right
    ((_b("orders", ALLOW), _b("*", DENY, operation=Operation.READ)), True),  # a DENY of another operation
    ((_b("orders", ALLOW, principal="User:*"), _b("*", DENY, principal="User:bob")), True),  # someone else's DENY
    ((_b("orders", ALLOW), _b("*", DENY, principal="User:*")), False),  # a DENY for every user is alice's too
    ((_b("orders", ALLOW), _b("*", DENY, host="10.9.9.9")), True),  # a DENY from another host does not apply
    ((_b("orders", ALLOW, host="10.9.9.9"),), False),  # nor an ALLOW
    ((_b("orders", ALLOW), _b("*", DENY, PRE)), True),  # a prefixed `*` is no wildcard: only names from `*`
    ((), False),
])
def test_write_on_some_topic_is_decided_as_kafkas_authorize_by_resource_type(bindings, expected):
    assert _any(*bindings) is expected


def test_the_probe_kafka_asks_first_grants_a_super_user_and_whatever_allows_the_name_hardcode():
    """Kafka first asks `authorize` about the literal topic `hardcode`: a super user passes despite a DENY on `*`,
    and so does a principal with an ALLOW that covers `hardcode` (here a prefix) and no DENY for it."""
    deny_all = _b("*", DENY)
    assert _any(deny_all, super_users=frozenset({ALICE}))
    assert _any(_b("hard", ALLOW, PRE), _b("orders", DENY))
    assert not _any(_b("hard", ALLOW, PRE), deny_all)


@pytest.mark.parametrize("written, client_host", [
    ("0:0:0:0:0:0:0:1", "::1"),  # Kafka's form against Python's peername
    ("::1", "0:0:0:0:0:0:0:1"),  # and the other way round
    ("::1", "::1"),
    ("FE80::0001%eth0", "fe80::1%eth0"),
    ("2001:db8:0:0:0:0:0:7", "2001:db8::7"),
    ("10.0.0.7", "::ffff:10.0.0.7"),  # an IPv4 client on a dual-stack socket: Java sees an Inet4Address
    ("::ffff:10.0.0.7", "10.0.0.7"),
])
def test_a_host_deny_holds_whichever_way_an_ipv6_address_is_written(written, client_host):
    az = Authorizer((_b("orders", ALLOW), _b("orders", DENY, host=written)))
    assert not az.allowed(ALICE, client_host, WRITE, T, "orders")
    assert not az.allowed_any(ALICE, client_host, WRITE, T)
    assert az.allowed(ALICE, "10.0.0.8", WRITE, T, "orders")


@pytest.mark.parametrize("host, kafka_form", [
    ("::1", "0:0:0:0:0:0:0:1"), ("::", "0:0:0:0:0:0:0:0"), ("2001:DB8::AbCd:0:1", "2001:db8:0:0:0:abcd:0:1"),
    ("fe80::1%eth0", "fe80:0:0:0:0:0:0:1%eth0"), ("::ffff:127.0.0.1", "127.0.0.1"), ("127.0.0.1", "127.0.0.1"),
    ("*", "*"), ("client.example", "client.example"), ("", ""),
])
def test_kafka_host_writes_an_address_as_java_s_get_host_address(host, kafka_form):
    assert kafka_host(host) == kafka_form


def test_a_session_s_host_is_in_kafka_s_form():
    assert Session.for_listener("SASL_PLAINTEXT", host="::1").host == "0:0:0:0:0:0:0:1"
    assert Session.for_listener("PLAINTEXT", host="::ffff:10.0.0.7").host == "10.0.0.7"


def test_describe_acls_answers_a_host_as_it_was_written():
    written = (AclBinding(ResourceType.CLUSTER, "kafka-cluster", LIT, "User:admin", "*", Operation.ALL, ALLOW),
               _b("orders", DENY, host="::1"), _b("orders", DENY, host="0:0:0:0:0:0:0:1"))
    base = produce_ctx()
    view = dataclasses.replace(base.view, acls=written)
    c = dataclasses.replace(base, view=view, authorizer=Authorizer(written),
                            session=Session(principal="User:admin", host="::1"))
    req = build(request_type(29, 3), {"resource_type_filter": 1, "resource_name_filter": None,
                                      "pattern_type_filter": 1, "principal_filter": None, "host_filter": "::1",
                                      "operation": 1, "permission_type": 1})
    answer = acls.handle(c, None, req)
    assert answer.error_code == ErrorCode.none
    assert [(r.resource_name, a.host) for r in answer.resources for a in r.acls] == [("orders", "::1")]
