"""`fedkafka local up|down|status|demo|add-cluster`: a federation on this machine."""

from __future__ import annotations

import json
import time
from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table

from fedkafka import local
from fedkafka.kafka.cluster import ClusterError
from fedkafka.kafka.dist import KafkaDistError

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)


class Security(StrEnum):
    plaintext = "plaintext"
    sasl_ssl = "sasl_ssl"


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@app.command()
def up(clusters: int = typer.Option(2, "--clusters", "-n", min=1, max=9, help="Physical clusters to run."),
       brokers: int = typer.Option(None, "--brokers", "-b", min=1, max=9, show_default="1",
                                   help="Brokers per new cluster (3 or more: 3 replicas of every partition, "
                                        "min.insync.replicas 2). Existing clusters keep theirs."),
       proxies: int = typer.Option(1, "--proxies", min=1, max=8, help="Proxies (role both) to run."),
       controllers: int = typer.Option(1, "--controllers", min=1, max=5,
                                       help="Controllers: 1 on SQLite, or several on a local PostgreSQL (one active, "
                                            "the others standing by)."),
       clusters_only: bool = typer.Option(False, help="Only the physical clusters, no fedkafka services."),
       security: Security = typer.Option(None, "--security", show_default="plaintext, or what the federation runs",
                                         help="sasl_ssl: brokers that only the federation may use, proxies and "
                                              "the name service with a SASL_SSL listener, ACLs, and client "
                                              "settings for a demo user in <state dir>/client/.")) -> None:
    """Start (or resume) the local federation: N Kafka clusters, controller, proxies, name service."""
    state = local.LocalState.load()
    if state.provisioned:
        _fail(f"{state.provisioned_path} describes a federation provisioned by Ansible (make up); "
              "stop it with `make down` (ansible-playbook playbooks/teardown.yml) before `fedkafka local up`")
    started = time.monotonic()
    try:
        local.choose_security(state, security.value if security else None)
        with console.status(f"starting {clusters} Kafka cluster(s)…"):
            running = local.up_clusters(state, clusters, brokers)
        for c in running:
            pids = ", ".join(str(b.pid) for b in c.brokers)
            console.print(f"cluster [bold]{c.name}[/bold] at {c.bootstrap} ({c.broker_count} broker(s), pid {pids}, "
                          f"up in {c.start_seconds}s)")
        if not clusters_only:
            with console.status(f"starting {controllers} controller(s)…"):
                for controller in local.up_controller(state, controllers):
                    console.print(f"controller at {controller['url']} (token in {controller['token_file']})")
            with console.status(f"starting {proxies} prox(ies)…"):
                for p in local.up_proxies(state, proxies):
                    console.print(f"proxy at {p['bootstrap']}")
            with console.status("starting the name service…"):
                ns = local.up_nameservice(state)
            console.print(f"name service: Kafka bootstrap [bold]{ns['bootstrap']}[/bold], HTTP {ns['http']}")
            if state.secured:
                _print_client_files(state, ns)
    except (KafkaDistError, ClusterError, RuntimeError) as exc:
        _fail(str(exc))
    console.print(f"federation up in {time.monotonic() - started:.1f}s; state in {state.root}")


def _print_client_files(state: local.LocalState, ns: dict) -> None:
    from fedkafka.local_security import usage_hint

    files = local.write_client_files(state)
    console.print(f"name service SASL_SSL: [bold]{ns['sasl_ssl_bootstrap']}[/bold] (the PLAINTEXT one serves "
                  "User:ANONYMOUS, whom no ACL allows anything)")
    console.print(usage_hint(files), markup=False, highlight=False, soft_wrap=True)  # lines to copy whole


@app.command("add-cluster")
def add_cluster(name: str = typer.Option(None, help="Cluster id (default: next free cN)."),
                brokers: int = typer.Option(None, "--brokers", "-b", min=1, max=9,
                                            help="Brokers (default: as many as the first cluster has).")) -> None:
    """Start one more local physical cluster."""
    state = local.LocalState.load()
    try:
        cluster = local.add_cluster(state, name, brokers)
    except (KafkaDistError, ClusterError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"id": cluster.name, "bootstrap": cluster.bootstrap, "brokers": cluster.broker_count}))


@app.command()
def resume() -> None:
    """Start again the clusters `fedkafka local` started (add-cluster's included) that are not running."""
    state = local.LocalState.load()
    try:
        resumed = local.resume_clusters(state)
    except (KafkaDistError, ClusterError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"resumed": [{"id": c.name, "bootstrap": c.bootstrap} for c in resumed]}))


@app.command()
def down(purge: bool = typer.Option(False, help="Also delete all local data.")) -> None:
    """Stop everything `local up` started."""
    state = local.LocalState.load()
    local.down(state, purge=purge)
    console.print("federation stopped" + (" and purged" if purge else ""))
    if state.provisioned:
        console.print("the services Ansible provisioned keep running: `make down` "
                      "(ansible-playbook playbooks/teardown.yml) stops them")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """What runs, where to connect."""
    doc = local.LocalState.load().status()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table("what", "address", "running", "run by")
    for c in doc["clusters"]:
        table.add_row(f"cluster {c['id']}", c["bootstrap"], _yes(c["running"]), _run_by(c))
        for b in c["brokers"] if len(c["brokers"]) > 1 else []:
            table.add_row(f"  broker {b['node_id']}" + (" (controller)" if b["controller"] else ""), b["bootstrap"],
                          _yes(b["running"]), _run_by({**b, "managed_by": c.get("managed_by")}))
    for c in doc["controllers"]:
        role = " (active)" if c["active"] else " (taking over)" if c.get("role") == "taking_over" else ""
        table.add_row("controller" + role, c["url"] or "", _yes(c["running"]),
                      _run_by({**doc.get("controller", {}), **c}))
    for name in ("proxies", "nameservice"):
        svc = doc.get(name)
        for s in svc if isinstance(svc, list) else [svc] if svc else []:
            address = s.get("url") or s.get("bootstrap") or ""
            if s.get("sasl_ssl_bootstrap"):
                address += f", SASL_SSL {s['sasl_ssl_bootstrap']}"
            table.add_row("proxy" if name == "proxies" else name, address, _yes(s["running"]), _run_by(s))
    Console().print(table)


def _yes(running: bool) -> str:
    return "yes" if running else "[red]no[/red]"


def _run_by(entry: dict) -> str:
    return "supervisord (Ansible)" if entry.get("managed_by") else f"pid {entry.get('pid')}"


@app.command()
def demo(messages: int = typer.Option(100, min=1), topic: str = typer.Option("fedkafka-demo")) -> None:
    """Produce and consume through the local federation; prints what a client needs to connect."""
    from fedkafka.demo import run_demo

    try:
        report = run_demo(local.LocalState.load(), messages=messages, topic=topic, log=console.print)
    except RuntimeError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(report, indent=2))
