"""`fedkafka local up` as a user runs it: clusters, controller, proxies, name service, demo, down."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from fedkafka.kafka.tools import run_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_status_lists_every_part(local_federation):
    _state_dir, status = local_federation
    assert [c["id"] for c in status["clusters"]] == ["c1", "c2"]
    assert status["controller"]["running"] and status["controller"]["url"].startswith("http://127.0.0.1:")
    assert status["nameservice"]["running"] and status["nameservice"]["bootstrap"].startswith("127.0.0.1:")
    assert len(status["proxies"]) == 2 and all(p["running"] for p in status["proxies"])


def test_name_service_metadata_lists_the_pools_proxies_not_the_brokers(local_federation):
    _state_dir, status = local_federation
    md = Producer({"bootstrap.servers": status["nameservice"]["bootstrap"], "client.id": "md-check"}).list_topics(
        timeout=15)
    advertised = sorted(f"{b.host}:{b.port}" for b in md.brokers.values())
    assert advertised == sorted(p["bootstrap"] for p in status["proxies"])
    assert not {c["bootstrap"] for c in status["clusters"]} & set(advertised)


def test_demo_through_the_name_service_lands_on_both_clusters(local_federation, fedkafka_cli):
    state_dir, _status = local_federation
    report = json.loads(fedkafka_cli(state_dir, "local", "demo", "--messages", "200", "--topic", "demo-test"))
    assert report["produced"] == report["consumed"] == 200
    assert set(report["records_per_cluster"]) == {"c1", "c2"}
    assert all(n > 0 for n in report["records_per_cluster"].values())
    assert sum(report["records_per_cluster"].values()) == 200


def test_java_tools_through_the_name_service(local_federation, fedkafka_cli):
    state_dir, status = local_federation
    fedkafka_cli(state_dir, "topic", "create", "java-demo", "--partitions", "4")
    bootstrap = status["nameservice"]["bootstrap"]
    out = run_tool("kafka-producer-perf-test", "--topic", "java-demo", "--num-records", "1000", "--record-size",
                   "200", "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
                   timeout=180).stdout
    assert "1000 records sent" in out, out
    consumed = run_tool("kafka-console-consumer", "--bootstrap-server", bootstrap, "--topic", "java-demo",
                        "--group", "java-demo-group", "--from-beginning", "--max-messages", "1000",
                        "--timeout-ms", "60000", timeout=180)
    assert len(consumed.stdout.splitlines()) == 1000


def test_check_command_reports_every_acked_record_consumed(local_federation, fedkafka_cli):
    state_dir, _status = local_federation
    report = json.loads(fedkafka_cli(state_dir, "check", "--topic", "check-test", "--partitions", "4",
                                     "--duration", "3", "--rate", "50", "--json"))
    assert report["acked"] > 100 and report["consumed"] == report["acked"], report
    assert report["lost"] == 0 and report["order_violations"] == 0 and report["duplicates_idempotent"] == 0
    assert report["timeline"] and report["topic"] == "check-test"
