"""The CLI's admin client across a controller failover (docs/DESIGN.md §3.6): while every controller answers 503
(one taking over, the standbys not knowing the active one yet or naming the one taking over or the one that died),
a command asks again after short pauses, within the client's timeout, rather than failing at once; with nothing
showing a takeover under way (unreachable controllers only, a standby naming one not listed) it fails as before.
Over real HTTP stand-ins (tests/ansible/test_modules_ha.py); the client's clock is a fake: no test waits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedkafka.controller.client import AdminClient, AdminError
from fedkafka.controllers import ACTIVE_HEADER
from fedkafka.kafka.cluster import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ansible"))
from test_modules_ha import TAKING_OVER, WaitClock, http_controller  # noqa: F401 (a fixture)

TOKEN = "cli-takeover-token-0123456789"


@pytest.fixture
def wait_clock(monkeypatch) -> WaitClock:
    clock = WaitClock()
    monkeypatch.setattr("fedkafka.controller.client.time", clock)
    return clock


def test_a_command_issued_while_a_controller_takes_over_waits_for_it(http_controller, wait_clock):  # noqa: F811
    """Before: "HTTP 503: controller ... is taking over" at once, though it takes writes seconds later."""
    standby = http_controller(503, {ACTIVE_HEADER: ""}, {"detail": "standby; the active one is not known yet"})
    taking = http_controller(*TAKING_OVER, then=[TAKING_OVER, (200, {}, [{"name": "t1"}])])
    with AdminClient(f"{standby},{taking}", TOKEN) as api:
        assert api.topics() == [{"name": "t1"}] and api.url == taking
    assert http_controller.seen[taking] == [("GET", "/v1/topics")] * 3 and len(wait_clock.pauses) == 2


def test_a_write_refused_by_the_takeover_gate_is_sent_again_once_it_is_done(http_controller, wait_clock):  # noqa: F811
    """The gate's 503 (and NotLeader's) commits nothing: the write goes again to the controller taking over."""
    taking = http_controller(*TAKING_OVER, then=[(200, {}, {"cluster": {"id": "c9"}, "changed": True})])
    standby = http_controller(503, {ACTIVE_HEADER: taking}, {"detail": "standby"})
    with AdminClient(f"{standby},{taking}", TOKEN) as api:
        assert api.put_cluster("c9", "h:1") == {"cluster": {"id": "c9"}, "changed": True}
    assert http_controller.seen[taking] == [("PUT", "/v1/clusters/c9")] * 2


def test_a_standby_naming_the_dead_active_controller_is_asked_again_until_it_took_over(http_controller,  # noqa: F811
                                                                                       wait_clock):
    """Before: "controller at <dead> unreachable", while the standby was about to take over (its row's lease)."""
    dead = f"http://127.0.0.1:{free_port()}"
    standby = http_controller(503, {ACTIVE_HEADER: dead}, {"detail": "standby"},
                              then=[TAKING_OVER, (200, {}, {"view_version": 3})])
    with AdminClient(f"{dead},{standby}", TOKEN) as api:
        assert api.status() == {"view_version": 3} and api.url == standby
    assert len(http_controller.seen[standby]) == 3


def test_a_takeover_that_does_not_finish_fails_the_command_after_its_timeout(http_controller, wait_clock):  # noqa: F811
    taking = http_controller(*TAKING_OVER)
    with AdminClient(taking, TOKEN, timeout=20) as api, pytest.raises(AdminError) as failed:
        api.status()
    assert f"no controller took over within 20s ({taking} is taking over)" in str(failed.value), str(failed.value)
    assert failed.value.status == 503 and len(http_controller.seen[taking]) > 2 and sum(wait_clock.pauses) <= 20


def test_no_failover_in_sight_fails_at_once(http_controller, wait_clock):  # noqa: F811
    dead = f"http://127.0.0.1:{free_port()}"
    standby = http_controller(503, {ACTIVE_HEADER: "http://elsewhere:8780"}, {"detail": "standby"})
    with AdminClient(dead, TOKEN) as api, pytest.raises(AdminError, match="unreachable"):
        api.status()
    with AdminClient(f"{standby},{dead}", TOKEN) as api, pytest.raises(AdminError, match="unreachable"):
        api.status()
    assert http_controller.seen[standby] == [("GET", "/v1/status")] and wait_clock.pauses == []
