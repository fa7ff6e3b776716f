"""The controller's PostgreSQL goes away under load and comes back (docs/DESIGN.md §3.6, §4.9): a crash-like stop
of the database for many proxy leases (2 s) but well inside the fence (90 s). Produce and consume go on through
the proxies the whole time (the controller cannot renew a lease, but the fence, not the lease, stops produce);
once the database is back the controller answers again, the proxies are listed again, and a scale-up and a new
topic succeed; with one controller and with two (one active, one standby). Keyed load by the checker
throughout: nothing acked is lost or reordered."""

from __future__ import annotations

import time

import pytest

from fedkafka.checker import Checker, CheckerConfig

from .support import Federation, HAFederation, assert_as_promised, wait_for
from .test_static_stability import acks_in, longest_silence

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a federation under load for about a minute

OUTAGE_S = 20  # ten proxy leases


def proxies_listed(fed: Federation) -> bool:
    ports = {p for _, p in fed.proxies}
    return ports <= {p["port"] for p in fed.api.get("/v1/view").json()["proxies"]}


def controllers_alive(fed: Federation) -> bool:
    procs = fed.procs if isinstance(fed, HAFederation) else [fed.controller]
    return all(proc.poll() is None for proc in procs)


def restart_postgres_under_load(fed: Federation, postgres, clusters, topic: str) -> tuple[dict, float]:
    """The scenario: load, PostgreSQL down for OUTAGE_S, back, then a scale-up and a new topic. Returns the
    checker's report and how long after PostgreSQL started the controller answered with the proxies listed."""
    c1, c2, c3 = clusters
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, topic, 8, coordination="c1")
    fed.start_proxies(2)
    checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=topic, producers=2, consumers=2, rate=100,
                                    idempotent=(True, False))).start()
    time.sleep(5)
    postgres.stop()  # immediate: every open connection breaks, as in a crash
    checker.mark("database down")
    time.sleep(OUTAGE_S)
    checker.mark("database back")
    assert controllers_alive(fed), "a controller exited while its database was away"
    postgres.start()
    back = time.monotonic()
    wait_for(lambda: fed.api.get("/v1/status").status_code == 200, 60, what="controller answers again")
    wait_for(lambda: proxies_listed(fed), 60, what="proxies listed again")
    recovered = time.monotonic() - back
    checker.mark("scale-up onto c3")
    run = fed.workflow({"kind": "scale_up", "cluster": "c3", "bootstrap": c3.bootstrap}, timeout=240)
    assert run["state"] == "done", run["error"]
    assert any(c["segments"][-1]["cluster"] == "c3" for c in fed.chains(topic))
    created = fed.api.put(f"/v1/topics/{topic}-after", json={"partitions": 2, "placement": "blocks", "config": {}})
    assert created.status_code == 200, created.text
    time.sleep(5)
    return checker.stop(drain_timeout=120), recovered


def assert_traffic_went_on(report: dict, recovered: float, fed: Federation) -> None:
    assert_as_promised(report, fed)
    assert report["produce_errors"] == 0, report["error_kinds"]
    outage = acks_in(report, "database down", "database back")
    print(f"acks per second while PostgreSQL was down: {outage}; controller and proxies listed again "
          f"{recovered:.1f} s after PostgreSQL started")
    assert len(outage) >= OUTAGE_S - 3 and longest_silence(outage) <= 3, outage


@pytest.mark.timeout(600)
def test_postgres_restarted_under_load(kafka_clusters, private_postgres, tmp_path, unique_name):
    fed = Federation(tmp_path, lease_ms=2000, fence_ms=90_000, db=private_postgres.create_database())
    try:
        fed.start_controller()
        report, recovered = restart_postgres_under_load(fed, private_postgres, kafka_clusters, unique_name)
    finally:
        fed.stop()
    assert_traffic_went_on(report, recovered, fed)


@pytest.mark.timeout(600)
def test_postgres_restarted_under_two_controllers(kafka_clusters, private_postgres, tmp_path, unique_name):
    """Both controllers lose the leader row's database for longer than the leader lease (3 s): once it is back
    exactly one of them is active again and serves the admin API, the view and the workflows."""
    fed = HAFederation(tmp_path, db=private_postgres.create_database(), lease_ms=2000, fence_ms=90_000,
                       leader_lease_ms=3000)
    try:
        fed.start_controller(index=0)
        assert wait_for(lambda: fed.active() == 0, 60, what="controller 0 active") is True
        fed.start_controller(index=1)
        report, recovered = restart_postgres_under_load(fed, private_postgres, kafka_clusters, unique_name)
        assert fed.active() in (0, 1)
    finally:
        fed.stop()
    assert_traffic_went_on(report, recovered, fed)
