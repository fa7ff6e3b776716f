"""Member secrets: a heartbeat (the lease renewal and the view ack it carries) counts only for the proxy that
registered the member id. Every proxy host holds the service token; a member id is in the view and the status,
so the token alone must not let one host renew or ack for another (docs/DESIGN.md §5.2, "Member secrets")."""

from __future__ import annotations

import hashlib
import secrets
import time

import pytest
from fastapi.testclient import TestClient

from controller.service_members import SECRET_HEADER, registration, service_clients
from fedkafka.controller.models import ProxyRow


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    """Factory: a controller on a copy of the migrated database (or on `database`, a restart), service token on."""
    yield from service_clients(tmp_path, migrated_sqlite)


def _applied(api: TestClient, member: int) -> int:
    """The applied version the database holds for `member` (what a move's ack wait reads)."""
    api.controller.flush_heartbeats()
    with api.controller.session() as s:
        return s.get(ProxyRow, member).applied_version


def test_a_heartbeat_for_another_proxys_member_id_is_refused(make_client):
    """Proxy b holds the service token and a's member id (the view lists it): its heartbeat as a would keep a
    listed after it died and ack views for it that it never applied."""
    api = make_client()
    a = api.post("/v1/proxies", json=registration("a", 9092)).json()
    b = api.post("/v1/proxies", json=registration("b", 9093)).json()
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
    a = api.post("/v1/proxies", json=registration("a", 9092)).json()
    with api.controller.session() as s:
        s.get(ProxyRow, a["member_id"]).secret_hash = None
        s.commit()
    restarted = make_client(api.database)  # forgets the hash it cached at the registration
    beat = {"applied_version": 0, "load": {}}
    assert restarted.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat).status_code == 200
    again = restarted.post("/v1/proxies", json=registration("a", 9092)).json()
    assert restarted.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat).status_code == 403
    assert restarted.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat,
                          headers={SECRET_HEADER: again["member_secret"]}).status_code == 200


def test_an_unknown_member_is_told_to_register_not_refused(make_client):
    api = make_client()
    answer = api.post("/v1/proxies/4242/heartbeat", json={"applied_version": 0, "load": {}},
                      headers={SECRET_HEADER: "whatever"})
    assert answer.status_code == 404, answer.text


def _lease_runs_out(api: TestClient, member: int) -> None:
    """The member's lease has run out (its proxy died a lease ago): what the database says of it."""
    api.controller.flush_heartbeats()
    with api.controller.session() as s:
        s.get(ProxyRow, member).lease_expires = time.time() - 1
        s.commit()


def test_a_live_member_with_a_secret_is_not_registered_again_without_it(make_client):
    """Another holder of the service token registering as a live proxy (same instance id and address) would get
    a fresh secret and renew and ack as it until the real proxy's next registration took it back (a ping-pong).
    Refused (409, naming when the lease ends), with the secret of another member too; the real proxy's member
    and secret stay and its heartbeats go on acking (docs/DESIGN.md §5.2, like KRaft's
    DUPLICATE_BROKER_REGISTRATION)."""
    api = make_client()
    a = api.post("/v1/proxies", json=registration("a", 9092)).json()
    b = api.post("/v1/proxies", json=registration("b", 9093)).json()
    for headers in ({}, {SECRET_HEADER: b["member_secret"]}, {SECRET_HEADER: "guess"}):
        # nor as an old proxy
        for body in (registration("a", 9092), {**registration("a", 9092), "member_secret": False}):
            impostor = api.post("/v1/proxies", json=body, headers=headers)
            assert impostor.status_code == 409, impostor.text
            assert "live lease until" in impostor.json()["detail"]
            assert SECRET_HEADER in impostor.json()["detail"]
    version = api.controller.view.version
    beat = api.post(f"/v1/proxies/{a['member_id']}/heartbeat", json={"applied_version": version, "load": {}},
                    headers={SECRET_HEADER: a["member_secret"]})
    assert beat.status_code == 200, beat.text
    assert _applied(api, a["member_id"]) == version
    failover = make_client(api.database)  # the database's hash and lease, not this controller's memory, decide
    assert failover.post("/v1/proxies", json=registration("a", 9092)).status_code == 409


