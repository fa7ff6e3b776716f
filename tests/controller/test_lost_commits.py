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
import time
from dataclasses import replace
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from kio.schema.errors import ErrorCode
from proxy.support import ProxyProcess, create_topic, read_partition
from proxy.test_fault import one_batch, raw_produce_errors
from sqlalchemy import select, update
from typer.testing import CliRunner

from controller.conftest import AUTH, TOKEN
from controller.member_secrets import heartbeating_like_a_proxy
from fedkafka.cli import app as cli_app
from fedkafka.controller.app import create_app
from fedkafka.controller.errors import Conflict, Invalid, NotFound
from fedkafka.controller.models import ChainRow, MoveRow, ProxyRow, SegmentRow, ViewRow
from fedkafka.controller.moves import MoveFailed, MoveHeld, Mover
from fedkafka.controller.service import ANY_SECRET, MAX_REPORTED_VERSION, Controller
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.model import View
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
def lossy(make_api, recording_kafka_class, db_url):
    """t/0 (100 records on c1; c2 empty), a proxy registered. `keep_replica()` keeps the SQLite file as it is (what
    an asynchronous replica had received; skips the test on PostgreSQL), and `fail_over()` stops the controller and
    brings the database back as that copy: returns a controller restarted on it. `ends` are the log ends Kafka
    answers; a cluster in `api.kafka.down` answers nothing."""
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
    yield api, member, ends, keep_replica, fail_over
    for c in started:
        c.stop()


def _report(api, member: int, version: int) -> None:
    """The proxy `member` heartbeats holding view `version`."""
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": version, "load": {}}).raise_for_status()


@pytest.fixture
def frozen_move(lossy):
    """`lossy`, with t/0 frozen for a move to c2 and the proxy's ack of the frozen view."""
    api, member, ends, keep_replica, fail_over = lossy
    ctl = api.controller
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 0)])
    mover._freeze(ids)
    _report(api, member, ctl.view.version)
    ctl.flush_heartbeats()
    return api, mover, ids, member, ends, keep_replica, fail_over


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
    _report(api, member, v_high)
    ends[("c2", "t", 0)] = 50  # the proxy wrote logical 100..149 at c2 phys 0..49
    ctl = fail_over()
    v_low = ctl.view.version
    assert v_low < v_high
    caplog.set_level(logging.ERROR)
    if reported:
        ctl.heartbeat(member, v_high, {}, ANY_SECRET)  # the proxy still holds v_high: the database lost commits
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
    _report(api, member, v_high)
    ends[("c2", "t", 0)] = 50
    ctl = fail_over()
    if target != "grew":
        ctl.kafka.down.add("c2")
    if target == "unread-db-regressed":
        ctl.heartbeat(member, v_high, {}, ANY_SECRET)
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
    _report(api, member, v_high)
    ctl = fail_over()
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
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
        ctl.heartbeat(member, ctl.view.version + 3, {}, ANY_SECRET)
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


def _set_view_version(ctl, version: int) -> None:
    with ctl.session() as s:
        row = s.get_one(ViewRow, 1)
        body = json.loads(row.body)
        body["version"] = version
        row.version, row.body = version, json.dumps(body)
        s.commit()


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
    _report(api, member, v_high)
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
    Now a report above MAX_REPORTED_VERSION (half the bound) is refused (422) and changes nothing; below it, however
    far above the views known, it is a database that lost that many views, composed past."""
    api = make_api()
    ctl = api.controller
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    a = api.post("/v1/proxies", json=PROXY).json()["member_id"]
    b = api.post("/v1/proxies", json={**PROXY, "instance_id": "h:2", "port": 2}).json()["member_id"]
    v = ctl.view.version
    caplog.set_level(logging.ERROR)
    for bogus in (BIGINT_MAX, MAX_REPORTED_VERSION + 1):
        assert _status(lambda: api.post(f"/v1/proxies/{a}/heartbeat",
                                        json={"applied_version": bogus, "load": {}})) == 422  # noqa: B023
    assert f"a proxy reported applied view {MAX_REPORTED_VERSION + 1}, above {MAX_REPORTED_VERSION}" in caplog.text
    assert ctl.db_regression is None and ctl.view.version == v
    for _ in range(3):
        assert _status(lambda: api.post(f"/v1/proxies/{b}/heartbeat", json={"applied_version": v, "load": {}})) == 200
    assert _status(lambda: api.put("/v1/topics/t", json={"partitions": 1, "placement": "blocks"})) < 300
    assert ctl.view.version == v + 1
    # at the bound: a database that lost that many views; the next view is numbered past it, and more still fit
    assert _status(lambda: api.post(f"/v1/proxies/{a}/heartbeat",
                                    json={"applied_version": MAX_REPORTED_VERSION, "load": {}})) == 200
    assert ctl.view.version == MAX_REPORTED_VERSION + 1 and ctl.db_regression is not None
    assert _status(lambda: api.put("/v1/topics/u", json={"partitions": 1, "placement": "blocks"})) < 300
    assert ctl.view.version == MAX_REPORTED_VERSION + 2


def test_a_database_restored_from_a_backup_millions_of_views_old_is_composed_past(make_api, clock):
    """SQLite restored from an old backup while the proxies hold a view 1.5M versions past it (weeks of churn).
    With a bound of 1M lost views every heartbeat was answered 422 for good (never 404: the proxy never registered
    again, and refused produce once its fence ran out). Now the next view is numbered past the proxy's."""
    api = make_api()
    ctl = api.controller
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    member = api.post("/v1/proxies", json=PROXY).json()["member_id"]
    old = ctl.view.version
    _set_view_version(ctl, old + 1_500_000)  # weeks of views since the backup, as one jump
    ctl.lease_round()
    high = ctl.view.version
    assert high == old + 1_500_000
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": high, "load": {}}).raise_for_status()
    ctl.flush_heartbeats()
    ctl.stop()
    _set_view_version(ctl, old)  # the backup comes back
    with ctl.session() as s:
        s.execute(update(ProxyRow).values(applied_version=old))
        s.commit()
    restarted = Controller(ctl.settings, kafka=api.kafka)
    try:
        for _ in range(3):
            try:
                restarted.heartbeat(member, high, {}, ANY_SECRET)
            except NotFound:  # its fence ran out: it registers again
                restarted.register_proxy(PROXY["instance_id"], "h", 1, "pproxy", "default")
            except Invalid as e:
                raise AssertionError(f"a heartbeat refused: {e}") from None
            clock.advance(3600)  # lease and fence long gone
        assert restarted.view.version > high and restarted.db_regression is not None
    finally:
        restarted.stop()


