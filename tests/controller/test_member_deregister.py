"""Deregistration: a cleanly stopped proxy process ends its member's lease and fence at once (docs/DESIGN.md §5.2,
§4.9 "deregistered"), only with the secret of the member's latest registration, so a restart registers at once
and a move stops counting it, without ever ending a successor's lease."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from controller.conftest import clients_on_migrated_copies
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.controller.scopes import Tokens

OPERATOR_TOKEN, SERVICE_TOKEN = "op-token-1", "svc-token-2"
AS_SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
SECRET_HEADER = "X-Fedkafka-Member-Secret"


def _proxy(instance: str, port: int) -> dict:
    return {"instance_id": instance, "host": "127.0.0.1", "port": port, "role": "both", "pool": "p1",
            "member_secret": True}


def _own_secret(n: int) -> dict:
    """A process's own secret, as a proxy of this release chooses it (32 characters or more)."""
    return {SECRET_HEADER: f"process-{n}-".ljust(43, "s")}


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    yield from clients_on_migrated_copies(tmp_path, migrated_sqlite, Tokens(OPERATOR_TOKEN, SERVICE_TOKEN), AS_SERVICE)


def _members_counted(api: TestClient, needed: int) -> int:
    """How many members a move's ack wait for view `needed` counts (`Mover.await_version`'s progress), and raise
    MoveFailed when one of them has not acked it (a short wait: the test asserts who is counted, not a time)."""
    counted: list[int] = []
    Mover(api.controller).await_version(needed, lambda _phase, _done, total: counted.append(total), timeout=0.1)
    return counted[-1]


def _deregister(api: TestClient, member: int, headers: dict):
    return api.post(f"/v1/proxies/{member}/deregister", headers=headers)


def test_a_restart_registers_at_once_after_its_previous_run_deregistered(make_client):
    """Without a deregistration a restarted process (a new secret) is refused while the old lease is live (409,
    `_refuse_live_member`); after it, registered at once, and the old process's secret renews nothing."""
    api = make_client()
    old = api.post("/v1/proxies", json=_proxy("a", 9092), headers=_own_secret(1)).json()
    assert api.post("/v1/proxies", json=_proxy("a", 9092), headers=_own_secret(2)).status_code == 409
    gone = _deregister(api, old["member_id"], _own_secret(1))
    assert gone.status_code == 200, gone.text
    assert gone.json()["deregistered"] is True
    assert all(p.node_id != old["node_id"] for p in api.controller.view.proxies)  # dropped from the view now
    new = api.post("/v1/proxies", json=_proxy("a", 9092), headers=_own_secret(2))
    assert new.status_code == 200, new.text
    assert new.json()["member_id"] == old["member_id"]
    assert any(p.node_id == old["node_id"] for p in api.controller.view.proxies)
    beat = {"applied_version": 0, "load": {}}
    assert api.post(f"/v1/proxies/{old['member_id']}/heartbeat", json=beat,
                    headers=_own_secret(1)).status_code == 403


def test_a_move_no_longer_counts_a_deregistered_member(make_client):
    """A silent member is counted by a move's ack wait until its fence plus the grace (15 min by default); a
    deregistered one attested it has no write out and sends none again: not counted at all."""
    api = make_client()
    a = api.post("/v1/proxies", json=_proxy("a", 9092), headers=_own_secret(1)).json()
    b = api.post("/v1/proxies", json=_proxy("b", 9093), headers=_own_secret(2)).json()
    needed = api.controller.view.version
    api.post(f"/v1/proxies/{b['member_id']}/heartbeat", json={"applied_version": needed, "load": {}},
             headers=_own_secret(2))
    with pytest.raises(MoveFailed, match="did not apply"):
        _members_counted(api, needed)  # a has not acked: the move waits for it
    assert _deregister(api, a["member_id"], _own_secret(1)).status_code == 200
    assert _members_counted(api, needed) == 1  # b alone, acked: the wait ends
    with api.controller.session() as s:
        row = s.get(ProxyRow, a["member_id"])
        assert row.lease_expires <= time.time() and row.applied_version < needed


def test_a_wrong_or_missing_secret_deregisters_nothing(make_client):
    """Another token holder, or a previous run's late deregistration arriving after its successor registered
    (a new secret), must not end the live member's lease and fence: 409, the member still counted and listed."""
    api = make_client()
    a = api.post("/v1/proxies", json=_proxy("a", 9092), headers=_own_secret(1)).json()
    b = api.post("/v1/proxies", json=_proxy("b", 9093), headers=_own_secret(2)).json()
    for headers in ({}, _own_secret(2), {SECRET_HEADER: "guess"}):
        refused = _deregister(api, a["member_id"], headers)
        assert refused.status_code == 409, refused.text
        assert SECRET_HEADER in refused.json()["detail"]
    assert _deregister(api, b["member_id"], _own_secret(2)).status_code == 200
    restarted = api.post("/v1/proxies", json=_proxy("b", 9093), headers=_own_secret(3))
    assert restarted.status_code == 200, restarted.text
    late = _deregister(api, b["member_id"], _own_secret(2))  # the previous run's, answered late: superseded
    assert late.status_code == 409, late.text
    listed = {p.node_id for p in api.controller.view.proxies}
    assert {a["node_id"], b["node_id"]} <= listed
    with pytest.raises(MoveFailed):
        _members_counted(api, api.controller.view.version)  # neither acked this view: both still counted


def test_a_repeat_answers_success_and_an_unknown_member_404(make_client):
    """Idempotent for the process that deregistered (its answer lost, it may send again): the same answer. An
    unknown member has nothing to end: 404, as its heartbeat would be. A member registered without a secret (a
    proxy before member secrets) cannot prove it is the one stopping: refused, its lease runs out."""
    api = make_client()
    a = api.post("/v1/proxies", json=_proxy("a", 9092), headers=_own_secret(1)).json()
    first = _deregister(api, a["member_id"], _own_secret(1))
    again = _deregister(api, a["member_id"], _own_secret(1))
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert _deregister(api, 4242, _own_secret(1)).status_code == 404
    old = api.post("/v1/proxies", json={**_proxy("o", 9094), "member_secret": False}).json()
    refused = _deregister(api, old["member_id"], _own_secret(1))
    assert refused.status_code == 409 and "without a member secret" in refused.json()["detail"]
