"""One active controller per database (fedkafka/controller/leadership.py, docs/DESIGN.md §3.6): the leader row,
its takeover, the fencing of a controller that lost it, the standby's answers, and the clients' following."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from fedkafka.controller import coordination, db
from fedkafka.controller.app import create_app
from fedkafka.controller.errors import Conflict, Unavailable
from fedkafka.controller.leadership import Leadership, NotLeader
from fedkafka.controller.models import ClusterRow, SegmentRow
from fedkafka.controller.moves import Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.controllers import ControllerList, active_hint
from fedkafka.view.model import shadow_topic
from fedkafka.view.rebalance import Move


@pytest.fixture
def sessions(db_url):
    engine = db.make_engine(db_url)
    db.migrate(engine)
    yield db.session_factory(engine)
    engine.dispose()


def _active(lead: Leadership) -> Leadership:
    assert lead.try_acquire()
    lead.active = True
    return lead


def test_one_holder_at_a_time_and_a_takeover_only_once_the_row_expired(sessions):
    a = Leadership(sessions, "http://a:1", lease_s=0.5)
    b = Leadership(sessions, "http://b:1", lease_s=0.5)
    assert a.try_acquire() and a.term == 1
    assert not b.try_acquire() and b.active_url == "http://a:1"
    assert a.try_acquire()  # renewing
    time.sleep(0.6)
    assert b.try_acquire() and b.term == 2  # a new term
    assert not a.try_acquire() and a.active_url == "http://b:1"


def test_a_restarted_controller_on_its_own_port_takes_its_row_back_at_once(sessions):
    """It holds the port the row names, so the process that wrote the row is gone: no lease to wait out."""
    old = Leadership(sessions, "http://a:1", lease_s=60)
    assert old.try_acquire()
    other = Leadership(sessions, "http://b:1", lease_s=60, owns_url=True)
    assert not other.try_acquire()
    restarted = Leadership(sessions, "http://a:1", lease_s=60, owns_url=True)
    assert restarted.try_acquire() and restarted.term == 2


def test_a_controller_that_lost_the_row_commits_no_move_step(make_api, db_url, recording_kafka_class):
    """Split brain: the old active controller, paused past its lease, wakes up in the middle of a move. Its next
    transition (here the freeze) must not commit: the new active controller owns the move now."""
    api = make_api()
    ctl = api.controller
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    ctl.leadership = _active(Leadership(ctl.session, "http://old:1", lease_s=0.3))
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    time.sleep(0.4)
    assert Leadership(ctl.session, "http://new:1", lease_s=30).try_acquire()
    with pytest.raises(NotLeader, match="another controller took over"):
        mover.run(ids)
    assert mover.counts(ids) == {"planned": 1}  # not frozen, not rolled back: left to the new active one
    assert not api.get("/v1/topics/t").json()["chains"][0]["frozen"]


def _drained_chain(make_api, recording_kafka_class):
    """p0 of topic t: c1 [0, 10) -> c2 [0, 5) -> c3 active; every physical log emptied by retention."""

    class Emptied(recording_kafka_class):
        def log_offsets(self, cluster, bootstrap, partitions):
            return {(t, p): (10, 10) for t, p in partitions}

    api = make_api(kafka=Emptied())
    ctl = api.controller
    for cid in ("c1", "c2", "c3"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092", "coordination": cid == "c3"}
                ).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 1, "placement": "blocks"}).raise_for_status()
    with ctl.session() as s:
        (first,) = s.scalars(select(SegmentRow).where(SegmentRow.topic == "t"))
        assert first.cluster == "c1"
        first.phys_end = 10
        s.add(SegmentRow(topic="t", partition=0, seq=1, cluster="c2", physical_topic="t", physical_partition=0,
                         phys_start=0, phys_end=5, logical_base=10))
        s.add(SegmentRow(topic="t", partition=0, seq=2, cluster="c3", physical_topic="t", physical_partition=0,
                         phys_start=0, phys_end=None, logical_base=15))
        s.commit()
    ctl.compose()
    return api, ctl


def _segments(ctl) -> list[tuple[int, str, int | None]]:
    with ctl.session() as s:
        return [(r.seq, r.cluster, r.phys_end) for r in s.scalars(select(SegmentRow).order_by(SegmentRow.seq))]


def test_a_controller_that_lost_the_row_drops_no_segment_and_changes_no_cluster(make_api, recording_kafka_class):
    """Split brain: the old active controller wakes up in a decommission's drain, or between two of its state changes,
    or in a coordination move. None of its writes commits: the new active controller owns those runs now."""
    api, ctl = _drained_chain(make_api, recording_kafka_class)
    engine = WorkflowEngine(ctl)
    before = _segments(ctl)
    ctl.leadership = _active(Leadership(ctl.session, "http://old:1", lease_s=0.3))
    time.sleep(0.4)
    assert Leadership(ctl.session, "http://new:1", lease_s=30).try_acquire()
    with pytest.raises(NotLeader, match="another controller took over"):
        engine._drop_drained("c1", "retention")
    assert _segments(ctl) == before
    with pytest.raises(NotLeader, match="another controller took over"):
        ctl.set_cluster_state("c1", "read_only")
    resp = api.post("/v1/clusters/c1/state", json={"state": "read_only"})  # lost during a request: 503, unchanged
    assert resp.status_code == 503 and "not the active controller" in resp.json()["detail"], resp.text
    with pytest.raises(NotLeader, match="another controller took over"):
        engine.coordination._freeze("c3")
    with pytest.raises(NotLeader, match="another controller took over"):
        engine.coordination._switch("c3", "c2")
    written = []
    ctl.kafka.commit_offsets = lambda *args: written.append(args) or []
    with pytest.raises(NotLeader, match="another controller took over"):
        engine.coordination.write("c2", {"g": [(shadow_topic("t"), 0, 5, -1, "")]})
    assert written == []  # its older copy of the offsets is not written over the new coordinator's commits
    ctl.leadership = None  # read what is committed
    clusters = {c["id"]: c for c in api.get("/v1/clusters").json()}
    assert clusters["c1"]["state"] == "active"
    with ctl.session() as s:
        rows = {r.id: (r.coordination, r.commits_frozen) for r in s.scalars(select(ClusterRow))}
    assert rows == {"c1": (False, False), "c2": (False, False), "c3": (True, False)}


def test_a_coordination_write_stops_once_the_target_holds_the_groups(make_api, recording_kafka_class):
    """A controller that is still the active one but whose run of a coordination move was finished by another run
    (a resume after it paused) writes no older copy over the commits made on the new coordinator since."""
    _api, ctl = _drained_chain(make_api, recording_kafka_class)  # c3 holds the groups
    engine = WorkflowEngine(ctl)
    written = []
    ctl.kafka.commit_offsets = lambda *args: written.append(args) or []
    with pytest.raises(Conflict, match="c3 holds the consumer groups already"):
        engine.coordination.write("c3", {"g": [(shadow_topic("t"), 0, 5, -1, "")]})
    assert written == []
    engine.coordination.write("c2", {"g": [(shadow_topic("t"), 0, 5, -1, "")]})
    assert [args[2:] for args in written] == [("g", [(shadow_topic("t"), 0, 5, -1, "")])]


def _refused_once(ctl, meanwhile) -> list[tuple]:
    """Kafka refuses the first OffsetCommit (a shadow partition without a leader yet) and `meanwhile()` happens
    during it; every later one is written. Returns the writes."""
    written: list[tuple] = []
    calls = []

    def commit(cluster, bootstrap, group, parts):
        calls.append(group)
        if len(calls) == 1:
            meanwhile()
            return [(t, p) for t, p, *_ in parts]
        written.append((cluster, group, parts))
        return []

    ctl.kafka.commit_offsets = commit
    return written


def _switch_to(ctl, target: str) -> None:
    """Another run (the one that resumed the move) switched: `target` holds the groups."""
    with ctl.session() as s:
        s.execute(update(ClusterRow).values(coordination=False))
        s.execute(update(ClusterRow).where(ClusterRow.id == target).values(coordination=True))
        s.commit()


def test_a_refused_coordination_write_is_not_retried_once_the_target_holds_the_groups(make_api,
                                                                                      recording_kafka_class):
    """The first write of a group is refused; while the controller waits to retry, another run resumed the move,
    switched to the target and consumers committed there. Before, only a group's first attempt was checked: the
    retry wrote the older copy over those commits and the groups went back."""
    _api, ctl = _drained_chain(make_api, recording_kafka_class)  # c3 holds the groups; the copy goes to c2
    engine = WorkflowEngine(ctl)
    written = _refused_once(ctl, lambda: _switch_to(ctl, "c2"))
    with pytest.raises(Conflict, match="c2 holds the consumer groups already"):
        engine.coordination.write("c2", {"g": [(shadow_topic("t"), 0, 5, -1, "")]})
    assert written == []


def test_a_refused_coordination_write_is_not_retried_by_a_controller_that_lost_the_row(make_api,
                                                                                      recording_kafka_class):
    """The first write of a group is refused; while the controller waits to retry, it loses the leader row (paused
    past its lease, another took over). Its retry writes nothing: the new active controller owns the move."""
    _api, ctl = _drained_chain(make_api, recording_kafka_class)
    engine = WorkflowEngine(ctl)
    ctl.leadership = _active(Leadership(ctl.session, "http://old:1", lease_s=0.3))

    def taken_over() -> None:
        time.sleep(0.4)
        assert Leadership(ctl.session, "http://new:1", lease_s=30).try_acquire()

    written = _refused_once(ctl, taken_over)
    with pytest.raises(NotLeader, match="another controller took over"):
        engine.coordination.write("c2", {"g": [(shadow_topic("t"), 0, 5, -1, "")]})
    assert written == []


def test_a_refused_coordination_write_is_written_again(make_api, recording_kafka_class, monkeypatch):
    """The ordinary case: refused once (a shadow partition without a leader yet), checked again, written."""
    _api, ctl = _drained_chain(make_api, recording_kafka_class)
    engine = WorkflowEngine(ctl)
    checks = []
    real = engine.coordination._still_moving_to
    monkeypatch.setattr(engine.coordination, "_still_moving_to",
                        lambda target, freeze=None: checks.append(target) or real(target, freeze))
    monkeypatch.setattr(coordination, "time", SimpleNamespace(monotonic=time.monotonic, sleep=lambda _s: None,
                                                              time=time.time))
    written = _refused_once(ctl, lambda: None)
    engine.coordination.write("c2", {"g": [(shadow_topic("t"), 0, 5, -1, "")]})
    assert written == [("c2", "g", [(shadow_topic("t"), 0, 5, -1, "")])] and checks == ["c2", "c2"]


def test_a_coordination_write_paused_past_its_patience_is_not_retried(make_api, recording_kafka_class, monkeypatch):
    """A refused write, then the controller pauses (while it waits to retry) for longer than the write's patience.
    Before, it still tried once more after the pause and only then looked at the deadline."""
    _api, ctl = _drained_chain(make_api, recording_kafka_class)
    engine = WorkflowEngine(ctl)
    now = [0.0]

    def pause(seconds: float) -> None:
        now[0] += seconds + 60  # the wait to retry, and a pause of a minute

    monkeypatch.setattr(coordination, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=pause, time=time.time))
    written = _refused_once(ctl, lambda: None)
    with pytest.raises(Unavailable, match="offsets of group 'g' not written to c2: 1 partitions refused"):
        engine.coordination.write("c2", {"g": [(shadow_topic("t"), 0, 5, -1, "")]}, patience_s=30)
    assert written == []


def _lost_row(ctl) -> tuple[Leadership, Leadership]:
    """(old, new): `old` held the row, then `new` took it over once it expired; `old` does not know yet."""
    old = _active(Leadership(ctl.session, "http://old:1", lease_s=0.3))
    time.sleep(0.4)
    return old, _active(Leadership(ctl.session, "http://new:1", lease_s=30))


def test_a_controller_that_lost_the_row_records_no_run(make_api, recording_kafka_class):
    """Split brain at a run's start: the new active controller took over and resumed what was running (nothing);
    the old one, not aware yet, starts a failover (its auto-failover loop, or a request it let through). Before, its
    transaction recorded the run, then the run's first save failed: a run `running` that no controller drives,
    returned to every failover of that cluster while auto-failover skipped the cluster for good."""

    class Kafka(recording_kafka_class):
        def log_offsets(self, cluster, bootstrap, partitions):
            return {tp: (0, 0) for tp in partitions}

    api = make_api(kafka=Kafka())
    ctl = api.controller
    for cid in ("c1", "c2", "c3"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092", "coordination": cid == "c3"}
                ).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 3, "placement": "blocks"}).raise_for_status()
    api.kafka.down.add("c2")
    ctl.scan_once()
    old, new = _lost_row(ctl)
    ctl.leadership = old
    with pytest.raises(NotLeader, match="another controller took over"):
        WorkflowEngine(ctl).start("failover", "c2")
    ctl.leadership = new
    engine = WorkflowEngine(ctl)
    assert engine.runs() == []  # nothing recorded
    run = engine.wait(engine.start("failover", "c2")["id"], timeout=60)  # the active one fails c2 over
    assert run["state"] == "done" and run["moved"] >= 1, run["error"]
    assert api.get("/v1/clusters/c2").json()["state"] == "read_only"


def test_a_controller_that_lost_the_row_adds_no_partition(make_api):
    """An expanding scale-up's partitions are a workflow write like the others (docs/DESIGN.md §3.6)."""
    api = make_api()
    ctl = api.controller
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    ctl.leadership, _new = _lost_row(ctl)
    with pytest.raises(NotLeader, match="another controller took over"):
        WorkflowEngine(ctl)._add_partitions("t", 2, 1, "c2")
    assert api.get("/v1/topics/t").json()["partitions"] == 2


