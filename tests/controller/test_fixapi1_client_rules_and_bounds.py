"""Client rules: one rule per match kind and pattern (another name for the pair is a 409 naming the rule that has
it), `DELETE /v1/client-rules/{name}`; the API's string bounds are the columns' (a value at the column's length
is stored, one more is a 422), and a NUL anywhere in a path is a 422 before any query (PostgreSQL refuses NUL in
any text: a get or delete by such a name was a 500)."""

from __future__ import annotations

import pytest

from controller.test_review_rvapi_inputs import PROXY, _answering
from fedkafka.controller.api.common import stored_length
from fedkafka.controller.api.views import INSTANCE_ID_MAX
from fedkafka.controller.models import ClientRuleRow, ProxyRow
from fedkafka.controller.service import MAX_WORKER


def _pool_of(api, client_id: str) -> str:
    return api.get("/v1/proxies", params={"client_id": client_id}).json()["pool"]


def test_a_second_rule_for_a_pattern_is_refused_naming_the_rule_that_has_it(make_api):
    api = make_api()
    api.put("/v1/client-rules/a-old", json={"match": "exact", "pattern": "billing", "pool": "old"}).raise_for_status()
    refused = api.put("/v1/client-rules/z-new", json={"match": "exact", "pattern": "billing", "pool": "new"})
    assert refused.status_code == 409 and "a-old" in refused.json()["detail"], refused.text
    assert [r["name"] for r in api.get("/v1/client-rules").json()] == ["a-old"]
    # a prefix rule of the same text is another pair; the rule itself takes a new pool
    assert api.put("/v1/client-rules/z-new", json={"match": "prefix", "pattern": "billing", "pool": "p"}).is_success
    moved = api.put("/v1/client-rules/a-old", json={"match": "exact", "pattern": "billing", "pool": "new"})
    assert moved.json()["changed"] is True and _pool_of(api, "billing") == "new"


def test_a_deleted_rule_no_longer_routes_and_its_pattern_is_free_again(make_api):
    api = make_api()
    api.put("/v1/client-rules/r1", json={"match": "prefix", "pattern": "app-", "pool": "apps"}).raise_for_status()
    assert _pool_of(api, "app-1") == "apps"
    assert api.delete("/v1/client-rules/r1").status_code == 204
    assert _pool_of(api, "app-1") == "default" and api.get("/v1/client-rules").json() == []
    missing = api.delete("/v1/client-rules/r1")
    assert missing.status_code == 404 and "r1" in missing.json()["detail"]
    assert api.put("/v1/client-rules/r2", json={"match": "prefix", "pattern": "app-", "pool": "b"}).is_success


def test_values_at_the_columns_lengths_are_stored_and_one_more_is_refused(make_api):
    api = _answering(make_api())
    name, pattern = "n" * stored_length(ClientRuleRow.name), "p" * stored_length(ClientRuleRow.pattern)
    pool = "q" * stored_length(ClientRuleRow.pool)
    assert api.put(f"/v1/client-rules/{name}", json={"match": "exact", "pattern": pattern, "pool": pool}).is_success
    assert api.put(f"/v1/client-rules/{name}n", json={"match": "exact", "pattern": "x", "pool": "p"}).status_code == 422
    too_long = api.put("/v1/client-rules/r", json={"match": "exact", "pattern": pattern + "p", "pool": "p"})
    assert too_long.status_code == 422 and "pattern" in too_long.text


def test_the_longest_instance_id_leaves_room_for_the_last_workers_row(make_api):
    api = _answering(make_api())
    longest = "i" * INSTANCE_ID_MAX
    for worker in (0, MAX_WORKER):
        assert api.post("/v1/proxies", json={**PROXY, "instance_id": longest, "worker": worker}).is_success
    assert len(f"{longest}/w{MAX_WORKER}") == stored_length(ProxyRow.instance_id)
    assert api.post("/v1/proxies", json={**PROXY, "instance_id": longest + "i"}).status_code == 422


@pytest.mark.parametrize("method,path", [("get", "/v1/topics/t%00"), ("delete", "/v1/topics/t%00"),
                                         ("delete", "/v1/users/u%00"), ("delete", "/v1/client-rules/r%00"),
                                         ("get", "/v1/clusters/c%00")])
def test_a_nul_in_a_path_is_refused_before_any_query(make_api, method, path):
    api = _answering(make_api())
    resp = getattr(api, method)(path)
    assert resp.status_code == 422 and "NUL" in resp.json()["detail"], (resp.status_code, resp.text[:200])
