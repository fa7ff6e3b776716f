"""Moves and broker failures on replicated physical clusters (3 brokers, RF 3, min.insync 2), checked by the
checker with producers of every kind: idempotent, acks=all and acks=1 (docs/DESIGN.md §4.1; issue 12).

- a scale-up and a decommission, each with the leader broker of a partition being moved killed mid-move;
- a rolling restart of every broker of a cluster under load;
- the config database (PostgreSQL) unreachable for longer than a lease while a move is pending.
"""

from __future__ import annotations

import os
import time

import pytest

from fedkafka.checker import Checker, CheckerConfig

from .replicated import kill_leader_during_move, restart, rolling_restart
from .support import Federation, assert_as_promised, wait_for

# About 8 minutes of 6 broker JVMs under load: its own target, `make test-replicated`, not `make test`. On a
# machine loaded far past its 2 cores (a 9-broker soak and molecule beside the suite) these runs saw proxies
# lose their lease, partition leadership move between proxies and client retries cross them: duplicates
# and, for the plain acks=1 producer, reordering, never a loss (docs/DESIGN.md §4.1, issue 12's note).
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("FEDKAFKA_REPLICATED_FAULTS") != "1",
                                 reason="heavy: runs with FEDKAFKA_REPLICATED_FAULTS=1 (make test-replicated)")]
LEASE_MS = 6000  # a heartbeat waits for a database commit: a 2 s lease is too tight on a loaded machine


@pytest.fixture
def federation(tmp_path):
    fed = Federation(tmp_path, lease_ms=LEASE_MS)
    yield fed
    fed.stop()

# idempotent (acks=all), plain acks=all, idempotent, plain acks=1
MIXED_PRODUCERS = {"producers": 4, "idempotent": (True, False), "acks": ("all", "1")}


def mixed_checker(fed: Federation, topic: str, **overrides) -> Checker:
    config = {**MIXED_PRODUCERS, "consumers": 2, "rate": 80, "extra_consumer_config": {"auto.commit.interval.ms": 500},
              **overrides}
    return Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=topic, **config)).start()


def assert_every_kind_clean(report: dict, fed: Federation) -> None:
    """`support.assert_as_promised`, and the run had a producer of every kind (idempotent, plain acks=all, acks=1)."""
    assert_as_promised(report, fed)
    kinds = {(p["idempotent"], p["acks"]) for p in report["producers"].values()}
    assert kinds == {(True, "all"), (False, "all"), (False, "1")}, report["producers"]


def post_workflow(fed: Federation, body: dict) -> int:
    resp = fed.api.post("/v1/workflows", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def finished(fed: Federation, run_id: int, timeout: float = 180.0) -> dict:
    return wait_for(lambda: fed._finished(run_id), timeout, what=f"workflow {run_id} finished")


def load_on_r1(fed: Federation, r1, topic: str) -> Checker:
    """A controller, a 6-partition topic all on r1 (the coordination cluster), two proxies, and the mixed
    producers writing for 5 s already."""
    fed.start_controller()
    fed.setup({"r1": r1.bootstrap}, topic, 6, coordination="r1")
    fed.start_proxies(2)
    checker = mixed_checker(fed, topic)
    time.sleep(5)
    return checker


def no_frozen_chain(fed: Federation, topic: str) -> None:
    assert not [c for c in fed.chains(topic) if c["frozen"]], fed.chains(topic)


@pytest.mark.timeout(600)
def test_scale_up_and_decommission_with_the_moving_leader_killed(replicated_clusters, federation, unique_name):
    r1, r2 = replicated_clusters
    fed = federation
    checker = load_on_r1(fed, r1, unique_name)

    checker.mark("scale-up onto r2")
    run_id = post_workflow(fed, {"kind": "scale_up", "cluster": "r2", "bootstrap": r2.bootstrap})
    killed = kill_leader_during_move(fed, unique_name, r1, run_id)
    checker.mark(f"killed r1 broker {killed.node_id} (leader of a moving partition)")
    run = finished(fed, run_id)
    assert run["state"] == "done", run["error"]
    assert run["moved"] == 3, run
    time.sleep(3)
    restart(killed, r1)
    checker.mark("r1 broker back in sync")

    checker.mark("decommission r2")
    run_id = post_workflow(fed, {"kind": "decommission", "cluster": "r2", "drain": "groups"})
    killed = kill_leader_during_move(fed, unique_name, r2, run_id)
    checker.mark(f"killed r2 broker {killed.node_id} (leader of a moving partition)")
    run = finished(fed, run_id)
    assert run["state"] == "done", run["error"]
    restart(killed, r2)
    time.sleep(3)
    assert_every_kind_clean(checker.stop(drain_timeout=120), fed)
    no_frozen_chain(fed, unique_name)
    assert {c["segments"][-1]["cluster"] for c in fed.chains(unique_name)} == {"r1"}


@pytest.mark.timeout(600)
def test_rolling_restart_of_every_broker_under_load(replicated_clusters, federation, unique_name):
    r1, r2 = replicated_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"r1": r1.bootstrap, "r2": r2.bootstrap}, unique_name, 6, coordination="r1")
    fed.start_proxies(2)
    checker = mixed_checker(fed, unique_name)
    time.sleep(5)
    rolling_restart(r2, checker.mark)
    checker.mark("rolling restart done")
    time.sleep(5)
    assert_every_kind_clean(checker.stop(drain_timeout=120), fed)


@pytest.mark.timeout(600)
def test_database_unreachable_longer_than_a_lease_while_a_move_is_pending(replicated_clusters, private_postgres,
                                                                          tmp_path, unique_name):
    r1, r2 = replicated_clusters
    fed = Federation(tmp_path, lease_ms=LEASE_MS, db=private_postgres.create_database())
    try:
        checker = load_on_r1(fed, r1, unique_name)
        checker.mark("scale-up onto r2")
        run_id = post_workflow(fed, {"kind": "scale_up", "cluster": "r2", "bootstrap": r2.bootstrap})
        private_postgres.stop()  # the run is committed, its moves are not done: heartbeats and moves fail
        checker.mark("database down")
        time.sleep(3 * fed.lease_ms / 1000)
        private_postgres.start()
        checker.mark("database back")
        run = finished(fed, run_id, 240)
        if run["state"] != "done":  # a move that could not finish is rolled back; running it again completes it
            checker.mark(f"run {run['state']}: {run['error']}; scale-up again")
            run = finished(fed, post_workflow(fed, {"kind": "scale_up", "cluster": "r2"}), 240)
        assert run["state"] == "done", run["error"]
        wait_for(lambda: not [c for c in fed.chains(unique_name) if c["frozen"]], 30, what="no chain frozen")
        assert any(c["segments"][-1]["cluster"] == "r2" for c in fed.chains(unique_name))
        time.sleep(3)
        assert_every_kind_clean(checker.stop(drain_timeout=120), fed)
    finally:
        fed.stop()
