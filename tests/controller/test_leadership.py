"""One active controller per database (fedkafka/controller/leadership.py, docs/DESIGN.md §3.6): the leader row,
its takeover, the fencing of a controller that lost it, the standby's answers, and the clients' following."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from fedkafka.controller import db
from fedkafka.controller.app import create_app
from fedkafka.controller.leadership import Leadership, NotLeader
from fedkafka.controller.moves import Mover
from fedkafka.controllers import ControllerList, active_hint
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
