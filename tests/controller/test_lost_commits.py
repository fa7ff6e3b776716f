"""The config database loses its last commits (a PostgreSQL failover to an asynchronous replica; SQLite here: the
file as it was at some earlier commit) while proxies hold, apply and write under what it lost (docs/DESIGN.md §3.3,
"Lost commits"): the controller says so, never seals a move at a target end that took writes the database does not
know about, keeps composing views the proxies take, and a report no controller could have caused jams nothing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3

import pytest
from sqlalchemy import select, update

from fedkafka.controller.errors import Conflict
from fedkafka.controller.models import ChainRow, MoveRow, ProxyRow, SegmentRow, ViewRow
from fedkafka.controller.moves import MoveHeld, Mover
from fedkafka.controller.service import MAX_LOST_VIEWS, Controller
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.rebalance import Move

BIGINT_MAX = 2**63 - 1
PROXY = {"instance_id": "h:1", "host": "h", "port": 1, "role": "pproxy", "pool": "default"}


def _segments(ctl, topic="t", partition=0) -> list[tuple[str, int, int | None, int]]:
    with ctl.session() as s:
        return [(g.cluster, g.phys_start, g.phys_end, g.logical_base) for g in s.scalars(
            select(SegmentRow).where(SegmentRow.topic == topic, SegmentRow.partition == partition)
            .order_by(SegmentRow.seq))]


def _move(ctl, move_id: int) -> MoveRow:
    with ctl.session() as s:
        row = s.get_one(MoveRow, move_id)
        s.expunge(row)
        return row


def _frozen(ctl, topic="t", partition=0) -> bool:
    with ctl.session() as s:
        return s.get_one(ChainRow, (topic, partition)).frozen


@pytest.fixture
def frozen_move(make_api, recording_kafka_class, db_url):
    """t/0 (100 records on c1) frozen for a move to c2 (empty), a proxy acked the frozen view. `keep_replica()` keeps
    the SQLite file as it is (what an asynchronous replica had received; skips the test on PostgreSQL), and
    `fail_over()` stops the controller and brings the database back as that copy: returns a controller restarted
    on it."""
    path = db_url.removeprefix("sqlite:///")
    ends = {("c1", "t", 0): 100, ("c2", "t", 0): 0}

    class Kafka(recording_kafka_class):
        def log_offsets(self, cluster, bootstrap, partitions):
            if cluster in self.down:
                return {}
            return {(t, p): (0, ends.get((cluster, t, p), 0)) for t, p in partitions}

    api = make_api(kafka=Kafka())
    ctl = api.controller
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    member = api.post("/v1/proxies", json=PROXY).json()["member_id"]
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 0)])
    mover._freeze(ids)
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": ctl.view.version, "load": {}}
             ).raise_for_status()
    ctl.flush_heartbeats()
    replica = path + ".replica"

    def keep_replica() -> None:
        if not db_url.startswith("sqlite"):
            pytest.skip("the database as it was at an earlier commit: a copy of the SQLite file")
        src, dst = sqlite3.connect(path), sqlite3.connect(replica)
        src.backup(dst)
        src.close(), dst.close()

    def fail_over() -> Controller:
        ctl.stop()
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        shutil.copyfile(replica, path)
        restarted = Controller(ctl.settings, kafka=api.kafka)
        started.append(restarted)
        return restarted

    started: list[Controller] = []
    yield api, mover, ids, member, ends, keep_replica, fail_over
    for c in started:
        c.stop()


@pytest.mark.parametrize("reported", [True, False], ids=["proxy-reported", "before-any-heartbeat"])
def test_a_move_whose_publish_the_database_lost_is_held_not_sealed_above_the_records_written_under_it(
        frozen_move, caplog, reported):
    """The move sealed and published (c2 phys 0 = logical 100, view v_high); the proxy applied it and acked 50
    records at logical 100..149; the database came back without the seal and the publish. The restarted controller
    resumed the move, frozen again, and sealed it at c2's log end read again, 50: logical 100.. mapped to c2 phys
    50.., the 50 acked records unreachable and their offsets handed out again. Now the target's end recorded at the
    freeze (0) shows the target took writes the database does not know: the move is held, its partition frozen. The
    check reads Kafka: it holds the move even when the resumed run gets there before any proxy reported its view."""
    api, mover, ids, member, ends, keep_replica, fail_over = frozen_move
    keep_replica()
    mover.run(ids)
    v_high = api.controller.view.version
    assert _segments(api.controller)[-1] == ("c2", 0, None, 100)
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": v_high, "load": {}}).raise_for_status()
    ends[("c2", "t", 0)] = 50  # the proxy wrote logical 100..149 at c2 phys 0..49
    ctl = fail_over()
    v_low = ctl.view.version
    assert v_low < v_high
    caplog.set_level(logging.ERROR)
    if reported:
        ctl.heartbeat(member, v_high, {})  # the proxy still holds v_high: the database lost commits
        assert ctl.view.version > v_high  # the proxies take the next view
    again = Mover(ctl, ack_timeout=1)
    with pytest.raises(MoveHeld, match="c2/t/0 is 50, 0 when it froze"):
        again.run(again.unfinished())
    assert _segments(ctl) == [("c1", 0, None, 0)]  # before: c2 phys 50 at logical 100
    assert _move(ctl, ids[0]).state == "held" and _frozen(ctl)  # produce refused, nothing renumbered
    assert f"move {ids[0]} of t/0 held" in caplog.text
    if not reported:
        assert ctl.db_regression is None
        return
    assert f"the config database holds view {v_low} but a proxy applied view {v_high}" in caplog.text
    assert ctl.db_regression is not None and ctl.db_regression["seen_version"] == v_high
    assert b"fedkafka_controller_db_regressed 1.0" in ctl.metrics.render()
    assert again.sweep() == [] and _move(ctl, ids[0]).state == "held"  # not rolled back: c1 phys 100 is logical 100
    assert again.plan(None, [Move("t", 0, "c1", "c2", "t", 0)]) == []  # the partition stays busy
    with pytest.raises(Conflict, match="no workflow starts: the config database holds view") as refused:
        WorkflowEngine(ctl).start("scale_up", "c2")
    assert refused.value.status == 503


@pytest.mark.parametrize("target", ["grew", "unread-db-regressed", "unread"])
def test_a_frozen_move_is_rolled_back_only_when_its_target_shows_no_lost_publish(frozen_move, target):
    """The sweeper (at the start of the controller, and every round) rolls back the moves no run drives, and a run
    that fails before its seal rolls back its own: a frozen move whose lost publish took writes on its target, rolled
    back, had writes go on at c1's log end 100, the logical offset the lost publish gave c2 phys 0. Held instead;
    and when the target's end cannot be read, held once the controller saw the database lose commits."""
    api, mover, ids, member, ends, keep_replica, fail_over = frozen_move
    keep_replica()
    mover.run(ids)
    v_high = api.controller.view.version
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": v_high, "load": {}}).raise_for_status()
    ends[("c2", "t", 0)] = 50
    ctl = fail_over()
    if target != "grew":
        ctl.kafka.down.add("c2")
    if target == "unread-db-regressed":
        ctl.heartbeat(member, v_high, {})
    assert Mover(ctl).sweep() == ids
    state = _move(ctl, ids[0]).state
    assert (state, _frozen(ctl)) == (("rolled_back", False) if target == "unread" else ("held", True))