@pytest.fixture
def plan_kept(lossy):
    """`lossy`, with a move of t/0 to c2 planned (its target's end, 0, recorded), frozen, sealed (c1 at 100, c2 phys
    0) and published (view v_high: c2 phys 0 = logical 100), the proxy holding v_high; then the database came back
    with the plan only, the freeze, the seal and the publish lost. Set `ends[("c2", "t", 0)]` to 50 for the records
    the proxy acked at logical 100..149 under the lost publish. Returns (the controller restarted on that database,
    the move ids, `ends`, the proxy's member id, v_high); the loss is not detected yet."""
    api, member, ends, keep_replica, fail_over = lossy
    mover = Mover(api.controller, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 0)])
    assert _move(api.controller, ids[0]).planned_target_end == 0
    keep_replica()  # the replica keeps the plan only
    mover._freeze(ids)
    _report(api, member, api.controller.view.version)
    mover.run(ids)
    v_high = api.controller.view.version
    assert _segments(api.controller)[-1] == ("c2", 0, None, 100)
    _report(api, member, v_high)
    ctl = fail_over()
    assert _move(ctl, ids[0]).state == "planned" and not _frozen(ctl)
    return ctl, ids, ends, member, v_high


def _settle(ctl, ids: list[int], settled_by: str) -> None:
    """The unfinished moves `ids` settled by the sweeper, or by their resumed run failing at the freeze: its target
    cannot be read (c2 down), so the run rolls them back."""
    if settled_by == "sweeper":
        assert Mover(ctl).sweep() == ids
        return
    again = Mover(ctl, ack_timeout=1, seal_timeout=0.3)
    with pytest.raises(MoveFailed, match="not readable"):
        again.run(again.unfinished())


@pytest.mark.parametrize("settled_by", ["resumed-run", "sweeper"])
def test_a_move_whose_freeze_the_database_lost_too_is_held_when_its_target_grew_since_the_plan(plan_kept, settled_by):
    """The replica kept the plan only and the proxy acked 50 records at logical 100..149 on c2 phys 0..49. Before,
    the resumed run froze the planned move again, took c2's end now (50) as its target end and sealed there: c2 phys
    50 at logical 100, the 50 records unreachable and their offsets handed out again. Now the plan records the
    target's end (0): the freeze finds it grew and holds the move, its target end the planned one (what a repair
    starts the new segment at). The sweeper, rolling back a planned move no run drives, holds it alike."""
    ctl, ids, ends, member, v_high = plan_kept
    ends[("c2", "t", 0)] = 50
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    again = Mover(ctl, ack_timeout=1)
    if settled_by == "resumed-run":
        with pytest.raises(MoveHeld, match="c2/t/0 is 50, 0 when it was planned"):
            again.run(again.unfinished())
    else:
        assert again.sweep() == ids
    row = _move(ctl, ids[0])
    assert (row.state, row.held_for, row.target_end) == ("held", "target_grew", 0)
    assert _segments(ctl) == [("c1", 0, None, 0)] and _frozen(ctl)  # produce refused, nothing renumbered
    assert ctl.view.topics["t"].partitions[0].frozen


@pytest.mark.parametrize("settled_by", ["resumed-run", "sweeper"])
def test_a_move_whose_freeze_the_database_lost_too_moves_or_rolls_back_as_before_when_its_target_did_not_grow(
        plan_kept, settled_by):
    """The database lost the planned move's freeze and publish, the loss detected, but no proxy wrote to the target
    under the lost publish (its end is still the planned one): the resumed run moves it again, the same segment the
    lost publish gave; the sweeper rolls it back (writes go on at c1's end 100, logical 100, which nothing took)."""
    ctl, ids, _ends, member, v_high = plan_kept
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    assert ctl.db_regression is not None
    again = Mover(ctl, ack_timeout=1)
    if settled_by == "resumed-run":
        again._freeze(ids)
        assert _move(ctl, ids[0]).state == "frozen"
        ctl.heartbeat(member, ctl.view.version, {}, ANY_SECRET)  # the proxy acks the view that freezes t/0 again
        assert again.run(ids) == {"done": 1}
        assert _segments(ctl) == [("c1", 0, 100, 0), ("c2", 0, None, 100)] and not _frozen(ctl)
    else:
        assert again.sweep() == ids
        assert (_move(ctl, ids[0]).state, _frozen(ctl)) == ("rolled_back", False)
        assert _segments(ctl) == [("c1", 0, None, 0)]


