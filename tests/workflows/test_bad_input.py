"""Workflow requests that are wrong get a clear error and change nothing (real clusters, in-process controller)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fedkafka.controller.app import create_app
from fedkafka.controller.service import Controller, Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path, kafka_clusters):
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'c.db'}", kafka_timeout=2.0))
    with TestClient(create_app(ctl, "t", background=False), headers={"Authorization": "Bearer t"}) as client:
        yield client


def snapshot(api) -> tuple:
    return api.get("/v1/clusters").json(), api.get("/v1/view").json()["version"], api.get("/v1/workflows").json()


@pytest.mark.timeout(120)
def test_bad_workflow_requests_are_refused_and_change_nothing(api, kafka_clusters, unique_name):
    c1, c2, c3 = kafka_clusters
    api.put("/v1/clusters/c1", json={"bootstrap": c1.bootstrap}).raise_for_status()
    api.put(f"/v1/topics/{unique_name}", json={"partitions": 2}).raise_for_status()
    before = snapshot(api)
    cases = [
        ({"kind": "scale_up", "cluster": "c3", "bootstrap": "127.0.0.1:1"}, 503, "cannot reach"),
        ({"kind": "scale_up", "cluster": "c3", "bootstrap": c1.bootstrap}, 409, "already registered as c1"),
        ({"kind": "scale_up", "cluster": "c9"}, 404, "unknown cluster 'c9'"),
        ({"kind": "scale_up", "cluster": "c1", "bootstrap": c2.bootstrap}, 409, "registered with bootstrap"),
        ({"kind": "scale_up", "cluster": "c3", "strategy": "sideways", "bootstrap": c3.bootstrap}, 422, "strategy"),
        ({"kind": "decommission", "cluster": "c9"}, 404, "unknown cluster 'c9'"),
        ({"kind": "decommission", "cluster": "c1"}, 409, "coordination cluster"),
        ({"kind": "decommission", "cluster": "c1", "drain": "never"}, 422, "drain must be"),
        ({"kind": "rename", "cluster": "c1"}, 422, "kind must be"),
        ({"cluster": "c1"}, 422, "kind"),
    ]
    for body, status, words in cases:
        resp = api.post("/v1/workflows", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert words in resp.json()["detail"], (body, resp.text)
    assert snapshot(api) == before  # nothing registered, no view change, no run recorded

    # the last active cluster (not the coordination one, which is read_only here): refused
    api.put("/v1/clusters/c2", json={"bootstrap": c2.bootstrap}).raise_for_status()
    api.post("/v1/clusters/c1/state", json={"state": "read_only"}).raise_for_status()
    before = snapshot(api)
    resp = api.post("/v1/workflows", json={"kind": "decommission", "cluster": "c2"})
    assert resp.status_code == 409 and "last active cluster" in resp.json()["detail"], resp.text
    assert snapshot(api) == before
    assert api.get("/v1/workflows/12345").status_code == 404
    assert api.get("/v1/workflows/1", headers={"Authorization": "Bearer wrong"}).status_code == 401
