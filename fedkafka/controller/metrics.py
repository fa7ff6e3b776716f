"""Prometheus metrics of one controller (own registry, so tests can run several controllers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

_FAST = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.view_version = Gauge("fedkafka_view_version", "Current view version", registry=r)
        self.proxies = Gauge("fedkafka_proxies", "Live proxies in the view", registry=r)
        self.compose_seconds = Histogram("fedkafka_compose_seconds", "Time to compose and commit a changed view",
                                         buckets=_FAST, registry=r)
        self.scan_seconds = Histogram("fedkafka_scan_seconds", "Duration of one cluster scan", ["cluster"],
                                      buckets=_FAST, registry=r)
        self.cluster_reachable = Gauge("fedkafka_cluster_reachable", "1 when the last scan reached the cluster",
                                       ["cluster"], registry=r)
        self.apply_seconds = Histogram("fedkafka_view_push_seconds",
                                       "View commit to a proxy's heartbeat acking it (push latency)",
                                       buckets=_FAST, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
