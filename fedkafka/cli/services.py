"""Long-running services: `fedkafka proxy` (and later `fedkafka nameservice`), owned by the proxy work."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from fedkafka.controllers import TokenFileRefused, read_token
from fedkafka.proxy.core.limits import Limits
from fedkafka.security.listeners import Listener, TlsFiles, parse_listener
from fedkafka.security.proxy_header import parse_sources
from fedkafka.security.session import ALL_SASL_MECHANISMS, FAILED_AUTHENTICATION_DELAY_MS, SASL_MECHANISMS
from fedkafka.view.model import ProxyRole

if TYPE_CHECKING:
    from fedkafka.security.oauth import OAuthSettings
    from fedkafka.security.upstream import UpstreamConfig

_LIMITS = Limits()  # the defaults, documented in docs/OPERATIONS.md


def _fail(message: str) -> NoReturn:
    print(f"fedkafka: {message}", file=sys.stderr)
    raise typer.Exit(2)


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        _fail(f"{what} must be HOST:PORT, got {value!r}")
    return host or "0.0.0.0", int(port)


# The options of `fedkafka proxy`, one constant each: the command's signature stays a short list of names.
_ROLE = typer.Option(..., "--role", help="pproxy | cproxy | both")
_LISTEN = typer.Option(None, "--listen", help="HOST:PORT of a PLAINTEXT listener (or --listener)")
_LISTENER = typer.Option([], "--listener", help="PROTOCOL://HOST:PORT, repeatable; PROTOCOL is PLAINTEXT, SSL, "
                         "SASL_PLAINTEXT or SASL_SSL (the first is the primary)")
_SSL_CERT = typer.Option(None, "--ssl-cert", help="PEM certificate chain of SSL/SASL_SSL listeners")
_SSL_KEY = typer.Option(None, "--ssl-key", help="PEM private key of --ssl-cert (unencrypted, 0600)")
_SSL_CA = typer.Option(None, "--ssl-ca", help="PEM CA that client certificates must chain to")
_SSL_CLIENT_AUTH = typer.Option("none", "--ssl-client-auth", help="none | requested | required (mTLS)")
_SASL_MECHANISMS = typer.Option(None, "--sasl-mechanisms", help="mechanisms SASL listeners enable, comma-separated "
                                "(default SCRAM-SHA-512,SCRAM-SHA-256,PLAIN, and OAUTHBEARER with a JWKS)")
_OAUTH_JWKS_FILE = typer.Option(None, "--oauth-jwks-file", help="JWKS (JSON) the OAUTHBEARER tokens' signatures "
                                "are checked against; re-read when it changes")
_OAUTH_ISSUER = typer.Option(None, "--oauth-issuer", help="required `iss` of OAUTHBEARER tokens")
_OAUTH_AUDIENCE = typer.Option(None, "--oauth-audience", help="required `aud` of OAUTHBEARER tokens")
_CONNECTIONS_MAX_REAUTH_MS = typer.Option(0, "--connections-max-reauth-ms",
                                          help="KIP-368: SASL sessions last at most this long (ms), then the "
                                          "client must re-authenticate or is disconnected; 0: no limit")
_FAILED_AUTHENTICATION_DELAY_MS = typer.Option(
    FAILED_AUTHENTICATION_DELAY_MS, "--failed-authentication-delay-ms",
    help="Kafka's connection.failed.authentication.delay.ms: a failed SASL login is answered, and its connection "
    "closed, this long after the failure (ms); 0: at once")
_AUTHORIZATION = typer.Option(False, "--authorization/--no-authorization",
                              help="enforce the view's ACLs: what they do not allow is denied")
_SUPER_USER = typer.Option([], "--super-user", help="principal ACLs do not restrict (User:admin), repeatable")
_PROXY_HEADER_FROM = typer.Option([], "--proxy-header-from",
                                  help="address or CIDR of a relay (the name service hosts, which run "
                                  "--send-proxy-header) whose connections start with a PROXY v2 header naming the "
                                  "client: its address is then the client's (ACL hosts, per-IP cap, password "
                                  "checks); repeatable or comma-separated; default none")
_ADVERTISED_HOST = typer.Option(None, "--advertised-host", help="host clients connect to")
_CONTROLLER = typer.Option(None, "--controller", help="controller URL (http://host:port), or several "
                           "comma-separated: the active one is followed")
_TOKEN_FILE = typer.Option(None, "--token-file", help="file holding the controller token")
_VIEW_FILE = typer.Option(None, "--view-file", help="static view JSON instead of a controller")
_VIEW_CACHE = typer.Option(None, "--view-cache", help="file keeping the last applied view (with --controller): "
                           "served when no controller answers at start")
_WORKERS = typer.Option(1, "--workers", help="processes sharing the port (SO_REUSEPORT): one node for clients; "
                        "with a controller each worker acks views and holds its fence on its own")
_POOL = typer.Option("default", "--pool", help="proxy pool (name-service rules map clients to pools)")
UPSTREAM_CONFIG = typer.Option(None, "--upstream-config", help="JSON file (mode 0600) of librdkafka security "
                               "settings for the physical clusters' brokers: security.protocol, ssl.*, sasl.* "
                               "(docs/OPERATIONS.md)")
_ADMIN_LISTEN = typer.Option(None, "--admin-listen", help="HOST:PORT of the HTTP listener for /metrics, /healthz "
                             "and /readyz (with --workers N, worker i listens on PORT + i)")
# Limits (their defaults are Limits()'s, documented in docs/OPERATIONS.md)
_MAX_FRAME_BYTES = typer.Option(_LIMITS.max_frame_bytes, "--max-frame-bytes",
                                help="largest request frame (Kafka's socket.request.max.bytes)")
_MAX_PRE_AUTH_FRAME_BYTES = typer.Option(_LIMITS.max_pre_auth_frame_bytes, "--max-pre-auth-frame-bytes",
                                         help="largest frame before SASL authentication, on SASL listeners "
                                         "(Kafka's sasl.server.max.receive.size)")
_MAX_REQUEST_ELEMENTS = typer.Option(_LIMITS.max_request_elements, "--max-request-elements",
                                     help="array elements in one request, all its arrays together (a Metadata "
                                     "request's topics, a Produce request's partitions, ...); each subscription "
                                     "of a JoinGroup (member's assignment of a SyncGroup) may hold as many, "
                                     "all of them together four times as many")
_MAX_CONNECTIONS = typer.Option(_LIMITS.max_connections, "--max-connections",
                                help="open client connections per process; more are closed at once")
_MAX_CONNECTIONS_PER_IP = typer.Option(_LIMITS.max_connections_per_ip, "--max-connections-per-ip",
                                       help="open client connections per client address")
_MAX_INFLIGHT_REQUESTS = typer.Option(_LIMITS.max_inflight_requests, "--max-inflight-requests",
                                      help="requests read but not yet answered, per connection")
_MAX_INFLIGHT_BYTES = typer.Option(_LIMITS.max_inflight_bytes, "--max-inflight-bytes",
                                   help="bytes of requests and answers held per connection")
_MAX_BUFFERED_BYTES = typer.Option(_LIMITS.max_buffered_bytes, "--max-buffered-bytes",
                                   help="bytes of requests and answers held by the process")
_FRAME_TIMEOUT = typer.Option(_LIMITS.frame_timeout_s, "--frame-timeout",
                              help="seconds a frame may take once its first byte arrived")
_IDLE_TIMEOUT = typer.Option(_LIMITS.idle_timeout_s, "--idle-timeout",
                             help="seconds without a request before an idle connection is closed")
_MAX_FETCH_WAIT_MS = typer.Option(_LIMITS.max_fetch_wait_ms, "--max-fetch-wait-ms",
                                  help="a Fetch's max_wait is clamped to this")
_MAX_DEDICATED_PER_BROKER = typer.Option(_LIMITS.max_dedicated_per_broker, "--max-dedicated-per-broker",
                                         help="upstream connections for blocking calls, per broker")
_MAX_DEDICATED_PER_CONNECTION = typer.Option(_LIMITS.max_dedicated_per_connection, "--max-dedicated-per-connection",
                                             help="upstream connections for blocking calls, per client connection")
_DEDICATED_WAIT = typer.Option(_LIMITS.dedicated_wait_s, "--dedicated-wait",
                               help="seconds a blocking call waits for such a connection")


def proxy(
    role: str = _ROLE, listen: str | None = _LISTEN, listener: list[str] = _LISTENER,
    ssl_cert: Path | None = _SSL_CERT, ssl_key: Path | None = _SSL_KEY, ssl_ca: Path | None = _SSL_CA,
    ssl_client_auth: str = _SSL_CLIENT_AUTH, sasl_mechanisms: str | None = _SASL_MECHANISMS,
    oauth_jwks_file: Path | None = _OAUTH_JWKS_FILE, oauth_issuer: str | None = _OAUTH_ISSUER,
    oauth_audience: str | None = _OAUTH_AUDIENCE, connections_max_reauth_ms: int = _CONNECTIONS_MAX_REAUTH_MS,
    failed_authentication_delay_ms: int = _FAILED_AUTHENTICATION_DELAY_MS, authorization: bool = _AUTHORIZATION,
    super_user: list[str] = _SUPER_USER, advertised_host: str | None = _ADVERTISED_HOST,
    controller: str | None = _CONTROLLER, token_file: Path | None = _TOKEN_FILE, view_file: Path | None = _VIEW_FILE,
    view_cache: Path | None = _VIEW_CACHE, workers: int = _WORKERS, pool: str = _POOL,
    max_frame_bytes: int = _MAX_FRAME_BYTES, max_pre_auth_frame_bytes: int = _MAX_PRE_AUTH_FRAME_BYTES,
    max_request_elements: int = _MAX_REQUEST_ELEMENTS,
    max_connections: int = _MAX_CONNECTIONS,
    max_connections_per_ip: int = _MAX_CONNECTIONS_PER_IP, max_inflight_requests: int = _MAX_INFLIGHT_REQUESTS,
    max_inflight_bytes: int = _MAX_INFLIGHT_BYTES, max_buffered_bytes: int = _MAX_BUFFERED_BYTES,
    frame_timeout: float = _FRAME_TIMEOUT, idle_timeout: float = _IDLE_TIMEOUT,
    max_fetch_wait_ms: int = _MAX_FETCH_WAIT_MS, max_dedicated_per_broker: int = _MAX_DEDICATED_PER_BROKER,
    max_dedicated_per_connection: int = _MAX_DEDICATED_PER_CONNECTION, dedicated_wait: float = _DEDICATED_WAIT,
    admin_listen: str | None = _ADMIN_LISTEN, upstream_config: Path | None = UPSTREAM_CONFIG,
    proxy_header_from: list[str] = _PROXY_HEADER_FROM,
) -> None:
    """Run a proxy that speaks Kafka to clients and routes to the physical clusters."""
    from fedkafka.proxy.core.server import ProxyConfig, run

    try:
        proxy_role = ProxyRole(role)
    except ValueError:
        _fail(f"--role must be pproxy, cproxy or both, got {role!r}")
    oauth = _oauth(oauth_jwks_file, oauth_issuer, oauth_audience)
    if sasl_mechanisms is None:
        sasl_mechanisms = ",".join(SASL_MECHANISMS + (("OAUTHBEARER",) if oauth else ()))
    listeners, tls, mechanisms = _security(listen, listener, ssl_cert, ssl_key, ssl_ca, ssl_client_auth,
                                           sasl_mechanisms)
    _check_oauth(oauth, mechanisms)
    if connections_max_reauth_ms < 0:
        _fail(f"--connections-max-reauth-ms must be 0 (off) or more, got {connections_max_reauth_ms}")
    if failed_authentication_delay_ms < 0:
        _fail(f"--failed-authentication-delay-ms must be 0 or more, got {failed_authentication_delay_ms}")
    host, port = listeners[0].host, listeners[0].port
    token = _view_source(controller, token_file, view_file, view_cache)
    _check_workers(workers, port)
    limits = Limits(max_frame_bytes=max_frame_bytes, max_pre_auth_frame_bytes=max_pre_auth_frame_bytes,
                    max_request_elements=max_request_elements, max_connections=max_connections,
                    max_connections_per_ip=max_connections_per_ip, max_inflight_requests=max_inflight_requests,
                    max_inflight_bytes=max_inflight_bytes, max_buffered_bytes=max_buffered_bytes,
                    frame_timeout_s=frame_timeout, idle_timeout_s=idle_timeout, max_fetch_wait_ms=max_fetch_wait_ms,
                    max_dedicated_per_broker=max_dedicated_per_broker,
                    max_dedicated_per_connection=max_dedicated_per_connection, dedicated_wait_s=dedicated_wait)
    for problem in limits.problems():
        _fail(problem)
    admin = _admin_listen(admin_listen, workers)
    upstream = load_upstream(upstream_config, tls_contexts=True)
    advertised = advertised_host or (host if host not in ("0.0.0.0", "::", "") else "127.0.0.1")
    run(ProxyConfig(role=proxy_role, host=host, port=port, advertised_host=advertised, pool=pool,
                    view_file=view_file, controller=controller, token=token, view_cache=view_cache, workers=workers,
                    limits=limits, admin_listen=admin, listeners=tuple(listeners) if listener else (), tls=tls,
                    sasl_mechanisms=mechanisms, oauth=oauth, authorization=authorization,
                    super_users=frozenset(_principals(super_user)), upstream=upstream, upstream_file=upstream_config,
                    connections_max_reauth_ms=connections_max_reauth_ms, proxy_header_from=_relays(proxy_header_from),
                    failed_authentication_delay_ms=failed_authentication_delay_ms))


def _oauth(jwks_file: Path | None, issuer: str | None, audience: str | None) -> OAuthSettings | None:
    from fedkafka.security.oauth import OAuthSettings  # PyJWT and cryptography: only when a proxy starts

    return OAuthSettings(jwks_file, issuer, audience) if jwks_file else None


def _check_oauth(oauth: OAuthSettings | None, mechanisms: tuple[str, ...]) -> None:
    for problem in oauth.problems() if oauth else ():
        _fail(problem)
    if "OAUTHBEARER" in mechanisms and oauth is None:
        _fail("OAUTHBEARER needs --oauth-jwks-file")


def _view_source(controller: str | None, token_file: Path | None, view_file: Path | None,
                 view_cache: Path | None) -> str | None:
    """Exactly one of a controller (returns its token) and a static view file (returns None), checked."""
    if (controller is None) == (view_file is None):
        _fail("give exactly one of --controller (with --token-file) or --view-file")
    token = None
    if controller is not None:
        if token_file is None:
            _fail("--controller needs --token-file")
        try:
            token = read_token(token_file)
        except OSError as e:
            _fail(f"cannot read --token-file: {e}")
        except TokenFileRefused as refused:
            _fail(f"--token-file {refused}")
    elif view_file is not None and not view_file.is_file():
        _fail(f"--view-file {view_file} does not exist")
    if view_cache is not None and controller is None:
        _fail("--view-cache needs --controller (a --view-file is its own cache)")
    return token


def _check_workers(workers: int, port: int) -> None:
    if workers < 1:
        _fail("--workers must be at least 1")
    if port == 0 and workers > 1:
        _fail("--workers > 1 needs a fixed port")


def load_upstream(path: Path | None, tls_contexts: bool = False) -> UpstreamConfig:
    """The brokers' security (`--upstream-config`, proxies and controllers alike); refused with one line, exit 2.
    `tls_contexts` (the proxy, which loads the file again when it changes): its TLS files are loaded now too, as
    a reload loads them."""
    from fedkafka.security.upstream import PLAINTEXT, UpstreamConfigError, load_upstream_config
    from fedkafka.security.upstream_reload import with_contexts

    try:
        config = load_upstream_config(path) if path else PLAINTEXT
        if tls_contexts:
            with_contexts(config)  # checked only: a context is not passed to the workers (not picklable)
        return config
    except UpstreamConfigError as e:
        _fail(str(e))


def _admin_listen(value: str | None, workers: int) -> tuple[str, int] | None:
    admin = _host_port(value, "--admin-listen") if value else None
    if admin and admin[1] == 0 and workers > 1:
        _fail("--admin-listen with --workers > 1 needs a fixed port (worker i listens on PORT + i)")
    return admin


def _relays(values: list[str]) -> tuple[str, ...]:
    try:
        return parse_sources(values)
    except ValueError as exc:
        _fail(f"--proxy-header-from: {exc}")


def _principals(values: list[str]) -> list[str]:
    for value in values:
        kind, sep, name = value.partition(":")
        if not sep or not kind or not name:
            _fail(f"--super-user must be Type:name (User:admin), got {value!r}")
    return values


def _security(listen: str | None, listener: list[str], cert: Path | None, key: Path | None, ca: Path | None,
              client_auth: str, mechanisms: str) -> tuple[list[Listener], TlsFiles, tuple[str, ...]]:
    """The listeners (--listen first, as PLAINTEXT), their TLS files and the SASL mechanisms, checked."""
    if listen is None and not listener:
        _fail("give --listen HOST:PORT or at least one --listener PROTOCOL://HOST:PORT")
    found: list[Listener] = []
    if listen is not None:
        host, port = _host_port(listen, "--listen")
        found.append(Listener("PLAINTEXT", host, port))
    for value in listener:
        try:
            found.append(parse_listener(value))
        except ValueError as e:
            _fail(str(e))
    if len({lsn.port for lsn in found}) != len(found) or len({lsn.protocol for lsn in found}) != len(found):
        _fail("each listener needs its own port and its own protocol")
    tls = TlsFiles(cert, key, ca, client_auth)
    for problem in tls.problems(tuple(found)):
        _fail(problem)
    chosen = tuple(m.strip().upper() for m in mechanisms.split(",") if m.strip())
    unknown = [m for m in chosen if m not in ALL_SASL_MECHANISMS]
    if unknown or not chosen:
        _fail(f"--sasl-mechanisms takes {', '.join(ALL_SASL_MECHANISMS)}, got {mechanisms!r}")
    return found, tls, chosen


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("proxy")(proxy)