def test_a_move_whose_seal_the_database_lost_before_anything_was_written_to_its_target_seals_as_before(frozen_move):
    """The database lost the seal and the publish, but no proxy wrote to the target under the lost view (its end is
    still the one recorded at the freeze): sealing it again gives the same segment, so the move finishes."""
    api, mover, ids, member, _ends, keep_replica, fail_over = frozen_move
    keep_replica()
    mover.run(ids)
    v_high = api.controller.view.version
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": v_high, "load": {}}).raise_for_status()
    ctl = fail_over()
    ctl.heartbeat(member, v_high, {})
    assert ctl.db_regression is not None
    again = Mover(ctl, ack_timeout=1)
    assert again.run(again.unfinished()) == {"done": 1}
    assert _segments(ctl) == [("c1", 0, 100, 0), ("c2", 0, None, 100)] and not _frozen(ctl)


@pytest.mark.parametrize("regressed", [True, False], ids=["db-regressed", "db-intact"])
def test_a_move_frozen_before_its_target_end_was_recorded_is_held_only_once_the_database_lost_commits(
        frozen_move, regressed):
    """A move frozen by a controller before revision 0013 has no recorded target end: it seals as it always did,
    unless this controller saw the database lose commits (then nothing can tell whether its target took writes)."""
    api, mover, ids, member, *_ = frozen_move
    ctl = api.controller
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == ids[0]).values(target_end=None))
        s.commit()
    if regressed:
        ctl.heartbeat(member, ctl.view.version + 3, {})
        assert ctl.db_regression is not None
        with pytest.raises(MoveHeld, match="cannot be checked"):
            mover.run(ids)
        assert _move(ctl, ids[0]).state == "held" and _frozen(ctl)
    else:
        assert mover.run(ids) == {"done": 1}
        assert _segments(ctl)[-1] == ("c2", 0, None, 100)


