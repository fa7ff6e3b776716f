"""One order for the row locks every write of member rows takes on PostgreSQL (docs/DESIGN.md §4.9 F4): the leader
row first (writes fenced by leadership: a registration, a deregistration), then member rows in ascending member id
(a node's row, made before its workers' rows, then a worker's; a heartbeat batch writes its renewals sorted). Two
paths taking two of the same locks in opposite orders deadlock: PostgreSQL aborts one (DeadlockDetected, 40P01), a
batch whose heartbeats are then answered 503, or a registration tried again.

Each interleaving is forced, on real PostgreSQL, without timing: the first transaction stops once it holds its
first lock; the second runs in another thread until PostgreSQL shows it waiting for a lock (`pg_locks`); then the
first goes on to its next lock. In one order the second simply waits; in opposite orders PostgreSQL finds the
cycle. Both must commit, with no registration tried again."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from controller.conftest import RecordingKafka
from controller.test_leadership import _active
from fedkafka.controller.leadership import Leadership
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.service import Controller, Settings

pytestmark = pytest.mark.integration

NODE = "h:9092"
SECRET = "process-1-".ljust(43, "s")
LOCK_WAIT_BOUND_S = 60.0  # only a bound on a broken test's hang: the waits are on PostgreSQL's lock table


@pytest.fixture
def ctl(postgres_server) -> Iterator[Controller]:
    """A controller (one leading: its leadership holds the row) on a fresh PostgreSQL database."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres",
                         autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    controller = Controller(Settings(db_url=f"{postgres_server}/{name}"), kafka=RecordingKafka())
    controller.leadership = _active(Leadership(controller.session, "http://a:1", lease_s=600))
    yield controller
    controller.stop()


def _register(ctl: Controller, worker: int) -> dict:
    return ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1", worker=worker, member_secret=True, presented=SECRET)


def _lock_waiters(ctl: Controller) -> int:
    """How many sessions of this database wait for a lock now."""
    with ctl.session() as s:
        return s.execute(text("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                              "WHERE NOT l.granted AND a.datname = current_database()")).scalar_one()


def _run(work: Callable[[], object], outcome: dict, key: str) -> threading.Thread:
    def target() -> None:
        try:
            outcome[key] = work()
        except Exception as e:  # reported by the test's assertion
            outcome[key] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _worker_registration_meeting(ctl: Controller, second: Callable[[], object], monkeypatch) -> dict:
    """Worker 1 registers again (its own secret); once its transaction holds the leader row and its node's row
    (`_refuse_takeover`), `second` runs in another thread until it waits for a lock; then the registration goes on
    to its own row. Both outcomes: {"registration": ..., "second": ...} (a result or the exception)."""
    refuse_takeover, outcome = ctl._refuse_takeover, {}
    seconds: list[threading.Thread] = []

    def then_second(s, *args) -> None:
        refuse_takeover(s, *args)  # the leader row (check_leader) and the node's row are locked now
        if seconds:
            return  # a retry of the registration (it lost a deadlock): the second runs once
        seconds.append(_run(second, outcome, "second"))
        waited_until = time.monotonic() + LOCK_WAIT_BOUND_S
        while _lock_waiters(ctl) == 0:
            if not seconds[0].is_alive():
                return  # it needed no lock the registration holds (the assertions say what it did)
            assert time.monotonic() < waited_until, "the second transaction never waited for a lock"
            time.sleep(0.01)

    monkeypatch.setattr(ctl, "_refuse_takeover", then_second)
    try:
        outcome["registration"] = _register(ctl, 1)
    except Exception as e:  # reported by the test's assertion
        outcome["registration"] = e
    seconds[0].join()
    return outcome


def _no_retry(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "lost a race" in r.getMessage()]


def test_a_heartbeat_batch_waits_for_a_worker_registration_and_neither_deadlocks(ctl, monkeypatch, caplog):
    """The batch holds renewals of worker 1 and of its node, taken in that order; it locks the node's row first
    (ascending member id), which the registration holds: it waits, the registration takes worker 1's row and
    commits, then the batch writes both."""
    node, worker = _register(ctl, 0), _register(ctl, 1)
    assert node["member_id"] < worker["member_id"]  # a node's row is made before its workers'
    flush = ctl.flush_heartbeats
    monkeypatch.setattr(ctl, "flush_heartbeats", lambda: None)
    applied = ctl.view.version  # both acked the current view
    assert applied > 0
    for member in (worker["member_id"], node["member_id"]):  # taken worker first, written when the test says
        ctl.renew_lease(member, applied, {}, ctl.check_member_secret(member, SECRET))
    monkeypatch.setattr(ctl, "flush_heartbeats", flush)
    caplog.set_level(logging.INFO, logger="fedkafka.controller.service")
    outcome = _worker_registration_meeting(ctl, flush, monkeypatch)
    assert not isinstance(outcome["second"], Exception), f"the heartbeat batch failed: {outcome['second']!r}"
    assert not isinstance(outcome["registration"], Exception), f"registration failed: {outcome['registration']!r}"
    assert _no_retry(caplog) == []
    with ctl.session() as s:
        assert [s.get(ProxyRow, m).applied_version for m in (node["member_id"], worker["member_id"])] == [applied] * 2


def test_a_deregistration_waits_for_a_worker_registration_and_neither_deadlocks(ctl, monkeypatch, caplog):
    """The deregistration of worker 1 (its process stopping while a registration of it runs again) locks the leader
    row before worker 1's, the registration's order: it waits for the registration, which commits, then it ends
    worker 1's lease and fence. Worker 1's row first, then the leader row (its leadership check), deadlocks with
    the registration. (Before deregistrations were fenced they took no leader row: this one committed first, the
    registration after it, and no deadlock was possible.)"""
    _register(ctl, 0)
    worker = _register(ctl, 1)
    caplog.set_level(logging.INFO, logger="fedkafka.controller.service")
    outcome = _worker_registration_meeting(ctl, lambda: ctl.deregister_proxy(worker["member_id"], SECRET),
                                           monkeypatch)
    assert not isinstance(outcome["second"], Exception), f"the deregistration failed: {outcome['second']!r}"
    assert not isinstance(outcome["registration"], Exception), f"registration failed: {outcome['registration']!r}"
    assert _no_retry(caplog) == []
    with ctl.session() as s:
        row = s.get(ProxyRow, worker["member_id"])
        assert row.lease_expires <= time.time() and row.fence_expires <= time.time()  # the deregistration came last
