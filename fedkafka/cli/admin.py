"""Admin commands against the controller: cluster, topic, view, status, client-rule, controller."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from fedkafka.controller.client import AdminClient, AdminError, locate
from fedkafka.controllers import TokenFileRefused, read_token
from fedkafka.observe import logs

console = Console()
cluster_app = typer.Typer(no_args_is_help=True, help="Physical clusters of the federation.")
topic_app = typer.Typer(no_args_is_help=True, help="Logical topics.")
view_app = typer.Typer(no_args_is_help=True, help="The federation view proxies follow.")
rule_app = typer.Typer(no_args_is_help=True, help="client.id -> proxy pool rules of the name service.")

URL = typer.Option(None, "--controller", envvar="FEDKAFKA_CONTROLLER_URL",
                   help="controller URL, or several comma-separated (the active one is followed)")
TOKEN = typer.Option(None, "--token-file", help="file holding the controller token (else $FEDKAFKA_TOKEN)")
JSON = typer.Option(False, "--json", help="machine-readable output")
DEFAULT_DB = "sqlite:///fedkafka-controller.db"


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"fedkafka: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _call(url: str | None, token_file: Path | None, fn) -> Any:
    try:
        with AdminClient(*locate(url, token_file)) as api:
            return fn(api)
    except AdminError as e:
        _fail(str(e))


def _out(data: Any, as_json: bool, render) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        render(data)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    console.print(table)


# -- the service -----------------------------------------------------------------------------------
_SERVICE_TOKEN_FILE = typer.Option(None, "--service-token-file", help="file holding a second token, for proxies "
                                   "(and name services without a routing token): it may only register, heartbeat, "
                                   "read the view and pools, allocate producer ids and forward clients' topic/ACL "
                                   "admin requests (docs/OPERATIONS.md)")
_ROUTING_TOKEN_FILE = typer.Option(None, "--routing-token-file", help="file holding a token for name services: it "
                                   "may only read the client routing (GET /v1/client-routing; docs/OPERATIONS.md)")


def controller(
    db: str | None = typer.Option(None, "--db", help="database URL (sqlite:///PATH, postgresql+psycopg://...; "
                                  f"default {DEFAULT_DB}); one with a password: --db-file"),
    db_file: Path | None = typer.Option(None, "--db-file", help="file (mode 0600) holding the database URL, so a "
                                        "password stays out of the command line (ps) and service definitions"),
    env_file: Path | None = typer.Option(None, "--env-file", help="file (mode 0600) of KEY=VALUE lines set in the "
                                         "environment at start, before the database is opened (e.g. PGPASSWORD)"),
    listen: str = typer.Option("127.0.0.1:8470", "--listen", help="HOST:PORT for the API"),
    token_file: Path = typer.Option(..., "--token-file", help="file holding the API token"),
    scan_interval: float = typer.Option(5.0, "--scan-interval", help="seconds between cluster scans"),
    lease_ms: int = typer.Option(10_000, "--lease-ms", help="proxy lease: a silent proxy leaves the view after it "
                                 "(docs/DESIGN.md §5.2)"),
    fence_ms: int = typer.Option(900_000, "--fence-ms", help="how long a proxy keeps producing without reaching a "
                                 "controller; a move waits this long for a silent proxy (docs/DESIGN.md §4.9)"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="largest request body accepted (413 "
                                       "above it)"),
    offsets_copy_interval: float = typer.Option(30.0, "--offsets-copy-interval", help="seconds between copies of "
                                                "every group's committed offsets (what `coordination move "
                                                "--unclean` restores; 0: none)"),
    auto_failover_after: float | None = typer.Option(None, "--auto-failover-after", help="fail a cluster over "
                                                     "once it has been unreachable this many seconds (default: "
                                                     "never; `fedkafka failover` does it by hand)"),
    advertise_url: str | None = typer.Option(None, "--advertise-url", help="URL proxies and the CLI reach this "
                                             "controller at (default http://LISTEN); named by standbys"),
    leader_lease_ms: int = typer.Option(10_000, "--leader-lease-ms", help="how long the active controller holds "
                                        "the database's leader row without renewing; a standby takes over after "
                                        "it (docs/DESIGN.md §3.6)"),
    upstream_config: Path | None = typer.Option(None, "--upstream-config", help="JSON file (mode 0600) of "
                                                "librdkafka security settings for the physical clusters' brokers: "
                                                "security.protocol, ssl.*, sasl.* (docs/OPERATIONS.md)"),
    service_token_file: Path | None = _SERVICE_TOKEN_FILE,
    routing_token_file: Path | None = _ROUTING_TOKEN_FILE,
    metrics_token_required: bool = typer.Option(False, "--metrics-token-required", help="/metrics answers only "
                                                "the operator or the service token (403 to the routing token); "
                                                "default: open, like /healthz"),
    ssl_cert: Path | None = typer.Option(None, "--ssl-cert", help="PEM certificate chain: serve the API over "
                                         "HTTPS (clients trust its CA with FEDKAFKA_CA_FILE)"),
    ssl_key: Path | None = typer.Option(None, "--ssl-key", help="PEM private key of --ssl-cert (0600)"),
) -> None:
    """Run the controller: config database, cluster scans, view distribution, admin API. Several controllers on
    one database elect one active; the others stand by."""
    _load_env_file(env_file)
    db_url = _database_url(db, db_file)
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        _fail(f"--listen must be HOST:PORT, got {listen!r}", 2)
    tokens = _read_tokens(token_file, service_token_file, routing_token_file)
    tls = _tls_files(ssl_cert, ssl_key)
    _check_controller_numbers(scan_interval, lease_ms, fence_ms, max_body_bytes, offsets_copy_interval,
                              auto_failover_after, leader_lease_ms)
    from fedkafka.cli.services import load_upstream
    from fedkafka.controller.service import Settings

    settings = Settings(db_url=db_url, lease_ms=lease_ms, fence_ms=fence_ms, scan_interval=scan_interval,
                        auto_failover_after=auto_failover_after, offsets_copy_interval=offsets_copy_interval,
                        upstream=load_upstream(upstream_config))
    _serve(settings, (host, int(port), listen), advertise_url, leader_lease_ms / 1000, tls,
           {"tokens": tokens, "max_body": max_body_bytes, "metrics_token_required": metrics_token_required})


def _serve(settings, address: tuple[str, int, str], advertise_url: str | None, leader_lease_s: float,
           tls: tuple[str, str] | None, app_options: dict[str, Any]) -> None:
    logs.configure()  # FEDKAFKA_LOG_LEVEL, FEDKAFKA_LOG_FORMAT=json
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration run is noise
    import uvicorn

    from fedkafka.controller.app import create_app
    from fedkafka.controller.leadership import Leadership
    from fedkafka.controller.service import Controller

    # Bind first: holding the port proves a leader row naming our URL was left by a process that is gone.
    host, port, listen = address
    sock = _bound_socket(host, port, listen)
    url = advertise_url or f"{'https' if tls else 'http'}://{_url_host(host)}:{sock.getsockname()[1]}"
    ctl = _open_controller(Controller, settings, settings.db_url,
                           wait=bool(os.environ.get("FEDKAFKA_CONTROLLER_RESTARTED")))
    leadership = Leadership(ctl.session, url, leader_lease_s, owns_url=True)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found at start: exit 0 there.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tokens = app_options.pop("tokens")
    app = create_app(ctl, tokens, leadership=leadership, **app_options)
    cert, key = tls or (None, None)
    uvicorn.run(app, fd=sock.fileno(), log_level="warning", access_log=False, ssl_certfile=cert, ssl_keyfile=key)
    logging.getLogger(__name__).info("controller stopped")


def _database_url(db: str | None, db_file: Path | None) -> str:
    """--db, or the first line of --db-file (one of them; neither: the SQLite default)."""
    if db is not None and db_file is not None:
        _fail("give --db or --db-file, not both", 2)
    if db_file is None:
        return db or DEFAULT_DB
    # a URL, not a token: a blank inside is the URL's (a path, a PostgreSQL option), so not the token rule
    try:
        first_line = next(iter(db_file.read_text().splitlines()), "").strip()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read --db-file: {e}", 2)
    if not first_line:
        _fail(f"--db-file {db_file}: its first line is empty, no database URL", 2)
    return first_line


def _load_env_file(env_file: Path | None) -> None:
    """Set the KEY=VALUE lines of --env-file in os.environ (blank lines and # comments skipped; the value is the
    rest of the line, as written). A bad line fails naming its number only: the values may be secrets."""
    if env_file is None:
        return
    try:
        lines = env_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read --env-file: {e}", 2)
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            _fail(f"--env-file {env_file} line {number}: expected KEY=VALUE with KEY a variable name", 2)
        os.environ[key] = value


def _read_token(token_file: Path, option: str = "--token-file") -> str:
    try:
        return read_token(token_file)
    except OSError as e:
        _fail(f"cannot read {option}: {e}", 2)
    except TokenFileRefused as refused:
        _fail(f"{option} {refused}", 2)


def _read_tokens(token_file: Path, service_token_file: Path | None, routing_token_file: Path | None = None):
    from fedkafka.controller.scopes import Tokens

    operator = _read_token(token_file)
    service = None if service_token_file is None else _read_token(service_token_file, "--service-token-file")
    routing = None if routing_token_file is None else _read_token(routing_token_file, "--routing-token-file")
    if service == operator:  # the service token would be the operator's: every proxy host could do everything
        _fail("--service-token-file holds the same token as --token-file; give proxies a token of their own", 2)
    if routing is not None and routing in (operator, service):  # a name service host would hold a wider token
        _fail("--routing-token-file holds the same token as --token-file or --service-token-file; give name "
              "services a token of their own", 2)
    return Tokens(operator, service, routing)


def _tls_files(ssl_cert: Path | None, ssl_key: Path | None) -> tuple[str, str] | None:
    """uvicorn's ssl_certfile/ssl_keyfile (it wraps the pre-bound socket it is given as fd), checked here so a
    bad pair fails at start with one line, not in uvicorn's startup."""
    if ssl_cert is None and ssl_key is None:
        return None
    if ssl_cert is None or ssl_key is None:
        _fail("--ssl-cert and --ssl-key go together", 2)
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(ssl_cert, ssl_key)
    except (OSError, ssl.SSLError) as e:
        _fail(f"cannot load --ssl-cert/--ssl-key: {e}", 2)
    return str(ssl_cert), str(ssl_key)


