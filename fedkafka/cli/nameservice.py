"""`fedkafka nameservice`: client.id -> proxy pool, over Kafka and HTTP."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from pathlib import Path

import typer

from fedkafka.controllers import TokenFileRefused, read_token
from fedkafka.nameservice.app import serve, split_hostport
from fedkafka.nameservice.resolver import ControllerResolver
from fedkafka.observe import logs
from fedkafka.security.listeners import TlsFiles, parse_listener


def _checked_listeners(listen: str | None, http_listen: str, listener: list[str]) -> tuple:
    """The --listener values parsed, after --listen and --http-listen are checked (BadParameter naming the flag)."""
    for value, flag in ((listen, "--listen"), (http_listen, "--http-listen")):
        try:
            if value is not None:
                split_hostport(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=flag) from None
    try:
        listeners = tuple(parse_listener(v) for v in listener)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--listener") from None
    if listen is None and not listeners:
        raise typer.BadParameter("give --listen or at least one --listener", param_hint="--listen")
    return listeners


def _check_relay_source(value: str | None) -> None:
    if value is None:
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an IP address", param_hint="--relay-source") from None


def register(app: typer.Typer) -> None:
    @app.command("nameservice")
    def nameservice(
        listen: str | None = typer.Option(None, help="HOST:PORT of a PLAINTEXT Kafka endpoint clients bootstrap at."),
        listener: list[str] = typer.Option([], "--listener", help="PROTOCOL://HOST:PORT, repeatable (PLAINTEXT, "
                                           "SSL, SASL_PLAINTEXT, SASL_SSL); clients are relayed to proxy listeners "
                                           "of the same protocol"),
        ssl_cert: Path | None = typer.Option(None, "--ssl-cert", help="PEM certificate of SSL/SASL_SSL listeners."),
        ssl_key: Path | None = typer.Option(None, "--ssl-key", help="PEM private key of --ssl-cert."),
        ssl_ca: Path | None = typer.Option(None, "--ssl-ca", help="PEM CA the proxies' certificates chain to."),
        http_listen: str = typer.Option(..., help="HOST:PORT of the HTTP endpoint (GET /v1/proxies)."),
        controller: str = typer.Option(..., envvar="FEDKAFKA_CONTROLLER_URL",
                                       help="Controller base URL, or several comma-separated (the active one is "
                                            "followed)."),
        token_file: Path = typer.Option(..., exists=True, dir_okay=False,
                                        help="File holding the controller token: the routing token (the "
                                             "controller's --routing-token-file: the client routing only), else "
                                             "the service token."),
        cache_seconds: float = typer.Option(5.0, min=0.0, help="How long the controller's client rules and pools "
                                            "are reused before they are fetched again."),
        cache_entries: int = typer.Option(10_000, min=1, hidden=True,
                                          help="No effect: nothing is kept per client.id any more (accepted so "
                                               "existing command lines keep working)."),
        max_connections: int = typer.Option(10_000, min=1, help="Open client connections; more are closed."),
        max_connections_per_ip: int = typer.Option(1_000, min=1, help="Open client connections per address."),
        header_timeout: float = typer.Option(10.0, min=0.001,
                                             help="Seconds a new connection has to send its first request "
                                                  "(its TLS handshake included)."),
        send_proxy_header: bool = typer.Option(False, "--send-proxy-header/--no-send-proxy-header",
                                               help="Start each relayed connection with a PROXY v2 header naming "
                                                    "the client, so proxies see its address (ACL hosts, per-IP "
                                                    "caps); the proxies must list this host in --proxy-header-from."),
        relay_source: str | None = typer.Option(None, "--relay-source",
                                                help="Local address relayed connections to the proxies leave from "
                                                     "(default: the system's choice), e.g. one kept for the relay "
                                                     "that the proxies trust (--proxy-header-from)."),
    ) -> None:
        """Run the name service."""
        listeners = _checked_listeners(listen, http_listen, listener)
        _check_relay_source(relay_source)
        tls = TlsFiles(ssl_cert, ssl_key, ssl_ca)
        problems = tls.problems(listeners)
        if problems:
            raise typer.BadParameter("; ".join(problems), param_hint="--ssl-cert")
        logs.configure()  # FEDKAFKA_LOG_LEVEL, FEDKAFKA_LOG_FORMAT=json
        # a SIGHUP before serve() takes it (renew the certificate) must not end the process, nor be lost: blocked
        # (pending) until serve() handles it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        del cache_entries  # no effect (see its help)
        resolver = ControllerResolver(controller, _read_token(token_file), ttl=cache_seconds)
        asyncio.run(serve(resolver, listen, http_listen, listeners=listeners, header_timeout=header_timeout,
                          max_connections=max_connections, max_connections_per_ip=max_connections_per_ip, tls=tls,
                          proxy_header=send_proxy_header, relay_source=relay_source))


def _read_token(token_file: Path) -> str:
    """The controller token in `token_file`, refused (naming the file, never the token) by the controller's rule."""
    try:
        return read_token(token_file)
    except OSError as e:  # the controller's, the CLI's and the proxy's words for it
        raise typer.BadParameter(f"cannot read --token-file: {e}") from None
    except TokenFileRefused as refused:
        raise typer.BadParameter(str(refused), param_hint="--token-file") from None
