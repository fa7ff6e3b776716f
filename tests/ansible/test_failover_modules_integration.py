"""fedkafka_failover and fedkafka_coordination against a real controller and real Kafka clusters: a cluster's only
broker killed, check mode's plan, the run, a second run that changes nothing; then the groups moved to c3."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from ansible_harness import run_module as run
from ansible_harness import running_controller

pytestmark = pytest.mark.integration


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


@pytest.mark.timeout(600)
def test_failover_check_mode_predicts_the_run_and_a_second_run_changes_nothing(controller, kafka_clusters,
                                                                               make_clusters, unique_name):
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

    # the groups move to c3 (a planned move: c2 answers); a second run changes nothing
    assert not run("fedkafka_cluster", {**api, "id": "c3", "bootstrap": spare.bootstrap})[0]
    failed, planned = run("fedkafka_coordination", {**api, "to": "c3"}, check_mode=True)
    assert not failed and planned["changed"] and (planned["previous"], planned["coordination"]) == ("c2", "c3")
    failed, moved = run("fedkafka_coordination", {**api, "to": "c3", "timeout": 300})
    assert not failed and moved["changed"] and moved["diff"] == planned["diff"], moved
    assert [c["id"] for c in get(api, "/v1/clusters") if c["coordination"]] == ["c3"]
    failed, again = run("fedkafka_coordination", {**api, "to": "c3"})
    assert not failed and not again["changed"], again
