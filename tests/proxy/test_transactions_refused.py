"""Transactions are refused so that each client says plainly that they are not available here (not an ACL
problem): FindCoordinator for a transactional id answers with the code each client fails on at once, carrying
a message both print. Unit: the codes per version; integration: librdkafka and the Java producer."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaException, Producer
from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v2.request import FindCoordinatorRequest as FindCoordinatorV2
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest as FindCoordinatorV4

from fedkafka.kafka.tools import run_tool
from fedkafka.proxy.handlers import groups
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View
from proxy.test_handlers import ctx

TXN = 1


def test_find_coordinator_for_a_transactional_id_says_transactions_are_not_available():
    batched = groups.handle(ctx(), None, FindCoordinatorV4(key_type=TXN, coordinator_keys=("tx",)))
    (answer,) = batched.coordinators
    assert answer.error_code == ErrorCode.invalid_request  # Java prints our message for it
    assert "transactions are not available" in answer.error_message
    single = groups.handle(ctx(), None, FindCoordinatorV2(key_type=TXN, key="tx"))
    assert single.error_code == ErrorCode.transactional_id_authorization_failed  # librdkafka's only fatal one
    assert "transactions are not available" in single.error_message


@pytest.fixture
def proxy(kafka_clusters, unique_name, tmp_path):
    from consume.support import with_coordination

    from proxy.support import ProxyProcess, create_topic

    c1 = kafka_clusters[0]
    create_topic(c1.bootstrap, unique_name, 1)
    view = View(version=1, clusters={"c1": Cluster("c1", c1.bootstrap)}, topics={unique_name: LogicalTopic(
        unique_name, uuid.uuid4().hex, (PartitionChain(segments=(Segment("c1", unique_name, 0, 0, None, 0),)),))})
    with ProxyProcess(tmp_path, with_coordination(view, "c1", c1.bootstrap), role=ProxyRole.BOTH) as p:
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