def _check_controller_numbers(scan_interval: float, lease_ms: int, fence_ms: int, max_body_bytes: int,
                              offsets_copy_interval: float, auto_failover_after: float | None,
                              leader_lease_ms: int) -> None:
    if scan_interval <= 0 or lease_ms < 100 or max_body_bytes < 1024:
        _fail("--scan-interval must be > 0, --lease-ms >= 100 and --max-body-bytes >= 1024", 2)
    if auto_failover_after is not None and auto_failover_after < 0:
        _fail("--auto-failover-after must be >= 0 seconds", 2)
    if offsets_copy_interval < 0:
        _fail("--offsets-copy-interval must be >= 0 seconds", 2)
    if fence_ms < lease_ms:
        _fail(f"--fence-ms ({fence_ms}) must be at least --lease-ms ({lease_ms})", 2)
    if leader_lease_ms < 300:
        _fail("--leader-lease-ms must be at least 300", 2)


def _bound_socket(host: str, port: int, listen: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host or "0.0.0.0", port))
    except OSError as e:
        _fail(f"cannot listen on {listen}: {e}", 2)
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname() if host else "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _open_controller(controller_class, settings, db: str, wait: bool):
    """The service on its database, a standby until its leadership holds the row (it composes no view before:
    docs/DESIGN.md §3.6). `wait` (a controller that restarted itself as a standby): retry until the database answers
    instead of exiting."""
    delay = 0.5
    while True:
        try:
            return controller_class(settings, standby=True)
        except Exception as e:  # bad URL, unreachable database, failed migration: one line, non-zero
            message = f"cannot open database {db}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if not wait:
                _fail(message, 2)
            logging.getLogger(__name__).warning("%s; retrying", message)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


