"""Scoped tokens (fedkafka/controller/scopes.py): the operator token may do everything, the service token only
what proxies and name services do, the routing token only what name services do (403 elsewhere, before a body is
read), no token 401; /metrics behind the service or operator token only with metrics_token_required. Without a
service token nothing changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from controller.conftest import RecordingKafka
from controller.member_secrets import heartbeating_like_a_proxy
from fedkafka.cli.admin import _read_tokens
from fedkafka.controller.api.common import token_dependency
from fedkafka.controller.app import create_app
from fedkafka.controller.errors import ControllerError
from fedkafka.controller.scopes import OPERATOR, ROUTE_SCOPES, ROUTING, SERVICE, Tokens
from fedkafka.controller.service import Controller, Settings

OPERATOR_TOKEN, SERVICE_TOKEN, ROUTING_TOKEN = "op-token-1", "svc-token-2", "routing-token-3"
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
AS_SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
AS_ROUTING = {"Authorization": f"Bearer {ROUTING_TOKEN}"}
ALL_THREE = Tokens(OPERATOR_TOKEN, SERVICE_TOKEN, ROUTING_TOKEN)
PROXY = {"instance_id": "i1", "host": "127.0.0.1", "port": 9092, "role": "both", "pool": "p1"}


def _started_client(database: Path, tokens: Tokens | str, **kwargs) -> TestClient:
    ctl = Controller(Settings(db_url=f"sqlite:///{database}"), kafka=RecordingKafka())
    client = heartbeating_like_a_proxy(TestClient(create_app(ctl, tokens, background=False, **kwargs)))
    client.__enter__()
    return client


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    clients = []

    def _make(tokens: Tokens | str = Tokens(OPERATOR_TOKEN, SERVICE_TOKEN), **kwargs) -> TestClient:
        database = tmp_path / f"c{len(clients)}.db"
        shutil.copyfile(migrated_sqlite, database)
        clients.append(_started_client(database, tokens, **kwargs))
        return clients[-1]

    yield _make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def refusing_client(tmp_path_factory, migrated_sqlite):
    """One controller for a module's requests it must refuse: a refusal writes nothing (checked below by
    test_a_refused_service_request_writes_nothing_and_the_operator_token_still_can)."""
    database = tmp_path_factory.mktemp("refusing") / "c.db"
    shutil.copyfile(migrated_sqlite, database)
    client = _started_client(database, Tokens(OPERATOR_TOKEN, SERVICE_TOKEN))
    yield client
    client.__exit__(None, None, None)


def _concrete(template: str) -> str:
    return (template.replace("{node_id}", "1").replace("{name}", "t1").replace("{cluster_id}", "c1")
            .replace("{run_id}", "1"))


def test_the_service_token_does_what_proxies_and_name_services_do(make_client):
    api = make_client()
    registered = api.post("/v1/proxies", json=PROXY, headers=AS_SERVICE)
    assert registered.status_code == 200, registered.text
    member = registered.json()["member_id"]
    heartbeat = api.post(f"/v1/proxies/{member}/heartbeat", json={"applied_version": 0, "load": {}},
                         headers=AS_SERVICE)
    assert heartbeat.status_code == 200
    assert api.get("/v1/view", headers=AS_SERVICE).json()["proxies"][0]["pool"] == "p1"
    assert api.post("/v1/producer-id-blocks", headers=AS_SERVICE).json()["size"] > 0
    assert api.get("/v1/proxies", params={"client_id": "app"}, headers=AS_SERVICE).status_code == 200


@pytest.mark.parametrize("method,template", sorted(k for k, v in ROUTE_SCOPES.items() if v == OPERATOR))
def test_the_service_token_is_refused_every_operator_route_with_403(refusing_client, method, template):
    resp = refusing_client.request(method, _concrete(template), json={"bootstrap": "x:1"}, headers=AS_SERVICE)
    assert resp.status_code == 403
    assert "service token may not" in resp.json()["detail"] and "operator token" in resp.json()["detail"]


def test_a_refused_service_request_writes_nothing_and_the_operator_token_still_can(make_client):
    api = make_client()
    assert api.put("/v1/clusters/c1", json={"bootstrap": "b:9092"}, headers=AS_SERVICE).status_code == 403
    assert api.get("/v1/clusters", headers=AS_OPERATOR).json() == []
    assert api.put("/v1/clusters/c1", json={"bootstrap": "b:9092"}, headers=AS_OPERATOR).status_code == 200
    assert [c["id"] for c in api.get("/v1/clusters", headers=AS_OPERATOR).json()] == ["c1"]


def test_the_routing_token_reads_the_client_routing_and_nothing_else(make_client):
    """What a name service holds (finding 1 of tests/security/test_s35_rvsecurity_review.py): it cannot grant or
    remove ACLs, delete topics, read the view (users' SCRAM StoredKey and ServerKey) nor register as a proxy."""
    api = make_client(ALL_THREE)
    routing = api.get("/v1/client-routing", headers=AS_ROUTING)
    assert routing.status_code == 200 and "pools" in routing.json(), routing.text
    acl = {"resource_type": "TOPIC", "name": "t1", "pattern_type": "LITERAL", "principal": "User:mallory",
           "host": "*", "operation": "ALL", "permission": "ALLOW"}
    refused = [api.post("/v1/acls", json={"acls": [acl]}, headers=AS_ROUTING),
               api.post("/v1/acls/delete", json={}, headers=AS_ROUTING),
               api.delete("/v1/admin/topics/t1", headers=AS_ROUTING), api.get("/v1/view", headers=AS_ROUTING),
               api.get("/v1/view/stream", headers=AS_ROUTING), api.post("/v1/proxies", json=PROXY, headers=AS_ROUTING),
               api.get("/v1/proxies", params={"client_id": "app"}, headers=AS_ROUTING),
               api.get("/v1/users", headers=AS_ROUTING)]
    assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
    assert "the routing token may not POST /v1/acls" in refused[0].json()["detail"]
    listed = api.get("/v1/acls", headers=AS_OPERATOR)
    assert listed.status_code == 200 and "mallory" not in listed.text  # nothing was granted


def test_a_name_service_still_given_the_service_token_reads_the_client_routing(make_client):
    """The rolling upgrade: controllers get --routing-token-file first, name services switch after."""
    api = make_client(ALL_THREE)
    assert api.get("/v1/client-routing", headers=AS_SERVICE).status_code == 200
    assert api.get("/v1/client-routing", headers=AS_OPERATOR).status_code == 200
    assert make_client().get("/v1/client-routing", headers=AS_ROUTING).status_code == 401  # no routing token


def test_the_controller_refuses_a_routing_token_equal_to_another(tmp_path, capsys):
    files = {name: tmp_path / name for name in ("op", "svc", "routing")}
    for path, token in zip(files.values(), (OPERATOR_TOKEN, SERVICE_TOKEN, ROUTING_TOKEN), strict=True):
        path.write_text(token + "\n")
    assert _read_tokens(files["op"], files["svc"], files["routing"]) == ALL_THREE
    assert _read_tokens(files["op"], None, files["routing"]) == Tokens(OPERATOR_TOKEN, None, ROUTING_TOKEN)
    assert _read_tokens(files["op"], None, None) == Tokens(OPERATOR_TOKEN)  # one token, as before
    for same in ("op", "svc"):
        with pytest.raises(typer.Exit):
            _read_tokens(files["op"], files["svc"], files[same])
        assert "give name services a token of their own" in capsys.readouterr().err


def test_the_service_token_is_refused_before_its_body_is_read(make_client):
    api = make_client(max_body=1024)
    # an over-cap body on an operator route: the scope refusal (403) comes first, not the cap (413)
    assert api.put("/v1/topics/t1", content=b"x" * 5000, headers=AS_SERVICE).status_code == 403


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {SERVICE_TOKEN}"},
                                     {"Authorization": SERVICE_TOKEN}])
