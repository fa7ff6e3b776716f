"""The proxy's Prometheus metrics (own registry per proxy, so tests can run several in one process).

Per-request series come from the dispatcher's observer (`observe.RequestMetrics`). State (view, lease,
connections, pools, background tasks) is read when scraped, so it costs nothing per request.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fedkafka.observe.metrics import SupervisorCollector, TlsCollector
from fedkafka.proxy.core.observe import RequestMetrics
from fedkafka.security.upstream_reload import UpstreamFile


class ProxyMetrics:
    def __init__(self, server) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics(self.registry)
        self.registry.register(SupervisorCollector(server.supervisor))
        self.registry.register(TlsCollector(lambda: [(str(lsn), server.tls) for lsn in server.config.all_listeners()
                                                     if lsn.tls and server.tls is not None]))
        self.registry.register(_StateCollector(server))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, server) -> None:
        self.server = server

    def collect(self):
        yield from self._view_and_lease()
        yield from self._clients()
        yield from self._upstream()

    def _view_and_lease(self):
        state = self.server.state
        yield _gauge("fedkafka_proxy_view_version", "Version of the newest view this proxy took", state.view.version)
        yield _gauge("fedkafka_proxy_applied_view_version", "Version of the view this proxy acked (drained)",
                     state.applied_version)
        yield _gauge("fedkafka_proxy_lease_valid",
                     "1 while the proxy holds a valid lease (0: it refuses produce, reads and committed offsets)",
                     1 if state.lease_valid() else 0)
        remaining = -1.0 if state.lease_deadline is None else state.lease_deadline - time.monotonic()
        yield _gauge("fedkafka_proxy_lease_remaining_seconds",
                     "Seconds until the lease runs out (-1: no lease, static view)", remaining)
        yield _gauge("fedkafka_proxy_produce_awaiting_drain",
                     "Produce requests routed under an older view than the newest, still unanswered (a new view is "
                     "acked once they are)", self.server.inflight.older_than(state.view.version))

    def _clients(self):
        server = self.server
        connections = list(server.connections)
        yield _gauge("fedkafka_proxy_connections", "Open client connections", len(connections))
        yield _gauge("fedkafka_proxy_inflight_requests", "Client requests read and not yet answered",
                     sum(c.in_flight for c in connections))
        yield _gauge("fedkafka_proxy_buffered_bytes", "Request and answer bytes held by the process (budget: "
                     "--max-buffered-bytes)", server.budget.used)
        refused = CounterMetricFamily("fedkafka_proxy_connections_refused", "Client connections closed at once "
                                      "by a connection cap", labels=["reason"])
        for reason, n in list(server.counts.refused.items()):
            refused.add_metric([reason], n)
        yield refused

    def _upstream(self):
        pooled = GaugeMetricFamily("fedkafka_proxy_upstream_connections", "Open upstream connections by broker "
                                   "and kind (pooled, dedicated_in_use, dedicated_idle)", labels=["broker", "kind"])
        for broker, kinds in self.server.pool.usage().items():
            for kind, n in kinds.items():
                pooled.add_metric([broker, kind], n)
        yield pooled
        reachable = GaugeMetricFamily("fedkafka_proxy_cluster_reachable", "1 when the proxy's last metadata "
                                      "refresh reached the physical cluster", labels=["cluster"])
        for cid, info in list(self.server.physical.clusters.items()):
            reachable.add_metric([cid], 1 if info.reachable else 0)
        yield reachable
        yield from self._upstream_config()

    def _upstream_config(self):
        """With --upstream-config: its reloads, and the loads refused (the settings loaded before kept serving)."""
        source = self.server.upstream
        if not isinstance(source, UpstreamFile):
            return
        yield CounterMetricFamily("fedkafka_proxy_upstream_config_reloads", "Changes of the --upstream-config "
                                  "file (or SIGHUP) loaded: new upstream connections use them", value=source.reloads)
        yield CounterMetricFamily("fedkafka_proxy_upstream_config_reload_failures", "Loads of the --upstream-config "
                                  "file refused (the settings loaded before kept serving new upstream connections)",
                                  value=source.failures)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
