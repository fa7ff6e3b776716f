"""Metrics every service shares: its supervised background tasks and its TLS certificate, read at scrape time
(nothing per event)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fedkafka.observe.supervise import Supervisor
from fedkafka.security.server_tls import ServerTls


class SupervisorCollector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self):
        running = GaugeMetricFamily("fedkafka_task_running", "1 while a supervised background task runs (0: it died "
                                    "and waits out its restart backoff)", labels=["task"])
        restarts = CounterMetricFamily("fedkafka_task_restarts", "Restarts of a supervised background task after it "
                                       "died or ended", labels=["task"])
        for name, task in list(self.supervisor.tasks.items()):
            running.add_metric([name], 1 if task.running else 0)
            restarts.add_metric([name], task.restarts)
        yield running
        yield restarts


class TlsCollector(Collector):
    """When the certificate each TLS listener serves expires. `listeners()` names them with their `ServerTls`;
    a scrape also looks at the files (at most every `recheck_s`), so a renewal shows without a new connection."""

    def __init__(self, listeners: Callable[[], Iterable[tuple[str, ServerTls]]]) -> None:
        self.listeners = listeners

    def collect(self):
        expiry = GaugeMetricFamily("fedkafka_tls_certificate_expiry_timestamp_seconds", "When the certificate a "
                                   "TLS listener serves to new connections stops being valid (seconds since the "
                                   "epoch)", labels=["listener"])
        failures = CounterMetricFamily("fedkafka_tls_certificate_renewal_failures", "Changes of a TLS listener's "
                                       "certificate files that could not be loaded (the old certificate kept "
                                       "serving)", labels=["listener"])
        for name, tls in self.listeners():
            tls.current()
            expiry.add_metric([name], tls.expires)
            failures.add_metric([name], tls.failures)
        yield expiry
        yield failures
