"""Physical clusters of several brokers: each broker its own JVM, all registered before a cluster counts as
ready; `fedkafka local up --brokers 3` runs, reports, resumes and stops every one of them (about 70 s: with the
other 3-broker scenarios in `make test-replicated`, FEDKAFKA_REPLICATED_FAULTS=1; `make test` keeps `local up`,
add-cluster, down and resume with one broker a cluster, tests/launcher/test_resume_added_cluster.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient

from fedkafka.kafka.cluster import pid_alive

pytestmark = pytest.mark.integration


def test_each_replicated_cluster_lists_its_three_brokers(replicated_clusters):
    for cluster in replicated_clusters:
        md = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0}).list_topics(timeout=10)
        assert {b.id: b.port for b in md.brokers.values()} == {b.node_id: b.port for b in cluster.brokers}
        assert cluster.running and len({b.pid for b in cluster.brokers}) == 3
        assert [b.data_dir.name for b in cluster.brokers] == ["node-1", "node-2", "node-3"]
        assert md.cluster_id == cluster.cluster_id


def run_local(state_dir, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEDKAFKA_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "fedkafka.cli", "local", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def status(state_dir) -> dict:
    return json.loads(run_local(state_dir, "status", "--json").stdout)


@pytest.mark.timeout(600)
@pytest.mark.skipif(os.environ.get("FEDKAFKA_REPLICATED_FAULTS") != "1",
                    reason="heavy: runs with FEDKAFKA_REPLICATED_FAULTS=1 (make test-replicated)")
def test_local_up_with_three_brokers_reports_resumes_and_stops_every_broker(tmp_path):
    state_dir = tmp_path / "state"
    run_local(state_dir, "up", "--clusters", "1", "--brokers", "3")
    started = [status(state_dir)]
    try:
        (cluster,) = started[0]["clusters"]
        brokers = cluster["brokers"]
        assert [b["node_id"] for b in brokers] == [1, 2, 3] and all(b["running"] for b in brokers)
        assert [b["controller"] for b in brokers] == [True] * 3
        assert cluster["bootstrap"] == ",".join(f"127.0.0.1:{b['port']}" for b in brokers)
        assert cluster["pid"] == brokers[0]["pid"] and cluster["running"]

        # one broker crashes: status says so, and `local up` (no --brokers: as created) restarts just that one
        os.killpg(brokers[1]["pid"], signal.SIGKILL)
        after_crash = status(state_dir)["clusters"][0]
        assert [b["running"] for b in after_crash["brokers"]] == [True, False, True] and not after_crash["running"]
        run_local(state_dir, "up", "--clusters", "1", "--clusters-only")
        started.append(status(state_dir))
        resumed = started[-1]["clusters"][0]["brokers"]
        assert all(b["running"] for b in resumed)
        assert [b["port"] for b in resumed] == [b["port"] for b in brokers]  # same ports, same data dirs
        assert resumed[0]["pid"] == brokers[0]["pid"] and resumed[1]["pid"] != brokers[1]["pid"]

        refused = run_local(state_dir, "up", "--clusters", "1", "--brokers", "1", ok=False)
        assert "created with 3 broker(s), not 1" in refused.stderr

        added = json.loads(run_local(state_dir, "add-cluster").stdout)  # as many brokers as c1 by default
        assert added["id"] == "c2" and added["brokers"] == 3 and len(added["bootstrap"].split(",")) == 3
        started.append(status(state_dir))
    finally:
        run_local(state_dir, "down")
    pids = {b["pid"] for doc in started for c in doc["clusters"] for b in c["brokers"]}
    pids |= {doc[s]["pid"] for doc in started for s in ("controller", "nameservice")}
    pids |= {p["pid"] for doc in started for p in doc["proxies"]}
    assert len(pids) == 10 and not [p for p in pids if pid_alive(p)], "local down left processes behind"
    assert not any(b["running"] for c in status(state_dir)["clusters"] for b in c["brokers"])