@pytest.mark.parametrize("target", ["unchanged", "grew"])
@pytest.mark.parametrize("settled_by", ["resumed-run", "sweeper"])
def test_a_move_whose_freeze_the_database_lost_too_is_held_while_its_target_cannot_be_read(
        plan_kept, settled_by, target):
    """The loss is detected and the planned move's target does not answer when it is settled. Before, it was rolled
    back (a planned move has no `frozen_version` to show it froze after the loss): writes went on at c1's end 100,
    logical 100, the offset the lost publish gave c2 phys 0, where the proxy may have acked records. Now it is held,
    its partition frozen and its target end the planned one; once the target answers, the sweeper rolls it back if
    its end is still that one, and keeps it held, now because it grew, if the proxy wrote to it."""
    ctl, ids, ends, member, v_high = plan_kept
    if target == "grew":
        ends[("c2", "t", 0)] = 50  # 50 records acked at logical 100..149 on c2 phys 0..49
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    assert ctl.db_regression is not None
    ctl.kafka.down.add("c2")
    _settle(ctl, ids, settled_by)
    row = _move(ctl, ids[0])
    assert (row.state, row.held_for, row.target_end, _frozen(ctl)) == ("held", "target_unread", 0, True), row.error
    assert _segments(ctl) == [("c1", 0, None, 0)] and ctl.view.topics["t"].partitions[0].frozen
    sweeper = Mover(ctl)
    assert sweeper.sweep() == [] and _move(ctl, ids[0]).state == "held"  # still unread: left as it is
    ctl.kafka.down.discard("c2")
    sweeper.sweep()
    row = _move(ctl, ids[0])
    if target == "unchanged":
        assert (row.state, _frozen(ctl), ctl.view.topics["t"].partitions[0].frozen) == ("rolled_back", False, False)
    else:
        assert (row.state, row.held_for, _frozen(ctl)) == ("held", "target_grew", True)
        assert "c2/t/0 is 50, 0 when it froze" in row.error


@pytest.mark.parametrize("settled_by", ["resumed-run", "sweeper"])
def test_a_move_planned_before_its_target_end_was_recorded_is_held_once_the_database_lost_commits(
        plan_kept, settled_by):
    """A move planned by a controller before revision 0014 has no recorded plan end; the database kept its plan only,
    the loss is detected, its target is down: nothing can tell whether its target took writes under a lost publish,
    nor ever will. Held (`no_target_end`), its partition frozen, for an operator; before, it was rolled back."""
    ctl, ids, _ends, member, v_high = plan_kept
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == ids[0]).values(planned_target_end=None))
        s.commit()
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    ctl.kafka.down.add("c2")
    _settle(ctl, ids, settled_by)
    row = _move(ctl, ids[0])
    assert (row.state, row.held_for, _frozen(ctl)) == ("held", "no_target_end", True), row.error
    assert "was planned before its target's end was kept" in row.error
    ctl.kafka.down.discard("c2")
    assert Mover(ctl).sweep() == [] and _move(ctl, ids[0]).state == "held"  # the sweeper leaves it to an operator


def _published(ctl) -> list:
    """Every view `ctl` publishes from now on (what the proxies fetch, GET /v1/view), in order."""
    views, publish = [], ctl.publisher.publish

    def recording(view):
        views.append(view)
        return publish(view)

    ctl.publisher.publish = recording
    return views


@pytest.mark.parametrize("target", ["unchanged", "grew"])
@pytest.mark.parametrize("settled_by", ["resumed-run", "sweeper"])
def test_a_planned_move_is_frozen_in_the_first_view_composed_once_the_loss_is_detected(plan_kept, settled_by, target):
    """The database kept the planned move's plan only; the proxy still holds v_high (t/0 on c2 from logical 100) and
    its heartbeat shows the loss. The next view is numbered past v_high, so the proxies take it, and it was built
    from the database: t/0 active on c1 and not frozen, writable at c1's end 100 = logical 100, the offset the lost
    publish gave c2 phys 0, until the resumed run or the sweeper held the move (up to `seal_timeout` of reads of a
    target that does not answer). Now the compose that numbers the view past the lost ones freezes the chains of the
    planned moves, so no view from the detection on has t/0 writable; a move whose target shows nothing was written
    under a lost publish is released (rolled back) once its target answers, as before."""
    ctl, ids, ends, member, v_high = plan_kept
    if target == "grew":
        ends[("c2", "t", 0)] = 50  # 50 records acked at logical 100..149 on c2 phys 0..49
    ctl.kafka.down.add("c2")  # its target does not answer: a freeze reads it again and again
    views = _published(ctl)
    # no lifespan: the app's routes only
    proxy = heartbeating_like_a_proxy(TestClient(create_app(ctl, TOKEN, background=False), headers=AUTH))
    answer = proxy.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": v_high, "load": {}})
    assert answer.status_code == 200 and ctl.db_regression is not None
    assert answer.json()["view_version"] > v_high and views[0].version > v_high  # the proxy takes it
    fetched = View.from_dict(proxy.get("/v1/view").json())  # what the proxy applies
    assert fetched.version == views[0].version
    assert fetched.topics["t"].partitions[0].frozen, "t/0 writable on c1 at logical 100 again"
    assert _move(ctl, ids[0]).state == "planned"  # frozen before its target was read, nothing settled yet
    _settle(ctl, ids, settled_by)
    row = _move(ctl, ids[0])
    assert (row.state, row.held_for, row.target_end) == ("held", "target_unread", 0), row.error
    ctl.kafka.down.discard("c2")
    Mover(ctl).sweep()  # reads the target again
    released = target == "unchanged"
    assert (_move(ctl, ids[0]).state, _frozen(ctl)) == (("rolled_back", False) if released else ("held", True))
    assert all(v.topics["t"].partitions[0].frozen for v in views[:-1 if released else None])
    assert ctl.view.topics["t"].partitions[0].frozen is not released


