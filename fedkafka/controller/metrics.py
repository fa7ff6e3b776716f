"""Prometheus metrics of one controller (own registry, so tests can run several controllers).

Events (compose, scan, push, move transitions) update metrics where they happen; state (the view's size, stream
subscribers per version, proxies behind the view, workflows and moves by state) is read when scraped.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select

from fedkafka.controller.leadership import ACTIVE, TAKING_OVER
from fedkafka.controller.models import MoveRow, PendingDeletionRow, WorkflowRow

_FAST = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
# moves wait for acks (up to minutes) and drains; workflows move many partitions and drain groups
_SLOW = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
MOVE_FINISHED = ("done", "rolled_back")
WORKFLOW_FINISHED = ("done", "failed", "cancelled")


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
        self.cluster_scanned = Gauge("fedkafka_cluster_last_scan_timestamp_seconds", "When the cluster was last "
                                     "scanned (a stalled scan loop leaves reachability stale)", ["cluster"],
                                     registry=r)
        self.apply_seconds = Histogram("fedkafka_view_push_seconds",
                                       "View commit to a proxy's heartbeat acking it (push latency)",
                                       buckets=_FAST, registry=r)
        self.db_regressed = Gauge("fedkafka_controller_db_regressed", "1 once this controller saw the config "
                                  "database hold an older view than a proxy or itself held: it lost commits "
                                  "(docs/DESIGN.md §3.3); until restarted", registry=r)
        self.physical_topics_lost = Gauge("fedkafka_physical_topics_lost", "Physical topics that held data and that "
                                          "the cluster no longer has (a lost disk, a cluster rebuilt empty): not "
                                          "re-created, their partitions refuse produce (docs/OPERATIONS.md)",
                                          ["cluster"], registry=r)
        self.move_state_seconds = Histogram("fedkafka_move_state_seconds", "Time a move spent in a state before it "
                                            "left it (planned, frozen: waiting for acks, sealed)", ["state"],
                                            buckets=_SLOW, registry=r)

    def watch(self, controller) -> None:
        """Read the controller's state at scrape time (called once, by the controller)."""
        self.registry.register(_StateCollector(controller))

    def move_left(self, state: str, since: float) -> None:
        self.move_state_seconds.labels(state).observe(max(0.0, time.time() - since))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, controller) -> None:
        self.ctl = controller

    def collect(self):
        yield from self._view()
        yield from self._proxies()
        try:
            yield from self._workflows_and_moves()
        except Exception:  # the database down: the other series still answer, the scrape does not fail
            yield GaugeMetricFamily("fedkafka_controller_db_ok", "1 when the last scrape could read the database",
                                    value=0)
        else:
            yield GaugeMetricFamily("fedkafka_controller_db_ok", "1 when the last scrape could read the database",
                                    value=1)

    def _view(self):
        pub = self.ctl.publisher
        view = pub.view
        partitions = sum(t.partition_count for t in view.topics.values())
        segments = sum(len(c.segments) for t in view.topics.values() for c in t.partitions)
        yield GaugeMetricFamily("fedkafka_view_bytes", "Size of the current view's JSON body", value=len(pub.body))
        size = GaugeMetricFamily("fedkafka_view_entries", "Entries of the current view, by kind", labels=["kind"])
        for kind, n in (("topics", len(view.topics)), ("partitions", partitions), ("segments", segments),
                        ("clusters", len(view.clusters)), ("proxies", len(view.proxies))):
            size.add_metric([kind], n)
        yield size
        subscribers = GaugeMetricFamily("fedkafka_view_subscribers", "Open view streams by the version last sent "
                                        "on them", labels=["version"])
        for version, n in sorted(pub.subscribers.items()):
            subscribers.add_metric([str(version)], n)
        yield subscribers
        role = self.ctl.role()
        yield GaugeMetricFamily("fedkafka_controller_active", "1 when this controller is the active one (it takes "
                                "writes, composes views and runs workflows)", value=1 if role == ACTIVE else 0)
        yield GaugeMetricFamily("fedkafka_controller_taking_over", "1 while this controller holds the leader row but "
                                "does not take writes yet (it serves the database's view first; the API answers 503)",
                                value=1 if role == TAKING_OVER else 0)

    def _proxies(self):
        current = self.ctl.view.version
        applied = [a for _exp, a in self.ctl.live_leases()]
        yield GaugeMetricFamily("fedkafka_proxies_behind_view", "Live proxies whose last acked view is older than "
                                "the current one", value=sum(1 for a in applied if a < current))
        yield GaugeMetricFamily("fedkafka_proxies_min_applied_version", "Oldest view acked by a live proxy (-1: none "
                                "live)", value=min(applied, default=-1))

    def _workflows_and_moves(self):
        now = time.time()
        with self.ctl.session() as s:
            workflows = s.execute(select(WorkflowRow.kind, WorkflowRow.state, func.count())
                                  .group_by(WorkflowRow.kind, WorkflowRow.state)).all()
            finished = s.execute(select(WorkflowRow.kind, WorkflowRow.updated_at - WorkflowRow.created_at)
                                 .where(WorkflowRow.state.in_(WORKFLOW_FINISHED))).all()
            oldest_run = s.scalar(select(func.min(WorkflowRow.created_at)).where(WorkflowRow.state == "running"))
            moves = s.execute(select(MoveRow.state, func.count()).group_by(MoveRow.state)).all()
            oldest_move = s.scalar(select(func.min(MoveRow.updated_at)).where(MoveRow.state.not_in(MOVE_FINISHED)))
            pending = s.scalar(select(func.count()).select_from(PendingDeletionRow))
        runs = GaugeMetricFamily("fedkafka_workflows", "Workflow runs by kind and state", labels=["kind", "state"])
        for kind, state, n in workflows:
            runs.add_metric([kind, state], n)
        yield runs
        yield _durations(finished)
        yield GaugeMetricFamily("fedkafka_workflow_oldest_running_seconds", "Age of the oldest running workflow "
                                "(0: none running)", value=0 if oldest_run is None else now - oldest_run)
        by_state = GaugeMetricFamily("fedkafka_moves", "Moves by state", labels=["state"])
        for state, n in moves:
            by_state.add_metric([state], n)
        yield by_state
        yield GaugeMetricFamily("fedkafka_move_oldest_unfinished_seconds", "Longest time an unfinished move has "
                                "spent in its current state (0: none unfinished): a stuck move grows here",
                                value=0 if oldest_move is None else now - oldest_move)
        yield GaugeMetricFamily("fedkafka_pending_physical_deletions", "Physical topics of deleted topics that their "
                                "clusters have not yet confirmed gone (each scan retries them); a topic of such a name "
                                "cannot be created again until then (docs/DESIGN.md §4.5)", value=pending or 0)


def _durations(finished) -> HistogramMetricFamily:
    """Finished runs' durations (the database keeps every run, so the counts only grow)."""
    family = HistogramMetricFamily("fedkafka_workflow_duration_seconds", "Duration of finished workflow runs, "
                                   "by kind", labels=["kind"])
    by_kind: dict[str, list[float]] = {}
    for kind, seconds in finished:
        by_kind.setdefault(kind, []).append(max(0.0, seconds or 0.0))
    for kind, values in sorted(by_kind.items()):
        buckets = [(floatToGoString(b), sum(1 for v in values if v <= b)) for b in _SLOW] + [("+Inf", len(values))]
        family.add_metric([kind], buckets, sum(values))
    return family
