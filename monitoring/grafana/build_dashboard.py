"""Writes fedkafka-federation.json, the Grafana dashboard of a federation (controller, proxies, name service).

Edit the panels here and run `python monitoring/grafana/build_dashboard.py`; tests/observe checks the JSON is
what this script writes, that it is a valid dashboard, and that every series it reads is one fedkafka exports.
"""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}

ROWS = [
    ("Federation (controller)", [
        ("Active controller", "stat", [("max(fedkafka_controller_active)", "active")], "none"),
        ("View version: controller and proxies", "timeseries", [
            ("max(fedkafka_view_version)", "controller"),
            ("fedkafka_proxy_applied_view_version", "{{instance}} acked")], "none"),
        ("Proxies behind the view", "timeseries", [("fedkafka_proxies_behind_view", "behind")], "none"),
        ("Cluster reachable", "timeseries", [("fedkafka_cluster_reachable", "{{cluster}}")], "none"),
        ("Cluster scan p99", "timeseries", [(
            "histogram_quantile(0.99, sum by (le, cluster) (rate(fedkafka_scan_seconds_bucket[5m])))",
            "{{cluster}}")], "s"),
        ("Moves by state", "timeseries", [("fedkafka_moves", "{{state}}")], "none"),
        ("Oldest unfinished move (time in its state)", "timeseries", [
            ("fedkafka_move_oldest_unfinished_seconds", "oldest")], "s"),
        ("Time in move state p90", "timeseries", [(
            "histogram_quantile(0.9, sum by (le, state) (rate(fedkafka_move_state_seconds_bucket[30m])))",
            "{{state}}")], "s"),
        ("Workflows by kind and state", "timeseries", [("fedkafka_workflows", "{{kind}} {{state}}")], "none"),
        ("Oldest running workflow", "timeseries", [("fedkafka_workflow_oldest_running_seconds", "age")], "s"),
        ("View compose p99 and push p99", "timeseries", [
            ("histogram_quantile(0.99, sum by (le) (rate(fedkafka_compose_seconds_bucket[5m])))", "compose"),
            ("histogram_quantile(0.99, sum by (le) (rate(fedkafka_view_push_seconds_bucket[5m])))", "push")], "s"),
        ("View size", "timeseries", [("fedkafka_view_bytes", "bytes")], "bytes"),
        ("View stream subscribers by version", "timeseries", [("fedkafka_view_subscribers", "v{{version}}")],
         "none"),
    ]),
    ("Proxies", [
        ("Requests by API", "timeseries", [("sum by (api) (rate(fedkafka_proxy_requests_total[1m]))", "{{api}}")],
         "reqps"),
        ("Errors by API and code", "timeseries", [(
            "sum by (api, error) (rate(fedkafka_proxy_errors_total[1m]))", "{{api}} {{error}}")], "reqps"),
        ("Produce error ratio", "timeseries", [(
            "sum by (instance) (rate(fedkafka_proxy_errors_total{api=\"Produce\"}[5m])) / "
            "sum by (instance) (rate(fedkafka_proxy_requests_total{api=\"Produce\"}[5m]))", "{{instance}}")],
         "percentunit"),
        ("Latency p99 by API", "timeseries", [(
            "histogram_quantile(0.99, sum by (le, api) (rate(fedkafka_proxy_request_seconds_bucket[5m])))",
            "{{api}}")], "s"),
        ("Refusals by reason", "timeseries", [(
            "sum by (reason) (rate(fedkafka_proxy_refusals_total[1m]))", "{{reason}}")], "reqps"),
        ("Record bytes by logical topic", "timeseries", [(
            "sum by (topic, direction) (rate(fedkafka_proxy_topic_bytes_total[1m]))", "{{topic}} {{direction}}")],
         "Bps"),
        ("Record bytes by physical cluster", "timeseries", [(
            "sum by (cluster, direction) (rate(fedkafka_proxy_cluster_bytes_total[1m]))",
            "{{cluster}} {{direction}}")], "Bps"),
        ("Upstream errors by cluster", "timeseries", [(
            "sum by (cluster) (rate(fedkafka_proxy_upstream_errors_total[1m]))", "{{cluster}}")], "reqps"),
        ("Client connections and in-flight requests", "timeseries", [
            ("sum by (instance) (fedkafka_proxy_connections)", "{{instance}} connections"),
            ("sum by (instance) (fedkafka_proxy_inflight_requests)", "{{instance}} in flight")], "none"),
        ("Upstream connections by kind", "timeseries", [(
            "sum by (instance, kind) (fedkafka_proxy_upstream_connections)", "{{instance}} {{kind}}")], "none"),
        ("Buffered bytes", "timeseries", [("fedkafka_proxy_buffered_bytes", "{{instance}}")], "bytes"),
        ("Lease remaining", "timeseries", [("fedkafka_proxy_lease_remaining_seconds", "{{instance}}")], "s"),
        ("Produce waiting for a drain", "timeseries", [("fedkafka_proxy_produce_awaiting_drain", "{{instance}}")],
         "none"),
        ("Background tasks restarted (10m)", "timeseries", [(
            "increase(fedkafka_task_restarts_total[10m])", "{{job}} {{instance}} {{task}}")], "none"),
        ("TLS certificate time left (proxies and name service)", "timeseries", [(
            "fedkafka_tls_certificate_expiry_timestamp_seconds - time()", "{{job}} {{instance}} {{listener}}")],
         "s"),
    ]),
    ("Name service", [
        ("Connections relayed by pool", "timeseries", [(
            "sum by (pool) (rate(fedkafka_nameservice_relayed_total[1m]))", "{{pool}}")], "reqps"),
        ("Connections refused by reason", "timeseries", [(
            "sum by (reason) (rate(fedkafka_nameservice_refusals_total[1m]))", "{{reason}}")], "reqps"),
        ("Controller lookups, errors and stale answers", "timeseries", [
            ("sum(rate(fedkafka_nameservice_controller_lookups_total[1m]))", "lookups"),
            ("sum(rate(fedkafka_nameservice_controller_errors_total[1m]))", "errors"),
            ("sum(rate(fedkafka_nameservice_stale_answers_total[1m]))", "stale answers")], "reqps"),
        ("Relayed bytes", "timeseries", [(
            "sum by (direction) (rate(fedkafka_nameservice_relayed_bytes_total[1m]))", "{{direction}}")], "Bps"),
    ]),
]


def panel(pid: int, title: str, kind: str, targets, unit: str, x: int, y: int) -> dict:
    return {"id": pid, "type": kind, "title": title, "datasource": DS,
            "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)]}


def dashboard() -> dict:
    panels, pid, y = [], 1, 0
    for row_title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, kind, targets, unit) in enumerate(row):
            panels.append(panel(pid, title, kind, targets, unit, (i % 3) * 8, y + (i // 3) * 8))
            pid += 1
        y += ((len(row) + 2) // 3) * 8
    return {
        "uid": "fedkafka-federation", "title": "fedkafka federation", "tags": ["fedkafka", "kafka"],
        "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []}, "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    (Path(__file__).parent / "fedkafka-federation.json").write_text(render())