def test_a_controller_running_through_the_loss_freezes_the_planned_moves_in_the_view_it_composes_past_it(lossy):
    """The other way the loss is found: the controller kept running (a failover shorter than its leader lease) and
    its lease loop finds the database below the view it serves. The view it composes past its own is built from the
    database, so it froze no planned move before; now it does, and the sweeper releases one whose target is at its
    planned end."""
    api, _member, _ends, _keep, _fail_over = lossy
    ctl = api.controller
    ids = Mover(ctl).plan(None, [Move("t", 0, "c1", "c2", "t", 0)])
    api.put("/v1/topics/u", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    v_high = ctl.view.version
    _lose_last_views(ctl, v_high - 1)
    ctl.lease_round()
    assert ctl.view.version == v_high + 1 and ctl.db_regression is not None
    assert ctl.view.topics["t"].partitions[0].frozen and _frozen(ctl)
    assert Mover(ctl).sweep() == ids
    assert (_move(ctl, ids[0]).state, _frozen(ctl), ctl.view.topics["t"].partitions[0].frozen) == (
        "rolled_back", False, False)


def _on(view: View, clusters: dict, physical: str) -> View:
    """`view` with its clusters at the real ones' bootstraps (`clusters`: id -> LocalKafkaCluster), every segment on
    the physical topic `physical` (a name no other test uses), and no proxy listed: a proxy serving it as a view
    file leads every partition."""
    topics = {name: replace(t, partitions=tuple(replace(c, segments=tuple(replace(g, topic=physical)
                                                                          for g in c.segments))
                                                for c in t.partitions)) for name, t in view.topics.items()}
    return replace(view, topics=topics, proxies=(),
                   clusters={cid: replace(c, bootstrap=clusters[cid].bootstrap) for cid, c in view.clusters.items()})


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_produce_through_a_proxy_on_the_first_view_after_the_loss_is_detected_is_refused(
        plan_kept, kafka_clusters, unique_name, tmp_path):
    """The first view composed once the loss is detected, served by a real proxy over real Kafka: produce to t/0 is
    refused with a retriable error and nothing reaches c1 (before: acked at c1 phys 100.., logical 100.., the offsets
    the lost publish gave the records on c2)."""
    ctl, _ids, _ends, member, v_high = plan_kept
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    first = ctl.view
    assert first.version > v_high
    c1, c2 = kafka_clusters[:2]
    for cluster in (c1, c2):
        create_topic(cluster.bootstrap, unique_name, 1)
    with ProxyProcess(tmp_path, _on(first, {"c1": c1, "c2": c2}, unique_name)) as proxy:
        errors = raw_produce_errors(proxy.port, "t", [0], one_batch())
    assert errors == {0: ErrorCode.not_leader_or_follower}, proxy.output()[-2000:]
    assert read_partition(c1.bootstrap, unique_name, 0, timeout=5) == []


def test_a_planned_move_whose_target_did_not_grow_moves_as_before(lossy):
    """The plan's recorded end is the target's end at the freeze when nothing was lost: the move finishes."""
    api, member, _ends, _keep, _fail_over = lossy
    mover = Mover(api.controller, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 0)], {("c2", "t", 0): 0})
    mover._freeze(ids)
    api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": api.controller.view.version, "load": {}}
             ).raise_for_status()
    assert mover.run(ids) == {"done": 1}
    assert _segments(api.controller) == [("c1", 0, 100, 0), ("c2", 0, None, 100)]


def test_a_move_frozen_after_the_loss_was_detected_is_rolled_back_when_its_target_cannot_be_read(lossy):
    """The regression is detected (a proxy holds 3 views the database lost); a move frozen after that recorded its
    target's end on the new history. Its target does not answer during the seal: the run fails and rolls it back.
    Before, the rollback could not read the target either and held the move for good (its partition frozen, no
    produce), though nothing could have written to its target under a lost publish."""
    api, member, _ends, _keep, _fail_over = lossy
    ctl = api.controller
    ctl.heartbeat(member, ctl.view.version + 3, {}, ANY_SECRET)
    assert ctl.db_regression is not None
    mover = Mover(ctl, ack_timeout=2, seal_timeout=0.5)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 0)])
    mover._freeze(ids)
    assert _move(ctl, ids[0]).frozen_version > ctl.db_regression["db_version"]
    _report(api, member, ctl.view.version)
    api.kafka.down.add("c2")
    with pytest.raises(MoveFailed, match="not readable"):
        mover.run(ids)
    assert _move(ctl, ids[0]).state == "rolled_back" and not _frozen(ctl)


@pytest.mark.parametrize("target", ["unchanged", "grew"])
def test_a_move_held_because_its_target_could_not_be_read_is_read_again_by_the_sweeper(frozen_move, target):
    """A move frozen before the loss, its seal and publish lost; its target is down when the sweeper rolls it back
    after the loss was detected: held (its target may hold records of the lost publish). Once the target answers,
    the sweeper reads it again: still at the end recorded at the freeze, nothing was written under the lost publish
    and the move is rolled back as a rollback would have; grown, it stays held, now for that."""
    api, mover, ids, member, ends, keep_replica, fail_over = frozen_move
    keep_replica()
    mover.run(ids)
    v_high = api.controller.view.version
    _report(api, member, v_high)
    ctl = fail_over()
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    ctl.kafka.down.add("c2")
    sweeper = Mover(ctl)
    assert sweeper.sweep() == ids
    assert (_move(ctl, ids[0]).state, _move(ctl, ids[0]).held_for, _frozen(ctl)) == ("held", "target_unread", True)
    assert sweeper.sweep() == [] and _move(ctl, ids[0]).state == "held"  # still unread: left as it is
    ctl.kafka.down.discard("c2")
    if target == "grew":
        ends[("c2", "t", 0)] = 50
    sweeper.sweep()
    row = _move(ctl, ids[0])
    if target == "unchanged":
        assert (row.state, _frozen(ctl)) == ("rolled_back", False)
        assert not ctl.view.topics["t"].partitions[0].frozen
    else:
        assert (row.state, row.held_for, _frozen(ctl)) == ("held", "target_grew", True)
        assert "c2/t/0 is 50, 0 when it froze" in row.error