def test_a_live_member_registers_again_with_its_own_secret(make_client):
    """The same process registering again (a heartbeat refused in a race, 403/404) presents the secret it holds:
    it gets the member again and keeps that secret (a proxy before proxy-chosen secrets presents the one a
    registration drew for it: it takes the answered one, the same)."""
    api = make_client()
    a = api.post("/v1/proxies", json=registration("a", 9092)).json()
    again = api.post("/v1/proxies", json=registration("a", 9092), headers={SECRET_HEADER: a["member_secret"]})
    assert again.status_code == 200, again.text
    assert again.json()["member_id"] == a["member_id"] and again.json()["member_secret"] == a["member_secret"]
    beat = {"applied_version": 0, "load": {}}
    assert api.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat).status_code == 403
    assert api.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat,
                    headers={SECRET_HEADER: again.json()["member_secret"]}).status_code == 200


def test_a_registration_holds_the_member_to_the_secret_the_proxy_chose(make_client):
    """A proxy of this release chooses its secret once per process and sends it with its registration: the
    controller stores its hash and answers it back. A registration whose answer was lost (committed, never
    received) is sent again with the same secret and taken at once, its heartbeats count; a registration with
    another secret (another process) is refused while the lease is live; a secret too short to be one the proxy
    drew is not taken (the controller draws one, as for a proxy that sends none)."""
    api = make_client()
    chosen = secrets.token_urlsafe(32)
    first = api.post("/v1/proxies", json=registration("a", 9092), headers={SECRET_HEADER: chosen})
    assert first.status_code == 200, first.text
    member = first.json()["member_id"]
    assert first.json()["member_secret"] == chosen
    with api.controller.session() as s:
        assert s.get(ProxyRow, member).secret_hash == hashlib.sha256(chosen.encode()).hexdigest()
    retried = api.post("/v1/proxies", json=registration("a", 9092), headers={SECRET_HEADER: chosen})  # answer lost
    assert retried.status_code == 200, retried.text
    assert retried.json()["member_id"] == member and retried.json()["member_secret"] == chosen
    version = api.controller.view.version
    beat = api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": version, "load": {}},
                    headers={SECRET_HEADER: chosen})
    assert beat.status_code == 200, beat.text
    assert _applied(api, member) == version
    another = api.post("/v1/proxies", json=registration("a", 9092), headers={SECRET_HEADER: secrets.token_urlsafe(32)})
    assert another.status_code == 409, another.text
    assert another.json()["kafka_error"] == "DUPLICATE_BROKER_REGISTRATION"
    short = api.post("/v1/proxies", json=registration("b", 9093), headers={SECRET_HEADER: "short"})
    assert short.status_code == 200, short.text
    assert short.json()["member_secret"] not in (None, "short")


def test_a_member_whose_lease_ran_out_is_registered_by_a_new_process(make_client):
    """A restarted proxy (a new process, no secret) registers once its previous run's lease has run out; the
    previous run's secret no longer counts."""
    api = make_client()
    a = api.post("/v1/proxies", json=registration("a", 9092)).json()
    assert api.post("/v1/proxies", json=registration("a", 9092)).status_code == 409
    _lease_runs_out(api, a["member_id"])
    restarted = api.post("/v1/proxies", json=registration("a", 9092))
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["member_id"] == a["member_id"]
    beat = {"applied_version": 0, "load": {}}
    assert api.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat,
                    headers={SECRET_HEADER: a["member_secret"]}).status_code == 403
    assert api.post(f"/v1/proxies/{a['member_id']}/heartbeat", json=beat,
                    headers={SECRET_HEADER: restarted.json()["member_secret"]}).status_code == 200
