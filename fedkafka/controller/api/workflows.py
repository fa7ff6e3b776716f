"""The workflow engine's routes: `POST /v1/workflows[?dry_run=true]`, `GET /v1/workflows[/{id}]`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fedkafka.controller.api.common import NulFree, RowId, stored_length
from fedkafka.controller.models import ClusterRow, WorkflowRow
from fedkafka.controller.workflows import WorkflowEngine


class WorkflowBody(BaseModel):
    kind: NulFree = Field(max_length=stored_length(WorkflowRow.kind))
    cluster: NulFree = Field(max_length=stored_length(WorkflowRow.cluster))
    strategy: NulFree | None = None
    drain: NulFree | bool | None = None  # "retention" | "groups" (true means groups, for the Ansible modules)
    # scale-up of a cluster not registered yet: registered after validation
    bootstrap: NulFree | None = Field(None, max_length=stored_length(ClusterRow.bootstrap))
    unclean: bool = False  # coordination_move: the old coordination cluster is dead (the last offsets copy)


def router(engine: WorkflowEngine, api: Any) -> APIRouter:
    router = APIRouter(dependencies=[api])

    @router.post("/v1/workflows")
    def start_workflow(body: WorkflowBody, dry_run: bool = False):
        """`?dry_run=true`: the plan (the same validation, the moves it would make now), nothing done."""
        if dry_run:
            return engine.dry_run(body.kind, body.cluster, body.strategy, body.drain, body.bootstrap,
                                  body.unclean)
        return engine.start(body.kind, body.cluster, body.strategy, body.drain, body.bootstrap, body.unclean)

    @router.get("/v1/workflows")
    def workflows():
        return engine.runs()

    @router.get("/v1/workflows/{run_id}")
    def workflow(run_id: RowId):  # a BIGINT row id
        return engine.get(run_id)

    return router
