"""The dispatcher's observer alone, on hand-made kio entities: error codes found at any depth, label children
looked up once per (api, version), bytes by topic (only the view's) and by cluster, refusals counted and logged."""

from __future__ import annotations

import logging

from kio.schema.errors import ErrorCode
from prometheus_client import CollectorRegistry

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.core.observe import RequestMetrics, error_counts
from fedkafka.proxy.plan import Broker, Call, UpstreamError
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment, View


def produce_answer(codes: list[int]):
    return build(response_type(0, 9), {"responses": [{"name": "t", "partition_responses": [
        {"index": i, "error_code": c, "base_offset": -1} for i, c in enumerate(codes)]}]})


def produce_request(topic: str, sizes: list[int]):
    return build(request_type(0, 9), {"acks": -1, "timeout": 30_000, "topic_data": [
        {"name": topic, "partition_data": [{"index": i, "records": b"x" * n} for i, n in enumerate(sizes)]}]})


def view_with(topic: str) -> View:
    chain = PartitionChain(segments=(Segment("c1", topic, 0, 0, None, 0),))
    return View(version=3, topics={topic: LogicalTopic(topic, "id", (chain,))})


def sample(registry, name: str, **labels) -> float | None:
    return registry.get_sample_value(name, labels)


def test_error_codes_are_found_at_every_depth():
    assert error_counts(produce_answer([0, 6, 0, 6, 3])) == {6: 2, 3: 1}
    fetch = build(response_type(1, 12), {"error_code": 0, "session_id": 0, "responses": [{"topic": "t", "partitions": [
        {"partition_index": 0, "error_code": 3, "high_watermark": 0, "records": b""}]}]})
    assert error_counts(fetch) == {3: 1}
    assert error_counts(None) == {}


def test_requests_errors_latency_and_topic_bytes():
    registry = CollectorRegistry()
    m = RequestMetrics(registry)
    view = view_with("orders")
    for _ in range(3):
        seen = m.request(0, 9, produce_request("orders", [10, 20]), view)
        m.answered(seen, produce_answer([0, ErrorCode.not_leader_or_follower]))
    seen = m.request(0, 9, produce_request("not-in-view", [5]), view)
    m.answered(seen, produce_answer([ErrorCode.unknown_topic_or_partition]))
    assert list(m._series) == [(0, 9)]  # one series object for every request of (Produce, v9)
    assert sample(registry, "fedkafka_proxy_request_seconds_bucket", api="Produce", le="+Inf") == 4
    assert sample(registry, "fedkafka_proxy_requests_total", api="Produce", version="9") == 4
    assert sample(registry, "fedkafka_proxy_errors_total", api="Produce", error="not_leader_or_follower") == 3
    assert sample(registry, "fedkafka_proxy_errors_total", api="Produce", error="unknown_topic_or_partition") == 1
    assert sample(registry, "fedkafka_proxy_request_seconds_count", api="Produce") == 4
    assert sample(registry, "fedkafka_proxy_topic_bytes_total", topic="orders", direction="in") == 90
    assert sample(registry, "fedkafka_proxy_topic_bytes_total", topic="_other", direction="in") == 5


def test_unsupported_versions_count_as_errors_in_one_series():
    """Whatever (api_key, version) the client names: one series each would let it add series without end."""
    registry = CollectorRegistry()
    m = RequestMetrics(registry)
    m.unsupported(0, 2)
    m.unsupported(9999, 0)  # no schema
    m.unsupported(18, 30000)
    assert sample(registry, "fedkafka_proxy_errors_total", api="other", error="unsupported_version") == 3
    assert sample(registry, "fedkafka_proxy_requests_total", api="other", version="other") == 3
    assert sample(registry, "fedkafka_proxy_requests_total", api="Produce", version="2") is None


def test_cluster_bytes_and_upstream_errors():
    registry = CollectorRegistry()
    m = RequestMetrics(registry)
    calls = [Call(Broker("c1", 1), produce_request("phys", [100])), Call(Broker("c2", 1), produce_request("p", [7]))]
    m.upstream(calls, [produce_answer([0]), UpstreamError("c2", "request timed out")])
    assert sample(registry, "fedkafka_proxy_cluster_bytes_total", cluster="c1", direction="out") == 100
    assert sample(registry, "fedkafka_proxy_upstream_errors_total", cluster="c2") == 1
    assert sample(registry, "fedkafka_proxy_cluster_bytes_total", cluster="c2", direction="out") is None


def test_a_refusal_is_counted_and_logged_once_without_the_records(caplog):
    registry = CollectorRegistry()
    m = RequestMetrics(registry)
    with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
        m.refused("frozen", "orders", 2, "partition frozen for a segment move", "app-1")
    assert sample(registry, "fedkafka_proxy_refusals_total", reason="frozen") == 1
    [record] = caplog.records
    assert record.refusal == {"reason": "frozen", "topic": "orders", "partition": 2, "client_id": "app-1",
                              "detail": "partition frozen for a segment move"}
