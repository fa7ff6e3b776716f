"""Decommission under load through real proxies: read_only, draining, removed (docs/DESIGN.md §7.4; issue 7)."""

from __future__ import annotations

import time

import pytest

from fedkafka.checker import Checker, CheckerConfig

from .support import Federation, assert_as_promised, log_end, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a federation under load for tens of seconds


def c1_partitions(fed: Federation, topic: str) -> set[tuple[str, int]]:
    return {(s["topic"], s["partition"]) for c in fed.chains(topic) for s in c["segments"] if s["cluster"] == "c1"}


@pytest.mark.timeout(400)
def test_decommission_under_load_with_group_drain(kafka_clusters, federation, unique_name):
    c1, c2, c3 = kafka_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap, "c3": c3.bootstrap}, unique_name, 6, coordination="c2")
    fed.start_proxies(2)
    physical_c1 = c1_partitions(fed, unique_name)
    assert len(physical_c1) == 2
    checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=unique_name, producers=2, consumers=2,
                                    rate=100, idempotent=(True, False),
                                    extra_consumer_config={"auto.commit.interval.ms": 500})).start()
    time.sleep(6)
    checker.mark("decommission")
    resp = fed.api.post("/v1/workflows", json={"kind": "decommission", "cluster": "c1", "drain": "groups"})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["id"]

    def phase_done(name):
        run = fed.api.get(f"/v1/workflows/{run_id}").json()
        assert run["state"] != "failed", run["error"]
        return next(p for p in run["phases"] if p["name"] == name)["state"] == "done"

    wait_for(lambda: phase_done("publish"), 60, what="active segments moved off c1")
    checker.mark("read_only: segments moved")
    assert all(c["segments"][-1]["cluster"] != "c1" for c in fed.chains(unique_name))
    ends_after_move = {tp: log_end(c1.bootstrap, *tp) for tp in physical_c1}
    run = wait_for(lambda: fed._finished(run_id), 120, what="decommission finished")
    checker.mark("removed")
    assert run["state"] == "done", run["error"]
    assert run["moved"] == 2 and run["changed"], run
    time.sleep(3)
    report = checker.stop(drain_timeout=90)
    assert_as_promised(report, fed)
    clusters = {c["id"]: c for c in fed.api.get("/v1/clusters").json()}
    assert clusters["c1"]["state"] == "removed"
    assert c1_partitions(fed, unique_name) == set()  # no segment references c1
    # no write reached c1 after its active segments moved
    assert {tp: log_end(c1.bootstrap, *tp) for tp in physical_c1} == ends_after_move
    again = fed.workflow({"kind": "decommission", "cluster": "c1", "drain": "groups"})
    assert again["state"] == "done" and again["changed"] is False, again


@pytest.mark.timeout(300)
def test_group_drain_names_an_abandoned_group_and_ends_once_it_is_deleted(kafka_clusters, federation, unique_name):
    """A group that committed behind c1's seal and left holds `--drain groups`: the run says which group,
    and deleting it through the proxies (what an operator does) lets the decommission finish."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    c1, c2, _ = kafka_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 2, coordination="c2")
    fed.start_proxies(1)
    producer = Producer({"bootstrap.servers": fed.bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce(unique_name, value=b"%d" % i, partition=0)  # p0 lives on c1
    assert producer.flush(30) == 0
    group = f"abandoned-{unique_name}"
    consumer = Consumer({"bootstrap.servers": fed.bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(unique_name, 0, 4)], asynchronous=False)
    consumer.close()

    resp = fed.api.post("/v1/workflows", json={"kind": "decommission", "cluster": "c1", "drain": "groups"})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["id"]
    run = wait_for(lambda: (r := fed.api.get(f"/v1/workflows/{run_id}").json()).get("waiting_for") and r, 60,
                   what="the drain names what it waits for")
    assert run["state"] == "running" and run["step"] == "drain", run
    assert run["waiting_for"] == [f"{unique_name}/0: group {group!r} committed 4, c1's data ends at 10"], run

    admin = AdminClient({"bootstrap.servers": fed.bootstrap})
    admin.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=20)
    run = wait_for(lambda: fed._finished(run_id), 60, what="decommission finished")
    assert run["state"] == "done" and run["waiting_for"] == [], run
    assert {c["id"]: c["state"] for c in fed.api.get("/v1/clusters").json()}["c1"] == "removed"
