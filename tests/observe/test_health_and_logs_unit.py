"""The health summary `fedkafka status` prints, from hand-made signals; JSON and text log lines."""

from __future__ import annotations

import json
import logging

import pytest

from fedkafka.observe import health, logs

STATUS = {"view_version": 9, "proxies": [
    {"node_id": 1, "host": "p1", "port": 9092, "applied_version": 9},
    {"node_id": 2, "host": "p2", "port": 9092, "applied_version": 8}]}

CONTROLLER = """
fedkafka_controller_active 1
fedkafka_controller_db_ok 1
fedkafka_cluster_reachable{cluster="c1"} 1
fedkafka_cluster_reachable{cluster="c2"} 0
fedkafka_physical_topics_lost{cluster="c1"} 2
fedkafka_physical_topics_lost{cluster="c2"} 0
fedkafka_move_oldest_unfinished_seconds 900
fedkafka_moves{state="frozen"} 1
fedkafka_moves{state="done"} 4
fedkafka_workflows{kind="scale_up",state="running"} 1
"""

HEALTHY_CONTROLLER = """
fedkafka_controller_active 1
fedkafka_cluster_reachable{cluster="c1"} 1
fedkafka_move_oldest_unfinished_seconds 0
"""

PROXY = """
fedkafka_proxy_applied_view_version 9
fedkafka_task_restarts_total{task="view-stream"} 2
fedkafka_task_restarts_total{task="heartbeat"} 0
fedkafka_proxy_requests_total{api="Produce",version="9"} 100
fedkafka_proxy_errors_total{api="Produce",error="not_leader_or_follower"} 20
fedkafka_proxy_refusals_total{reason="frozen"} 20
"""


def test_each_signal_becomes_an_issue():
    probe = health.ProxyProbe("p1:9300", ready={"ok": False, "listening": True, "lease_valid": False},
                              metrics=health.parse(PROXY))
    dead = health.ProxyProbe("p9:9300", error="ConnectError: refused")
    h = health.summarize(STATUS, health.parse(CONTROLLER), [probe, dead])
    assert not h.ok
    assert h.issues == [
        "proxy 2 (p2:9092) acked view 8, not the current 9",
        "cluster c2 is unreachable",
        "cluster c1 lost 2 physical topic(s) that held data: not re-created, their partitions refuse produce "
        "(docs/OPERATIONS.md, \"A cluster lost a topic's data\")",
        "a move has been in one state for 900 s (stuck: over 600 s)",
        "proxy p1:9300 is not ready (lease_valid false)",
        "proxy p1:9300: background task view-stream restarted 2 time(s)",
        "proxy p1:9300: 20% of produce requests answered with errors since it started",
        "proxy p9:9300 did not answer: ConnectError: refused",
    ]
    assert h.signals["moves"] == {"frozen": 1, "done": 4}
    assert h.signals["physical_topics_lost"] == {"c1": 2}
    assert h.signals["workflows_running"] == 1
    assert h.signals["proxies"]["p1:9300"]["refusals"] == {"frozen": 20}


def test_no_active_controller_and_no_database():
    h = health.summarize({"view_version": 1, "proxies": []},
                         health.parse("fedkafka_controller_active 0\nfedkafka_controller_db_ok 0\n"))
    assert h.issues == ["the controller is not active (no view changes, workflows or moves until one is)",
                        "the controller cannot read its database"]


def test_a_healthy_federation_has_no_issues():
    status = {"view_version": 9, "proxies": [{"node_id": 1, "host": "p1", "port": 9092, "applied_version": 9}]}
    probe = health.ProxyProbe("p1:9300", ready={"ok": True}, metrics=health.parse(
        "fedkafka_proxy_applied_view_version 9\nfedkafka_task_restarts_total{task=\"heartbeat\"} 0\n"))
    h = health.summarize(status, health.parse(HEALTHY_CONTROLLER), [probe])
    assert h.ok and h.to_dict()["issues"] == []


def _record(msg: str, *args, **extra) -> logging.LogRecord:
    record = logging.LogRecord("fedkafka.refusals", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_carries_the_refusal_fields():
    refusal = {"reason": "frozen", "topic": "orders", "partition": 3, "client_id": "app-1",
               "detail": "partition frozen for a segment move"}
    line = json.loads(logs.JsonFormatter().format(_record("refused %s", "frozen", refusal=refusal)))
    assert line["refusal"] == refusal
    assert (line["level"], line["logger"], line["msg"]) == ("INFO", "fedkafka.refusals", "refused frozen")
    assert line["ts"].endswith("Z")


def test_bearer_tokens_are_masked_in_json_and_text():
    record = _record("controller said 401 to Authorization: Bearer s3cr3t-t0ken, retrying")
    assert "s3cr3t" not in logs.JsonFormatter().format(record)
    assert "s3cr3t" not in logs.MaskingFormatter(logs.TEXT_FORMAT).format(record)
    assert "Bearer ***" in logs.MaskingFormatter(logs.TEXT_FORMAT).format(record)


def test_an_unknown_log_format_is_refused(monkeypatch):
    monkeypatch.setenv("FEDKAFKA_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="text or json"):
        logs.configure()
