"""A real proxy (`fedkafka proxy --admin-listen`) over two real clusters: real clients produce and consume, a
frozen partition is refused, and /metrics carries each series the dashboards and alerts read."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import struct
import threading
import time

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from consume.support import with_coordination
from kio.schema.errors import ErrorCode
from prometheus_client.parser import text_string_to_metric_families
from proxy.support import ProxyProcess, create_topic, free_port, split_view
from proxy.test_fault import one_batch, raw_produce_errors

from fedkafka.nameservice.app import serve
from fedkafka.nameservice.resolver import ProxyAddress, StaticResolver
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
def test_proxy_metrics_under_real_traffic(kafka_clusters, unique_name, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKAFKA_LOG_FORMAT", "json")  # the proxy process writes one JSON object per line
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
        # the closed consumer's last requests (a Fetch long-poll) may still be out on a loaded machine: the gauge
        # must come back to 0 (a leak would not), not be 0 at one instant
        deadline = time.time() + 30
        while value(scrape(admin), "fedkafka_proxy_inflight_requests") != 0:
            assert time.time() < deadline, "requests still counted in flight"
            time.sleep(0.2)

        m = scrape(admin)
        health = httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=10)
        lines = [json.loads(line) for line in proxy.output().splitlines() if line.startswith("{")]
    refusals = [line["refusal"] for line in lines if "refusal" in line]
    assert [{k: r.get(k) for k in ("reason", "count", "examples", "detail", "client_id")} for r in refusals] == [
        {"reason": "frozen", "count": 1, "examples": [f"{unique_name}/0"],
         "detail": "partition frozen for a segment move", "client_id": "fedkafka-proxy"}]  # one per request and reason
    assert {line["logger"] for line in lines} >= {"fedkafka.refusals", "fedkafka.proxy.core.server"}
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


RELAY_SOURCE = "127.0.0.9"


class NameService:
    """`fedkafka.nameservice.app.serve` in a thread, relaying every client to the given proxy."""

    def __init__(self, proxy_port: int, **options):
        self.resolver = StaticResolver([ProxyAddress(1, "127.0.0.1", proxy_port)], pool="test-pool")
        self.options = options  # NameServiceServer's
        self.kafka, self.http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()

    def __enter__(self) -> NameService:
        self.thread = threading.Thread(target=self.loop.run_until_complete, daemon=True,
                                       args=(serve(self.resolver, self.kafka, self.http, self.stop, **self.options),))
        self.thread.start()
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"http://{self.http}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "name service not ready"
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=20)
        self.loop.close()


@pytest.mark.timeout(300)
def test_name_service_metrics_in_front_of_a_real_proxy(kafka_clusters, unique_name, tmp_path):
    c1 = kafka_clusters[0]
    create_topic(c1.bootstrap, unique_name, 2)
    view = with_coordination(split_view({"c1": c1.bootstrap}, unique_name,
                                        [("c1", unique_name, 0), ("c1", unique_name, 1)]), "c1", c1.bootstrap)
    # the relay sends PROXY v2 headers from an address of its own, which the proxy trusts (docs/DESIGN.md §3.4); the
    # clients' direct connections to the proxy after bootstrap come from 127.0.0.1, untrusted, without one
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH, extra=("--proxy-header-from", RELAY_SOURCE)) as proxy, \
            NameService(proxy.port, proxy_header=True, relay_source=RELAY_SOURCE) as ns:
        produce_and_consume(ns.kafka, unique_name, 20)
        host, port = ns.kafka.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:  # a first frame that lies
            s.sendall(struct.pack(">i", 2_000_000_000))
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""
        health = httpx.get(f"http://{ns.http}/healthz", timeout=10)
        text = httpx.get(f"http://{ns.http}/metrics", timeout=10).text
    m = {(s.name, frozenset(s.labels.items())): s.value
         for family in text_string_to_metric_families(text) for s in family.samples}
    assert health.status_code == 200 and health.json()["tasks"]["kafka-endpoint"]["running"]
    assert value(m, "fedkafka_nameservice_relayed_total", pool="test-pool") >= 2  # a producer and a consumer
    assert value(m, "fedkafka_nameservice_refusals_total", reason="frame") == 1
    assert value(m, "fedkafka_nameservice_relayed_bytes_total", direction="in") > 20 * len(b"v000")
    assert value(m, "fedkafka_nameservice_relayed_bytes_total", direction="out") > 20 * len(b"v000")
    assert value(m, "fedkafka_nameservice_connections") >= 0
    assert value(m, "fedkafka_task_running", task="kafka-endpoint") == 1