def test_failover_starts_while_the_database_is_known_to_have_lost_commits(make_api, recording_kafka_class):
    """A data-centre outage takes the PostgreSQL primary (the database fails over to an asynchronous replica: the
    regression is detected) and a Kafka cluster with it. The automatic failover went through start() and was
    refused with every other run until a restart; a failover starts now (its seals are checked like any move's),
    by hand too, while a scale-up is still refused."""
    class Kafka(recording_kafka_class):
        def log_offsets(self, cluster, bootstrap, partitions):
            if cluster in self.down:
                raise OSError(f"{cluster} is down")
            return {(t, p): (0, 0) for t, p in partitions}

    api = make_api(kafka=Kafka())
    ctl = api.controller
    for cid in ("c1", "c2", "c3"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092", "coordination": cid == "c3"}
                ).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 6, "placement": "blocks"}).raise_for_status()
    _lose_last_views(ctl, ctl.view.version - 2)
    ctl.lease_round()
    assert ctl.db_regression is not None
    api.kafka.down.add("c1")
    ctl.scan_once()
    engine = WorkflowEngine(ctl)
    with pytest.raises(Conflict, match="no workflow starts"):
        engine.start("scale_up", "c2")
    down_since: dict[str, float] = {}
    refused: set[str] = set()
    started = engine.auto_failover_round(down_since, refused, after=0.0)
    assert len(started) == 1 and refused == set()
    run = engine.wait(started[0], timeout=60)
    assert run["state"] == "done", run["error"]
    assert all(c.active.cluster != "c1" for c in ctl.view.topics["t"].partitions)
    manual = api.post("/v1/workflows", json={"kind": "failover", "cluster": "c1"})
    assert manual.status_code < 300, manual.text


def _applying_every_view_waited_for(monkeypatch, ctl, member: int) -> None:
    """The proxy `member` applies every view a wait of `ctl`'s movers waits for, as a live proxy does: a test body
    that starts past the proxy's lease (a loaded machine) has the publish compose a view without it, which it must
    still ack (its fence runs); the heartbeat that renews its lease is the proxy's, not what the test asserts."""
    real_wait = Mover.await_version

    def applied_then_waited(mover, needed, progress, **kwargs):
        if mover.ctl is ctl:
            ctl.heartbeat(member, needed, {}, ANY_SECRET)
        return real_wait(mover, needed, progress, **kwargs)

    monkeypatch.setattr(Mover, "await_version", applied_then_waited)


@pytest.fixture
def held(frozen_move, monkeypatch):
    """`frozen_move`: the move sealed and published as c2 phys 0 = logical 100 (`lost`: the segments every proxy's
    view.json holds), the proxy acked 50 records at logical 100..149 on c2 phys 0..49, then the database lost the
    seal and the publish; the restarted controller saw a proxy hold the lost view and held the resumed move. Returns
    (that controller, its API as a TestClient, the move's id, `lost`, `ends`)."""
    api, mover, ids, member, ends, keep_replica, fail_over = frozen_move
    keep_replica()
    mover.run(ids)
    v_high = api.controller.view.version
    lost = api.controller.view.topics["t"].partitions[0].segments
    _report(api, member, v_high)
    ends[("c2", "t", 0)] = 50
    ctl = fail_over()
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    again = Mover(ctl, ack_timeout=1)
    with pytest.raises(MoveHeld):
        again.run(again.unfinished())
    # the proxy took the view composed past the lost ones (t/0 frozen)
    ctl.heartbeat(member, ctl.view.version, {}, ANY_SECRET)
    _applying_every_view_waited_for(monkeypatch, ctl, member)
    with heartbeating_like_a_proxy(TestClient(create_app(ctl, TOKEN, background=False), headers=AUTH)) as client:
        yield ctl, client, ids[0], lost, ends


def _cli(monkeypatch, client: TestClient, *args: str, token: str = TOKEN) -> tuple[int, str]:
    """`fedkafka *args` run in this process against the controller behind `client` (its ASGI app: the CLI's own
    AdminClient and HTTP requests, no socket). Returns (exit code, stdout and stderr)."""
    def connect(timeout, headers, verify, transport):
        return heartbeating_like_a_proxy(TestClient(client.app, headers=headers))

    # httpx as the client module sees it, its Client made over the app (the rest, e.g. Response, as httpx has it)
    monkeypatch.setattr("fedkafka.controller.client.httpx", SimpleNamespace(
        **{**{name: getattr(httpx, name) for name in httpx.__all__}, "Client": connect}))
    result = CliRunner().invoke(cli_app, list(args), env={"FEDKAFKA_CONTROLLER_URL": "http://controller",
                                                          "FEDKAFKA_TOKEN": token})
    return result.exit_code, result.output


