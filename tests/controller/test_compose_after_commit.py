"""A write route commits its change, then composes the view. A compose that fails after the commit (its
compare-and-set lost to too many concurrent writers, Conflict 503; the leader row lost, NotLeader; the database
gone) does not undo the commit, so the route answers its normal success, never the 503 that says "nothing was
written"; the view follows at the next lease round (docs/DESIGN.md §5.1, `Controller.compose_after_commit`).
Before, every such route answered 503 with its change committed, and for most of them (a topic, a user, an ACL,
a drain) no round composed the change until an unrelated one did (the scans, only with clusters registered)."""

from __future__ import annotations

import logging

import pytest

from controller.test_held_roll_back_timeout import _held_unread
from controller.test_leader_fencing_writes import ACL, CREDENTIAL, WRITES, _federation, _state
from fedkafka.controller.errors import Conflict
from fedkafka.controller.leadership import NotLeader

COMPOSING_WRITES = [w for w in WRITES if "client-rules" not in w[1]]  # client rules are not in the view


def _lost_every_race():
    raise Conflict("could not commit the view: too many concurrent writers", status=503)


def _lost_the_row():
    raise NotLeader("another controller took over (http://new:1)")


def _composed_later(api, monkeypatch, served: int) -> None:
    """The view did not change at the answer; the next lease round (compose working again) composes the
    committed change, and then nothing is left to compose: the view holds every committed row."""
    ctl = api.controller
    assert ctl.view.version == served
    monkeypatch.undo()
    ctl.lease_round()
    assert ctl.view.version > served
    assert ctl.compose().version == ctl.view.version


@pytest.mark.parametrize(("method", "path", "body"), COMPOSING_WRITES,
                         ids=[f"{m} {p} {b}"[:80] for m, p, b in COMPOSING_WRITES])
def test_a_compose_failing_after_the_commit_answers_the_committed_write(make_api, monkeypatch, caplog,
                                                                        method, path, body):
    api = make_api()
    nodes = _federation(api)
    before = _state(api)
    served = api.controller.view.version
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    kwargs = {} if body is None else {"json": body}
    with caplog.at_level(logging.WARNING, logger="fedkafka.controller.service"):
        resp = getattr(api, method)(path.format(**nodes), **kwargs)
    assert resp.status_code in (200, 201, 204), resp.text
    assert _state(api) != before  # committed
    assert any("committed" in r.getMessage() and "next lease round" in r.getMessage() for r in caplog.records)
    _composed_later(api, monkeypatch, served)


def test_a_topic_put_answered_while_compose_fails_reaches_the_view_at_the_next_round(make_api, monkeypatch):
    api = make_api()
    _federation(api)
    served = api.controller.view.version
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    resp = api.put("/v1/topics/fresh", json={"partitions": 3, "placement": "blocks"})
    assert resp.status_code in (200, 201), resp.text
    assert api.get("/v1/topics/fresh").json()["partitions"] == 3
    assert "fresh" not in api.controller.view.topics
    _composed_later(api, monkeypatch, served)
    assert len(api.controller.view.topics["fresh"].partitions) == 3


def test_a_topic_deletion_answered_while_compose_fails_leaves_the_view_at_the_next_round(make_api, monkeypatch):
    api = make_api()
    _federation(api)
    served = api.controller.view.version
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    resp = api.delete("/v1/topics/t")
    assert resp.status_code in (200, 204), resp.text
    assert api.get("/v1/topics/t").status_code == 404
    assert "t" in api.controller.view.topics
    _composed_later(api, monkeypatch, served)
    assert "t" not in api.controller.view.topics


def test_acls_created_while_compose_fails_reach_the_view_at_the_next_round(make_api, monkeypatch):
    api = make_api()
    _federation(api)
    served = api.controller.view.version
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    resp = api.post("/v1/acls", json={"acls": [{**ACL, "principal": "User:zed"}]})
    assert resp.status_code == 200, resp.text
    assert [b["principal"] for b in resp.json()["created"]] == ["User:zed"]
    assert resp.json()["view_version"] == served + 1  # past the view served, which does not hold them yet
    assert any(b["principal"] == "User:zed" for b in api.get("/v1/acls").json())
    _composed_later(api, monkeypatch, served)
    assert any(b.principal == "User:zed" for b in api.controller.view.acls)


def test_a_cluster_state_set_while_compose_fails_reaches_the_view_at_the_next_round(make_api, monkeypatch):
    api = make_api()
    _federation(api)
    served = api.controller.view.version
    monkeypatch.setattr(api.controller, "compose", _lost_the_row)  # lost after the commit: it counts
    resp = api.post("/v1/clusters/c1/state", json={"state": "read_only"})
    assert resp.status_code == 200, resp.text
    assert api.get("/v1/clusters/c1").json()["state"] == "read_only"
    assert api.controller.view.clusters["c1"].state == "active"
    _composed_later(api, monkeypatch, served)
    assert api.controller.view.clusters["c1"].state == "read_only"


