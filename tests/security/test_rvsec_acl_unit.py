"""Review rvsec: ACL decisions that differ from Kafka's (failing on main when written).

Kafka's InitProducerId without a transactional id (KafkaApis.handleInitProducerIdRequest) needs IDEMPOTENT_WRITE on
the cluster or `authorizeByResourceType(WRITE, TOPIC)`, whose default implementation (Authorizer.java, which
StandardAuthorizer does not override) honours DENY: a DENY on the literal `*` refuses at once, a literal ALLOW
with a DENY on the same name or on a prefix of it does not count, and only an ALLOW left standing grants.
"""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode
from proxy.test_handlers import ctx as produce_ctx

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.handlers import init_producer_id
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session

T = ResourceType.TOPIC
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALICE = "User:alice"


def _binding(name: str, permission: Permission, pattern: PatternType = LIT) -> AclBinding:
    return AclBinding(T, name, pattern, ALICE, "*", Operation.WRITE, permission)


def test_a_deny_write_on_every_topic_leaves_no_write_right_anywhere():
    az = Authorizer((_binding("orders", Permission.ALLOW), _binding("*", Permission.DENY)))
    assert not az.allowed(ALICE, "10.0.0.1", Operation.WRITE, T, "orders")  # the per-topic check agrees
    assert not az.allowed_any(ALICE, "10.0.0.1", Operation.WRITE, T)  # Kafka: DENIED (wildcard deny)


def test_a_write_right_denied_on_its_own_topic_or_by_a_prefix_does_not_count():
    literal = Authorizer((_binding("orders", Permission.ALLOW), _binding("orders", Permission.DENY)))
    assert not literal.allowed_any(ALICE, "10.0.0.1", Operation.WRITE, T)
    prefixed = Authorizer((_binding("orders", Permission.ALLOW), _binding("ord", Permission.DENY, PRE)))
    assert not prefixed.allowed_any(ALICE, "10.0.0.1", Operation.WRITE, T)


def test_init_producer_id_is_refused_to_a_principal_denied_write_on_every_topic():
    az = Authorizer((_binding("orders", Permission.ALLOW), _binding("*", Permission.DENY)))
    c = dataclasses.replace(produce_ctx(), authorizer=az, session=Session(principal=ALICE, host="10.0.0.1"))
    req = build(request_type(22, 4), {"transactional_id": None, "transaction_timeout": 60000, "producer_id": -1,
                                      "producer_epoch": -1})
    assert init_producer_id.handle(c, None, req).error_code == ErrorCode.cluster_authorization_failed