# -- clusters --------------------------------------------------------------------------------------
@cluster_app.command("add")
def cluster_add(cluster_id: str, bootstrap: str = typer.Option(..., "--bootstrap"),
                coordination: bool | None = typer.Option(None, "--coordination/--no-coordination"),
                url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    """Register a physical cluster (or update its bootstrap); idempotent."""
    res = _call(url, token_file, lambda api: api.put_cluster(cluster_id, bootstrap, coordination))
    _out(res, as_json, lambda r: console.print(
        f"cluster {cluster_id}: {'registered/updated' if r['changed'] else 'unchanged'}"
        f" (reachable: {r['cluster']['reachable']})"))


@cluster_app.command("list")
def cluster_list(url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    res = _call(url, token_file, lambda api: api.clusters())
    _out(res, as_json, lambda r: _table("clusters", ["id", "bootstrap", "state", "reachable", "coordination"],
                                        [[c["id"], c["bootstrap"], c["state"], c["reachable"], c["coordination"]]
                                         for c in r]))


@cluster_app.command("set-state")
def cluster_set_state(cluster_id: str, state: str, url: str | None = URL, token_file: Path | None = TOKEN,
                      as_json: bool = JSON) -> None:
    """active | read_only | draining | removed."""
    res = _call(url, token_file, lambda api: api.set_cluster_state(cluster_id, state))
    _out(res, as_json, lambda r: console.print(f"cluster {cluster_id}: {r['cluster']['state']}"))


@cluster_app.command("activate")
def cluster_activate(cluster_id: str, url: str | None = URL, token_file: Path | None = TOKEN,
                     as_json: bool = JSON) -> None:
    """read_only -> active: a cluster back after a failover (or a decommission given up) takes writes again."""
    res = _call(url, token_file, lambda api: api.set_cluster_state(cluster_id, "active"))
    _out(res, as_json, lambda r: console.print(f"cluster {cluster_id}: {r['cluster']['state']}"))


# -- topics ----------------------------------------------------------------------------------------
@topic_app.command("create")
def topic_create(name: str, partitions: int = typer.Option(..., "--partitions", "-p"),
                 placement: str = typer.Option("blocks", "--placement", help="blocks (the article's) | balanced"),
                 config: list[str] = typer.Option([], "--config", "-c", help="KEY=VALUE, repeatable"),
                 url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    """Create a logical topic (physical topics on its clusters + shadow on the coordination cluster)."""
    pairs = {}
    for item in config:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--config must be KEY=VALUE, got {item!r}", 2)
        pairs[key] = value
    with console.status(f"creating {name} on the physical clusters...", spinner="dots"):
        res = _call(url, token_file, lambda api: api.put_topic(name, partitions, placement, pairs))
    _out(res, as_json, lambda r: _render_topic(r["topic"], "created" if r["changed"] else "unchanged"))


@topic_app.command("describe")
def topic_describe(name: str, url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    res = _call(url, token_file, lambda api: api.topic(name))
    _out(res, as_json, lambda r: _render_topic(r, None))


@topic_app.command("list")
def topic_list(url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    res = _call(url, token_file, lambda api: api.topics())
    _out(res, as_json, lambda r: _table("topics", ["name", "partitions", "placement", "config"],
                                        [[t["name"], t["partitions"], t["placement"], t["config"] or ""] for t in r]))


@topic_app.command("delete")
def topic_delete(name: str, url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    _call(url, token_file, lambda api: api.delete_topic(name))
    console.print(f"topic {name} deleted")


def _render_topic(t: dict, verb: str | None) -> None:
    if verb:
        console.print(f"topic {t['name']} {verb}: {t['partitions']} partitions, placement {t['placement']}")
    rows = [[c["partition"], c["leader_epoch"], "yes" if c["frozen"] else "",
             " -> ".join(f"{s['cluster']}/{s['topic']}/{s['partition']}@{s['phys_start']}"
                         f"..{'' if s['phys_end'] is None else s['phys_end']} (base {s['logical_base']})"
                         for s in c["segments"])] for c in t.get("chains", [])]
    _table(f"{t['name']} ({t['topic_id']})", ["partition", "epoch", "frozen", "segments"], rows)


# -- view, status, rules ---------------------------------------------------------------------------
@view_app.command("show")
def view_show(url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    res = _call(url, token_file, lambda api: api.view())
    _out(res, as_json, lambda v: console.print(
        f"view version [bold]{v['version']}[/]: {len(v['clusters'])} clusters "
        f"({', '.join(c['id'] + ('' if c['reachable'] else ' UNREACHABLE') for c in v['clusters'])}), "
        f"{len(v['topics'])} topics, {len(v['proxies'])} proxies, coordination {v['coordination_cluster']}"))


def status(url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON,
           proxy_admin: list[str] = typer.Option([], "--proxy-admin", help="HOST:PORT of a proxy's admin listener "
                                                 "to include (repeatable)"),
           check: bool = typer.Option(False, "--check", help="exit 3 when the health summary finds issues")) -> None:
    """Controller status (view version, counts, live proxies and the version each applied) and a health summary
    from the signals the alert rules read: the controller's /metrics, and each --proxy-admin's /readyz and
    /metrics."""
    res, metrics = _call(url, token_file, lambda api: (api.status(), _controller_metrics(api)))
    res["health"] = _health(res, metrics, proxy_admin).to_dict()

    def render(s: dict) -> None:
        console.print(f"view version {s['view_version']}, {s['clusters']} clusters, {s['topics']} topics, "
                      f"coordination {s.get('coordination_cluster')}, unreachable: {s.get('unreachable') or 'none'}")
        _table("proxies", ["node", "address", "role", "pool", "applied", "workers", "draining"],  # applied: lowest
               [[p["node_id"], f"{p['host']}:{p['port']}", p["role"], p["pool"], p["applied_version"],
                 len(p.get("workers", ())) or 1, "yes" if p.get("draining") else ""] for p in s["proxies"]])
        issues = s["health"]["issues"]
        console.print("health: [green]OK[/]" if not issues else f"health: [red]{len(issues)} issue(s)[/]")
        for issue in issues:
            console.print(f"  - {issue}")

    _out(res, as_json, render)
    if check and res["health"]["issues"]:
        raise typer.Exit(3)


def _controller_metrics(api: AdminClient) -> str:
    """The active controller's /metrics, through the CLI's client (its token, $FEDKAFKA_CA_FILE, the controller
    list followed): a refusal says which token to give rather than summarising a 401's body."""
    try:
        return api.metrics()
    except AdminError as e:
        if e.status in (401, 403):
            raise AdminError(f"the controller refused its /metrics to this token ({e}); the health summary needs "
                             "the operator or service token (--token-file or $FEDKAFKA_TOKEN)", e.status) from None
        raise AdminError(f"cannot read the controller's /metrics: {e}", e.status) from None


def _health(status_doc: dict, metrics: str, proxy_admin: list[str]):
    import httpx

    from fedkafka.observe import health

    try:
        controller = health.parse(metrics)
    except ValueError as e:
        _fail(f"cannot read the controller's /metrics: {e}")
    probes = []
    for address in proxy_admin:
        probe = health.ProxyProbe(address)
        try:
            probe.ready = httpx.get(f"http://{address}/readyz", timeout=10).json()
            probe.metrics = health.parse(httpx.get(f"http://{address}/metrics", timeout=10).text)
        except (httpx.HTTPError, ValueError) as e:
            probe.error = f"{type(e).__name__}: {e}"
        probes.append(probe)
    return health.summarize(status_doc, controller, probes)


@rule_app.command("set")
def rule_set(name: str, match: str = typer.Option(..., "--match", help="exact | prefix"),
             pattern: str = typer.Option(..., "--pattern"), pool: str = typer.Option(..., "--pool"),
             url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    res = _call(url, token_file, lambda api: api.put_rule(name, match, pattern, pool))
    _out(res, as_json, lambda r: console.print(f"rule {name}: {'set' if r['changed'] else 'unchanged'}"))


@rule_app.command("delete")
def rule_delete(name: str, url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    _call(url, token_file, lambda api: api.delete_rule(name))
    console.print(f"rule {name}: deleted")


@rule_app.command("list")
def rule_list(url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    res = _call(url, token_file, lambda api: api.rules())
    _out(res, as_json, lambda r: _table("client rules", ["name", "match", "pattern", "pool"],
                                        [[x["name"], x["match"], x["pattern"], x["pool"]] for x in r]))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("controller")(controller)
    app.command("status")(status)
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(topic_app, name="topic")
    app.add_typer(view_app, name="view")
    app.add_typer(rule_app, name="client-rule")
