"""Reviewer rvfix10 on s34-fix10 (`compose_after_commit`, `Composed.version`, `_owe_new_version`,
`_version_served_or_owed`, `_owe_predecessors_version`, `PhysicalDeletions.served_topics`): defects found, each a
strict-xfail test that failed on s34-fix10 for the reason it names; fixed in s34-fixrv10b (markers removed)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controller.compose_review_helpers import active_controller, holds_the_row
from controller.conftest import AUTH, TOKEN
from controller.test_compose_after_commit import _lost_every_race, _lost_the_row
from controller.test_leader_fencing_writes import ACL, PROXY, _federation
from controller.test_lost_commits import _lose_last_views
from controller.test_startup_compose_fenced import LEASE_MS
from fedkafka.cli.admin import _open_controller
from fedkafka.controller.app import create_app
from fedkafka.controller.leadership import NotLeader
from fedkafka.controller.service import Controller, Settings
from fedkafka.controllers import ACTIVE_HEADER


@pytest.fixture
def leader(db_url, clock):
    """The active controller (as tests/controller/test_startup_compose_fenced.py's): cluster c1 registered."""
    ctl = active_controller(db_url, LEASE_MS)
    yield ctl
    ctl.stop()


def _gated(second: Controller) -> TestClient:
    """`second`'s API behind its leadership's gate, as `fedkafka controller` serves it (no background loops)."""
    return TestClient(create_app(second, TOKEN, background=False, leadership=second.leadership), headers=AUTH)


def _refused_while_taking_over(api: TestClient, method: str, path: str, body: dict) -> None:
    """The gate answers 503 naming the controller itself (the clients retry), the route not run."""
    resp = getattr(api, method)(path, json=body)
    assert resp.status_code == 503 and resp.headers[ACTIVE_HEADER] == "http://b:1", resp.text
    assert "taking over" in resp.json()["detail"]


# DEFECT (low-medium, rvfix10; fixed in s34-fixrv10b): not composed, a route answers `_newest_held(0, served_before)
# + 1` (`Controller._owe_new_version`), `served_before` being this controller's *published* view read before its
# compose tried. That view is the database's only in a controller that has composed or refreshed since: a standby
# serves the view it loaded at its start (no lease loop runs before `become_active`), and `Leadership.run` sets
# `active` before `on_active` runs `become_active`'s `_refresh_from_db`, so StandbyGate admitted routes in between.
# A route there whose compose failed (a takeover is when the database is failing: its compose reads the stored view,
# `_refresh_from_db`, then loses) answered one past the stale view: a version the proxies (and now this controller)
# already hold without the change; the role's drain with wait and the proxy answering a Kafka client are released at
# once. Fixed: a controller taking over takes writes only once `become_active` has served the database's view and
# composed it (`Controller.took_over`): until then the gate answers 503 naming it and `check_leader` refuses.
def test_rvfix10_a_route_answered_as_a_standby_takes_over_is_past_the_view_the_proxies_hold(leader, db_url, clock,
                                                                                             monkeypatch):
    second = _open_controller(Controller, Settings(db_url=db_url, lease_ms=LEASE_MS), db_url, wait=False)
    try:
        stale = second.view.version  # what the standby loaded at its start
        leader.put_cluster("c2", "c2:9092", None)  # the leader goes on composing meanwhile ...
        leader.put_cluster("c3", "c3:9092", None)
        held = leader.view.version  # ... and the proxies take its views
        assert held >= stale + 2 and second.view.version == stale
        holds_the_row(second)  # the old leader's row ran out; become_active not run yet

        def compose_losing_every_race():
            """The real compose reads the stored view (and serves it), then loses its compare-and-set each time."""
            second._refresh_from_db()
            _lost_every_race()

        acl = {**ACL, "principal": "User:yan"}
        api = _gated(second)
        _refused_while_taking_over(api, "post", "/v1/acls", {"acls": [acl]})
        with pytest.raises(NotLeader, match="taking over"):
            second.create_acls([acl])  # in process too
        assert api.get("/healthz").status_code == 200  # not under /v1/: answered
        assert all(a["principal"] != "User:yan" for a in leader.list_acls({}))  # nothing written
        second.become_active()  # serves the database's view, composes: the gate opens
        monkeypatch.setattr(second, "compose", compose_losing_every_race)
        resp = api.post("/v1/acls", json={"acls": [acl]})
        assert resp.status_code == 200, resp.text
        answered = resp.json()["view_version"]  # committed, not composed
        assert second.view.version >= held  # the view served, without the ACL
        assert answered > second.view.version, (
            f"answered view {answered}, but the proxies hold view {second.view.version} already, without the ACL: a "
            f"caller waiting for {answered} is released at once")
    finally:
        second.stop()


# DEFECT (low, rvfix10; the same window, `_version_served_or_owed`; fixed as above): `put_topic` finding the topic
# as asked (a Kafka client's IncrementalAlterConfigs retried through the proxy) answers the view served unless
# `_new_version_owed` is set. The predecessor committed the config and met NotLeader composing it (its answer, one
# past its view, died with it); in the takeover window the new leader served the view it loaded as a standby and had
# no flag: the repeat answered that stale version, which the proxies' view (the database's, without the config) is
# past already: released at once by a view lacking the change. The window takes no route now; after `become_active`
# its compose holds every committed row, and the repeat answers that view.
def test_rvfix10_a_config_repeated_as_a_standby_takes_over_answers_a_view_holding_it(leader, db_url, clock,
                                                                                     monkeypatch):
    second = _open_controller(Controller, Settings(db_url=db_url, lease_ms=LEASE_MS), db_url, wait=False)
    try:
        leader.put_topic("t", 2, "blocks", {})
        with monkeypatch.context() as m:
            m.setattr(leader, "compose", _lost_the_row)  # the standby takes the row after the config commits
            first = leader.put_topic("t", 2, "blocks", {"retention.ms": "1000"})[2]
        held = leader.view.version  # the proxies' view: without the config
        assert first == held + 1 and "retention.ms" not in dict(leader.view.topics["t"].config)
        holds_the_row(second)
        api = _gated(second)
        retry = {"partitions": 2, "placement": "blocks", "config": {"retention.ms": "1000"}}
        _refused_while_taking_over(api, "put", "/v1/topics/t", retry)
        with pytest.raises(NotLeader, match="taking over"):
            second.put_topic("t", 2, "blocks", {"retention.ms": "1000"})
        second.become_active()
        _topic, changed, again = second.put_topic("t", 2, "blocks", {"retention.ms": "1000"})  # the retry
        assert not changed
        assert again > held, (
            f"the repeat answered view {again}, but the proxies hold view {held} already, without the config (the "
            f"predecessor answered {first})")
        assert dict(second.view.topics["t"].config)["retention.ms"] == "1000"  # the view answered holds it
        assert second.view.version == again
    finally:
        second.stop()


# DEFECT (low, rvfix10; needs a database that lost its last view; fixed in s34-fixrv10b): `compose` cleared
# `_predecessor_owed` on ANY publish (service.py:362), also one numbered below the version the predecessor answered. A
# controller restarted on a database that lost its last view (stored S-1, the proxies hold S) composes at its start
# (service.py:214) before any proxy reported: the predecessor's change committed after the loss makes the view differ,
# so it publishes S, the version the proxies hold with other content; their heartbeats then report S, which `_countable`
# takes as this controller's S (no floor learned, service.py:1002), and `_predecessor_owed` is gone: the predecessor's
# answer (S+1, past the view it served) never comes while nothing else changes, and the proxies never take the change
# (they hold an S without it). The predecessor-owed view is exactly the one meant to come "once every live proxy has
# reported" (DESIGN §5.1); the start's compose defeats it. Fix: keep `_predecessor_owed` until the one-lease window has
# passed (clear it only in `_owe_predecessors_version`, and number that view past every version reported), or compose
# nothing at the start past the stored view while its floor is unknown (§3.3). Fixed the first way: a publish clears
# `_new_version_owed` only; `_predecessor_owed` is cleared by `_owe_predecessors_version` alone.
def test_rvfix10_a_restart_on_a_database_that_lost_a_view_reaches_the_version_its_predecessor_answered(
        make_api, monkeypatch):
    api = make_api()
    nodes = _federation(api)
    p3 = api.post("/v1/proxies", json={"instance_id": "p3", **PROXY}).json()["member_id"]
    before = api.controller
    held = before.view.version  # the proxies hold it ...
    for member in (nodes["p1"], p3):
        api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": held, "load": {}}).raise_for_status()
    before.flush_heartbeats()
    _lose_last_views(before, held - 1)  # ... and the database fails over, losing it (the last view only)
    monkeypatch.setattr(before, "compose", _lost_every_race)  # the database still failing the view's write
    answered = api.post("/v1/acls", json={"acls": [{**ACL, "principal": "User:yan"}]}).json()["view_version"]
    assert answered == held + 1  # committed on the new primary; past the view it served
    monkeypatch.undo()
    restarted = make_api()  # the operator restarts it (the regression is said loudly: restart clears it)
    ctl = restarted.controller
    for member in (nodes["p1"], p3):  # the proxies report the view they hold
        restarted.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": held, "load": {}})
    listed, _until = ctl._inherited
    ctl._inherited = (listed, 0.0)  # one lease later: every live proxy has reported
    for _ in range(3):  # its lease rounds; nothing else changes
        ctl.lease_round()
    assert ctl.view.version >= answered, (
        f"the predecessor answered {answered}; the restarted controller serves {ctl.view.version}, numbered as the "
        f"view the proxies hold without the ACL, and no later view comes")
