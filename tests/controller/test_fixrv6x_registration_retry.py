"""Fix of review rv6x: a registration's transaction that loses to a concurrent one is tried again whole
(`Controller._register_member`), and one that keeps losing, or fails on the database otherwise, answers 503
(Unavailable: the proxy retries), never a 500. The loss is injected at the registration's takeover check, inside its
transaction, as the database raises it: a PostgreSQL deadlock (SQLSTATE 40P01) or serialization failure (40001),
SQLite's "database is locked", a unique violation of a row another registration made at once."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from fedkafka.controller.errors import Unavailable
from fedkafka.controller.models import ProxyRow

NODE = "h:9092"


class _DatabaseError(Exception):
    """A driver error carrying a SQLSTATE, as psycopg's do."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _failing_first(ctl, errors: list[Exception]) -> list[int]:
    """Make the next registrations' takeover checks raise `errors`, one per try; answers the tries counter."""
    tries = [0]
    refuse_takeover = ctl._refuse_takeover

    def fail_then_check(s, *args):
        tries[0] += 1
        if errors:
            raise errors.pop(0)
        refuse_takeover(s, *args)

    ctl._refuse_takeover = fail_then_check
    return tries


def _deadlock() -> OperationalError:
    return OperationalError("SELECT", {}, _DatabaseError("deadlock detected", "40P01"))


def _members(ctl) -> int:
    with ctl.session() as s:
        return s.query(ProxyRow).filter(ProxyRow.instance_id.in_([NODE, f"{NODE}/w1"])).count()


@pytest.mark.parametrize("lost", [
    _deadlock,
    lambda: OperationalError("UPDATE", {}, _DatabaseError("could not serialize access", "40001")),
    lambda: OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")),
    lambda: IntegrityError("INSERT", {}, _DatabaseError("duplicate key value", "23505")),
], ids=["deadlock", "serialization", "sqlite-locked", "unique-violation"])
def test_a_registration_that_lost_a_race_is_tried_again(make_api, lost):
    ctl = make_api().controller
    tries = _failing_first(ctl, [lost(), lost()])
    answer = ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1", worker=1)
    assert tries[0] == 3
    assert answer["member_id"] != answer["node_id"]
    assert _members(ctl) == 2  # the node's row and worker 1's, once each


def test_a_registration_that_keeps_losing_answers_503(make_api):
    ctl = make_api().controller
    tries = _failing_first(ctl, [_deadlock() for _ in range(3)])
    with pytest.raises(Unavailable, match="3 tries") as refused:
        ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1")
    assert refused.value.status == 503
    assert tries[0] == 3
    assert _members(ctl) == 0


def test_a_registration_that_keeps_making_a_taken_row_answers_503(make_api):
    ctl = make_api().controller
    _failing_first(ctl, [IntegrityError("INSERT", {}, _DatabaseError("duplicate key value", "23505"))
                         for _ in range(3)])
    with pytest.raises(Unavailable, match=r"3 tries .*\(_DatabaseError\)"):
        ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1")


def test_a_registration_whose_database_fails_otherwise_answers_503_at_once(make_api):
    ctl = make_api().controller
    tries = _failing_first(ctl, [OperationalError("SELECT", {}, _DatabaseError("server closed the connection",
                                                                             "08006"))])
    with pytest.raises(Unavailable, match="database write failed"):
        ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1")
    assert tries[0] == 1
    answer = ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1")  # the next try goes through
    assert answer["member_id"] == answer["node_id"]


def test_a_heartbeat_batch_writes_its_renewals_in_ascending_member_id(make_api):
    """A worker's registration locks its node's row, then its own (made after the node's: a higher id); a batch
    taking the worker's renewal first locked them the other way round, a deadlock on PostgreSQL whose victim may
    be the batch (every heartbeat in it answered 503). The batch follows the registration's order."""
    ctl = make_api().controller
    node = ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1")["member_id"]
    workers = [ctl.register_proxy(NODE, "h", 9092, "pproxy", "p1", worker=w)["member_id"] for w in (1, 2)]
    flush, write_renewal = ctl.flush_heartbeats, ctl._write_renewal
    ctl.flush_heartbeats = lambda: None
    for member_id in [workers[1], node, workers[0]]:
        ctl.renew_lease(member_id, 0, {}, None)
    written: list[int] = []

    def record(s, member_id, *args):
        written.append(member_id)
        return write_renewal(s, member_id, *args)

    ctl._write_renewal = record
    flush()
    assert node < workers[0] < workers[1]
    assert written == [node, *workers]