def test_no_or_a_wrong_token_is_401(make_client, headers):
    resp = make_client().get("/v1/view", headers=headers)
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"


def test_without_a_service_token_only_the_operator_token_opens_the_api(make_client):
    api = make_client(OPERATOR_TOKEN)
    assert api.get("/v1/view", headers=AS_SERVICE).status_code == 401
    assert api.get("/v1/status", headers=AS_OPERATOR).status_code == 200


def test_metrics_are_open_by_default_and_behind_the_service_or_operator_token_when_required(make_client):
    """The routing token opens GET /v1/client-routing only: not /metrics either (it did, as "any of the tokens")."""
    assert make_client(ALL_THREE).get("/metrics").status_code == 200
    api = make_client(ALL_THREE, metrics_token_required=True)
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", headers=AS_SERVICE).status_code == 200
    assert api.get("/metrics", headers=AS_OPERATOR).status_code == 200
    refused = api.get("/metrics", headers=AS_ROUTING)
    assert refused.status_code == 403, refused.text
    assert "the routing token may not GET /metrics" in refused.json()["detail"]
    assert "fedkafka_view_version" not in refused.text  # no series
    assert api.get("/healthz").status_code == 200  # probes stay open


def test_the_route_dependency_alone_refuses_the_service_token():
    """The second check (without the ASGI guard) reads the matched route's scope."""
    tokens = ALL_THREE
    router = APIRouter(dependencies=[token_dependency(tokens)])
    router.add_api_route("/v1/view", lambda: {"ok": 1}, methods=["GET"])
    router.add_api_route("/v1/topics/{name}", lambda name: {"ok": name}, methods=["PUT"])
    app = FastAPI()
    app.include_router(router)
    app.add_exception_handler(ControllerError, lambda _req, exc: JSONResponse({"detail": str(exc)}, exc.status))
    with TestClient(app) as api:
        assert api.get("/v1/view", headers=AS_SERVICE).status_code == 200
        assert api.get("/v1/view", headers=AS_ROUTING).status_code == 403
        assert api.put("/v1/topics/t1", headers=AS_SERVICE).status_code == 403
        assert api.put("/v1/topics/t1", headers=AS_OPERATOR).status_code == 200
        assert api.put("/v1/topics/t1").status_code == 401


