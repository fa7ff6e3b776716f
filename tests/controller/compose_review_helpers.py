"""Set-ups the compose-after-commit and leadership review tests share (tests/controller/test_rv6_review_*,
test_rv9_review_*, test_rv10_review_*, test_startup_compose_fenced.py, test_s34_rvfix10_review.py): an active
controller, a second one taking its row, a federation with a proxy that is down, one restarted on a database that
lost the views its proxies hold."""

from __future__ import annotations

from sqlalchemy import update

from controller.conftest import RecordingKafka
from controller.test_leader_fencing_writes import PROXY, _federation
from controller.test_lost_commits import _lose_last_views
from fedkafka.controller.leadership import Leadership
from fedkafka.controller.models import LeaderRow, ProxyRow
from fedkafka.controller.service import Controller, Settings


def active_controller(db_url: str, lease_ms: int) -> Controller:
    """The active controller (it holds the leader row): cluster c1 registered."""
    ctl = Controller(Settings(db_url=db_url, lease_ms=lease_ms), kafka=RecordingKafka())
    ctl.leadership = Leadership(ctl.session, "http://a:1", lease_s=3600)
    assert ctl.leadership.try_acquire()
    ctl.leadership.active = True
    ctl.put_cluster("c1", "c1:9092", None)
    return ctl


def holds_the_row(second: Controller) -> None:
    """The leader's row expired and `second`'s leadership thread took it and set `active` (`Leadership.run`), before
    `on_active` (`become_active`) has refreshed the view it serves (test_s34_rvfix10_review.py: before its fix, the
    StandbyGate admitted `/v1/` from here)."""
    second.leadership = Leadership(second.session, "http://b:1", lease_s=3600)
    with second.session() as s:
        s.execute(update(LeaderRow).where(LeaderRow.id == 1).values(expires=0.0))
        s.commit()
    assert second.leadership.try_acquire()
    second.leadership.active = True


def federation_with_a_down_node(api) -> int:
    """`_federation`, and proxy p3 registered whose lease then ran out (not listed in the view): its node id."""
    _federation(api)
    ctl = api.controller
    down = api.post("/v1/proxies", json={"instance_id": "p3", **PROXY}).json()["node_id"]
    with ctl.session() as s:  # p3 is down: its lease ran out
        s.execute(update(ProxyRow).where(ProxyRow.node_id == down).values(lease_expires=0.0))
        s.commit()
    ctl.lease_round()
    assert all(p.node_id != down for p in ctl.view.proxies)
    return down


def restarted_after_losing_held_views(make_api):
    """`_federation` and proxy p3 (keeps p1 drainable), both proxies reporting the view served (`held`); the database
    then lost it and the two views before it, and the controller restarted on it (no proxy has reported to it yet).
    Returns (nodes, p3's member id, held, the restarted controller's client)."""
    api = make_api()
    nodes = _federation(api)
    p3 = api.post("/v1/proxies", json={"instance_id": "p3", **PROXY}).json()["member_id"]
    held = api.controller.view.version  # the proxies hold it ...
    for member in (nodes["p1"], p3):
        api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": held, "load": {}}).raise_for_status()
    api.controller.flush_heartbeats()
    _lose_last_views(api.controller, held - 3)  # ... and the database lost it and the two views before it
    restarted = make_api()  # the controller restarts on it
    assert restarted.controller.view.version < held
    return nodes, p3, held, restarted
