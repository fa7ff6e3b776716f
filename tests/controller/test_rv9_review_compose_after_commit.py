"""Reviewer rv9 on s33-fix6 / main 76ab903 (`Controller.compose_after_commit`, `Composed.served_before`,
`_version_holding`, `_new_version_owed`): defects found, each a test that fails on main. Not fixed here."""

from __future__ import annotations

import pytest

from controller.compose_review_helpers import federation_with_a_down_node, restarted_after_losing_held_views
from controller.test_compose_after_commit import _lost_every_race, _lost_the_row
from controller.test_leader_fencing_writes import ACL, PROXY, _federation


# DEFECT (low-medium, rv9): not composed, `_version_holding` answers `served_before + 1`, ignoring the version floor
# the normal path respects (`compose`: `top = max(_version_floor, acked, current.version)`, the next view numbered
# `top + 1`, docs/DESIGN.md §3 durability: "never a version a proxy holds with other content"). After the database
# lost its last views (a failover to an asynchronous replica, the very time its connections fail), a restarted
# controller serves an older version than the proxies hold; a proxy's heartbeat sets the floor, and the compose past
# it fails (the heartbeat's own, `_renewed`, then the route's). The route answers served+1, a version the proxies
# already hold with other content: the proxy answering a Kafka client (`controller_calls`: waits while its view is
# below the answered version) and the role's drain with wait (`lagging`: applied < version) are released at once by
# a view that does not hold the change. Composed, the same route would answer floor + 1.
@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/v1/proxies/{p1}/drain", None),
    ("post", "/v1/acls", {"acls": [{**ACL, "principal": "User:yan"}]}),
    ("post", "/v1/admin/topics", {"name": "fresh", "partitions": 2}),
], ids=["drain", "acls created", "admin create"])
def test_rv9_a_version_answered_while_compose_fails_is_past_every_view_a_proxy_holds(make_api, monkeypatch,
                                                                                      method, path, body):
    nodes, _p3, held, restarted = restarted_after_losing_held_views(make_api)
    ctl = restarted.controller
    monkeypatch.setattr(ctl, "compose", _lost_every_race)  # the database failing its writes now and then
    restarted.post(f"/v1/proxies/{nodes['p1']}/heartbeat", json={"applied_version": held, "load": {}})
    resp = getattr(restarted, method)(path.format(**nodes), **({} if body is None else {"json": body}))
    assert resp.status_code in (200, 201), resp.text  # committed and answered
    answered = resp.json()["view_version"]
    assert answered > held, (
        f"answered view {answered}, which the proxies hold already (they hold {held}) without the change: a caller "
        f"waiting for it is released at once")
    monkeypatch.undo()
    ctl.lease_round()
    assert ctl.view.version > held  # the next view is numbered past the floor, as the answer should have been


# DEFECT (low, rv9): `_version_holding` answers `served_before` for an unchanged row ("an unchanged row needs no new
# view"), and `put_topic`'s unchanged path answers `self.view.version`. But a row unchanged now may be a change
# committed by an earlier request whose compose failed, not composed yet (the same request sent again: a client or
# the proxy retrying, a Kafka client's CreateAcls / IncrementalAlterConfigs retried). The compose of the repeat
# failing too (or not tried: `put_topic`), it answers the version served, which does not hold the change, though the
# first answer named one past it: the caller is released by a view without the drain, the ACL, the config.
# (`_new_version_owed` is set by every failure, so answering served_before + 1 whenever not composed is reached.)
@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/v1/proxies/{p1}/drain", None),
    ("post", "/v1/acls", {"acls": [{**ACL, "principal": "User:yan"}]}),
    ("post", "/v1/admin/topics/t/config", {"ops": [{"name": "retention.ms", "value": "1000"}]}),
], ids=["drain", "acls created", "admin config"])
def test_rv9_a_repeat_of_a_change_not_composed_yet_answers_a_version_holding_it(make_api, monkeypatch,
                                                                                method, path, body):
    api = make_api()
    nodes = _federation(api)
    api.post("/v1/proxies", json={"instance_id": "p3", **PROXY}).raise_for_status()  # keeps p1 drainable
    ctl = api.controller
    served = ctl.view.version
    monkeypatch.setattr(ctl, "compose", _lost_every_race)
    kwargs = {} if body is None else {"json": body}
    first = getattr(api, method)(path.format(**nodes), **kwargs)
    assert first.status_code in (200, 201), first.text
    assert first.json()["view_version"] == served + 1  # committed, not composed: one past the view served
    again = getattr(api, method)(path.format(**nodes), **kwargs)  # the same request again, not composed yet
    assert again.status_code in (200, 201), again.text
    assert ctl.view.version == served  # the view served does not hold the change
    assert again.json()["view_version"] > served, (
        f"the repeat answered view {again.json()['view_version']}, the one served, which does not hold the change "
        f"the first answer waited for ({first.json()['view_version']})")


