"""The proxy's Prometheus metrics (own registry per proxy, so tests can run several in one process).

State (view, lease, connections, pools, background tasks) is read when scraped, so it costs nothing per request.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fedkafka.observe.metrics import SupervisorCollector


class ProxyMetrics:
    def __init__(self, server) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(SupervisorCollector(server.supervisor))
        self.registry.register(_StateCollector(server))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, server) -> None:
        self.server = server

    def collect(self):
        state = self.server.state
        yield _gauge("fedkafka_proxy_view_version", "Version of the newest view this proxy took",
                     state.view.version)
        yield _gauge("fedkafka_proxy_applied_view_version", "Version of the view this proxy acked (drained)",
                     state.applied_version)
        yield _gauge("fedkafka_proxy_lease_valid", "1 while the proxy holds a valid lease (0: it refuses produce)",
                     1 if state.lease_valid() else 0)
        remaining = -1.0 if state.lease_deadline is None else state.lease_deadline - time.monotonic()
        yield _gauge("fedkafka_proxy_lease_remaining_seconds", "Seconds until the lease runs out (-1: no lease, "
                     "static view)", remaining)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
