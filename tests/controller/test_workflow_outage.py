"""A run the database fails under (docs/DESIGN.md §4.1 "No partition stays frozen", §7): a restart of the database
shorter than the leader lease stops no controller, so the run itself must end cleanly once the database is back,
and the sweeper must pick up what no thread drives any more. The outage: the database refuses statements (every
statement of the workflow threads, or of the request, from a given point on) as a restarting server does."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError, OperationalError

from controller.conftest import first_end_lost
from fedkafka.controller import workflows
from fedkafka.controller.models import ChainRow, MoveRow, WorkflowRow
from fedkafka.controller.moves import FAULT_RAISE
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.rebalance import Move


class Outage:
    """The database refuses the next `statements` statements of the threads `whose(name)` selects, then answers
    again: a server restarting for a moment, as those threads see it."""

    def __init__(self, engine) -> None:
        self.left = 0
        self.refused = 0
        self.whose = lambda name: name.startswith("workflow-")
        event.listen(engine, "before_cursor_execute", self._refuse)

    def begin(self, statements: int) -> None:
        self.left = statements

    def _refuse(self, _conn, _cursor, statement, *_args) -> None:
        if self.left and self.whose(threading.current_thread().name):
            self.left -= 1
            self.refused += 1
            raise OperationalError(statement, None, ConnectionRefusedError("the database system is starting up"))


@pytest.fixture
def scale_up(make_api, recording_kafka_class, monkeypatch):
    """Topic t (2 partitions) on c1, c2 registered; a scale-up onto c2 moves one of them. A number put in `outages`
    is an outage: the database goes away while the move is frozen (when the seal reads the leaders' log ends), for
    that many statements of the run. The retries of a run's end wait hundredths of a second here."""
    monkeypatch.setattr(workflows, "END_RETRY_S", (0.01, 0.05), raising=False)
    outages: list[int] = []

    class Kafka(recording_kafka_class):
        def log_offsets(self, cluster, bootstrap, partitions):
            return {tp: (0, 0) for tp in partitions}

        def log_end_offsets(self, cluster, bootstrap, partitions):
            if outages:
                outage.begin(outages.pop())
            return super().log_end_offsets(cluster, bootstrap, partitions)

    api = make_api(kafka=Kafka())
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()  # registered: nothing on it yet
    outage = Outage(api.controller.engine)
    return api, WorkflowEngine(api.controller), outages, outage


def _frozen(ctl) -> list[tuple[str, int]]:
    with ctl.session() as s:
        return [(c.topic, c.partition) for c in s.scalars(select(ChainRow).where(ChainRow.frozen))]


def _move_states(ctl) -> list[str]:
    with ctl.session() as s:
        return [m.state for m in s.scalars(select(MoveRow).order_by(MoveRow.id))]


def test_a_run_the_database_fails_under_settles_its_moves_and_ends_once_the_database_is_back(scale_up):
    """The database goes away with a move frozen: the seal's write fails, and so do the rollback, the record of the
    moves and the run's `failed`. Before, the run's thread died there: its row stayed `running` (returned to every
    new scale-up of c2) and the partition frozen (produce refused) until the controller restarted."""
    api, engine, outages, outage = scale_up
    ctl = api.controller
    outages.append(12)  # the seal's write, the rollback, the record, and then some of the retries
    run = engine.wait(engine.start("scale_up", "c2")["id"], timeout=60)
    assert run["state"] == "failed" and "starting up" in run["error"]
    assert outage.refused == 12 and not outage.left
    assert _move_states(ctl) == ["rolled_back"] and _frozen(ctl) == []
    assert not any(chain["frozen"] for chain in api.get("/v1/topics/t").json()["chains"])  # the view too
    again = engine.start("scale_up", "c2")  # a new request runs it again, and this time it moves
    assert again["id"] != run["id"]
    again = engine.wait(again["id"], timeout=60)
    assert again["state"] == "done" and again["moved"] == 1, again["error"]
    assert _move_states(ctl) == ["rolled_back", "done"] and _frozen(ctl) == []


def test_a_run_recorded_just_before_the_database_went_away_is_resumed_by_the_sweeper(scale_up):
    """The request's transaction committed the run, then the database went away: the request failed before the
    run's thread started. No thread, yet `running`: before, it stayed so until the controller restarted (and a new
    scale-up of c2 returned it); the sweeper resumes it."""
    api, engine, _outages, outage = scale_up
    ctl = api.controller
    main = threading.current_thread().name
    outage.whose = lambda name: name == main

    def cut_after_the_insert(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO WORKFLOWS"):
            outage.begin(1)

    event.listen(ctl.engine, "after_cursor_execute", cut_after_the_insert)
    with pytest.raises(OperationalError):
        engine.start("scale_up", "c2")
    event.remove(ctl.engine, "after_cursor_execute", cut_after_the_insert)
    with ctl.session() as s:
        (row,) = s.scalars(select(WorkflowRow))
    assert row.state == "running" and row.id not in engine._threads
    assert engine.start("scale_up", "c2")["id"] == row.id  # the unfinished run is returned, not a second one
    assert engine.sweep_round() == [row.id]
    run = engine.wait(row.id, timeout=60)
    assert run["state"] == "done" and run["moved"] == 1, run["error"]
    assert engine.sweep_round() == []  # done: nothing to resume
    assert _frozen(ctl) == []


def test_the_sweeper_settles_a_stopped_runs_moves_while_another_run_holds_the_run_lock(scale_up):
    """A run that ended without settling its moves leaves them to the sweeper; before, the sweeper skipped every
    round while a run held the run lock, which a decommission holds for its whole drain (days)."""
    api, engine, _outages, _outage = scale_up
    ctl = api.controller
    with ctl.session() as s:
        failed = WorkflowRow(kind="scale_up", cluster="c2", state="failed", step="freeze", params_json="{}",
                             created_at=0.0, record_json="{}", updated_at=0.0)
        s.add(failed)
        s.commit()
    ids = engine.mover.plan(failed.id, [Move("t", 0, "c1", "c2", "t", 0)])
    engine.mover._freeze(ids)
    assert _frozen(ctl) == [("t", 0)]
    with engine._run_lock:  # a decommission draining
        engine.sweep_round()
        assert _move_states(ctl) == ["rolled_back"] and _frozen(ctl) == []


def test_a_run_whose_moves_cannot_be_settled_for_an_error_no_reconnect_clears_ends_failed_and_the_sweeper_settles(
        scale_up):
    """Publishing the sealed move fails with an error a reconnect does not clear (an IntegrityError: a bug or bad
    data), in the run and in its end. Before, the end was retried on every database error: forever here, the run
    `running` with its thread busy retrying, so neither the sweeper settled its moves nor resumed it, and the
    partition stayed frozen. Now the run records `failed` and leaves the move to the sweeper."""
    api, engine, _outages, _outage = scale_up
    ctl = api.controller

    def bad_row(_conn, _cursor, statement, *_args) -> None:
        in_the_run = threading.current_thread().name.startswith("workflow-")
        if in_the_run and statement.lstrip().upper().startswith("INSERT INTO SEGMENTS"):
            raise IntegrityError(statement, None, sqlite3.IntegrityError("UNIQUE constraint failed: segments.seq"))

    event.listen(ctl.engine, "before_cursor_execute", bad_row)
    run_id = engine.start("scale_up", "c2")["id"]
    run = engine.wait(run_id, timeout=60)  # bounded: the old code never ended the run
    assert run["state"] == "failed", run
    assert "UNIQUE constraint failed" in run["error"] and "left to the sweeper" in run["error"]
    assert _move_states(ctl) == ["sealed"] and len(_frozen(ctl)) == 1  # not published, not rolled back
    assert engine.sweep_round() == []  # failed: not resumed, but its move settled (published: it was sealed)
    assert _move_states(ctl) == ["done"] and _frozen(ctl) == []
    assert not any(chain["frozen"] for chain in api.get("/v1/topics/t").json()["chains"])


def test_a_run_whose_moves_fail_to_settle_with_what_looks_like_an_outage_gives_up_after_its_tries(scale_up,
                                                                                                 monkeypatch):
    """SQLite raises OperationalError for a bug too ("no such column"), the class an outage raises: the settling is
    retried, but END_SETTLE_TRIES times only; then the run records `failed` (the database answers that) and the
    sweeper settles the move. Before, the settling was retried forever and the partition stayed frozen."""
    api, engine, _outages, _outage = scale_up
    ctl = api.controller
    monkeypatch.setattr(workflows, "END_SETTLE_TRIES", 3, raising=False)
    refused = []

    def no_such_column(_conn, _cursor, statement, *_args) -> None:
        in_the_run = threading.current_thread().name.startswith("workflow-")
        if in_the_run and statement.lstrip().upper().startswith("UPDATE CHAINS SET LEADER_EPOCH"):  # publishing
            refused.append(statement)
            raise OperationalError(statement, None, sqlite3.OperationalError("no such column: chains.frozen"))

    event.listen(ctl.engine, "before_cursor_execute", no_such_column)
    run = engine.wait(engine.start("scale_up", "c2")["id"], timeout=60)
    assert run["state"] == "failed" and "left to the sweeper" in run["error"], run
    assert len(refused) == 2 + 3  # the run's publish and its settling's, then its end's three tries
    assert _move_states(ctl) == ["sealed"] and len(_frozen(ctl)) == 1
    assert engine.sweep_round() == []
    assert _move_states(ctl) == ["done"] and _frozen(ctl) == []


def test_a_scale_up_whose_failure_was_not_recorded_ends_failed_when_resumed(scale_up, monkeypatch):
    """The move fails (rolled back), and the run's `failed` is not recorded: its controller lost the leader row in
    `_end` (or stopped, or `_record_end` raised). The run stays `running` and is resumed from the top, here by the
    sweeper (the next controller does the same). Before, it found its move rolled back, planned nothing and moved
    nothing, and recorded `done` with no error, which automation (the `fedkafka_scale_up` module) reads as success.
    It ends `failed` with the reason its lost record had; a new request runs the scale-up again."""
    api, engine, _outages, _outage = scale_up
    ctl = api.controller
    monkeypatch.setenv(FAULT_RAISE, "frozen")  # the move fails once frozen: rolled back, the run fails
    lost = first_end_lost(monkeypatch)
    run = engine.wait(engine.start("scale_up", "c2")["id"], timeout=60)
    assert run["state"] == "running" and lost == [run["id"]]  # no thread, `running`: its `failed` was lost
    assert _move_states(ctl) == ["rolled_back"] and _frozen(ctl) == []
    monkeypatch.delenv(FAULT_RAISE)
    assert engine.sweep_round() == [run["id"]]
    run = engine.wait(run["id"], timeout=60)
    assert run["state"] == "failed" and run["moved"] == 0, run
    assert run["error"] == ("moves rolled back, writes continue where they were: fault injection: error after move "
                            "state frozen (found when the run was resumed); run the scale-up again")
    assert {ph["name"]: ph["state"] for ph in run["phases"]}["publish"] != "done"
    assert _move_states(ctl) == ["rolled_back"]
    assert all(c.segments[-1].cluster == "c1" for c in ctl.view.topics["t"].partitions)  # nothing moved
    again = engine.wait(engine.start("scale_up", "c2")["id"], timeout=60)
    assert again["id"] != run["id"] and again["state"] == "done" and again["moved"] == 1, again
    assert _move_states(ctl) == ["rolled_back", "done"] and _frozen(ctl) == []


def test_a_decommission_whose_failure_was_not_recorded_ends_failed_when_resumed(scale_up, monkeypatch):
    """The same loss in a decommission: resumed, it finds its move rolled back and, checking what is left on the
    cluster, fails (it did so before too: this guards it)."""
    api, engine, _outages, _outage = scale_up
    ctl = api.controller
    assert engine.wait(engine.start("scale_up", "c2")["id"], timeout=60)["moved"] == 1  # c2 holds one partition
    monkeypatch.setenv(FAULT_RAISE, "frozen")
    lost = first_end_lost(monkeypatch)
    run = engine.wait(engine.start("decommission", "c2", drain="retention")["id"], timeout=60)
    assert run["state"] == "running" and lost == [run["id"]]
    monkeypatch.delenv(FAULT_RAISE)
    assert engine.sweep_round() == [run["id"]]
    run = engine.wait(run["id"], timeout=60)
    assert run["state"] == "failed" and run["moved"] == 0, run
    assert run["error"] == "1 partitions still write to c2; run the decommission again"
    assert _move_states(ctl) == ["done", "rolled_back"] and _frozen(ctl) == []
    assert api.get("/v1/clusters/c2").json()["state"] == "read_only"
