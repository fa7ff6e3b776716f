"""Review rvapi: the service token every proxy holds is the only thing a registration proves. Anyone holding
it (any proxy host, the name service) re-registers a live proxy's instance id with another host, port or pool,
and the next view sends that proxy's clients (and their SASL exchanges) there: an operator-level change (client
routing, docs/DESIGN.md §11) done with the service token."""

from __future__ import annotations

import shutil

import pytest

from controller.test_token_scopes import AS_SERVICE, OPERATOR_TOKEN, SERVICE_TOKEN, _started_client
from fedkafka.controller.scopes import Tokens

LIVE = {"instance_id": "proxy-a", "host": "10.0.0.1", "port": 9092, "role": "both", "pool": "p1"}


@pytest.fixture
def make_client(tmp_path, migrated_sqlite):
    clients = []

    def _make():
        database = tmp_path / f"c{len(clients)}.db"
        shutil.copyfile(migrated_sqlite, database)
        clients.append(_started_client(database, Tokens(OPERATOR_TOKEN, SERVICE_TOKEN)))
        return clients[-1]

    yield _make
    for client in clients:
        client.__exit__(None, None, None)


def test_a_live_proxys_address_is_not_taken_over_by_another_registration_of_its_instance_id(make_client):
    api = make_client()
    first = api.post("/v1/proxies", json=LIVE, headers=AS_SERVICE)
    assert first.status_code == 200, first.text
    hijack = api.post("/v1/proxies", json={**LIVE, "host": "10.6.6.6", "port": 19092}, headers=AS_SERVICE)
    listed = [(p["host"], p["port"]) for p in api.get("/v1/view", headers=AS_SERVICE).json()["proxies"]]
    assert hijack.status_code == 409 or listed == [("10.0.0.1", 9092)], (hijack.status_code, listed)


def test_a_live_proxys_pool_is_not_changed_by_the_service_token(make_client):
    api = make_client()
    assert api.post("/v1/proxies", json=LIVE, headers=AS_SERVICE).status_code == 200
    moved = api.post("/v1/proxies", json={**LIVE, "pool": "attacker-pool"}, headers=AS_SERVICE)
    pools = [p["pool"] for p in api.get("/v1/view", headers=AS_SERVICE).json()["proxies"]]
    assert moved.status_code == 409 or pools == ["p1"], (moved.status_code, pools)
