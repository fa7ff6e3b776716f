"""Run the name service: the Kafka endpoint and, over HTTP, `GET /v1/proxies?client_id=`, `/metrics`, `/healthz`
and `/readyz`, in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from fedkafka.nameservice.metrics import NameServiceMetrics
from fedkafka.nameservice.resolver import Resolver, ResolverError
from fedkafka.nameservice.server import NameServiceServer
from fedkafka.observe.admin import SignallessServer
from fedkafka.observe.supervise import Supervisor
from fedkafka.security.listeners import Listener

log = logging.getLogger("fedkafka.nameservice")


def http_app(resolver: Resolver, server: NameServiceServer | None = None,
             supervisor: Supervisor | None = None) -> FastAPI:
    app = FastAPI(title="fedkafka name service", version="1")
    supervisor = supervisor or Supervisor()

    @app.get("/v1/proxies")
    async def proxies(client_id: str = Query("", max_length=255),
                      protocol: str | None = Query(None, pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")) -> dict:
        """The client's pool; with `protocol`, only the proxies with such a listener, at that listener."""
        try:
            answer = await resolver.resolve(client_id)
        except ResolverError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        return answer.to_dict() if protocol is None else answer.for_protocol(protocol).to_dict()

    @app.get("/healthz")
    async def healthz():
        """Alive: the Kafka endpoint's task runs (a restarted one shows its restarts and last error)."""
        ok = supervisor.healthy()
        return JSONResponse({"ok": ok, "tasks": supervisor.report()}, status_code=200 if ok else 503)

    @app.get("/readyz")
    async def readyz():
        """Serving: the Kafka endpoint listens and the last controller fetch answered (or a fetched routing
        exists to fall back on)."""
        listening = server is not None and server.serving()
        controller = getattr(resolver, "controller_ok", True) or getattr(resolver, "has_routing", False)
        ok = listening and controller and supervisor.healthy()
        return JSONResponse({"ok": ok, "listening": listening, "controller_or_cache": controller},
                            status_code=200 if ok else 503)

    if server is not None:
        metrics = NameServiceMetrics(server, resolver, supervisor)

        @app.get("/metrics")
        async def metrics_text():
            return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


async def serve(resolver: Resolver, listen: str | None, http_listen: str, stop: asyncio.Event | None = None,
                listeners: tuple[Listener, ...] = (), **limits) -> None:
    """Serve until SIGTERM/SIGINT, or until `stop` is set when the caller owns it (tests, embedding); SIGHUP
    loads the TLS listeners' certificate again (when the caller does not own the signals).
    `listen` is a PLAINTEXT listener, `listeners` any others; `limits` go to NameServiceServer (header_timeout,
    max_connections, max_connections_per_ip, tls)."""
    http_host, http_port = split_hostport(http_listen)
    server = NameServiceServer(resolver, **limits)
    if listen is not None:
        listeners = (Listener("PLAINTEXT", *split_hostport(listen)), *listeners)
    bound = [(lsn.protocol, *await server.start(lsn.host, lsn.port, lsn.protocol)) for lsn in listeners]
    supervisor = Supervisor()
    config = uvicorn.Config(http_app(resolver, server, supervisor), host=http_host, port=http_port,
                            log_level="warning", lifespan="off")
    http = SignallessServer(config)  # we own SIGTERM: stop both endpoints together
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # SIGHUP: load the TLS files again now
        loop.add_signal_handler(signal.SIGHUP, lambda: server.server_tls is not None and server.server_tls.reload())
        # blocked until here (cli/nameservice.py): one sent while the listeners were made is handled now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    log.info("name service: kafka %s, http %s:%s", ", ".join(f"{p}://{h}:{n}" for p, h, n in bound), http_host,
             http_port)
    supervisor.spawn("kafka-endpoint", server.serve_forever)
    tasks = [asyncio.create_task(http.serve())]
    await stop.wait()
    http.exit_now()
    await server.close()
    await supervisor.stop()
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    close = getattr(resolver, "aclose", None)
    if close:
        await close()
