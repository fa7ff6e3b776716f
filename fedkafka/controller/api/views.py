"""What the proxies call: the view (full, long-polled or streamed), registration, lease renewals (heartbeats)
and producer-id blocks."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from fedkafka.controller.api.common import After, NulFree, RowId, Version, stored_length
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.publish import Publisher
from fedkafka.controller.service import MAX_WORKER, Controller
from fedkafka.controllers import (
    MAX_PREDECESSOR_SECRETS,
    MAX_SECRET_LENGTH,
    MEMBER_SECRET_HEADER,
    PREDECESSOR_SECRET_HEADER,
    PREDECESSOR_SEPARATOR,
)

MAX_WAIT_MS = 60_000
# several exited processes' secrets, joined (the controller checks each: `service._predecessor_secrets`)
MAX_PREDECESSOR_HEADER = MAX_PREDECESSOR_SECRETS * (MAX_SECRET_LENGTH + len(PREDECESSOR_SEPARATOR))
# worker i > 0 of a proxy has the row `{instance_id}/w{i}` (service.register_proxy): room for the suffix
INSTANCE_ID_MAX = stored_length(ProxyRow.instance_id) - len(f"/w{MAX_WORKER}")


class ProxyBody(BaseModel):
    instance_id: NulFree = Field(max_length=INSTANCE_ID_MAX)
    host: NulFree = Field(max_length=stored_length(ProxyRow.host))
    port: int = Field(ge=0, le=65535)
    role: Literal["pproxy", "cproxy", "both"]
    pool: NulFree = Field("default", max_length=stored_length(ProxyRow.pool))
    listeners: list[tuple[str, str, int]] = Field(default_factory=list, max_length=8)  # [protocol, host, port]
    worker: int = Field(0, ge=0, le=MAX_WORKER)  # which worker of a proxy run with --workers N (docs/DESIGN.md §4.10)
    # the proxy presents a member secret on its heartbeats: require it (docs/DESIGN.md §5.2), the one it sends in
    # X-Fedkafka-Member-Secret (chosen once per process), else one drawn here. A bool: a controller before proxy-chosen
    # secrets refuses a string (422). A proxy before member secrets does not send it, and renews without one
    # (controllers are upgraded before proxies)
    member_secret: bool = False


class HeartbeatBody(BaseModel):
    applied_version: Version
    load: dict = Field(default_factory=dict)


def router(controller: Controller, api: Any) -> APIRouter:
    router = APIRouter(dependencies=[api])
    _view_routes(router, controller.publisher)
    _proxy_routes(router, controller)
    return router


def _view_routes(router: APIRouter, pub: Publisher) -> None:
    @router.get("/v1/view")
    async def get_view(after: After | None = None, wait_ms: int = Query(0, ge=0, le=MAX_WAIT_MS),
                       delta: bool = False):
        """Full view; with `after`, long-poll: 200 once version > after, 204 after wait_ms.
        With `delta=true` the answer is `{"delta": ...}` when `after` is still in the history."""
        if after is not None and not await pub.wait_newer(after, wait_ms / 1000):
            return Response(status_code=204)
        if delta and after is not None:
            body = pub.delta_body(after)
            if body is not None:
                return Response(body, media_type="application/json")
        return Response(pub.body, media_type="application/json")

    @router.get("/v1/view/stream")
    async def stream_view(after: After = -1, keepalive_ms: int = Query(15_000, ge=100, le=MAX_WAIT_MS)):
        """Subscription as a stream: one JSON view per line whenever the version grows past the last sent
        (an empty line every keepalive_ms). Far cheaper per change than a long-poll round trip."""

        async def lines():
            sent = after
            pub.follow(None, sent)
            try:
                while True:
                    if await pub.wait_newer(sent, keepalive_ms / 1000):
                        view, body = pub.current()
                        pub.follow(sent, view.version)
                        sent = view.version
                        yield body + b"\n"
                    else:
                        yield b"\n"
            finally:
                pub.follow(sent, None)

        return StreamingResponse(lines(), media_type="application/x-ndjson")


def _proxy_routes(router: APIRouter, controller: Controller) -> None:
    @router.post("/v1/proxies")
    def register_proxy(body: ProxyBody,
                       member_secret: str | None = Header(None, alias=MEMBER_SECRET_HEADER,
                                                          max_length=MAX_SECRET_LENGTH),
                       predecessor: str | None = Header(None, alias=PREDECESSOR_SECRET_HEADER,
                                                                 max_length=MAX_PREDECESSOR_HEADER)):
        # the proxy's own secret: the member is held to it; a live member holding a secret registers again only with
        # it (409 otherwise, docs/DESIGN.md §5.2). `predecessor`: the member's previous processes, exited (§4.9 F4)
        return controller.register_proxy(body.instance_id, body.host, body.port, body.role, body.pool,
                                         body.listeners, body.worker, body.member_secret, member_secret, predecessor)

    @router.post("/v1/proxies/{node_id}/heartbeat")
    async def heartbeat(node_id: RowId, body: HeartbeatBody,
                        member_secret: str | None = Header(None, alias=MEMBER_SECRET_HEADER,
                                                           max_length=MAX_SECRET_LENGTH)):
        # only the proxy that registered the member may renew its lease or ack views for it (403 otherwise)
        accepted = await run_in_threadpool(controller.check_member_secret, node_id, member_secret)
        # a known live proxy's renewal joins the next batch written; others are checked in the database. Either is
        # written only while the member still holds the secret accepted (a takeover or a deregistration may commit
        # in between: refused then, docs/DESIGN.md §4.9 F4)
        return (await run_in_threadpool(controller.renew_lease, node_id, body.applied_version, body.load, accepted)
                or await run_in_threadpool(controller.heartbeat, node_id, body.applied_version, body.load, accepted))

    @router.post("/v1/proxies/{node_id}/deregister")
    def deregister(node_id: RowId,
                   member_secret: str | None = Header(None, alias=MEMBER_SECRET_HEADER, max_length=MAX_SECRET_LENGTH)):
        # a cleanly stopped proxy process ends its member's lease and fence at once (docs/DESIGN.md §5.2); only
        # with the secret of the member's latest registration (409 otherwise), 404 for an unknown member
        return controller.deregister_proxy(node_id, member_secret)

    @router.post("/v1/proxies/{node_id}/drain")
    def drain(node_id: RowId):
        return controller.set_draining(node_id, True)

    @router.post("/v1/proxies/{node_id}/undrain")
    def undrain(node_id: RowId):
        return controller.set_draining(node_id, False)

    @router.get("/v1/proxies")
    def proxies(client_id: str = ""):
        return controller.proxies_for(client_id)

    @router.get("/v1/client-routing")
    def client_routing():
        """Every client rule and every pool's proxies: the name service matches client.ids itself."""
        return controller.client_routing()

    @router.post("/v1/producer-id-blocks")
    def producer_ids():
        return controller.producer_ids.allocate().to_dict()