# DEFECT (low, rv9; the NotLeader takeover the fixer noted): `_new_version_owed` is per process. A drain of a node
# whose lease ran out (not listed: the view does not change) answered while the compose met NotLeader names
# served+1; this controller re-executes as a standby (`restart_as_standby`), its flag gone, and the controller that
# took the row composes the same content (`become_active`, the lease rounds: `nxt is current`), so that version never
# comes while nothing else changes. Bounded, not a hang: the role's drain with wait fails after its `timeout` (120 s)
# with "timed out after 120s waiting for every proxy applying view N", the drain done all the same (a rerun sees it
# draining and passes). The proxy never forwards drains. (A change that alters the view is composed by the new
# controller at S+1 or past it: reached.)
def test_rv9_a_down_nodes_drain_answered_when_the_row_was_lost_names_a_version_the_new_controller_reaches(
        make_api, monkeypatch):
    api = make_api()
    down = federation_with_a_down_node(api)  # p3, its lease ran out
    ctl = api.controller
    monkeypatch.setattr(ctl, "compose", _lost_the_row)  # another controller took the row after the commit
    resp = api.post(f"/v1/proxies/{down}/drain")
    assert resp.status_code == 200, resp.text
    answered = resp.json()["view_version"]
    taken_over = make_api().controller  # the controller that took the row (composes at its start, as become_active)
    taken_over.lease_round()
    assert taken_over.view.version == ctl.view.version  # no new view before it heard the proxies (§3.3: the floor)
    listed, _until = taken_over._inherited
    taken_over._inherited = (listed, 0.0)  # one lease later (fix9): every live proxy has reported its view by then
    for _ in range(3):  # its lease rounds; nothing else changes
        taken_over.lease_round()
    assert taken_over.view.version >= answered, (
        f"answered {answered}, but the active controller serves {taken_over.view.version} and no later view comes")


# DEFECT (low, rv9): `delete_topic` not composed skips `deletions.attempt` (rv6: the view served still routes to the
# physical topics), but the scans do not keep that order either: `scan_once` composes WITHOUT the write lock, then
# `deletions.retry` takes it. A deletion committed in between (the route holds the write lock from its plan, the
# Kafka topic ids asked of the clusters, to its compose; the scan's retry waits on it) whose compose fails leaves
# the retry to read the new pending rows and delete the physical topics at once, while the view served (and every
# proxy's) still lists the topic: produce and fetch routed there meet a missing topic until the owed compose lands.
def test_rv9_a_scan_racing_a_deletion_not_composed_deletes_no_physical_topic_the_view_served_lists(make_api,
                                                                                                  monkeypatch):
    api = make_api()
    _federation(api)
    ctl = api.controller
    physical = {key for key in api.kafka.created if key[1] == "t"}
    assert physical
    retry = ctl.deletions.retry

    def deletion_committed_meanwhile(bootstrap):
        """The scan composed; the deletion route had the write lock: it commits, its compose fails, then the
        scan's retry gets the lock."""
        monkeypatch.setattr(ctl, "compose", _lost_every_race)
        resp = api.delete("/v1/topics/t")
        assert resp.status_code in (200, 204), resp.text
        retry(bootstrap)

    monkeypatch.setattr(ctl.deletions, "retry", deletion_committed_meanwhile)
    ctl.scan_once()
    assert "t" in ctl.view.topics  # the view served still routes t to its physical topics
    assert {key for key in api.kafka.created if key[1] == "t"} == physical, (
        "physical topics of t deleted on Kafka by the scan's retry while the view served still lists t")
