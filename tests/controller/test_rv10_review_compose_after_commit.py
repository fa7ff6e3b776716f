"""Reviewer rv10 on s33-fix9 (`Composed.next_version`, `_version_holding`, `_version_served_or_owed`,
`_owe_predecessors_version`, `PhysicalDeletions.served_topics`): defects found, each a test that fails on s33-fix9.
Not fixed here."""

from __future__ import annotations

import contextlib

from controller.compose_review_helpers import restarted_after_losing_held_views
from controller.test_compose_after_commit import _lost_every_race
from fedkafka.controller.errors import Conflict
from fedkafka.controller.service import ANY_SECRET


# DEFECT (low, rv10): `compose_after_commit` reads `Composed.next_version` (`_newest_held(0, served) + 1`) BEFORE its
# compose tries, not once it failed. A floor learned while the compose runs (a proxy's heartbeat reporting the view it
# holds, which the database lost: `_countable`) is not in it, though the next view is numbered past that floor
# (`compose`): the route answers a version the proxies already hold, without the change, and a caller waiting for it
# (the proxy answering a Kafka client, `controller_calls`; the role's drain with wait, `lagging`) is released at once
# by a view that does not hold it. Likeliest just when it bites: a controller restarted on a database that lost its
# last views (a failover) before the proxies' first heartbeats, its composes slow and failing meanwhile. Reading the
# number after the failure, under the compose lock (`_newest_held` then), would pass the floor (rv9's first defect,
# for a floor learned during the compose rather than before it).
def test_rv10_a_floor_learned_while_the_routes_compose_fails_is_passed_by_its_answer(make_api, monkeypatch):
    nodes, p3, held, restarted = restarted_after_losing_held_views(make_api)  # no proxy has reported to it yet
    ctl = restarted.controller

    def proxy_reports_while_the_compose_fails():
        """The route's compose, slow while the database fails over: a proxy's heartbeat reports the view it holds
        meanwhile (its own compose fails too), then the route's compose gives up."""
        monkeypatch.setattr(ctl, "compose", _lost_every_race)
        with contextlib.suppress(Conflict):  # the heartbeat's compose past the floor fails as well
            ctl.heartbeat(p3, held, {}, ANY_SECRET)
        assert ctl._version_floor == held  # the floor is learned
        _lost_every_race()

    monkeypatch.setattr(ctl, "compose", proxy_reports_while_the_compose_fails)
    resp = restarted.post(f"/v1/proxies/{nodes['p1']}/drain")
    assert resp.status_code == 200, resp.text  # committed and answered
    answered = resp.json()["view_version"]
    monkeypatch.undo()
    ctl.lease_round()  # composing again: the view holding the drain is numbered past the floor
    assert ctl.view.version > held
    assert answered > held, (
        f"answered view {answered}, which the proxies hold already (they hold {held}) without the drain; the view "
        f"holding it is {ctl.view.version}")
