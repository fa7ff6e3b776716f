"""Scale-up 2 -> 3 under load, through real proxies, verified by the checker (docs/DESIGN.md §6, §7.2; issue 7)."""

from __future__ import annotations

import itertools
import time

import pytest

from fedkafka.checker import Checker, CheckerConfig

from .support import assert_as_promised, log_end

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a federation under load for tens of seconds


@pytest.mark.timeout(400)
def test_scale_up_rebalance_under_load(kafka_clusters, federation, unique_name):
    c1, c2, c3 = kafka_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 8, coordination="c1")
    fed.start_proxies(2)
    checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=unique_name, producers=2, consumers=2,
                                    rate=100, idempotent=(True, False))).start()
    time.sleep(6)
    checker.mark("scale-up")
    started = time.monotonic()
    run = fed.workflow({"kind": "scale_up", "cluster": "c3", "bootstrap": c3.bootstrap})
    took = time.monotonic() - started
    checker.mark("scale-up done")
    assert run["state"] == "done", run["error"]
    assert run["moved"] == 2 and run["changed"] is True, run  # floor(8 / 3): a fair share of the topic
    assert all(p["state"] == "done" and p["finished_at"] for p in run["phases"]), run["phases"]
    moved = {m["partition"] for m in run["partitions_moved"]}
    chains = fed.chains(unique_name)
    on_c3 = {c["partition"] for c in chains if c["segments"][-1]["cluster"] == "c3"}
    assert on_c3 == moved
    for c in chains:  # sealed segments are contiguous in logical space; epochs grew on moved partitions
        segs = c["segments"]
        for prev, nxt in itertools.pairwise(segs):
            assert nxt["logical_base"] == prev["logical_base"] + prev["phys_end"] - prev["phys_start"]
        assert c["leader_epoch"] == (1 if c["partition"] in moved else 0) and not c["frozen"]
    time.sleep(6)
    report = checker.stop(drain_timeout=90)
    print(f"scale-up took {took:.2f} s (POST -> done)")
    for sample in report["lost_sample"]:  # where a lost record was acked, for the failure message
        key, seq = sample.rsplit("#", 1)
        ack = checker.acked[(key, int(seq))]
        print("LOST", sample, ack, fed.chains(unique_name)[ack.partition])
    assert_as_promised(report, fed)
    # c3 takes new writes: every moved partition grew past its new segment's start; no data was copied
    for c in chains:
        if c["partition"] in moved:
            seg = c["segments"][-1]
            assert log_end(c3.bootstrap, seg["topic"], seg["partition"]) > seg["phys_start"]
            assert seg["phys_start"] == 0  # a fresh partition: nothing was copied onto c3
    again = fed.workflow({"kind": "scale_up", "cluster": "c3"})
    assert again["state"] == "done" and again["moved"] == 0 and again["changed"] is False, again
