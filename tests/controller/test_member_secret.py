"""Member secrets: a heartbeat (the lease renewal and the view ack it carries) counts only for the proxy that
registered the member id. Every proxy host holds the service token; a member id is in the view and the status,
so the token alone must not let one host renew or ack for another (docs/DESIGN.md §5.2, "Member secrets")."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controller.conftest import clients_on_migrated_copies
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.scopes import Tokens

OPERATOR_TOKEN, SERVICE_TOKEN = "op-token-1", "svc-token-2"
AS_SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
SECRET_HEADER = "X-Fedkafka-Member-Secret"


def _proxy(instance: str, port: int) -> dict:
    """A registration as this release's proxy sends it: it asks for a member secret (it presents it)."""
    return {"instance_id": instance, "host": "127.0.0.1", "port": port, "role": "both", "pool": "p1",
            "member_secret": True}


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    """Factory: a controller on a copy of the migrated database (or on `database`, a restart), service token on."""
    yield from clients_on_migrated_copies(tmp_path, migrated_sqlite, Tokens(OPERATOR_TOKEN, SERVICE_TOKEN), AS_SERVICE)


def _applied(api: TestClient, member: int) -> int:
    """The applied version the database holds for `member` (what a move's ack wait reads)."""
    api.controller.flush_heartbeats()
    with api.controller.session() as s:
        return s.get(ProxyRow, member).applied_version


def test_a_heartbeat_for_another_proxys_member_id_is_refused(make_client):
    """Proxy b holds the service token and a's member id (the view lists it): its heartbeat as a would keep a
    listed after it died and ack views for it that it never applied."""
    api = make_client()
    a = api.post("/v1/proxies", json=_proxy("a", 9092)).json()
    b = api.post("/v1/proxies", json=_proxy("b", 9093)).json()
    version = api.controller.view.version
    forged = api.post(f"/v1/proxies/{a['member_id']}/heartbeat", json={"applied_version": version, "load": {}},
                      headers={SECRET_HEADER: b.get("member_secret", "")})
    assert forged.status_code == 403, forged.text
    unsigned = api.post(f"/v1/proxies/{a['member_id']}/heartbeat", json={"applied_version": version, "load": {}})
    assert unsigned.status_code == 403, unsigned.text
    assert _applied(api, a["member_id"]) == 0  # no view acked for a


def test_a_member_registered_before_member_secrets_heartbeats_without_one_until_it_registers_again(make_client):
    """A row whose registration predates member secrets (no hash: a controller upgraded under running proxies)
    keeps renewing without a secret; its next registration gives it one, required from then on."""
    api = make_client()
    a = api.post("/v1/proxies", json=_proxy("a", 9092)).json()
    with api.controller.session() as s:
        s.get(ProxyRow, a["member_id"]).secret_hash = None
        s.commit()
    restarted = make_client(api.database)  # forgets the hash it cached at the registration
    beat = {"applied_version": 0, "load": {}}
    assert restarted.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat).status_code == 200
    again = restarted.post("/v1/proxies", json=_proxy("a", 9092)).json()
    assert restarted.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat).status_code == 403
    assert restarted.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat,
                          headers={SECRET_HEADER: again["member_secret"]}).status_code == 200


def test_an_unknown_member_is_told_to_register_not_refused(make_client):
    api = make_client()
    answer = api.post("/v1/proxies/4242/heartbeat", json={"applied_version": 0, "load": {}},
                      headers={SECRET_HEADER: "whatever"})
    assert answer.status_code == 404, answer.text
