"""`fedkafka nameservice`: client.id -> proxy pool, over Kafka and HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from fedkafka.nameservice.app import serve, split_hostport
from fedkafka.nameservice.resolver import ControllerResolver
from fedkafka.observe import logs


def register(app: typer.Typer) -> None:
    @app.command("nameservice")
    def nameservice(
        listen: str = typer.Option(..., help="HOST:PORT of the Kafka endpoint clients bootstrap at."),
        http_listen: str = typer.Option(..., help="HOST:PORT of the HTTP endpoint (GET /v1/proxies)."),
        controller: str = typer.Option(..., envvar="FEDKAFKA_CONTROLLER_URL",
                                       help="Controller base URL, or several comma-separated (the active one is "
                                            "followed)."),
        token_file: Path = typer.Option(..., exists=True, dir_okay=False, help="File holding the API token."),
        cache_seconds: float = typer.Option(5.0, min=0.0, help="How long a client's pool answer is reused."),
        cache_entries: int = typer.Option(10_000, min=1, help="client.ids whose answers are kept (LRU)."),
        max_connections: int = typer.Option(10_000, min=1, help="Open client connections; more are closed."),
        max_connections_per_ip: int = typer.Option(1_000, min=1, help="Open client connections per address."),
        header_timeout: float = typer.Option(10.0, min=0.001,
                                             help="Seconds a new connection has to send its first request."),
    ) -> None:
        """Run the name service."""
        for value, flag in ((listen, "--listen"), (http_listen, "--http-listen")):
            try:
                split_hostport(value)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint=flag) from None
        logs.configure()  # FEDKAFKA_LOG_LEVEL, FEDKAFKA_LOG_FORMAT=json
        resolver = ControllerResolver(controller, token_file.read_text().strip(), ttl=cache_seconds,
                                      max_entries=cache_entries)
        asyncio.run(serve(resolver, listen, http_listen, header_timeout=header_timeout,
                          max_connections=max_connections, max_connections_per_ip=max_connections_per_ip))
