"""Pure ASGI guard in front of the controller's API: token and its scope first, then a capped body.

FastAPI reads and parses a request body before any dependency (the token check) runs, and reads it
whole: an anonymous multi-GB PUT would hold the event loop that renews every proxy lease. This guard
answers 401 to an API request without a token, and 403 to the service or routing token on a route outside its
scope (controller.scopes), before reading a byte of its body; and 413 to any body larger than `max_body` (declared
in Content-Length, or counted while it streams in).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fedkafka.controller.scopes import METRICS_READERS, ROUTING, Tokens, may

DEFAULT_MAX_BODY = 1 << 20  # the largest legitimate body (a topic's config) is a few KiB

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def scope_refusal(role: str, method: str, path: str) -> str:
    if role == ROUTING:
        return (f"the routing token may not {method} {path}: it may only read the client routing "
                "(GET /v1/client-routing, what name services do; docs/DESIGN.md §11)")
    return (f"the service token may not {method} {path}: it may only do what proxies and name services do "
            "(docs/DESIGN.md §11); use the operator token")


class RequestGuard:
    """`metrics_token_required`: /metrics answers only with the operator or the service token (401 without a
    token, 403 to the routing token)."""

    def __init__(self, app, *, tokens: Tokens, max_body: int = DEFAULT_MAX_BODY, protected_prefix: str = "/v1/",
                 metrics_token_required: bool = False):
        self.app, self.tokens, self.max_body, self.protected_prefix = app, tokens, max_body, protected_prefix
        self.metrics_token_required = metrics_token_required

    def _protected(self, path: str) -> bool:
        return path.startswith(self.protected_prefix) or self._metrics_protected(path)

    def _metrics_protected(self, path: str) -> bool:
        return self.metrics_token_required and path == "/metrics"

    def _allowed(self, role: str, method: str, path: str) -> bool:
        # /metrics is an open route in the scope table: required, it takes METRICS_READERS' tokens only
        return may(role, method, path) and (role in METRICS_READERS or not self._metrics_protected(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if "\x00" in scope["path"]:  # a name no row can have: PostgreSQL refuses NUL in any query (a 500)
            return await _respond(send, 422, "a path must not contain NUL characters (%00)")
        if self._protected(scope["path"]):
            role = self.tokens.role(headers.get("authorization"))
            if role is None:
                return await _respond(send, 401, "missing or wrong bearer token", {"www-authenticate": "Bearer"})
            if not self._allowed(role, scope["method"], scope["path"]):
                return await _respond(send, 403, scope_refusal(role, scope["method"], scope["path"]))
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return await _respond(send, 413, f"request body over {self.max_body} bytes")
        await self.app(scope, *self._capped(receive, send))

    def _capped(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """A receive that counts body bytes and, past the cap, answers 413 itself and tells the app the client
        left (so it stops reading); a send that drops whatever the app answers after that."""
        state = {"received": 0, "started": False, "refused": False}

        async def capped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body and not state["started"]:
                    state["refused"] = True
                    await _respond(send, 413, f"request body over {self.max_body} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return
            state["started"] = True
            await send(message)

        return capped_receive, guarded_send


async def _respond(send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
