"""Reviewer rv4 on s33-ctl: the deregistration's 503 contract. The stopping proxy passes a 503'd deregistration on
to the next controller and treats it as "nothing written" (`ControllerViewSource._deregister_walk`, docs/DESIGN.md
§5.2: "one that lost the leader row ... answers 503 from the transaction, having written nothing"). Fails on
s33-ctl (no fix on this branch)."""

from __future__ import annotations

import pytest

from controller.service_members import own_secret, registration, service_clients
from fedkafka.controller.errors import Conflict
from fedkafka.controller.models import ProxyRow


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    yield from service_clients(tmp_path, migrated_sqlite)


def test_rv4_a_deregistration_answered_503_has_written_nothing(make_client, monkeypatch):
    """Defect [doc; data only with a later 4xx]: `deregister_proxy` commits, then composes the view; `compose`
    suppresses only NotLeader, and after 20 lost compare-and-set rounds it raises Conflict(status=503) ("could not
    commit the view: too many concurrent writers"), which the API answers 503. The member's lease and fence are
    already ended, yet the proxy's walk takes that 503 as "not the active controller, nothing written" and goes on
    to the next controller; if that one's answer is a 4xx the saved produce deadline is written back although the
    fence at the controller ended (what §4.7's restart-without-a-controller then produces on is no longer counted
    by moves). The docs (§5.2, the walk's docstring) say every 503 wrote nothing: here it did."""
    api = make_client()
    member = api.post("/v1/proxies", json=registration("a", 9092), headers=own_secret(1)).json()["member_id"]
    with api.controller.session() as s:
        before = (s.get(ProxyRow, member).lease_expires, s.get(ProxyRow, member).fence_expires)

    def lost_every_race():  # what `Controller.compose` raises after 20 lost compare-and-set rounds
        raise Conflict("could not commit the view: too many concurrent writers", status=503)

    monkeypatch.setattr(api.controller, "compose", lost_every_race)
    answer = api.post(f"/v1/proxies/{member}/deregister", headers=own_secret(1))
    with api.controller.session() as s:
        after = (s.get(ProxyRow, member).lease_expires, s.get(ProxyRow, member).fence_expires)
    if answer.status_code == 503:  # the proxy takes it as "nothing written" and may restore its deadline
        assert after == before, f"answered 503 ({answer.json()['detail']}) but the fence ended: {before} -> {after}"
