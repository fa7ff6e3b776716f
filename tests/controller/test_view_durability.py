"""The config database and the views proxies hold (docs/DESIGN.md §3, durability): a commit the controller answered
survives a host crash (SQLite: synchronous=FULL), and should the database still come back without its last views
(a PostgreSQL replica that had not received them), no view version is reused with other content and no ack of a lost
view counts for a move."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text, update

from fedkafka.controller.db import make_engine
from fedkafka.controller.models import MoveRow, ProxyRow, ViewRow
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.controller.service import ANY_SECRET, Controller
from fedkafka.view.rebalance import Move

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_sqlite_commits_are_synced_before_they_return(tmp_path):
    """WAL with synchronous=NORMAL keeps commits across a crash of the controller but not of the host: a power
    loss rolls back the last ones, views proxies already applied and acked. The old code ran NORMAL."""
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == FULL
    finally:
        engine.dispose()


def test_a_view_every_proxy_acked_is_not_composed_again(make_api):
    """The guard against lost views looks only above the database's version: acks of the current view (every
    proxy's, normally) leave an unchanged view as it is."""
    api = make_api()
    ctl = api.controller
    member = api.post("/v1/proxies", json={"instance_id": "h:1", "host": "h", "port": 1, "role": "pproxy",
                                           "pool": "default"}).json()["member_id"]
    version = ctl.view.version
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": version, "load": {}}).raise_for_status()
    ctl.flush_heartbeats()
    assert ctl.compose().version == version
    assert api.get("/v1/status").json()["proxies"][0]["applied_version"] == version


def _lose_last_views(ctl: Controller, version: int, acks_too: bool) -> None:
    """What a database that lost its last commits comes back as: the view row at `version` (and, as the acks were
    committed after the views they ack, the proxies' applied versions no newer than it)."""
    with ctl.session() as s:
        row = s.get_one(ViewRow, 1)
        body = json.loads(row.body)
        body["version"] = version
        row.version, row.body = version, json.dumps(body)
        if acks_too:
            s.execute(update(ProxyRow).where(ProxyRow.applied_version > version).values(applied_version=version))
        s.commit()


@pytest.mark.parametrize("acks_too", [True, False], ids=["views-and-acks-lost", "views-lost"])
def test_a_view_version_the_database_lost_is_never_reused_nor_its_ack_counted(make_api, acks_too):
    """Proxies hold view v_high; the database comes back at v_low. The restarted controller used to compose
    v_low+1.. (other views under versions the proxies hold, which they ignore as not newer) and count their
    heartbeats' v_high as an ack of any of them: a move sealed while proxies still wrote to its old segment.
    Now a reported version above the database's is not counted and the next view is numbered past it (as it
    is past any applied version the database still records), so a move's frozen view is one no proxy has."""
    api = make_api()
    ctl = api.controller
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    member = api.post("/v1/proxies", json={"instance_id": "h:1", "host": "h", "port": 1, "role": "pproxy",
                                           "pool": "default"}).json()["member_id"]
    v_high = ctl.view.version
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": v_high, "load": {}}).raise_for_status()
    ctl.flush_heartbeats()
    v_low = v_high - 3
    assert v_low > 0
    _lose_last_views(ctl, v_low, acks_too)
    restarted = Controller(ctl.settings, kafka=api.kafka)
    try:
        restarted.heartbeat(member, v_high, {}, ANY_SECRET)  # the proxy still holds v_high
        assert restarted.view.version > v_high, "a version the proxy holds would be reused for another view"
        mover = Mover(restarted, ack_timeout=0.2)
        ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
        mover._freeze(ids)
        with restarted.session() as s:
            assert s.get_one(MoveRow, ids[0]).frozen_version > v_high
        with pytest.raises(MoveFailed, match="did not apply view"):
            mover._await_acks(ids, lambda *a: None)  # the proxy never applied the frozen view: no ack
    finally:
        restarted.stop()
