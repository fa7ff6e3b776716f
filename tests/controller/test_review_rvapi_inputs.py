"""Review rvapi: inputs the API models accept that the config database then refuses with a 500 (PostgreSQL
enforces the columns' lengths and refuses NUL characters; SQLite does neither). A caller's bad input must be
a 4xx naming the field, not an internal error."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from controller.conftest import AUTH

PROXY = {"instance_id": "p1", "host": "127.0.0.1", "port": 9092, "role": "both", "pool": "default"}


def test_client_rule_with_a_long_name_is_refused_as_bad_input(make_api):
    api = _answering(make_api())
    resp = api.put("/v1/client-rules/" + "r" * 200, json={"match": "prefix", "pattern": "app-", "pool": "p"})
    assert resp.status_code in (200, 422), resp.text  # SQLite keeps it; PostgreSQL must not answer 500


def test_client_rule_with_a_long_pattern_is_refused_as_bad_input(make_api):
    api = _answering(make_api())
    resp = api.put("/v1/client-rules/r1", json={"match": "prefix", "pattern": "x" * 300, "pool": "p"})
    assert resp.status_code in (200, 422), resp.text


def test_proxy_registration_with_a_long_pool_is_refused_as_bad_input(make_api):
    api = _answering(make_api())
    resp = api.post("/v1/proxies", json={**PROXY, "pool": "q" * 200})
    assert resp.status_code in (200, 422), resp.text


def test_proxy_registration_with_a_nul_in_its_instance_id_is_refused_as_bad_input(make_api):
    api = _answering(make_api())
    resp = api.post("/v1/proxies", json={**PROXY, "instance_id": "p\x001"})
    assert resp.status_code in (200, 422), resp.text


def _answering(api: TestClient) -> TestClient:
    """The same app, answering a server error as the 500 a caller gets instead of raising it in the test."""
    return TestClient(api.app, headers=AUTH, raise_server_exceptions=False)


ACL = {"resource_type": "TOPIC", "name": "t", "principal": "User:a", "operation": "READ"}
REFUSED_BY_POSTGRESQL = [  # (method, path, body): each answered 500 on PostgreSQL
    ("put", "/v1/clusters/c9", {"bootstrap": "h" * 1100 + ":9092"}),  # ClusterRow.bootstrap is String(1024)
    ("put", "/v1/clusters/c9", {"bootstrap": "h\x00:9092"}),
    ("post", "/v1/acls", {"acls": [{**ACL, "name": "t\x00"}]}),  # a service-token route (a client's CreateAcls)
    ("post", "/v1/acls", {"acls": [{**ACL, "host": "h\x00"}]}),
    ("post", "/v1/workflows", {"kind": "scale_up", "cluster": "cz", "bootstrap": "h\x00:1"}),
    ("post", "/v1/workflows", {"kind": "scale_up", "cluster": "cz", "bootstrap": "h" * 2000 + ":1"}),
    ("post", "/v1/proxies", {**PROXY, "instance_id": "i" * 300}),  # ProxyRow.instance_id is String(256)
    ("post", "/v1/proxies", {**PROXY, "host": "h" * 300}),
    ("put", "/v1/client-rules/r", {"match": "exact", "pattern": "a\x00", "pool": "p"}),
]


@pytest.mark.parametrize("method,path,body", REFUSED_BY_POSTGRESQL)
def test_input_the_database_refuses_is_a_4xx_not_a_500(make_api, method, path, body):
    api = _answering(make_api())
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    resp = getattr(api, method)(path, json=body)
    assert resp.status_code < 500, (resp.status_code, resp.text[:200])