def test_a_drain_deletes_the_segments_it_judged_drained_not_the_ones_now_at_their_place(make_api,
                                                                                         recording_kafka_class):
    """The view this controller serves still shows c1's segment, which another controller (the active one, before
    this one took the row back) already dropped: the drain must not delete what is now the head (c2's segment,
    whose records are still read) in its place."""
    _api, ctl = _drained_chain(make_api, recording_kafka_class)
    with ctl.session() as s:  # the other controller's drop; this one's view is not composed again
        s.execute(delete(SegmentRow).where(SegmentRow.cluster == "c1"))
        s.commit()
    assert [s.cluster for s in ctl.view.topics["t"].partitions[0].segments] == ["c1", "c2", "c3"]
    WorkflowEngine(ctl)._drop_drained("c1", "retention")
    assert _segments(ctl) == [(1, "c2", 5), (2, "c3", None)]


def test_a_standby_answers_503_naming_the_active_one_and_healthz_says_which_it_is(db_url, recording_kafka_class):
    from fedkafka.controller.service import Controller, Settings

    active = Controller(Settings(db_url=db_url), kafka=recording_kafka_class())
    assert Leadership(active.session, "http://active:1", lease_s=60).try_acquire()
    standby = Controller(Settings(db_url=db_url), kafka=recording_kafka_class())
    lead = Leadership(standby.session, "http://standby:1", lease_s=60)
    assert not lead.try_acquire()
    app = create_app(standby, "tok", background=False, leadership=lead)
    with TestClient(app) as client:
        assert client.get("/v1/status").status_code == 401  # the token first: a standby tells strangers nothing
        res = client.get("/v1/status", headers={"Authorization": "Bearer tok"})
        assert res.status_code == 503 and res.headers["x-fedkafka-active"] == "http://active:1"
        assert res.json()["active"] == "http://active:1"
        health = client.get("/healthz").json()
        assert health["active"] is False and health["active_url"] == "http://active:1"
        assert health["role"] == "standby"
    standby.stop()
    active.stop()


def test_clients_follow_the_named_active_controller_or_the_next_one():
    ctls = ControllerList("http://a:1/, http://b:1,http://c:1")
    assert ctls.current == "http://a:1"
    assert ctls.failed("http://a:1", "http://c:1") == "http://c:1"  # a standby named the active one
    assert ctls.failed("http://a:1") == "http://c:1"  # a late report of the same failure moves nothing
    assert ctls.failed("http://c:1", "http://elsewhere:1") == "http://a:1"  # not ours: the next in the list
    with pytest.raises(ValueError):
        ControllerList(" , ")


def test_the_active_hint_is_read_from_a_standby_answer_only():
    import httpx

    request = httpx.Request("GET", "http://b:1/v1/view")
    standby = httpx.Response(503, headers={"x-fedkafka-active": "http://a:1"}, request=request)
    assert active_hint(httpx.HTTPStatusError("503", request=request, response=standby)) == "http://a:1"
    other = httpx.Response(500, request=request)
    assert active_hint(httpx.HTTPStatusError("500", request=request, response=other)) is None
    assert active_hint(httpx.ConnectError("refused", request=request)) is None
