"""Member secrets under the documented upgrade order (playbooks/upgrade.yml: controllers before proxies). A proxy
of a release before member secrets ignores the answer's secret and heartbeats without one: a registration through
an upgraded controller (its lease ran out during the controller's restart, or any re-registration) must not give
its member a secret it will never present, or the proxy holds no lease until it is upgraded. A proxy that asks
for a secret (`member_secret: true`, every proxy of this release) is held to it (docs/DESIGN.md §5.2)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controller.conftest import clients_on_migrated_copies
from fedkafka.controller.models import ProxyRow
from fedkafka.controllers import MEMBER_SECRET_HEADER

TOKEN = "upgrade-token"
BEAT = {"applied_version": 0, "load": {}}


def _old_proxy(instance: str, port: int) -> dict:
    """A registration as a proxy before member secrets sends it: no `member_secret` field."""
    return {"instance_id": instance, "host": "127.0.0.1", "port": port, "role": "both", "pool": "p1"}


def _new_proxy(instance: str, port: int) -> dict:
    return {**_old_proxy(instance, port), "member_secret": True}


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    """Factory: a controller on a copy of the migrated database, or on `database` (a restart, a failover)."""
    yield from clients_on_migrated_copies(tmp_path, migrated_sqlite, TOKEN, {"Authorization": f"Bearer {TOKEN}"})


def _stored_hash(api: TestClient, member: int) -> str | None:
    with api.controller.session() as s:
        return s.get(ProxyRow, member).secret_hash


def test_a_proxy_before_member_secrets_registering_with_an_upgraded_controller_keeps_its_lease(make_client):
    """Its registration (no `member_secret` field) stores no hash: its heartbeats, which carry no secret, renew
    as before, through this controller and through one that never saw the registration."""
    api = make_client()
    old = api.post("/v1/proxies", json=_old_proxy("old", 9092))
    assert old.status_code == 200, old.text
    member = old.json()["member_id"]
    beat = api.post(f"/v1/proxies/{member}/heartbeat", json=BEAT)
    assert beat.status_code == 200, beat.text
    assert _stored_hash(api, member) is None
    assert old.json().get("member_secret") is None  # nothing it could present
    failover = make_client(api.database)
    assert failover.post(f"/v1/proxies/{member}/heartbeat", json=BEAT).status_code == 200


def test_a_proxy_that_asks_for_a_secret_is_held_to_it(make_client):
    """A registration with `member_secret: true` (every proxy of this release): a heartbeat for its member id
    without the secret, or with another member's, is refused, through this controller and after a failover."""
    api = make_client()
    a = api.post("/v1/proxies", json=_new_proxy("a", 9092)).json()
    b = api.post("/v1/proxies", json=_new_proxy("b", 9093)).json()
    assert a["member_secret"] and b["member_secret"]
    member = a["member_id"]
    for client in (api, make_client(api.database)):
        assert client.post(f"/v1/proxies/{member}/heartbeat", json=BEAT).status_code == 403
        forged = client.post(f"/v1/proxies/{member}/heartbeat", json=BEAT,
                             headers={MEMBER_SECRET_HEADER: b["member_secret"]})
        assert forged.status_code == 403, forged.text
        own = client.post(f"/v1/proxies/{member}/heartbeat", json=BEAT,
                          headers={MEMBER_SECRET_HEADER: a["member_secret"]})
        assert own.status_code == 200, own.text


def test_an_old_proxys_member_upgraded_in_place_is_held_to_the_secret_from_its_first_new_registration(make_client):
    """The same instance registered by an old proxy, then by its upgraded release (which asks): from then on a
    heartbeat without the secret is refused, the old registration's freedom does not linger."""
    api = make_client()
    member = api.post("/v1/proxies", json=_old_proxy("a", 9092)).json()["member_id"]
    assert api.post(f"/v1/proxies/{member}/heartbeat", json=BEAT).status_code == 200
    upgraded = api.post("/v1/proxies", json=_new_proxy("a", 9092)).json()
    assert upgraded["member_id"] == member
    assert api.post(f"/v1/proxies/{member}/heartbeat", json=BEAT).status_code == 403
    assert api.post(f"/v1/proxies/{member}/heartbeat", json=BEAT,
                    headers={MEMBER_SECRET_HEADER: upgraded["member_secret"]}).status_code == 200