def test_the_documented_repair_of_a_held_move(held, monkeypatch):
    """docs/OPERATIONS.md, "A held move": the operator lists the held moves, and publishes the one held with `seal` =
    the source's log end and `target_start` = its `target_end` (the lost segment as a proxy's view.json holds it
    says the same); the sweeper publishes it: the records written under the lost publish are read at the offsets the
    proxies acked them at, and the partition takes writes again."""
    ctl, client, move_id, lost, ends = held
    code, out = _cli(monkeypatch, client, "moves", "list", "--held", "--json")
    assert code == 0, out
    [row] = json.loads(out)
    assert {k: row[k] for k in ("id", "topic", "partition", "from_cluster", "to_cluster", "to_topic", "to_partition",
                                "gap", "target_end", "planned_target_end", "held_for")} == {
        "id": move_id, "topic": "t", "partition": 0, "from_cluster": "c1", "to_cluster": "c2", "to_topic": "t",
        "to_partition": 0, "gap": 0, "target_end": 0, "planned_target_end": 0, "held_for": "target_grew"}
    assert "c2/t/0 is 50, 0 when it froze" in row["error"]
    code, out = _cli(monkeypatch, client, "moves", "list", "--held")
    assert code == 0 and "target_grew" in out, out
    source_end = ends[("c1", "t", 0)]
    assert (lost[-1].phys_start, lost[0].phys_end) == (row["target_end"], source_end)  # the two sources agree
    code, out = _cli(monkeypatch, client, "moves", "publish", str(move_id), "--seal", str(source_end),
                     "--target-start", str(row["target_end"]))
    assert code == 0, out
    assert f"move {move_id} of t/0 sealed at 100" in out and "checked: source c1/t/0 log end 100" in out
    assert (_move(ctl, move_id).state, _move(ctl, move_id).seal, _move(ctl, move_id).phys_start) == ("sealed", 100, 0)
    assert Mover(ctl).sweep() == [move_id]  # the sweeper's round
    assert _segments(ctl) == [("c1", 0, 100, 0), ("c2", 0, None, 100)] and not _frozen(ctl)
    code, out = _cli(monkeypatch, client, "moves", "publish", str(move_id), "--seal", str(source_end),
                     "--target-start", str(row["target_end"]))  # repeated, as after an answer lost to a timeout
    assert code == 0 and f"move {move_id} of t/0 sealed at 100" in out and "; published" in out, out
    assert "checked: already published at seal 100 from 0 (it is done): this repeat changed nothing" in out
    assert [(g.cluster, g.phys_start, g.logical_base) for g in ctl.view.topics["t"].partitions[0].segments] == [
        (g.cluster, g.phys_start, g.logical_base) for g in lost]
    assert client.get("/v1/moves", params={"state": "held"}).json() == []


def test_the_sql_repair_of_a_held_move_still_works_without_the_command(held):
    """The fallback docs/OPERATIONS.md keeps for a controller that cannot run: the operator's UPDATE."""
    ctl, _client, move_id, _lost, _ends = held
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == move_id, MoveRow.state == "held")
                  .values(state="sealed", seal=100, phys_start=0))
        s.commit()
    assert Mover(ctl).sweep() == [move_id]
    assert _segments(ctl) == [("c1", 0, 100, 0), ("c2", 0, None, 100)] and not _frozen(ctl)


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"seal": 100, "target_start": 50}, 422, "target_start 50 is not the move's target_end 0"),
    ({"seal": 90, "target_start": 0}, 422, "the log end of the source c1/t/0 is 100, not the seal 90"),
    ({"seal": 120, "target_start": 0}, 422, "the log end of the source c1/t/0 is 100, not the seal 120"),
    ({"seal": -1, "target_start": 0}, 422, "seal: Input should be greater than or equal to 0"),
    ({"seal": 100}, 422, "target_start: Field required"),
])
def test_publishing_a_held_move_with_what_kafka_or_its_row_contradicts_is_refused(held, body, status, words):
    """A refusal names what is wrong and changes nothing: the move stays held, its partition frozen."""
    ctl, client, move_id, _lost, _ends = held
    answer = client.post(f"/v1/moves/{move_id}/publish", json=body)
    assert (answer.status_code, words in answer.json()["detail"]) == (status, True), answer.text
    assert _move(ctl, move_id).state == "held" and _frozen(ctl)
    assert _segments(ctl) == [("c1", 0, None, 0)]


def test_a_publish_begun_past_the_proxys_lease_is_still_checked(held, monkeypatch):
    """The test body started past the proxy's lease (a loaded machine: the clock runs on 11 s past the fixture's
    last heartbeat): the publish composes a view without the proxy, which it waits for until its fence runs out.
    The proxy applies that view (`_applying_every_view_waited_for`), so the publish reaches its checks."""
    ctl, client, move_id, _lost, _ends = held
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + ctl.settings.lease_ms / 1000 + 1)
    answer = client.post(f"/v1/moves/{move_id}/publish", json={"seal": 100, "target_start": 50})
    assert (answer.status_code, "target_start 50 is not the move's target_end 0" in answer.text) == (422, True), \
        answer.text
    assert _move(ctl, move_id).state == "held" and _frozen(ctl)


def test_a_publish_forced_past_a_check_is_recorded_and_says_what_it_overrode(held):
    ctl, client, move_id, _lost, _ends = held
    answer = client.post(f"/v1/moves/{move_id}/publish", json={"seal": 100, "target_start": 50, "force": True})
    assert answer.status_code == 200, answer.text
    assert any(c.startswith("forced: target_start 50 is not") for c in answer.json()["checks"])
    assert (_move(ctl, move_id).state, _move(ctl, move_id).phys_start) == ("sealed", 50)


@pytest.fixture
def held_back_onto_a_lost_partition(lossy, monkeypatch):
    """t/0 moved c1 -> c2/t/0 (c1 sealed at 100, c2 from 0 at logical 100), 30 records written on c2, moved back
    (c2 sealed at 30, c1 from 100 at logical 130), 20 more records on c1; then c2 lost its data (c2/t/0's log end
    went back to 0) and a move of t/0 to c2/t/0 froze (its target end 0) and was held. Returns (its API, the move's
    id, `ends`)."""
    api, member, ends, _keep_replica, _fail_over = lossy
    ctl = api.controller
    mover = Mover(ctl, ack_timeout=1)
    for source, target, end in (("c1", "c2", 30), ("c2", "c1", 120)):
        ids = mover.plan(None, [Move("t", 0, source, target, "t", 0)])
        mover._freeze(ids)
        _report(api, member, ctl.view.version)
        assert mover.run(ids) == {"done": 1}
        _report(api, member, ctl.view.version)
        ends[(target, "t", 0)] = end
    assert _segments(ctl) == [("c1", 0, 100, 0), ("c2", 0, 30, 100), ("c1", 100, None, 130)]
    ends[("c2", "t", 0)] = 0
    [move_id] = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 0)])
    mover._freeze([move_id])
    _report(api, member, ctl.view.version)  # the proxy applied the frozen view (an operator's publish waits for it)
    _applying_every_view_waited_for(monkeypatch, ctl, member)
    assert (_move(ctl, move_id).state, _move(ctl, move_id).target_end) == ("frozen", 0)
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == move_id).values(state="held", held_for="target_grew"))
        s.commit()
    return api, move_id, ends


