"""Metrics every service shares: its supervised background tasks, read at scrape time (nothing per event)."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fedkafka.observe.supervise import Supervisor


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
