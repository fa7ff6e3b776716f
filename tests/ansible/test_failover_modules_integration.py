"""fedkafka_failover and fedkafka_coordination against a real controller and real Kafka clusters: a cluster's only
broker killed, check mode's plan, the run, a second run that changes nothing; then the groups moved to c3. The
playbooks failover.yml and coordination_move.yml run too, on an inventory naming that controller."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ansible_harness import ROOT, running_controller
from ansible_harness import run_module as run

pytestmark = [pytest.mark.integration, pytest.mark.ansible]  # ansible: it runs the playbooks too
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


@pytest.fixture
def controller(tmp_path):
    yield from running_controller(tmp_path)


def get(api: dict, path: str):
    req = urllib.request.Request(api["controller_url"] + path, headers={"Authorization": f"Bearer {api['token']}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def writers(api: dict, topic: str) -> list[str]:
    return [chain["segments"][-1]["cluster"] for chain in get(api, f"/v1/topics/{topic}")["chains"]]


def wait_unreachable(api: dict, cluster: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while get(api, f"/v1/clusters/{cluster}")["reachable"]:
        assert time.monotonic() < deadline, f"the controller's scans still find {cluster} reachable"
        time.sleep(0.5)


def playbook(inventory: Path, name: str, *args: str) -> tuple[int, str]:
    """Run playbooks/<name>; (changed count on the controller host, output). Fails the test if the run failed."""
    proc = subprocess.run([PLAYBOOK, "-i", str(inventory), f"playbooks/{name}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    recap = re.search(r"^controller\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)
    assert recap, out[-4000:]
    return int(recap.group(1)), out


def inventory_of(tmp: Path, api: dict, clusters: dict[str, str]) -> Path:
    """A one-host inventory: the modules run here (local connection) against the test's controller."""
    brokers = {f"kafka_{cid}": {"vars": {"kafka_broker_cluster": cid},
                                "hosts": {f"{cid}-broker1": {"kafka_broker_port": int(bootstrap.rsplit(":", 1)[1])}}}
               for cid, bootstrap in clusters.items()}
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "fedkafka_venv": sys.prefix, "fedkafka_controller_url": api["controller_url"],
                 "fedkafka_api_token": api["token"], "fedkafka_coordination_cluster": "c2"},
        "children": {"kafka_brokers": {"children": brokers}, "fedkafka_controller": {"hosts": {"controller": {}}}}}}
    path = tmp / "inventory.yml"
    path.write_text(json.dumps(inventory))
    return path


@pytest.mark.timeout(900)
def test_failover_check_mode_predicts_the_run_and_a_second_run_changes_nothing(controller, kafka_clusters,
                                                                               make_clusters, unique_name, tmp_path):
    api = controller
    (dead,) = make_clusters("f1")
    live, spare = kafka_clusters[1], kafka_clusters[2]
    assert not run("fedkafka_cluster", {**api, "id": "c2", "bootstrap": live.bootstrap, "coordination": True})[0]
    assert not run("fedkafka_cluster", {**api, "id": "c1", "bootstrap": dead.bootstrap})[0]
    assert not run("fedkafka_topic", {**api, "name": unique_name, "partitions": 4})[0]
    assert writers(api, unique_name) == ["c2", "c2", "c1", "c1"]  # blocks, in registration order
    failed, refused = run("fedkafka_failover", {**api, "cluster": "c1"}, check_mode=True)
    assert failed and "decommission" in refused["msg"], refused  # it answers: a planned move keeps everything

    dead.kill()
    wait_unreachable(api, "c1")
    inventory = inventory_of(tmp_path, api, {"c1": dead.bootstrap, "c2": live.bootstrap})
    changed, out = playbook(inventory, "failover.yml", "-e", "cluster=c1", "--check", "--diff")
    assert changed == 1 and f"{unique_name}/2: c1 -> c2" in out and f"{unique_name}/3: c1 -> c2" in out, out[-4000:]
    failed, predicted = run("fedkafka_failover", {**api, "cluster": "c1"}, check_mode=True)
    assert not failed and predicted["changed"], predicted
    assert predicted["moves"] == [f"{unique_name}/2: c1 -> c2", f"{unique_name}/3: c1 -> c2"], predicted
    assert predicted["diff"]["after"]["state"] == "read_only"
    assert writers(api, unique_name) == ["c2", "c2", "c1", "c1"]  # check mode moved nothing
    failed, done = run("fedkafka_failover", {**api, "cluster": "c1", "timeout": 300})
    assert not failed and done["changed"], done
    assert (done["moves"], done["diff"], done["states"]) == (predicted["moves"], predicted["diff"],
                                                             predicted["states"])
    assert writers(api, unique_name) == ["c2"] * 4
    for check in (True, False):
        failed, again = run("fedkafka_failover", {**api, "cluster": "c1"}, check_mode=check)
        assert not failed and not again["changed"] and again["moves"] == [], again
    assert playbook(inventory, "failover.yml", "-e", "cluster=c1")[0] == 0  # done: the playbook changes nothing

    # the groups move to c3 (a planned move: c2 answers); a second run changes nothing
    assert not run("fedkafka_cluster", {**api, "id": "c3", "bootstrap": spare.bootstrap})[0]
    failed, planned = run("fedkafka_coordination", {**api, "to": "c3"}, check_mode=True)
    assert not failed and planned["changed"] and (planned["previous"], planned["coordination"]) == ("c2", "c3")
    assert playbook(inventory, "coordination_move.yml", "-e", "to=c3", "--check")[0] == 1
    assert [c["id"] for c in get(api, "/v1/clusters") if c["coordination"]] == ["c2"]  # --check moved nothing
    assert playbook(inventory, "coordination_move.yml", "-e", "to=c3")[0] == 1
    assert [c["id"] for c in get(api, "/v1/clusters") if c["coordination"]] == ["c3"]
    assert playbook(inventory, "coordination_move.yml", "-e", "to=c3")[0] == 0
    failed, again = run("fedkafka_coordination", {**api, "to": "c3"})
    assert not failed and not again["changed"] and again["diff"]["before"] == again["diff"]["after"], again