@pytest.mark.parametrize("case", ["target_end", "no_target_end", "no_target_end-target_unread", "forced"])
def test_a_held_move_is_not_published_with_its_new_segment_below_an_older_seal_on_its_target(
        held_back_onto_a_lost_partition, case):
    """c2/t/0 holds an older segment of t/0 (phys 0..30 at logical 100..129) and lost its data. Publishing the held
    move at target_start 0 (its recorded target end; or any start at or below the target's log end for a move
    without one, or whose target cannot be read; or anything, forced) started the new segment at logical 150 on
    c2 phys 0: the records written there had logical offsets 100.. and 150.. both, and offsets handed out for the
    older segment named records written after the publish. The seal refuses that (docs/DESIGN.md §4.5); the
    operator's publish now does too, forced or not."""
    api, move_id, ends = held_back_onto_a_lost_partition
    ctl = api.controller
    if case.startswith("no_target_end"):
        with ctl.session() as s:
            s.execute(update(MoveRow).where(MoveRow.id == move_id).values(target_end=None, held_for="no_target_end"))
            s.commit()
    if case.endswith("target_unread"):
        ctl.kafka.down.add("c2")
    body = {"seal": 120, "target_start": 0, "force": case == "forced"}
    answer = api.post(f"/v1/moves/{move_id}/publish", json=body)
    assert answer.status_code == 422, answer.text
    assert "target_start 0 on c2/t/0 is below the seal 30 of an older segment of t/0" in answer.json()["detail"]
    assert _move(ctl, move_id).state == "held" and _frozen(ctl)
    assert _segments(ctl) == [("c1", 0, 100, 0), ("c2", 0, 30, 100), ("c1", 100, None, 130)]
    ends[("c2", "t", 0)] = 30  # c2 kept its data after all: a publish from its log end is what the seal would do
    ctl.kafka.down.discard("c2")
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == move_id).values(target_end=30))
        s.commit()
    answer = api.post(f"/v1/moves/{move_id}/publish", json={"seal": 120, "target_start": 30})
    assert answer.status_code == 200 and answer.json()["state"] == "sealed", answer.text


def test_a_publish_with_the_source_unreadable_is_refused_unless_forced(held, monkeypatch):
    """An unread log end proves nothing (the leader too loaded to answer may hold a write above its high watermark,
    docs/DESIGN.md §4.1 step 3): refused (retriable, nothing changed), as a move's own seal reads it again; forced, it
    is published, checked against the row only, and the answer says so."""
    ctl, client, move_id, _lost, _ends = held
    monkeypatch.setattr("fedkafka.controller.held.PUBLISH_SETTLE_WAIT_S", 0.3)
    ctl.kafka.down.add("c1")
    answer = client.post(f"/v1/moves/{move_id}/publish", json={"seal": 100, "target_start": 0})
    assert answer.status_code == 409, answer.text
    assert "the source c1/t/0 is not settled: log end offsets not readable" in answer.json()["detail"]
    assert _move(ctl, move_id).state == "held" and _frozen(ctl)
    answer = client.post(f"/v1/moves/{move_id}/publish", json={"seal": 100, "target_start": 0, "force": True})
    assert answer.status_code == 200, answer.text
    checks = answer.json()["checks"]
    assert "source c1/t/0 not read: the seal is not checked against its log end" in checks
    assert any(c.startswith("forced: the source c1/t/0 is not settled") for c in checks), checks


def test_a_move_that_is_not_held_an_unknown_one_and_a_caller_without_the_token_are_refused(held, monkeypatch):
    ctl, client, move_id, _lost, _ends = held
    body = {"seal": 100, "target_start": 0}
    assert client.post("/v1/moves/999/publish", json=body).status_code == 404
    assert client.post("/v1/moves/999/roll-back", json={}).status_code == 404
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        assert client.post(f"/v1/moves/{move_id}/publish", json=body, headers=headers).status_code == 401
        assert client.get("/v1/moves", headers=headers).status_code == 401
    code, out = _cli(monkeypatch, client, "moves", "publish", str(move_id), "--seal", "100", "--target-start", "0",
                     token="wrong")
    assert code == 1 and "HTTP 401" in out
    assert client.post(f"/v1/moves/{move_id}/publish", json=body).status_code == 200
    again = client.post(f"/v1/moves/{move_id}/publish", json=body)  # a repeat answers the move it published
    assert again.status_code == 200 and again.json()["state"] == "sealed", again.text
    assert any("already published at seal 100 from 0" in c for c in again.json()["checks"])
    other = client.post(f"/v1/moves/{move_id}/publish", json={**body, "seal": 101})
    assert other.status_code == 409 and f"move {move_id} of t/0 was already published at seal 100 from 0, not at " \
        "seal 101 from 0" in other.json()["detail"]
    code, out = _cli(monkeypatch, client, "moves", "roll-back", str(move_id))  # published: not rolled back
    assert code == 1 and "was already published at seal 100 from 0 (it is sealed): not rolled back" in out, out
    assert client.get("/v1/moves", params={"state": "nope"}).status_code == 422
    assert [m["id"] for m in client.get("/v1/moves").json()] == [move_id]  # unfinished: sealed
    assert _move(ctl, move_id).state == "sealed"


