"""The federation's shape: physical clusters, logical topics, and the client rules that pick a proxy pool."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from fedkafka.controller.api.common import NulFree, stored_length
from fedkafka.controller.models import ClientRuleRow, ClusterRow, TopicRow
from fedkafka.controller.service import Controller

RuleName = Annotated[str, Path(max_length=stored_length(ClientRuleRow.name))]


class ClusterBody(BaseModel):
    bootstrap: NulFree = Field(max_length=stored_length(ClusterRow.bootstrap))
    coordination: bool | None = None


class StateBody(BaseModel):
    state: NulFree = Field(max_length=stored_length(ClusterRow.state))


class TopicBody(BaseModel):
    partitions: int
    placement: NulFree = Field("blocks", max_length=stored_length(TopicRow.placement))
    config: dict[str, str] = Field(default_factory=dict)


class RuleBody(BaseModel):
    match: NulFree = Field(max_length=stored_length(ClientRuleRow.match))
    pattern: NulFree = Field(max_length=stored_length(ClientRuleRow.pattern))
    pool: NulFree = Field(max_length=stored_length(ClientRuleRow.pool))


def router(controller: Controller, api: Any) -> APIRouter:
    router = APIRouter(dependencies=[api])

    @router.get("/v1/clusters")
    def clusters():
        return controller.list_clusters()

    @router.get("/v1/clusters/{cluster_id}")
    def cluster(cluster_id: str):
        return controller.get_cluster(cluster_id)

    @router.put("/v1/clusters/{cluster_id}")
    def put_cluster(cluster_id: str, body: ClusterBody):
        cluster, changed = controller.put_cluster(cluster_id, body.bootstrap, body.coordination)
        return {"cluster": cluster, "changed": changed}

    @router.post("/v1/clusters/{cluster_id}/state")
    def set_state(cluster_id: str, body: StateBody):
        cluster, changed = controller.set_cluster_state(cluster_id, body.state)
        return {"cluster": cluster, "changed": changed}

    @router.get("/v1/topics")
    def topics():
        return controller.list_topics()

    @router.get("/v1/topics/{name}")
    def topic(name: str):
        return controller.get_topic(name)

    @router.put("/v1/topics/{name}")
    def put_topic(name: str, body: TopicBody):
        topic, changed, _ = controller.put_topic(name, body.partitions, body.placement, body.config)
        return {"topic": topic, "changed": changed}

    @router.delete("/v1/topics/{name}", status_code=204)
    def delete_topic(name: str):
        controller.delete_topic(name)
        return Response(status_code=204)

    @router.put("/v1/client-rules/{name}")
    def put_rule(name: RuleName, body: RuleBody):
        rule, changed = controller.put_rule(name, body.match, body.pattern, body.pool)
        return {"rule": rule, "changed": changed}

    @router.delete("/v1/client-rules/{name}", status_code=204)
    def delete_rule(name: RuleName):
        controller.delete_rule(name)
        return Response(status_code=204)

    @router.get("/v1/client-rules")
    def rules():
        return controller.list_rules()

    return router
