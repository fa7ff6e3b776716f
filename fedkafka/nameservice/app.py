"""Run the name service: the Kafka endpoint and `GET /v1/proxies?client_id=` over HTTP, in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn
from fastapi import FastAPI, HTTPException, Query

from fedkafka.nameservice.resolver import Resolver, ResolverError
from fedkafka.nameservice.server import NameServiceServer
from fedkafka.security.listeners import Listener

log = logging.getLogger("fedkafka.nameservice")


def http_app(resolver: Resolver) -> FastAPI:
    app = FastAPI(title="fedkafka name service", version="1")

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
    async def healthz() -> dict:
        return {"ok": True}

    return app


def split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


async def serve(resolver: Resolver, listen: str | None, http_listen: str, stop: asyncio.Event | None = None,
                listeners: tuple[Listener, ...] = (), **limits) -> None:
    """Serve until SIGTERM/SIGINT, or until `stop` is set when the caller owns it (tests, embedding).
    `listen` is a PLAINTEXT listener, `listeners` any others; `limits` go to NameServiceServer (header_timeout,
    max_connections, max_connections_per_ip, tls)."""
    http_host, http_port = split_hostport(http_listen)
    server = NameServiceServer(resolver, **limits)
    if listen is not None:
        listeners = (Listener("PLAINTEXT", *split_hostport(listen)), *listeners)
    bound = [(lsn.protocol, *await server.start(lsn.host, lsn.port, lsn.protocol)) for lsn in listeners]
    config = uvicorn.Config(http_app(resolver), host=http_host, port=http_port, log_level="warning",
                            lifespan="off")
    http = uvicorn.Server(config)
    http.install_signal_handlers = lambda: None  # we own SIGTERM: stop both endpoints together
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    log.info("name service: kafka %s, http %s:%s", ", ".join(f"{p}://{h}:{n}" for p, h, n in bound), http_host,
             http_port)
    tasks = [asyncio.create_task(server.serve_forever()), asyncio.create_task(http.serve())]
    await stop.wait()
    http.should_exit = True
    await server.close()
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    close = getattr(resolver, "aclose", None)
    if close:
        await close()
