"""Review rvapi: client rules (docs/DESIGN.md §3.4: exact rule, then the longest prefix, then pool `default`).
Two rules of one match and pattern with different pools are both accepted; which one routes the client is
decided by the rules' names (the first in name order), so an operator's new rule answered 200 `changed: true`
can have no effect at all, silently."""

from __future__ import annotations


def test_a_second_rule_for_the_same_client_id_is_refused_or_takes_effect(make_api):
    api = make_api()
    api.put("/v1/client-rules/a-old", json={"match": "exact", "pattern": "billing", "pool": "old"}).raise_for_status()
    added = api.put("/v1/client-rules/z-new", json={"match": "exact", "pattern": "billing", "pool": "new"})
    routed = api.get("/v1/proxies", params={"client_id": "billing"}).json()["pool"]
    assert added.status_code == 409 or routed == "new", (added.status_code, added.json(), routed)
