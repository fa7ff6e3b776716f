"""Admin REST API and view distribution (FastAPI). Every route but /metrics and /healthz needs a token; the
service token only the routes controller.scopes gives it.

`guard.RequestGuard` runs first, as plain ASGI: it checks the token before a body is read and caps bodies;
the routers' token dependency (api.common) stays as a second check and marks the protected routes in the
OpenAPI schema. The routes live in `controller.api`, one router per area; this module only wires them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fedkafka.controller.api import admin_topics, moves, security, status, topology, views
from fedkafka.controller.api import workflows as workflow_routes
from fedkafka.controller.api.common import token_dependency
from fedkafka.controller.errors import ControllerError
from fedkafka.controller.guard import DEFAULT_MAX_BODY, RequestGuard
from fedkafka.controller.held import HeldMoves
from fedkafka.controller.leadership import Leadership, NotLeader, StandbyGate, restart_as_standby
from fedkafka.controller.scopes import Tokens
from fedkafka.controller.service import Controller
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.controllers import ACTIVE_HEADER


def create_app(controller: Controller, token: str | Tokens, background: bool = True,
               max_body: int = DEFAULT_MAX_BODY, leadership: Leadership | None = None,
               metrics_token_required: bool = False) -> FastAPI:
    """`token`: the operator token, or Tokens with a service token too (controller.scopes). `leadership`: compete
    for the database's leader row and act only while holding it (docs/DESIGN.md §3.6); without it this
    controller acts at once (one controller, or tests)."""
    tokens = token if isinstance(token, Tokens) else Tokens(operator=token)
    workflows = WorkflowEngine(controller)
    app = FastAPI(title="fedkafka controller", version="1",
                  lifespan=_lifespan(controller, workflows, background, leadership))
    app.add_middleware(StandbyGate, leadership=leadership, took_over=controller.took_over)
    app.add_middleware(RequestGuard, tokens=tokens, max_body=max_body, metrics_token_required=metrics_token_required)
    _add_error_handlers(app)
    api = token_dependency(tokens)
    app.include_router(status.open_router(controller, leadership))
    app.include_router(views.router(controller, api))
    app.include_router(topology.router(controller, api))
    app.include_router(security.router(controller, api))
    app.include_router(workflow_routes.router(workflows, api))
    app.include_router(moves.router(HeldMoves(controller, workflows.mover), api))
    app.include_router(admin_topics.router(controller, api))
    app.include_router(status.router(controller, api))
    return app


def _lifespan(controller: Controller, workflows: WorkflowEngine, background: bool,
              leadership: Leadership | None) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    def activate() -> None:
        controller.become_active()
        controller.start_background()
        workflows.resume()  # runs a previous controller left unfinished (docs/DESIGN.md §6.2, §7)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        controller.publisher.bind(asyncio.get_running_loop())
        if background and leadership is None:
            controller.start_background()
            workflows.resume()
        elif background and leadership is not None:
            controller.leadership = leadership
            threading.Thread(target=leadership.run, args=(controller._stop, activate, restart_as_standby),
                             name="controller-leadership", daemon=True).start()
        yield
        await run_in_threadpool(controller.stop)

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ControllerError)
    async def _controller_error(_req: Request, exc: ControllerError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        body = {"detail": str(exc)} if exc.kafka_error is None else {"detail": str(exc), "kafka_error": exc.kafka_error}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(NotLeader)
    # lost the row before the request's commit: nothing was written (lost after it, while composing the view, the
    # route answers its success instead: `Controller.compose_after_commit`, docs/DESIGN.md §5.1)
    # the header names the controller holding the row (empty: not known), as the gate's 503 does: clients move on to
    # it; without it the modules took the 503 as the active controller's own refusal and asked no other
    async def _not_leader(_req: Request, exc: NotLeader):
        return JSONResponse({"detail": f"not the active controller any more: {exc}"}, status_code=503,
                            headers={ACTIVE_HEADER: exc.active or ""})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        msgs = ["{}: {}".format(".".join(str(x) for x in e["loc"] if x != "body") or "body", e["msg"])
                for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(msgs)}, status_code=422)
