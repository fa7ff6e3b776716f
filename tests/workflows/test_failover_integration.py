"""A whole cluster dies under keyed load and its writes fail over (docs/DESIGN.md §9): real clusters, controller,
proxies and checker; kill -9 of every broker of c1 (one-node clusters: CI speed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fedkafka.view.chains import UNCLEAN_GAP

from .failover_scenario import failover_under_load
from .support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def assert_no_acked_record_lost(result) -> None:
    report = result.report
    assert report["acked"] > 0 and report["client_failures"] == [], report["client_failures"]
    # every record acked before the kill (read inside the gap once c1 is back) and after the failover
    assert report["lost"] == 0, (report["lost_sample"], report["lost_acks"], report["marks"], report["reread_passes"])
    assert report["order_violations"] == 0, report["order_sample"]


def timings(result) -> dict:
    """For failure messages: where the time went (the run's phases, seconds from its start)."""
    run = result.run
    return {"decision_to_first_ack": round(result.decision_to_first_ack, 2),
            "decision_to_done": round(result.decision_to_done, 2),
            "phases": {ph["name"]: (round((ph["started_at"] or run["created_at"]) - run["created_at"], 2),
                                    round((ph["finished_at"] or run["created_at"]) - run["created_at"], 2))
                       for ph in run["phases"]},
            "marks": result.report["marks"],
            "timeline": [r for r in result.report["timeline"] if r["errors"]][:20]}


def assert_failed_over(result) -> None:
    assert result.run["state"] == "done", result.run["error"]
    assert result.run["moved"] == len(result.on_c1) > 0
    for p in result.on_c1:
        old, new = result.chains[p]["segments"]
        assert old["cluster"] == "c1" and new["cluster"] == "c2"
        assert new["logical_base"] == old["logical_base"] + old["phys_end"] - old["phys_start"] + UNCLEAN_GAP


@pytest.mark.failover_scenario  # minutes: `make test-failover`
@pytest.mark.timeout(900)
def test_kill_9_of_a_whole_cluster_then_failover_loses_no_acked_record(make_clusters, tmp_path, unique_name):
    c1, c2 = make_clusters("f1", "f2")
    result = failover_under_load(tmp_path, c1, c2, topic=unique_name)
    assert_failed_over(result)
    assert result.decision_to_first_ack <= 10.0, timings(result)
    assert_no_acked_record_lost(result)


@pytest.mark.failover_scenario  # minutes: `make test-failover`
@pytest.mark.timeout(900)
def test_auto_failover_after_an_unreachable_period(make_clusters, tmp_path, unique_name):
    c1, c2 = make_clusters("f1", "f2")
    result = failover_under_load(tmp_path, c1, c2, topic=unique_name, auto_after=2.0)
    assert_failed_over(result)
    assert_no_acked_record_lost(result)


def test_the_failover_command_refuses_a_reachable_cluster(kafka_clusters, federation, unique_name):
    c1, c2, _ = kafka_clusters
    federation.start_controller()
    federation.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 2, coordination="c2")
    cli = [sys.executable, "-m", "fedkafka.cli", "failover", "--controller", federation.url, "--token-file",
           str(federation.token_file), "--json"]
    res = subprocess.run([*cli, "--cluster", "c1"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 1 and "decommission --cluster c1" in res.stderr, res.stderr
    res = subprocess.run([*cli, "--cluster", "c2"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 1 and "coordination move" in res.stderr, res.stderr
    assert json.loads(federation.api.get("/v1/workflows").text) == []
