"""Two controllers on one PostgreSQL database (docs/DESIGN.md §3.6): the active one is killed with SIGKILL in the
middle of a scale-up, the standby takes the leader row over and finishes the move; keyed load by the checker
throughout loses nothing and reorders nothing. Prints how long produce paused."""

from __future__ import annotations

import itertools
import time

import pytest

from fedkafka.checker import Checker, CheckerConfig
from fedkafka.controller.moves import FAULT_PAUSE

from .support import HAFederation, assert_as_promised, wait_for
from .test_faults import check_chains, phase

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def longest_pause(acks: list[float], start: float, end: float) -> float:
    """The longest time without an ack between `start` and `end` (checker seconds)."""
    times = sorted(t for t in acks if start <= t <= end)
    edges = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(edges))


@pytest.mark.timeout(900)
def test_the_standby_finishes_a_move_when_the_active_controller_is_killed(kafka_clusters, private_postgres,
                                                                          tmp_path, unique_name):
    c1, c2, c3 = kafka_clusters
    fed = HAFederation(tmp_path, db=private_postgres.create_database(), lease_ms=2000, fence_ms=60_000,
                       leader_lease_ms=3000)
    try:
        fed.start_controller(env={FAULT_PAUSE: "frozen"}, index=0)  # this one stalls once the move is frozen
        assert wait_for(lambda: fed.active() == 0, 60, what="controller 0 active") is True
        fed.start_controller(index=1)
        assert fed.health(1)["active"] is False and fed.health(1)["active_url"] == fed.urls[0]
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 8, coordination="c1")
        fed.start_proxies(2)
        checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=unique_name, producers=2, consumers=2,
                                        rate=100, idempotent=(True, False))).start()
        time.sleep(5)
        run = fed.api.post("/v1/workflows", json={"kind": "scale_up", "cluster": "c3", "bootstrap": c3.bootstrap})
        assert run.status_code == 200, run.text
        run_id = run.json()["id"]
        wait_for(lambda: phase(fed.api.get(f"/v1/workflows/{run_id}").json(), "freeze")["state"] == "done", 120,
                 what="moves frozen")
        fed.kill_controller(0)
        killed_at = time.monotonic()
        checker.mark("killed")
        wait_for(lambda: fed.active() == 1, 60, what="the standby active", interval=0.05)
        took_over = time.monotonic() - killed_at
        done = wait_for(lambda: fed._finished(run_id), 240, what="the standby finished the run")
        checker.mark("finished")
        assert done["state"] == "done", done["error"]
        assert done["moved"] == 2, done
        check_chains(fed, unique_name, 2)
        time.sleep(5)
        acked = dict(checker.acked)
        report = checker.stop(drain_timeout=120)
    finally:
        fed.stop()
    assert_as_promised(report, fed)
    marks = {m["label"]: m["t"] for m in report["marks"]}
    killed, finished = marks["killed"], marks["finished"]
    moved = {m["partition"] for m in done["partitions_moved"]}
    everything = longest_pause([a.at for a in acked.values()], killed, finished)
    frozen = max(longest_pause([a.at for a in acked.values() if a.partition == p], killed, finished) for p in moved)
    print(f"failover: the standby was active {took_over:.1f} s after the kill; the run finished "
          f"{finished - killed:.1f} s after it; longest pause of all produce {everything:.1f} s, "
          f"of the moved (frozen) partitions {frozen:.1f} s from the kill; produce errors {report['produce_errors']}")
    assert report["produce_errors"] == 0, report["error_kinds"]
    assert everything < 5.0  # only the moved partitions wait for the standby
