"""A controller whose leader row another took (it notices within a lease/3, then restarts as a standby) logs that
as one WARNING line per background loop, not a NotLeader traceback every round; any other failure of a round keeps
its traceback (fedkafka/controller/leadership.py `RoundLog`, docs/DESIGN.md §3.6)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import update

from controller.conftest import RecordingKafka
from fedkafka.controller import workflows
from fedkafka.controller.leadership import Leadership, NotLeader
from fedkafka.controller.models import LeaderRow, ProxyRow
from fedkafka.controller.moves import Mover
from fedkafka.controller.service import Controller, Settings
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.rebalance import Move

ROUNDS = 3  # rounds each loop runs after the row was taken
GIVE_UP_S = 120.0  # a loop that did not run ROUNDS rounds by then is stuck: the test says so instead of hanging


class Rounds:
    """Counts the calls of an object's round method (the loop looks it up on the instance each round)."""

    def __init__(self, owner: object, method: str) -> None:
        self.name, self.calls, self.enough = method, 0, threading.Event()
        real: Callable = getattr(owner, method)

        def counted(*args, **kwargs):
            try:
                return real(*args, **kwargs)
            finally:
                self.calls += 1
                if self.calls >= ROUNDS:
                    self.enough.set()

        setattr(owner, method, counted)


def _take_the_row(ctl: Controller) -> None:
    """Another controller holds the row now, with a new term; this one has not noticed (its leadership thread
    does not run here): the window of up to a lease/3 in which its loops meet NotLeader."""
    with ctl.session() as s:
        s.execute(update(LeaderRow).where(LeaderRow.id == 1)
                  .values(holder="http://new:1#other", url="http://new:1", term=LeaderRow.term + 1,
                          expires=time.time() + 3600))
        s.commit()


@pytest.fixture
def leading(db_url, monkeypatch):
    """A leading controller with every loop's NotLeader at hand: clusters c1 and c2 (c2 found unreachable: the
    auto-failover loop wants to fail it over), topic t on both, a proxy in the view whose lease ran out (the lease
    loop wants to drop it) and a move no workflow owns (the sweeper wants to settle it)."""
    monkeypatch.setattr(workflows, "SWEEP_INTERVAL_S", 0.01)
    kafka = RecordingKafka()
    ctl = Controller(Settings(db_url=db_url, scan_interval=0.01, kafka_timeout=2.0, auto_failover_after=0.01),
                     kafka=kafka)
    ctl.leadership = Leadership(ctl.session, "http://old:1", lease_s=3600)
    assert ctl.leadership.try_acquire()
    ctl.leadership.active = True
    for cid in ("c1", "c2"):
        ctl.put_cluster(cid, f"{cid}:9092", None)
    ctl.put_topic("t", 2, "blocks", {})
    ctl.register_proxy("p1", "127.0.0.1", 19092, "both", "default")
    Mover(ctl, ack_timeout=1).plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    kafka.down.add("c2")
    ctl.scan_once()
    with ctl.session() as s:
        s.execute(update(ProxyRow).values(lease_expires=0.0))
        s.commit()
    yield ctl
    ctl.stop()


def _run_loops(ctl: Controller) -> list[Rounds]:
    engine = WorkflowEngine(ctl)
    loops = [Rounds(ctl, "scan_once"), Rounds(ctl, "lease_round"), Rounds(engine, "sweep_round"),
             Rounds(engine, "auto_failover_round")]
    ctl.start_background()
    engine.resume()
    for loop in loops:
        assert loop.enough.wait(GIVE_UP_S), f"{loop.name} ran {loop.calls} rounds only"
    return loops


def test_loops_of_a_controller_whose_row_was_taken_log_one_warning_each_and_no_traceback(leading, caplog):
    caplog.set_level(logging.INFO, logger="fedkafka.controller")
    _take_the_row(leading)
    _run_loops(leading)
    leading.stop()  # no round after this point: the records below are all there will be
    tracebacks = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], NotLeader)]
    assert [f"{r.name}: {r.getMessage()}" for r in tracebacks] == []
    lost = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "not the active controller any more" in r.getMessage()]
    for loop in ("scan", "lease check", "sweep", "auto-failover check"):
        said = [m for m in lost if m.startswith(f"{loop}: ")]
        assert len(said) == 1, (loop, lost)
        assert "another controller took over (http://new:1)" in said[0]


def test_a_round_failing_for_another_reason_keeps_its_traceback_every_round(leading, caplog):
    def broken_scan(cluster, bootstrap):
        raise RuntimeError("scan broke")

    leading.kafka.scan = broken_scan  # type: ignore[method-assign]
    rounds = Rounds(leading, "scan_once")
    leading.start_background()
    assert rounds.enough.wait(GIVE_UP_S), f"the scan ran {rounds.calls} rounds only"
    leading.stop()
    failed = [r for r in caplog.records if r.getMessage() == "scan failed"]
    assert len(failed) >= ROUNDS
    assert all(r.levelno == logging.ERROR and r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failed)


def test_a_takeover_whose_row_was_taken_again_meanwhile_says_so_without_traceback(leading, caplog):
    """Taking over, the new active controller's first writes (`become_active`) meet another's takeover: it restarts
    as a standby (`on_lost`), with one WARNING line."""
    with leading.session() as s:  # the old holder's row expired
        s.execute(update(LeaderRow).where(LeaderRow.id == 1).values(expires=0.0))
        s.commit()
    lead, stop, lost = Leadership(leading.session, "http://b:1", lease_s=3600), threading.Event(), []

    def on_active() -> None:
        raise NotLeader("another controller took over (http://c:1)")

    def on_lost(reason: str) -> None:
        lost.append(reason)
        stop.set()

    lead.run(stop, on_active, on_lost)
    assert lost == ["taking over failed: another controller took over (http://c:1)"]
    said = [r for r in caplog.records if r.getMessage().startswith("taking over failed")]
    assert [(r.levelno, r.exc_info) for r in said] == [(logging.WARNING, None)]
