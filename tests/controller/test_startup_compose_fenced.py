"""A controller starting up while another leads only loads the view: it composes and writes one once it holds the
leader row (`become_active`), like every other write (docs/DESIGN.md §3.6). Before, its constructor composed and
committed a view unfenced, from its own clock and memory, over the active controller's."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from controller.compose_review_helpers import active_controller, holds_the_row
from controller.test_compose_after_commit import _lost_the_row
from fedkafka.cli.admin import _open_controller
from fedkafka.controller.leadership import NotLeader
from fedkafka.controller.models import ProxyRow, ViewRow
from fedkafka.controller.service import ANY_SECRET, Controller, Settings

LEASE_MS = 10_000


def _stored(ctl: Controller) -> tuple[int, dict]:
    with ctl.session() as s:
        row = s.get_one(ViewRow, 1)
        return row.version, json.loads(row.body)


@pytest.fixture
def leader(db_url, clock):
    """The active controller: it registered proxy p1, whose lease then ran out, and dropped it from the view."""
    ctl = active_controller(db_url, LEASE_MS)
    ctl.register_proxy("p1", "127.0.0.1", 19092, "both", "default")
    clock.advance(LEASE_MS / 1000 + 1)
    ctl.lease_round()
    assert ctl.view.proxies == ()
    yield ctl
    ctl.stop()


def test_a_controller_starting_while_another_leads_writes_no_view(leader, db_url, clock):
    """The second controller's clock is behind (here by the whole lease): to it p1's lease is still live. Composing at
    start, it committed a view listing the dead proxy again, over the leader's (partition leadership moved to p1)."""
    written = _stored(leader)
    clock.advance(-2 * LEASE_MS / 1000)
    second = _open_controller(Controller, Settings(db_url=db_url, lease_ms=LEASE_MS), db_url, wait=False)
    try:
        assert _stored(second)[1]["proxies"] == []  # p1 is not listed again
        assert _stored(second) == written
        assert second.view.version == written[0] and second.view.proxies == ()  # it serves the stored view
        with pytest.raises(NotLeader, match="standby"):
            second.compose()  # its writes are fenced before its leadership thread starts, too
        assert _stored(second) == written
    finally:
        second.stop()


def _take_the_row(second: Controller) -> None:
    """The leader's row expired and `second` took it (its leadership thread: `try_acquire`, then `become_active`)."""
    holds_the_row(second)
    second.become_active()


def test_the_second_controller_composes_once_it_holds_the_row(leader, db_url, clock):
    second = _open_controller(Controller, Settings(db_url=db_url, lease_ms=LEASE_MS), db_url, wait=False)
    try:
        version, _body = _stored(leader)
        leader.put_cluster("c2", "c2:9092", None)
        assert _stored(second)[0] == version + 1 and second.view.version == version  # not refreshed yet
        _take_the_row(second)
        assert sorted(second.view.clusters) == ["c1", "c2"] and second.view.version == version + 1
        second.put_cluster("c3", "c3:9092", None)
        assert _stored(second)[0] == version + 2 and sorted(second.view.clusters) == ["c1", "c2", "c3"]
    finally:
        second.stop()


def test_a_controller_taking_over_reaches_the_version_its_predecessor_answered_not_composed(leader, db_url, clock,
                                                                                             monkeypatch):
    """The leader drains p1, down (its lease ran out: the view does not change), and its compose meets NotLeader:
    it answers one past the view served (`compose_after_commit`), and the flag owing that view dies with it. The
    standby that took the row (`become_active`) owes its predecessor's version one lease later, when every live
    proxy has reported the view it holds (docs/DESIGN.md §5.1, §3.3): that version comes though nothing changes.
    (tests/controller/test_rv9_review_compose_after_commit.py covers a controller restarted on the database.)"""
    p2 = leader.register_proxy("p2", "127.0.0.1", 19093, "both", "default")["member_id"]  # keeps p1 drainable
    with leader.session() as s:
        p1 = s.scalars(select(ProxyRow.node_id).where(ProxyRow.instance_id == "p1")).one()
    second = _open_controller(Controller, Settings(db_url=db_url, lease_ms=LEASE_MS), db_url, wait=False)
    try:
        served = leader.view.version
        monkeypatch.setattr(leader, "compose", _lost_the_row)  # the standby takes the row after the drain commits
        answered = leader.set_draining(p1, True)["view_version"]
        assert answered == served + 1 and leader.view.version == served
        _take_the_row(second)
        second.lease_round()
        assert second.view.version == served  # the drain of a node that is down changes no view: none composed yet
        clock.advance(LEASE_MS / 1000 / 2)
        second.heartbeat(p2, served, {}, ANY_SECRET)  # p2 renews its lease with the new leader, as it does
        second.flush_heartbeats()
        clock.advance(LEASE_MS / 1000 / 2 + 1)  # one lease since the takeover; p2's lease still live
        for _ in range(3):  # its lease rounds; nothing else changes
            second.lease_round()
        assert [p.node_id for p in second.view.proxies] == [leader.view.proxies[0].node_id]  # p2, still listed
        assert second.view.version >= answered, (
            f"the predecessor answered {answered}, but the controller that took over serves {second.view.version} "
            f"and no later view comes")
        assert _stored(second)[0] == second.view.version
    finally:
        second.stop()
