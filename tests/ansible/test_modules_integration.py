"""The fedkafka modules against a real controller (`fedkafka controller`) and real Kafka clusters."""

from __future__ import annotations

import json
import urllib.request

import pytest
from ansible_harness import run_module as run
from ansible_harness import running_controller

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    yield from running_controller(tmp_path_factory.mktemp("controller"))


@pytest.fixture
def fresh_controller(tmp_path):
    """A controller of its own: a test that needs clusters registered in its own way."""
    yield from running_controller(tmp_path)


def test_cluster_register_is_idempotent_and_check_mode_writes_nothing(controller, kafka_clusters):
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    failed, result = run("fedkafka_cluster", {**controller, "id": "c1", "bootstrap": c1.bootstrap,
                                               "coordination": True})
    assert not failed and result["changed"], result
    failed, result = run("fedkafka_cluster", {**controller, "id": "c1", "bootstrap": c1.bootstrap})
    assert not failed and not result["changed"], result

    failed, result = run("fedkafka_cluster", {**controller, "id": "c2", "bootstrap": c2.bootstrap}, check_mode=True)
    assert not failed and result["changed"] and result["actions"] == [f"register c2 at {c2.bootstrap}"]
    _, info = run("fedkafka_info", {**controller})
    assert [c["id"] for c in info["clusters"]] == ["c1"]  # check mode registered nothing


def test_topic_create_grow_refuse_shrink(controller, kafka_clusters, unique_name):
    run("fedkafka_cluster", {**controller, "id": "c1", "bootstrap": kafka_clusters[0].bootstrap, "coordination": True})
    args = {**controller, "name": unique_name, "partitions": 2}
    failed, result = run("fedkafka_topic", args)
    assert not failed and result["changed"], result
    failed, result = run("fedkafka_topic", args)
    assert not failed and not result["changed"], result
    failed, result = run("fedkafka_topic", {**args, "partitions": 1})
    assert failed and f"refusing to shrink topic {unique_name} from 2 to 1" in result["msg"]
    _, info = run("fedkafka_info", {**controller})
    assert unique_name in [t["name"] for t in info["topics"]]
    assert info["view_version"] >= 1


def test_bad_token_is_a_clear_error(controller):
    failed, result = run("fedkafka_info", {**controller, "token": "wrong-token-wrong-token"})
    assert failed and "HTTP 401" in result["msg"]


def test_kafka_broker_info_reads_a_real_cluster(kafka_clusters):
    failed, result = run("kafka_broker_info", {"bootstrap": kafka_clusters[0].bootstrap, "wait": True,
                                               "timeout": 30, "replicated": True})
    assert not failed and result["ready"] and result["brokers"][0]["port"] == kafka_clusters[0].port
    assert result["under_replicated"] == 0


def test_scale_up_check_mode_predicts_exactly_the_moves_the_run_makes(fresh_controller, kafka_clusters,
                                                                     unique_name):
    """Issue 19's case: two 5-partition topics on c1, c2 joining. The old check mode predicted 10 // 2 = 5 moves
    while the workflow makes floor(5 / 2) = 2 per topic; now check mode asks the controller for a dry run."""
    api = fresh_controller
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    run("fedkafka_cluster", {**api, "id": "c1", "bootstrap": c1.bootstrap, "coordination": True})
    for topic in (f"{unique_name}-a", f"{unique_name}-b"):
        assert not run("fedkafka_topic", {**api, "name": topic, "partitions": 5})[0]
    run("fedkafka_cluster", {**api, "id": "c2", "bootstrap": c2.bootstrap})
    failed, predicted = run("fedkafka_scale_up", {**api, "cluster": "c2"}, check_mode=True)
    assert not failed and predicted["changed"] and predicted["partitions_moved"] == 4, predicted
    assert writers(api, unique_name) == {"c1": 10}  # check mode moved nothing
    failed, done = run("fedkafka_scale_up", {**api, "cluster": "c2", "timeout": 120})
    assert not failed and done["changed"], done
    assert (done["partitions_moved"], done["moves"], done["diff"]) == (predicted["partitions_moved"],
                                                                       predicted["moves"], predicted["diff"])
    assert writers(api, unique_name) == {"c1": 6, "c2": 4}
    failed, again = run("fedkafka_scale_up", {**api, "cluster": "c2"}, check_mode=True)
    assert not failed and not again["changed"] and again["moves"] == [], again


def writers(api: dict, prefix: str) -> dict[str, int]:
    """How many partitions of the topics named prefix-* write to each cluster (GET /v1/topics/{name})."""
    counts: dict[str, int] = {}
    for topic in (f"{prefix}-a", f"{prefix}-b"):
        req = urllib.request.Request(f"{api['controller_url']}/v1/topics/{topic}",
                                     headers={"Authorization": f"Bearer {api['token']}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            for chain in json.loads(resp.read())["chains"]:
                cluster = chain["segments"][-1]["cluster"]
                counts[cluster] = counts.get(cluster, 0) + 1
    return counts
