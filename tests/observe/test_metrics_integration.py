"""A real proxy (`fedkafka proxy --admin-listen`) over two real clusters: real clients produce and consume, a
frozen partition is refused, and /metrics carries each series the dashboards and alerts read."""

from __future__ import annotations

import dataclasses
import time

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from consume.support import with_coordination
from kio.schema.errors import ErrorCode
from prometheus_client.parser import text_string_to_metric_families
from proxy.support import ProxyProcess, create_topic, free_port, split_view
from proxy.test_fault import one_batch, raw_produce_errors

from fedkafka.view.model import ProxyRole

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def produce_and_consume(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(count):
        producer.produce(topic, value=b"v%03d" % i, partition=i % 2)
    assert producer.flush(60) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                         "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
    consumer.subscribe([topic])
    got, deadline = 0, time.time() + 60
    while got < count and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            got += 1
    consumer.close()
    assert got == count


@pytest.mark.timeout(300)
def test_proxy_metrics_under_real_traffic(kafka_clusters, unique_name, tmp_path):
    c1, c2 = kafka_clusters[:2]
    for c in (c1, c2):
        create_topic(c.bootstrap, unique_name, 1)
    view = with_coordination(split_view({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name,
                                        [("c1", unique_name, 0), ("c2", unique_name, 0)]), "c1", c1.bootstrap)
    admin = free_port()
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH, extra=("--admin-listen", f"127.0.0.1:{admin}")) as proxy:
        assert httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=10).status_code == 200
        produce_and_consume(proxy.bootstrap, unique_name, 40)

        topic = view.topics[unique_name]
        frozen = dataclasses.replace(topic.partitions[0], frozen=True)
        proxy.write_view(dataclasses.replace(view, version=2, topics={
            unique_name: dataclasses.replace(topic, partitions=(frozen, topic.partitions[1]))}))
        deadline = time.time() + 30
        while value(scrape(admin), "fedkafka_proxy_applied_view_version") != 2:
            assert time.time() < deadline, "view 2 not applied"
            time.sleep(0.2)
        assert raw_produce_errors(proxy.port, unique_name, [0], one_batch())[0] == ErrorCode.not_leader_or_follower

        m = scrape(admin)
        health = httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["tasks"]["view-file"]["running"]
    assert value(m, "fedkafka_proxy_refusals_total", reason="frozen") == 1
    assert value(m, "fedkafka_proxy_errors_total", api="Produce", error="not_leader_or_follower") == 1
    produce_latency = [v for (n, labels), v in m.items()
                       if n == "fedkafka_proxy_request_seconds_count" and dict(labels) == {"api": "Produce"}]
    assert produce_latency and produce_latency[0] >= 2
    for api in ("Metadata", "ApiVersions", "Fetch", "FindCoordinator", "JoinGroup", "OffsetCommit"):
        assert any(n == "fedkafka_proxy_requests_total" and dict(labels)["api"] == api for n, labels in m), api
    record_bytes = 40 * len(b"v000")
    assert value(m, "fedkafka_proxy_topic_bytes_total", topic=unique_name, direction="in") > record_bytes
    assert value(m, "fedkafka_proxy_topic_bytes_total", topic=unique_name, direction="out") > record_bytes
    for cluster in ("c1", "c2"):
        assert value(m, "fedkafka_proxy_cluster_bytes_total", cluster=cluster, direction="out") > record_bytes / 2
        assert value(m, "fedkafka_proxy_cluster_bytes_total", cluster=cluster, direction="in") > record_bytes / 2
        assert value(m, "fedkafka_proxy_cluster_reachable", cluster=cluster) == 1
    assert value(m, "fedkafka_proxy_view_version") == 2
    assert value(m, "fedkafka_proxy_lease_valid") == 1  # a static view holds no lease: never fenced
    assert value(m, "fedkafka_proxy_lease_remaining_seconds") == -1
    assert value(m, "fedkafka_proxy_connections") >= 0
    assert value(m, "fedkafka_proxy_inflight_requests") == 0
    assert any(n == "fedkafka_proxy_upstream_connections" and dict(labels)["kind"] == "pooled" and v >= 1
               for (n, labels), v in m.items())
    for task in ("view-file", "metadata-refresh"):
        assert value(m, "fedkafka_task_running", task=task) == 1
        assert value(m, "fedkafka_task_restarts_total", task=task) == 0
