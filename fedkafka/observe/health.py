"""`fedkafka status`'s health summary, from the same signals the alert rules read (monitoring/prometheus).

Pure: takes the controller's /v1/status, its /metrics text, and optionally proxies' /readyz and /metrics, and
returns the issues found. Thresholds match the alert rules of the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

MOVE_STUCK_S = 600.0  # FedkafkaMoveStuck
PRODUCE_ERROR_RATIO = 0.05  # FedkafkaProduceErrorRate (here: since the proxy started, not over 5 minutes)

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def one(samples: Samples, name: str, default: float) -> float:
    """The first sample's value, or `default` when the metric is absent (a signal with no sample is healthy)."""
    values = samples.get(name)
    return values[0][1] if values else default


@dataclass
class ProxyProbe:
    """What a proxy's admin listener said (None: it did not answer)."""

    address: str
    ready: dict | None = None
    metrics: Samples | None = None
    error: str | None = None


@dataclass
class Health:
    issues: list[str] = field(default_factory=list)
    signals: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    def to_dict(self) -> dict:
        return {"ok": self.ok, "issues": self.issues, "signals": self.signals}


def summarize(status: dict, controller: Samples, proxies: Sequence[ProxyProbe] = ()) -> Health:
    h = Health()
    _controller(h, status, controller)
    for probe in proxies:
        _proxy(h, probe, status["view_version"])
    return h


def _controller(h: Health, status: dict, m: Samples) -> None:
    version = status["view_version"]
    active = one(m, "fedkafka_controller_active", 1.0)
    h.signals["controller_active"] = bool(active)
    if not active:
        h.issues.append("the controller is not active (no view changes, workflows or moves until one is)")
    if one(m, "fedkafka_controller_db_ok", 1.0) == 0:
        h.issues.append("the controller cannot read its database")
    behind = [p for p in status.get("proxies", []) if p["applied_version"] < version]
    h.signals["proxies_behind_view"] = [p["node_id"] for p in behind]
    for p in behind:
        h.issues.append(f"proxy {p['node_id']} ({p['host']}:{p['port']}) acked view {p['applied_version']}, "
                        f"not the current {version}")
    unreachable = sorted(labels["cluster"] for labels, v in m.get("fedkafka_cluster_reachable", []) if v == 0)
    h.signals["unreachable_clusters"] = unreachable
    h.issues += [f"cluster {c} is unreachable" for c in unreachable]
    lost = {labels["cluster"]: int(v) for labels, v in m.get("fedkafka_physical_topics_lost", []) if v > 0}
    h.signals["physical_topics_lost"] = lost
    h.issues += [f"cluster {c} lost {n} physical topic(s) that held data: not re-created, their partitions refuse "
                 "produce (docs/OPERATIONS.md, \"A cluster lost a topic's data\")" for c, n in sorted(lost.items())]
    stuck = one(m, "fedkafka_move_oldest_unfinished_seconds", 0.0)
    h.signals["oldest_unfinished_move_s"] = stuck
    if stuck > MOVE_STUCK_S:
        h.issues.append(f"a move has been in one state for {stuck:.0f} s (stuck: over {MOVE_STUCK_S:.0f} s)")
    h.signals["moves"] = {labels["state"]: int(v) for labels, v in m.get("fedkafka_moves", [])}
    h.signals["workflows_running"] = int(sum(v for labels, v in m.get("fedkafka_workflows", [])
                                             if labels["state"] == "running"))


def _proxy(h: Health, probe: ProxyProbe, current: int) -> None:
    where = f"proxy {probe.address}"
    if probe.error is not None or probe.ready is None or probe.metrics is None:
        h.issues.append(f"{where} did not answer: {probe.error}")
        return
    ready, m = probe.ready, probe.metrics
    if not ready.get("ok"):
        missing = [k for k in ("listening", "lease_valid") if ready.get(k) is False]
        h.issues.append(f"{where} is not ready" + (f" ({', '.join(missing)} false)" if missing else ""))
    applied = one(m, "fedkafka_proxy_applied_view_version", 0.0)
    if applied < current:
        h.issues.append(f"{where} acked view {applied:.0f}, not the current {current}")
    for labels, restarts in m.get("fedkafka_task_restarts_total", []):
        if restarts:
            h.issues.append(f"{where}: background task {labels['task']} restarted {restarts:.0f} time(s)")
    requests = sum(v for labels, v in m.get("fedkafka_proxy_requests_total", []) if labels["api"] == "Produce")
    errors = sum(v for labels, v in m.get("fedkafka_proxy_errors_total", []) if labels["api"] == "Produce")
    if requests and errors / requests > PRODUCE_ERROR_RATIO:
        h.issues.append(f"{where}: {errors / requests:.0%} of produce requests answered with errors since it started")
    refusals = {labels["reason"]: int(v) for labels, v in m.get("fedkafka_proxy_refusals_total", [])}
    h.signals.setdefault("proxies", {})[probe.address] = {"applied_version": int(applied), "refusals": refusals,
                                                          "produce_requests": int(requests),
                                                          "produce_errors": int(errors)}