def test_roles():
    tokens = Tokens(OPERATOR_TOKEN, SERVICE_TOKEN)
    assert tokens.role(f"Bearer {OPERATOR_TOKEN}") == OPERATOR
    assert tokens.role(f"bearer {SERVICE_TOKEN}") == SERVICE
    assert tokens.role(f"Bearer {SERVICE_TOKEN}x") is None
    assert tokens.role(None) is None and tokens.role("Bearer ") is None
    assert Tokens(OPERATOR_TOKEN).role(f"Bearer {SERVICE_TOKEN}") is None
    assert ALL_THREE.role(f"Bearer {ROUTING_TOKEN}") == ROUTING and tokens.role(f"Bearer {ROUTING_TOKEN}") is None
    assert ALL_THREE.role(f"Bearer {SERVICE_TOKEN}") == SERVICE and ALL_THREE.role(f"Basic {ROUTING_TOKEN}") is None


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize("which", ["operator", "service", "routing"])
def test_an_empty_or_blank_token_is_refused(which, blank):
    """`Authorization: Bearer ` (or `Bearer ` and blanks) would match it: no credential at all."""
    given = {"operator": OPERATOR_TOKEN, "service": SERVICE_TOKEN, "routing": ROUTING_TOKEN} | {which: blank}
    with pytest.raises(ValueError, match=f"the {which} token is empty"):
        Tokens(**given)
