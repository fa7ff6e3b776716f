"""Admin REST API and view distribution (FastAPI). Every route but /metrics and /healthz needs the token.

`guard.RequestGuard` runs first, as plain ASGI: it checks the token before a body is read and caps bodies;
the `auth` dependency below stays as a second check and marks the protected routes in the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from fedkafka.controller.errors import ControllerError
from fedkafka.controller.guard import DEFAULT_MAX_BODY, RequestGuard, token_ok
from fedkafka.controller.leadership import Leadership, StandbyGate, restart_as_standby
from fedkafka.controller.service import Controller
from fedkafka.controller.topic_admin import add_routes as add_topic_admin_routes
from fedkafka.controller.workflow_api import add_routes as add_workflow_routes
from fedkafka.controller.workflows import WorkflowEngine

MAX_WAIT_MS = 60_000
API_FEATURES = ["workflow_dry_run"]  # GET /v1/status lists them
# Numbers the config database stores as BIGINT: a larger one is refused (422) before it reaches a query, where
# it raised OverflowError (a 500), or worse, sat in a batch of lease renewals and failed the whole batch's write.
BIGINT_MAX = 2**63 - 1
Version = Annotated[int, Field(ge=-1, le=BIGINT_MAX)]
RowId = Annotated[int, Path(ge=0, le=BIGINT_MAX)]
After = Annotated[int, Query(ge=-1, le=BIGINT_MAX)]


class ClusterBody(BaseModel):
    bootstrap: str
    coordination: bool | None = None


class StateBody(BaseModel):
    state: str


class TopicBody(BaseModel):
    partitions: int
    placement: str = "blocks"
    config: dict[str, str] = Field(default_factory=dict)


class ProxyBody(BaseModel):
    instance_id: str
    host: str
    port: int = Field(ge=0, le=65535)
    role: Literal["pproxy", "cproxy", "both"]
    pool: str = "default"
    listeners: list[tuple[str, str, int]] = Field(default_factory=list, max_length=8)  # [protocol, host, port]


class HeartbeatBody(BaseModel):
    applied_version: Version
    load: dict = Field(default_factory=dict)


class CredentialBody(BaseModel):
    mechanism: str
    salt: str = Field(max_length=128)
    iterations: int
    stored_key: str = Field(max_length=128)
    server_key: str = Field(max_length=128)


class UserBody(BaseModel):
    """SCRAM credentials only (RFC 5802 StoredKey/ServerKey): a password never reaches the controller."""

    credentials: list[CredentialBody] = Field(max_length=2)


class AclBody(BaseModel):
    resource_type: str
    name: str = Field(max_length=256)
    pattern_type: str = "LITERAL"
    principal: str = Field(max_length=256)
    host: str = Field("*", max_length=256)
    operation: str
    permission: str = "ALLOW"


class AclsBody(BaseModel):
    acls: list[AclBody] = Field(max_length=1000)


class AclFilterBody(BaseModel):
    resource_type: str | None = None
    name: str | None = None
    pattern_type: str | None = None
    principal: str | None = None
    host: str | None = None
    operation: str | None = None
    permission: str | None = None


class RuleBody(BaseModel):
    match: str
    pattern: str
    pool: str


def create_app(controller: Controller, token: str, background: bool = True,
               max_body: int = DEFAULT_MAX_BODY, leadership: Leadership | None = None) -> FastAPI:
    """`leadership`: compete for the database's leader row and act only while holding it (docs/DESIGN.md §3.6);
    without it this controller acts at once (one controller, or tests)."""
    workflows = WorkflowEngine(controller)

    def activate() -> None:
        controller.become_active()
        controller.start_background()
        workflows.resume()  # runs a previous controller left unfinished (docs/DESIGN.md §6.2, §7)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
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

    app = FastAPI(title="fedkafka controller", version="1", lifespan=lifespan)
    app.add_middleware(StandbyGate, leadership=leadership)
    app.add_middleware(RequestGuard, token=token, max_body=max_body)

    async def auth(authorization: str | None = Header(default=None)) -> None:  # async: no threadpool hop
        if not token_ok(authorization, token):
            raise ControllerError("missing or wrong bearer token", status=401)

    @app.exception_handler(ControllerError)
    async def _controller_error(_req: Request, exc: ControllerError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        body = {"detail": str(exc)} if exc.kafka_error is None else {"detail": str(exc), "kafka_error": exc.kafka_error}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        msgs = ["{}: {}".format(".".join(str(x) for x in e["loc"] if x != "body") or "body", e["msg"])
                for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(msgs)}, status_code=422)

    @app.get("/healthz")
    def healthz():
        lead = leadership.status() if leadership is not None else {"active": True}
        return {"ok": True, "view_version": controller.view.version, **lead}

    @app.get("/metrics")
    def metrics():
        return Response(controller.metrics.render(), media_type="text/plain; version=0.0.4")

    api = Depends(auth)

    @app.get("/v1/view", dependencies=[api])
    async def get_view(after: After | None = None, wait_ms: int = Query(0, ge=0, le=MAX_WAIT_MS),
                       delta: bool = False):
        """Full view; with `after`, long-poll: 200 once version > after, 204 after wait_ms.
        With `delta=true` the answer is `{"delta": ...}` when `after` is still in the history."""
        pub = controller.publisher
        if after is not None and not await pub.wait_newer(after, wait_ms / 1000):
            return Response(status_code=204)
        if delta and after is not None:
            body = pub.delta_body(after)
            if body is not None:
                return Response(body, media_type="application/json")
        return Response(pub.body, media_type="application/json")

    @app.get("/v1/view/stream", dependencies=[api])
    async def stream_view(after: After = -1, keepalive_ms: int = Query(15_000, ge=100, le=MAX_WAIT_MS)):
        """Subscription as a stream: one JSON view per line whenever the version grows past the last sent
        (an empty line every keepalive_ms). Far cheaper per change than a long-poll round trip."""
        pub = controller.publisher

        async def lines():
            sent = after
            pub.follow(None, sent)
            try:
                while True:
                    if await pub.wait_newer(sent, keepalive_ms / 1000):
                        view, body = pub.view, pub.body
                        pub.follow(sent, view.version)
                        sent = view.version
                        yield body + b"\n"
                    else:
                        yield b"\n"
            finally:
                pub.follow(sent, None)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/v1/proxies", dependencies=[api])
    def register_proxy(body: ProxyBody):
        return controller.register_proxy(body.instance_id, body.host, body.port, body.role, body.pool,
                                         body.listeners)

    @app.post("/v1/proxies/{node_id}/heartbeat", dependencies=[api])
    async def heartbeat(node_id: RowId, body: HeartbeatBody):
        # a known live proxy's renewal joins the next batch written; others are checked in the database
        return (await run_in_threadpool(controller.renew_lease, node_id, body.applied_version, body.load)
                or await run_in_threadpool(controller.heartbeat, node_id, body.applied_version, body.load))

    @app.get("/v1/proxies", dependencies=[api])
    def proxies(client_id: str = ""):
        return controller.proxies_for(client_id)

    @app.post("/v1/producer-id-blocks", dependencies=[api])
    def producer_ids():
        return controller.allocate_producer_ids()

    @app.get("/v1/clusters", dependencies=[api])
    def clusters():
        return controller.list_clusters()

    @app.get("/v1/clusters/{cluster_id}", dependencies=[api])
    def cluster(cluster_id: str):
        return controller.get_cluster(cluster_id)

    @app.put("/v1/clusters/{cluster_id}", dependencies=[api])
    def put_cluster(cluster_id: str, body: ClusterBody):
        cluster, changed = controller.put_cluster(cluster_id, body.bootstrap, body.coordination)
        return {"cluster": cluster, "changed": changed}

    @app.post("/v1/clusters/{cluster_id}/state", dependencies=[api])
    def set_state(cluster_id: str, body: StateBody):
        cluster, changed = controller.set_cluster_state(cluster_id, body.state)
        return {"cluster": cluster, "changed": changed}

    @app.get("/v1/topics", dependencies=[api])
    def topics():
        return controller.list_topics()

    @app.get("/v1/topics/{name}", dependencies=[api])
    def topic(name: str):
        return controller.get_topic(name)

    @app.put("/v1/topics/{name}", dependencies=[api])
    def put_topic(name: str, body: TopicBody):
        topic, changed = controller.put_topic(name, body.partitions, body.placement, body.config)
        return {"topic": topic, "changed": changed}

    @app.delete("/v1/topics/{name}", dependencies=[api], status_code=204)
    def delete_topic(name: str):
        controller.delete_topic(name)
        return Response(status_code=204)

    @app.put("/v1/client-rules/{name}", dependencies=[api])
    def put_rule(name: str, body: RuleBody):
        rule, changed = controller.put_rule(name, body.match, body.pattern, body.pool)
        return {"rule": rule, "changed": changed}

    @app.get("/v1/client-rules", dependencies=[api])
    def rules():
        return controller.list_rules()

    @app.put("/v1/users/{name}", dependencies=[api])
    def put_user(name: str, body: UserBody):
        user, changed = controller.put_user(name, [c.model_dump() for c in body.credentials])
        return {"user": user, "changed": changed}

    @app.get("/v1/users", dependencies=[api])
    def users():
        return controller.list_users()

    @app.get("/v1/users/{name}", dependencies=[api])
    def user(name: str):
        return controller.get_user(name)

    @app.delete("/v1/users/{name}", dependencies=[api], status_code=204)
    def delete_user(name: str):
        controller.delete_user(name)
        return Response(status_code=204)

    @app.post("/v1/acls", dependencies=[api])
    def create_acls(body: AclsBody):
        return controller.create_acls([a.model_dump() for a in body.acls])

    @app.get("/v1/acls", dependencies=[api])
    def list_acls(resource_type: str | None = None, name: str | None = None, pattern_type: str | None = None,
                  principal: str | None = None, host: str | None = None, operation: str | None = None,
                  permission: str | None = None):
        return controller.list_acls({k: v for k, v in locals().items() if v is not None})

    @app.post("/v1/acls/delete", dependencies=[api])
    def delete_acls(body: AclFilterBody):
        """Deletes every binding the filter matches (an empty filter matches all of them)."""
        return controller.delete_acls(body.model_dump(exclude_none=True))

    add_workflow_routes(app, workflows, api)
    add_topic_admin_routes(app, controller, api)

    @app.get("/v1/status", dependencies=[api])
    def status():
        # api_features: what a client may rely on; the modules' check mode calls a dry run only when it is listed
        # (a controller that predates it would ignore ?dry_run=true and start the workflow)
        return {**controller.status(), "api_features": API_FEATURES}

    return app
