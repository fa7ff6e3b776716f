"""Scale-up by `expand` (new logical partitions on the new cluster) and decommission drained by retention."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from fedkafka.checker import Checker, CheckerConfig

from .support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a federation under load for tens of seconds


@pytest.mark.timeout(400)
def test_scale_up_expand_adds_partitions_on_the_new_cluster(kafka_clusters, federation, unique_name):
    c1, c2, c3 = kafka_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 4, coordination="c1")
    fed.start_proxies(1)
    checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=unique_name, producers=2, consumers=1,
                                    rate=80, extra_producer_config={"topic.metadata.refresh.interval.ms": 1000},
                                    extra_consumer_config={"topic.metadata.refresh.interval.ms": 1000})).start()
    time.sleep(5)
    run = fed.workflow({"kind": "scale_up", "cluster": "c3", "bootstrap": c3.bootstrap, "strategy": "expand"})
    assert run["state"] == "done", run["error"]
    assert run["moved"] == 2 and run["changed"], run  # 4 / (3 - 1): c3 then holds a third of P
    chains = fed.chains(unique_name)
    assert len(chains) == 6
    assert [c["segments"][-1]["cluster"] for c in chains[4:]] == ["c3"] * 2
    assert all(len(c["segments"]) == 1 and c["segments"][0]["phys_start"] == 0 for c in chains[4:])
    time.sleep(8)  # clients see P=6 (keys re-hash: the documented price of expand)
    report = checker.stop(drain_timeout=90)
    assert report["lost"] == 0, report["lost_sample"]
    assert report["acked"] > 300
    placed = {checker.acked[k].partition for k in checker.acked}
    assert placed & {4, 5}, "no record reached the new partitions"
    again = fed.workflow({"kind": "scale_up", "cluster": "c3", "strategy": "expand"})
    assert again["state"] == "done" and again["changed"] is False and len(fed.chains(unique_name)) == 6


@pytest.mark.timeout(400)
def test_decommission_drained_by_retention(kafka_clusters, federation, unique_name):
    c1, c2, c3 = kafka_clusters
    fed = federation
    fed.start_controller()
    # short retention: c1's sealed segments expire within seconds (broker checks every 5 s)
    config = {"retention.ms": "4000", "segment.ms": "1000", "file.delete.delay.ms": "0"}
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap, "c3": c3.bootstrap}, unique_name, 3, coordination="c2",
              config=config)
    fed.start_proxies(1)
    producer = Producer({"bootstrap.servers": fed.bootstrap, "enable.idempotence": True})
    for i in range(300):
        producer.produce(unique_name, key=b"k%d" % i, value=b"v%d" % i)
    assert producer.flush(60) == 0
    run_id = fed.api.post("/v1/workflows", json={"kind": "decommission", "cluster": "c1"}).json()["id"]
    run = wait_for(lambda: fed._finished(run_id), 180, what="retention removed c1's segments")
    assert run["state"] == "done", run["error"]
    assert {c["id"]: c["state"] for c in fed.api.get("/v1/clusters").json()}["c1"] == "removed"
    assert all(s["cluster"] != "c1" for c in fed.chains(unique_name) for s in c["segments"])
    drain = next(p for p in run["phases"] if p["name"] == "drain")
    assert drain["done"] == drain["total"] >= 1
    # the federation still takes writes on the remaining clusters
    for i in range(30):
        producer.produce(unique_name, key=b"after%d" % i, value=b"x")
    assert producer.flush(60) == 0
