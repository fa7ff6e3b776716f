"""A whole physical cluster dies under keyed load (docs/DESIGN.md §9): kill -9 of every broker of c1, failover (asked
for, or by the controller's --auto-failover-after), produce resumes on c2, c1 restarts and every record acked before
the kill is read. Shared by tests/workflows/test_failover_integration.py and bench/failover_bench.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkafka.checker import Checker, CheckerConfig
from fedkafka.kafka.cluster import LocalKafkaCluster

from .support import Federation, wait_for


@dataclass
class FailoverResult:
    report: dict[str, Any]
    run: dict[str, Any]
    on_c1: list[int]
    # seconds: failover decision (the request, or the run the controller started) -> first produce acked on a
    # partition that was on c1; the kill -> that ack; the decision -> the run done
    decision_to_first_ack: float
    kill_to_first_ack: float
    decision_to_done: float
    chains: list[dict] = field(default_factory=list)


def _first_ack_after(checker: Checker, partitions: set[int], since: float) -> float | None:
    with checker._lock:
        times = [a.at for a in checker.acked.values() if a.partition in partitions and a.at >= since]
    return min(times) if times else None


def _run_of(fed: Federation, kind: str, cluster: str) -> dict | None:
    runs = [r for r in fed.api.get("/v1/workflows").json() if r["kind"] == kind and r["cluster"] == cluster]
    return runs[-1] if runs else None


def failover_under_load(tmp: Path, c1: LocalKafkaCluster, c2: LocalKafkaCluster, *, topic: str,
                        partitions: int = 8, rate: float = 100, steady: float = 5.0, proxies: int = 2,
                        auto_after: float | None = None) -> FailoverResult:
    fed = Federation(tmp)
    checker = None
    try:
        fed.start_controller(args=() if auto_after is None else ("--auto-failover-after", str(auto_after)))
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, topic, partitions, coordination="c2")
        fed.start_proxies(proxies)
        on_c1 = [i for i, c in enumerate(fed.chains(topic)) if c["segments"][-1]["cluster"] == "c1"]
        checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=topic, producers=2, consumers=2, rate=rate,
                                        idempotent=(True, False),
                                        extra_consumer_config={"auto.commit.interval.ms": 500})).start()
        checker_started = checker._started
        time.sleep(steady)
        c1.kill()
        killed = time.monotonic()
        checker.mark("c1 killed (kill -9 of every broker)")
        if auto_after is None:
            wait_for(lambda: not fed.api.get("/v1/clusters/c1").json()["reachable"], 60, what="c1 unreachable")
            decided = time.monotonic()
            resp = fed.api.post("/v1/workflows", json={"kind": "failover", "cluster": "c1"})
            assert resp.status_code == 200, resp.text
            run_id = resp.json()["id"]
        else:
            started = wait_for(lambda: _run_of(fed, "failover", "c1"), 120, what="automatic failover")
            run_id = started["id"]
            decided = time.monotonic() - (time.time() - started["created_at"])  # the run's wall-clock start
        checker.mark("failover decided")
        run = wait_for(lambda: fed._finished(run_id), 120, what="failover finished")
        done = time.monotonic()
        since = decided - checker._started
        first = wait_for(lambda: _first_ack_after(checker, set(on_c1), since), 60,
                         what="a produce acked on a partition that was on c1")
        for p in on_c1:  # every partition that was on c1 takes writes again
            wait_for(lambda p=p: _first_ack_after(checker, {p}, since), 60, what=f"produce to partition {p}")
        chains = fed.chains(topic)
        time.sleep(2)
        c1.start()
        c1.wait_ready()
        checker.mark("c1 restarted")
        wait_for(lambda: fed.api.get("/v1/clusters/c1").json()["reachable"], 60, what="c1 reachable again")
        report = checker.stop(drain_timeout=180, reread=True)
        checker = None
        return FailoverResult(report=report, run=run, on_c1=on_c1, decision_to_first_ack=first - since,
                              kill_to_first_ack=first - (killed - checker_started),
                              decision_to_done=done - decided, chains=chains)
    finally:
        if checker is not None:
            checker.stop(drain_timeout=1)
        fed.stop()
