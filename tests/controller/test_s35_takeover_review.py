"""Review s35-takeover: a controller taking over (the leader row held, `become_active` not done: the gate answers
`/v1/` 503 naming it) as its operators and callers see it (docs/DESIGN.md §3.6). Each test failed on main for the
reason its comment names; fixed on this branch."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from controller.compose_review_helpers import holds_the_row
from controller.test_s34_rvfix10_review import _gated, leader  # noqa: F401 (a fixture)
from controller.test_startup_compose_fenced import LEASE_MS
from fedkafka.cli.admin import _open_controller
from fedkafka.controller.service import Controller, Settings


def _gauges(api: TestClient) -> dict[str, float]:
    text = api.get("/metrics").text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name in ("fedkafka_controller_active", "fedkafka_controller_taking_over")}


@pytest.fixture
def second(db_url):
    """A controller started as a standby on the leader's database (`fedkafka controller`'s service)."""
    ctl = _open_controller(Controller, Settings(db_url=db_url, lease_ms=LEASE_MS), db_url, wait=False)
    yield ctl
    ctl.stop()


# DEFECT (low, the takeover gate's leftover): taking over, the controller answers every `/v1/` request 503 (the
# clients retry), but `/healthz` said `active: true` and `fedkafka_controller_active` 1: `fedkafka local status`
# named it "(active)", and a takeover that does not finish (`become_active` hanging on the database) showed as a
# healthy active controller, the FedkafkaNoActiveController alert silent. (`/v1/status` was right: 503, as tested
# here.) Fixed: role "taking_over" (and `active: false`) in /healthz, the gauge 0 and fedkafka_controller_taking_over
# 1 until it takes writes.
def test_a_controller_taking_over_does_not_say_it_is_active_before_it_takes_writes(leader, second):  # noqa: F811
    assert second.role() == "standby"
    holds_the_row(second)  # its leadership thread took the row; become_active not run yet
    api = _gated(second)
    status = api.get("/v1/status")
    assert status.status_code == 503 and "taking over" in status.json()["detail"]  # it takes no request yet
    health = api.get("/healthz").json()
    assert (health["active"], health["role"], health["active_url"]) == (False, "taking_over", "http://b:1"), health
    assert _gauges(api) == {"fedkafka_controller_active": 0, "fedkafka_controller_taking_over": 1}
    second.become_active()  # serves the database's view, composes: it takes writes now
    assert api.get("/v1/status").status_code == 200
    health = api.get("/healthz").json()
    assert (health["active"], health["role"]) == (True, "active"), health
    assert _gauges(api) == {"fedkafka_controller_active": 1, "fedkafka_controller_taking_over": 0}