def test_a_proxy_registered_while_compose_fails_is_listed_at_the_next_round(make_api, monkeypatch):
    api = make_api()
    _federation(api)
    served = api.controller.view.version
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    resp = api.post("/v1/proxies", json={"instance_id": "p3", "host": "h", "port": 9, "role": "pproxy"})
    assert resp.status_code == 200, resp.text
    node = resp.json()["node_id"]
    assert all(p.node_id != node for p in api.controller.view.proxies)
    _composed_later(api, monkeypatch, served)
    assert any(p.node_id == node for p in api.controller.view.proxies)


def test_a_user_set_while_compose_fails_reaches_the_view_without_any_cluster(make_api, monkeypatch):
    """No cluster registered: no scan composes (it has nothing to scan); the lease round does."""
    api = make_api()
    served = api.controller.view.version
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    resp = api.put("/v1/users/carol", json={"credentials": [CREDENTIAL]})
    assert resp.status_code in (200, 201), resp.text
    api.controller.scan_once()
    _composed_later(api, monkeypatch, served)
    assert [c.user for c in api.controller.view.credentials] == ["carol"]


def test_a_refusal_before_the_commit_still_answers_it_and_writes_nothing(make_api, monkeypatch):
    """The catch is after the commit only: a Conflict of the change itself is answered 409, nothing written, and
    no compose is owed."""
    api = make_api()
    _federation(api)
    before = _state(api)
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    resp = api.put("/v1/topics/t", json={"partitions": 1, "placement": "blocks"})  # shrinking: refused
    assert resp.status_code == 409, resp.text
    resp = api.post("/v1/clusters/c1/state", json={"state": "active"})  # unchanged: no commit, no compose
    assert resp.status_code == 200, resp.text
    assert _state(api) == before
    served = api.controller.view.version
    api.controller.lease_round()  # nothing owed: compose (still failing) is not called
    assert api.controller.view.version == served


def test_an_unexpected_compose_error_is_not_hidden_but_the_view_still_follows(make_api, monkeypatch):
    """Only the errors a compose meets in operation are answered as success; a bug propagates (500), and the
    committed change is still composed at the next lease round."""
    api = make_api()
    _federation(api)
    served = api.controller.view.version

    def broken():
        raise KeyError("a bug")

    monkeypatch.setattr(api.controller, "compose", broken)
    with pytest.raises(KeyError):
        api.put("/v1/topics/fresh", json={"partitions": 2, "placement": "blocks"})
    assert api.get("/v1/topics/fresh").status_code == 200
    _composed_later(api, monkeypatch, served)
    assert "fresh" in api.controller.view.topics


def test_a_held_move_rolled_back_while_compose_fails_is_unfrozen_in_the_view_at_the_next_round(t_on_c1_c2,
                                                                                                monkeypatch):
    """The operator's roll-back of a held move (`POST /v1/moves/{id}/roll-back`) commits, then composes."""
    api, kafka = t_on_c1_c2
    move_id = _held_unread(api, kafka)
    api.controller.compose()
    served = api.controller.view.version
    assert api.controller.view.chain("t", 0).frozen
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    resp = api.post(f"/v1/moves/{move_id}/roll-back")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "rolled_back"
    assert api.controller.view.chain("t", 0).frozen
    _composed_later(api, monkeypatch, served)
    assert not api.controller.view.chain("t", 0).frozen


@pytest.mark.parametrize(("method", "path", "body", "drained"), [
    ("post", "/v1/proxies/{p1}/drain", None, True),
    ("post", "/v1/proxies/{p2}/undrain", None, False),
    ("post", "/v1/acls", {"acls": [{**ACL, "principal": "User:yan"}]}, None),
    ("post", "/v1/acls/delete", {}, None),
], ids=["drain", "undrain", "acls created", "acls deleted"])
def test_a_version_answered_while_compose_fails_is_one_the_view_holds_the_change_from(make_api, monkeypatch,
                                                                                      method, path, body, drained):
    """A drain's (and an ACL change's) answer names the view version a caller waits for (the role's drain with
    wait, `controller_calls`): answered the served version while the change was not composed, the wait returned
    before any view held it; the version answered must be one only a view holding the change can have."""
    api = make_api()
    nodes = _federation(api)
    served = api.controller.view.version
    monkeypatch.setattr(api.controller, "compose", _lost_every_race)
    resp = getattr(api, method)(path.format(**nodes), **({} if body is None else {"json": body}))
    assert resp.status_code in (200, 201), resp.text
    answered = resp.json()["view_version"]
    assert answered > served
    monkeypatch.undo()
    api.controller.lease_round()
    view = api.controller.view
    assert view.version >= answered
    if drained is not None:
        assert (nodes["p1" if drained else "p2"] in {p.node_id for p in view.proxies}) is not drained