def test_a_move_records_its_targets_log_end_when_it_freezes(frozen_move):
    api, _mover, ids, *_ = frozen_move
    assert _move(api.controller, ids[0]).target_end == 0


def _lose_last_views(ctl, version: int) -> None:
    """The database as one that lost its last commits comes back: the view row at `version`, no ack above it."""
    with ctl.session() as s:
        row = s.get_one(ViewRow, 1)
        body = json.loads(row.body)
        body["version"] = version
        row.version, row.body = version, json.dumps(body)
        s.execute(update(ProxyRow).where(ProxyRow.applied_version > version).values(applied_version=version))
        s.commit()


def test_a_controller_running_through_a_database_that_lost_views_composes_again(make_api, caplog):
    """A failover shorter than the leader lease: the controller keeps running, its view (and the proxy's) newer than
    the database's. Before, every compose's compare-and-set named the in-memory version, failed 20 times and raised
    Conflict: every admin write answered 503, every move failed at its freeze, until a restart. Now it adopts the
    database's row, numbers the next view past its own and the proxies', and says so."""
    api = make_api()
    ctl = api.controller
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    member = api.post("/v1/proxies", json=PROXY).json()["member_id"]
    v_high = ctl.view.version
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": v_high, "load": {}}).raise_for_status()
    ctl.flush_heartbeats()
    _lose_last_views(ctl, v_high - 3)
    caplog.set_level(logging.ERROR)
    answer = api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": v_high, "load": {}})
    assert answer.status_code == 200
    created = api.put("/v1/topics/u", json={"partitions": 1, "placement": "blocks"})
    assert created.status_code < 300, created.text
    assert ctl.view.version > v_high and "u" in ctl.view.topics
    with ctl.session() as s:
        assert s.get_one(ViewRow, 1).version == ctl.view.version
    assert f"the config database holds view {v_high - 3} but this controller holds view {v_high}" in caplog.text
    assert api.get("/healthz").json()["db_regression"]["seen_version"] == v_high
    assert api.get("/v1/status").json()["db_regression"]["db_version"] == v_high - 3
    answer = api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": v_high, "load": {}})
    assert answer.json()["view_version"] == ctl.view.version  # the proxy is told of the new view


def test_the_lease_loop_notices_a_database_that_lost_views_without_any_change(make_api):
    """With nothing to change, the lease loop's check finds the database below the view it serves and composes
    past it, so proxies get a view the database holds again before the next admin write."""
    api = make_api()
    ctl = api.controller
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    v_high = ctl.view.version
    _lose_last_views(ctl, v_high - 1)
    assert ctl.db_regression is None
    ctl.lease_round()
    assert ctl.view.version == ctl._peek_version() == v_high + 1 and ctl.db_regression is not None


def _status(call) -> int:
    try:
        return call().status_code
    except Exception:  # the TestClient re-raises the server's exception: a 500
        return 500


def test_an_applied_version_no_controller_composed_is_refused_and_jams_nothing(make_api, caplog):
    """One heartbeat reporting BIGINT_MAX (the API's bound) went into the version floor; every compose then wrote
    floor+1: OverflowError (SQLite), bigint out of range (PostgreSQL), every heartbeat a 500, every admin write too.
    Now a report more than MAX_LOST_VIEWS above the newest version known is refused (422) and changes nothing."""
    api = make_api()
    ctl = api.controller
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    a = api.post("/v1/proxies", json=PROXY).json()["member_id"]
    b = api.post("/v1/proxies", json={**PROXY, "instance_id": "h:2", "port": 2}).json()["member_id"]
    v = ctl.view.version
    caplog.set_level(logging.ERROR)
    for bogus in (BIGINT_MAX, v + MAX_LOST_VIEWS + 1):
        assert _status(lambda: api.post(f"/v1/proxies/{a}/heartbeat",
                                        json={"applied_version": bogus, "load": {}})) == 422  # noqa: B023
    assert f"more than {MAX_LOST_VIEWS} above the newest this controller knows ({v})" in caplog.text
    assert ctl.db_regression is None and ctl.view.version == v
    for _ in range(3):
        assert _status(lambda: api.post(f"/v1/proxies/{b}/heartbeat", json={"applied_version": v, "load": {}})) == 200
    assert _status(lambda: api.put("/v1/topics/t", json={"partitions": 1, "placement": "blocks"})) < 300
    assert ctl.view.version == v + 1
    # within the bound: a database that lost that many views; the next view is numbered past it
    lost = ctl.view.version + MAX_LOST_VIEWS
    assert _status(lambda: api.post(f"/v1/proxies/{a}/heartbeat", json={"applied_version": lost, "load": {}})) == 200
    assert ctl.view.version == lost + 1 and ctl.db_regression is not None
