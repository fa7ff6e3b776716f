"""The name service's Prometheus metrics, read from its counters when scraped (nothing per connection)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fedkafka.observe.metrics import SupervisorCollector, TlsCollector
from fedkafka.observe.supervise import Supervisor


class NameServiceMetrics:
    def __init__(self, server, resolver, supervisor: Supervisor) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(SupervisorCollector(supervisor))
        self.registry.register(TlsCollector(lambda: [(str(lsn), server.server_tls) for lsn in server.tls_listeners
                                                     if server.server_tls is not None]))
        self.registry.register(_Collector(server, resolver))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, server, resolver) -> None:
        self.server, self.resolver = server, resolver

    def collect(self):
        server = self.server
        yield GaugeMetricFamily("fedkafka_nameservice_connections", "Open client connections (bootstrapping or "
                                "relayed)", value=server.counts.total)
        yield _counter("fedkafka_nameservice_relayed", "Client connections relayed to a proxy, by pool", "pool",
                       server.relayed)
        yield _counter("fedkafka_nameservice_refusals", "Client connections closed without a relay, by reason "
                       "(max-connections, max-connections-per-ip, frame: no valid first request in time, no_proxy: "
                       "no pool answer or no reachable proxy, client_gone, error: an unexpected failure, logged)",
                       "reason",
                       {**server.counts.refused, **server.unrelayed})
        yield _counter("fedkafka_nameservice_relayed_bytes", "Bytes relayed: in = client to proxy, out = proxy to "
                       "client", "direction", server.relayed_bytes)
        resolver = self.resolver
        if hasattr(resolver, "controller_calls"):
            yield CounterMetricFamily("fedkafka_nameservice_controller_lookups", "Client routing fetches asked "
                                      "of the controller", value=resolver.controller_calls)
            yield CounterMetricFamily("fedkafka_nameservice_controller_errors", "Client routing fetches the "
                                      "controller did not answer", value=resolver.controller_errors)
            yield CounterMetricFamily("fedkafka_nameservice_stale_answers", "Pool answers from the kept "
                                      "routing because the controller did not answer", value=resolver.stale_answers)
            yield GaugeMetricFamily("fedkafka_nameservice_controller_ok", "1 when the last controller lookup "
                                    "answered", value=1 if resolver.controller_ok else 0)
            yield GaugeMetricFamily("fedkafka_nameservice_cached_rules", "Client rules held (the controller's, "
                                    "matched here)", value=resolver.cached_rules)


def _counter(name: str, doc: str, label: str, counts) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in list(counts.items()):
        family.add_metric([key], n)
    return family
