"""Health and metrics (open, for probes and Prometheus) and the token-protected status summary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from fedkafka.controller.leadership import ACTIVE, Leadership
from fedkafka.controller.service import Controller

API_FEATURES = ["workflow_dry_run"]  # GET /v1/status lists them


def open_router(controller: Controller, leadership: Leadership | None) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    def healthz():
        lead = leadership.status() if leadership is not None else {}
        # active: this controller takes writes. Taking over (the leader row held, its view not yet the database's:
        # `/v1/` answers 503), it says role "taking_over" and active false (docs/DESIGN.md §3.6)
        role = controller.role(leadership)
        # db_regression: set once the config database lost commits (docs/DESIGN.md §3.3); ok stays true (the
        # controller serves on), the alert is the metric fedkafka_controller_db_regressed
        return {"ok": True, "view_version": controller.view.version, "db_regression": controller.db_regression,
                **lead, "active": role == ACTIVE, "role": role}

    @router.get("/metrics")
    def metrics():
        return Response(controller.metrics.render(), media_type="text/plain; version=0.0.4")

    return router


def router(controller: Controller, api: Any) -> APIRouter:
    router = APIRouter(dependencies=[api])

    @router.get("/v1/status")
    def status():
        # api_features: what a client may rely on; the modules' check mode calls a dry run only when it is listed
        # (a controller that predates it would ignore ?dry_run=true and start the workflow)
        return {**controller.status(), "api_features": API_FEATURES}

    return router