def test_a_held_move_whose_target_took_records_under_the_lost_publish_is_not_rolled_back(held, monkeypatch):
    """Rolled back, writes would go on at c1's end 100: logical 100, which the lost publish gave c2 phys 0 and the
    proxy acked records at. Refused, with or without the flag."""
    ctl, client, move_id, _lost, _ends = held
    for flag in ((), ("--nothing-was-published",)):
        code, out = _cli(monkeypatch, client, "moves", "roll-back", str(move_id), *flag)
        assert code == 1 and "HTTP 409" in out and "the log end of its target c2/t/0 is 50, 0 when" in out, out
    assert _move(ctl, move_id).state == "held" and _frozen(ctl)


@pytest.fixture
def held_unread(plan_kept):
    """`plan_kept`, the loss detected and its target down when the sweeper settled it: held (`target_unread`),
    `target_end` 0; then the target answers again at 0 (nothing written under the lost publish). Returns (the
    controller, its API, the move id)."""
    ctl, ids, _ends, member, v_high = plan_kept
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    ctl.kafka.down.add("c2")
    assert Mover(ctl).sweep() == ids
    assert (_move(ctl, ids[0]).state, _move(ctl, ids[0]).held_for) == ("held", "target_unread")
    ctl.kafka.down.discard("c2")
    with heartbeating_like_a_proxy(TestClient(create_app(ctl, TOKEN, background=False), headers=AUTH)) as client:
        yield ctl, client, ids[0]


def test_a_held_move_whose_target_is_at_its_recorded_end_is_rolled_back_by_the_command(held_unread, monkeypatch):
    """The mover's rollback: the partition unfrozen, writes go on at c1's end; the view says so."""
    ctl, client, move_id = held_unread
    code, out = _cli(monkeypatch, client, "moves", "roll-back", str(move_id))
    assert code == 0 and f"move {move_id} of t/0 rolled_back: rolled back by an operator" in out, out
    assert (_move(ctl, move_id).state, _frozen(ctl)) == ("rolled_back", False)
    assert not ctl.view.topics["t"].partitions[0].frozen and _segments(ctl) == [("c1", 0, None, 0)]
    code, out = _cli(monkeypatch, client, "moves", "roll-back", str(move_id))  # as after an answer lost to a timeout
    assert code == 0 and f"move {move_id} of t/0 rolled_back: rolled back by an operator" in out, out
    assert "already rolled back (rolled back by an operator: its target's log end is" in out, out
    assert "this repeat changed nothing" in out and _segments(ctl) == [("c1", 0, None, 0)]


def test_a_held_move_whose_target_cannot_be_read_is_rolled_back_only_with_nothing_was_published(held_unread):
    ctl, client, move_id = held_unread
    ctl.kafka.down.add("c2")
    refused = client.post(f"/v1/moves/{move_id}/roll-back", json={})
    assert refused.status_code == 409 and "its target c2/t/0 cannot be read" in refused.json()["detail"]
    assert _move(ctl, move_id).state == "held" and _frozen(ctl)
    answer = client.post(f"/v1/moves/{move_id}/roll-back", json={"nothing_was_published": True})
    assert answer.status_code == 200 and answer.json()["state"] == "rolled_back", answer.text
    assert not _frozen(ctl)


def test_a_no_target_end_move_is_rolled_back_only_with_nothing_was_published(plan_kept, monkeypatch):
    """A move planned before revision 0014, the loss detected: nothing on its row tells whether its target took
    writes under a lost publish. The operator checked every proxy's view.json: no segment on c2/t/0."""
    ctl, ids, _ends, member, v_high = plan_kept
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == ids[0]).values(planned_target_end=None))
        s.commit()
    ctl.heartbeat(member, v_high, {}, ANY_SECRET)
    assert Mover(ctl).sweep() == ids
    assert (_move(ctl, ids[0]).state, _move(ctl, ids[0]).held_for) == ("held", "no_target_end")
    with heartbeating_like_a_proxy(TestClient(create_app(ctl, TOKEN, background=False), headers=AUTH)) as client:
        code, out = _cli(monkeypatch, client, "moves", "roll-back", str(ids[0]))
        assert code == 1 and "it has no recorded target end (no_target_end)" in out, out
        assert _move(ctl, ids[0]).state == "held" and _frozen(ctl)
        code, out = _cli(monkeypatch, client, "moves", "roll-back", str(ids[0]), "--nothing-was-published")
        assert code == 0, out
    assert (_move(ctl, ids[0]).state, _frozen(ctl)) == ("rolled_back", False)


def test_a_held_move_is_published_by_the_command_on_either_database(frozen_move, monkeypatch):
    """The publish's transaction (the held row read under a row lock) on PostgreSQL too: a move held as a seal holds
    one (its target grew past the end recorded at the freeze), published as the documented repair does."""
    api, _mover, ids, member, ends, _keep, _fail_over = frozen_move
    ctl = api.controller
    _applying_every_view_waited_for(monkeypatch, ctl, member)
    with ctl.session() as s:
        s.execute(update(MoveRow).where(MoveRow.id == ids[0]).values(state="held", held_for="target_grew"))
        s.commit()
    ends[("c2", "t", 0)] = 50
    assert [m["id"] for m in api.get("/v1/moves", params={"state": "held"}).json()] == ids
    refused = api.post(f"/v1/moves/{ids[0]}/roll-back", json={"nothing_was_published": True})
    assert refused.status_code == 409 and "is 50, 0 when it was held" in refused.json()["detail"]
    answer = api.post(f"/v1/moves/{ids[0]}/publish", json={"seal": 100, "target_start": 0})
    assert answer.status_code == 200 and answer.json()["state"] == "sealed", answer.text
    assert Mover(ctl).sweep() == ids
    assert _segments(ctl) == [("c1", 0, 100, 0), ("c2", 0, None, 100)] and not _frozen(ctl)

