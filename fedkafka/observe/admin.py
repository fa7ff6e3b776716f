"""The admin listener of a service: `/metrics` (Prometheus text), `/healthz` (the process and its background tasks
are alive) and `/readyz` (it serves traffic), as a tiny ASGI app on uvicorn in the service's own event loop.

Both health routes answer 200 or 503 with a JSON body saying why, so a load balancer and a person read the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Generator
from dataclasses import dataclass

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, dict]]
TICK_S = 1.0  # the admin server's housekeeping period (uvicorn's own: 0.1 s)


def admin_app(render_metrics: Callable[[], bytes], health: Check, ready: Check):
    routes = {"/metrics": lambda: (200, CONTENT_TYPE_LATEST, render_metrics()),
              "/healthz": lambda: _json(*health()),
              "/readyz": lambda: _json(*ready())}

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        route = routes.get(scope["path"])
        if scope["method"] not in ("GET", "HEAD"):
            status, ctype, body = 405, "text/plain", b"method not allowed\n"
        elif route is None:
            status, ctype, body = 404, "text/plain", b"not found\n"
        else:
            status, ctype, body = route()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    return app


def _json(ok: bool, detail: dict) -> tuple[int, str, bytes]:
    return (200 if ok else 503), "application/json", json.dumps({"ok": ok, **detail}).encode() + b"\n"


@dataclass
class AdminListener:
    server: SignallessServer
    task: asyncio.Task
    port: int

    async def stop(self) -> None:
        self.server.exit_now()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, 5.0)


class SignallessServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM alone: the service it runs in owns them and stops it.

    It ticks once a second, not uvicorn's ten times: a tick only refreshes the Date header (once a second
    anyway) and checks `should_exit`, and every proxy worker runs one of these: ten wake-ups a second were a
    third of an idle worker's CPU (bench/README.md, "Why a consume's CPU per GB grows with workers").
    `exit_now` ends the wait at once."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_asked = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        yield

    def exit_now(self) -> None:
        self.should_exit = True
        self._exit_asked.set()

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # on_tick counts tenths of a second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_asked.wait(), TICK_S)
            should_exit = await self.on_tick(counter)


async def start_admin(app, host: str, port: int) -> AdminListener:
    """Listen on host:port (0: a free port, see `.port`) in the running loop."""
    sock = socket.create_server((host, port), reuse_port=False)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = SignallessServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="admin-http")
    bound = sock.getsockname()[1]
    log.info("admin listener on %s:%s (/metrics, /healthz, /readyz)", host, bound)
    return AdminListener(server, task, bound)
