"""A controller starting up while another leads only loads the view: it composes and writes one once it holds the
leader row (`become_active`), like every other write (docs/DESIGN.md §3.6). Before, its constructor composed and
committed a view unfenced, from its own clock and memory, over the active controller's."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from controller.conftest import RecordingKafka
from fedkafka.cli.admin import _open_controller
from fedkafka.controller.leadership import Leadership, NotLeader
from fedkafka.controller.models import LeaderRow, ViewRow
from fedkafka.controller.service import Controller, Settings

LEASE_MS = 10_000


def _stored(ctl: Controller) -> tuple[int, dict]:
    with ctl.session() as s:
        row = s.get_one(ViewRow, 1)
        return row.version, json.loads(row.body)


@pytest.fixture
def leader(db_url, clock):
    """The active controller: it registered proxy p1, whose lease then ran out, and dropped it from the view."""
    ctl = Controller(Settings(db_url=db_url, lease_ms=LEASE_MS), kafka=RecordingKafka())
    ctl.leadership = Leadership(ctl.session, "http://a:1", lease_s=3600)
    assert ctl.leadership.try_acquire()
    ctl.leadership.active = True
    ctl.put_cluster("c1", "c1:9092", None)
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


def test_the_second_controller_composes_once_it_holds_the_row(leader, db_url, clock):
    second = _open_controller(Controller, Settings(db_url=db_url, lease_ms=LEASE_MS), db_url, wait=False)
    try:
        version, _body = _stored(leader)
        leader.put_cluster("c2", "c2:9092", None)
        assert _stored(second)[0] == version + 1 and second.view.version == version  # not refreshed yet
        second.leadership = Leadership(second.session, "http://b:1", lease_s=3600)
        with second.session() as s:  # the leader's row expired
            s.execute(update(LeaderRow).where(LeaderRow.id == 1).values(expires=0.0))
            s.commit()
        assert second.leadership.try_acquire()
        second.leadership.active = True
        second.become_active()
        assert sorted(second.view.clusters) == ["c1", "c2"] and second.view.version == version + 1
        second.put_cluster("c3", "c3:9092", None)
        assert _stored(second)[0] == version + 2 and sorted(second.view.clusters) == ["c1", "c2", "c3"]
    finally:
        second.stop()
