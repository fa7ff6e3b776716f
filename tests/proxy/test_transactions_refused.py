"""Transactions are refused so that each client says plainly that they are not available here (not an ACL
problem): FindCoordinator for a transactional id answers with the code each client fails on at once, carrying
a message both print, on every proxy role (a produce-only one too: producers reach pproxy pools). Unit: the codes
per version and role; integration: librdkafka and the Java producer on a both-roles proxy and on a pproxy."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaException, Producer
from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v2.request import FindCoordinatorRequest as FindCoordinatorV2
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest as FindCoordinatorV4

from fedkafka.kafka.tools import run_tool
from fedkafka.proxy.core.dispatch import registry_for
from fedkafka.proxy.handlers import find_coordinator
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View
from proxy.test_handlers import ctx

TXN = 1
FIND_COORDINATOR, INIT_PRODUCER_ID = 10, 22


def _find_coordinator_as(role: ProxyRole, request):
    """`request` answered by the FindCoordinator handler a proxy of `role` serves (KeyError: not served)."""
    return registry_for(role)[FIND_COORDINATOR].handle(ctx(me=ProxyInfo(7, "p7", 9092, role)), None, request)


@pytest.mark.parametrize("role", list(ProxyRole))
def test_find_coordinator_for_a_transactional_id_says_transactions_are_not_available(role):
    """Every role, a produce-only proxy too: a transactional producer's first request is this lookup, and
    producers reach pproxy pools (old code: not served there, so the clients failed without our message)."""
    batched = _find_coordinator_as(role, FindCoordinatorV4(key_type=TXN, coordinator_keys=("tx",)))
    (answer,) = batched.coordinators
    assert answer.error_code == ErrorCode.invalid_request  # Java prints our message for it
    assert answer.error_message == find_coordinator.NO_TRANSACTIONS
    single = _find_coordinator_as(role, FindCoordinatorV2(key_type=TXN, key="tx"))
    assert single.error_code == ErrorCode.transactional_id_authorization_failed  # librdkafka's only fatal one
    assert single.error_message == find_coordinator.NO_TRANSACTIONS


@pytest.mark.parametrize("role", list(ProxyRole))
def test_every_role_advertises_find_coordinator_and_init_producer_id(role):
    """What a transactional producer asks first is advertised wherever it is answered: ApiVersions is the
    registry's ranges intersected with the brokers', so a key outside the registry would be refused as
    unsupported instead (librdkafka: _UNSUPPORTED_FEATURE; Java: "The node does not support FIND_COORDINATOR")."""
    registry = registry_for(role)
    assert registry[FIND_COORDINATOR] is find_coordinator
    assert INIT_PRODUCER_ID in registry if role.produces() else INIT_PRODUCER_ID not in registry


@pytest.fixture(params=[ProxyRole.BOTH, ProxyRole.PPROXY])  # a pproxy: where producers normally are (§3.1)
def proxy(request, kafka_clusters, unique_name, tmp_path):
    from consume.support import with_coordination

    from proxy.support import ProxyProcess, create_topic

    c1 = kafka_clusters[0]
    create_topic(c1.bootstrap, unique_name, 1)
    view = View(version=1, clusters={"c1": Cluster("c1", c1.bootstrap)}, topics={unique_name: LogicalTopic(
        unique_name, uuid.uuid4().hex, (PartitionChain(segments=(Segment("c1", unique_name, 0, 0, None, 0),)),))})
    with ProxyProcess(tmp_path, with_coordination(view, "c1", c1.bootstrap), role=request.param) as p:
        yield p, unique_name


@pytest.mark.integration
def test_librdkafka_transactional_producer_fails_fast_and_says_why(proxy):
    p, _topic = proxy
    producer = Producer({"bootstrap.servers": p.bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:6]}"})
    started = time.monotonic()
    with pytest.raises(KafkaException) as failed:
        producer.init_transactions(60)
    error = failed.value.args[0]
    assert error.fatal(), error
    assert "transactions are not available in this fedkafka federation" in error.str(), error.str()
    assert time.monotonic() - started < 30  # fails at once, not at init_transactions' timeout


@pytest.mark.integration
def test_java_transactional_producer_fails_and_says_why(proxy):
    p, topic = proxy
    out = run_tool("kafka-producer-perf-test", "--topic", topic, "--num-records", "10", "--record-size", "10",
                   "--throughput", "-1", "--transactional-id", f"tx-{uuid.uuid4().hex[:6]}",
                   "--transaction-duration-ms", "1000", "--producer-props", f"bootstrap.servers={p.bootstrap}",
                   "max.block.ms=60000", check=False, timeout=180)
    said = out.stdout + out.stderr
    assert out.returncode != 0, said[-3000:]
    assert "transactions are not available in this fedkafka federation" in said, said[-3000:]
    assert "authorization" not in said.lower(), said[-3000:]
