"""`fedkafka scale-up`, `decommission` and `failover`: start a controller workflow, follow it phase by phase."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedkafka.controller.client import AdminClient, AdminError, locate

URL = typer.Option(None, "--controller", envvar="FEDKAFKA_CONTROLLER_URL", help="controller URL")
TOKEN = typer.Option(None, "--token-file", help="file holding the controller token (else $FEDKAFKA_TOKEN)")
JSON = typer.Option(False, "--json", help="print the run's record (phases with timestamps, partitions moved)")
WAIT = typer.Option(False, "--wait", help="follow the run until it finished, with a progress bar per phase")
TIMEOUT = typer.Option(3600.0, "--timeout", help="seconds --wait waits")


def scale_up(cluster: str = typer.Option(..., "--cluster", help="id of the new (or registered) cluster"),
             bootstrap: str | None = typer.Option(None, "--bootstrap", help="HOST:PORT; registers the cluster"),
             strategy: str = typer.Option("rebalance", "--strategy", help="rebalance (default): move a fair share "
                                          "of active segments, keys stay put | expand: add partitions, keys re-hash"),
             wait: bool = WAIT, as_json: bool = JSON, timeout: float = TIMEOUT,
             url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    """Give a cluster a fair share of every topic's new writes (no data copied); idempotent."""
    body = {"kind": "scale_up", "cluster": cluster, "strategy": strategy,
            "bootstrap": bootstrap or _local_bootstrap(cluster)}
    _run(body, wait, as_json, timeout, url, token_file)


def decommission(cluster: str = typer.Option(..., "--cluster", help="id of the cluster to take out"),
                 drain: str = typer.Option("retention", "--drain", help="retention: removed when its segments "
                                           "expired | groups: when every consumer group committed past them"),
                 wait: bool = WAIT, as_json: bool = JSON, timeout: float = TIMEOUT,
                 url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    """read_only (no write reaches it again) -> draining (consumers finish it) -> removed; idempotent."""
    _run({"kind": "decommission", "cluster": cluster, "drain": drain}, wait, as_json, timeout, url, token_file)


def failover(cluster: str = typer.Option(..., "--cluster", help="id of the dead cluster"),
             wait: bool = WAIT, as_json: bool = JSON, timeout: float = TIMEOUT,
             url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    """Move a dead cluster's writes to live clusters now, leaving a gap in its partitions' offsets for what it
    held past the last end the controller read (readable there once it is back, read_only). Refused for a
    cluster that answers: use decommission."""
    _run({"kind": "failover", "cluster": cluster}, wait, as_json, timeout, url, token_file)


coordination_app = typer.Typer(help="the coordination cluster: where every consumer group lives", no_args_is_help=True)


@coordination_app.command("move")
def coordination_move(to: str = typer.Option(..., "--to", help="id of the cluster that takes the groups"),
                      unclean: bool = typer.Option(False, "--unclean", help="the coordination cluster is dead: "
                                                   "restore the controller's last copy of the offsets"),
                      wait: bool = WAIT, as_json: bool = JSON, timeout: float = TIMEOUT,
                      url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    """Move every consumer group and its committed offsets to another cluster; groups rejoin there."""
    _run({"kind": "coordination_move", "cluster": to, "unclean": unclean}, wait, as_json, timeout, url, token_file)


def _local_bootstrap(cluster: str) -> str | None:
    """A cluster started by `fedkafka local add-cluster` needs no --bootstrap: the local state knows it."""
    try:
        from fedkafka.local import LocalState

        found = LocalState.load().cluster(cluster)
    except (OSError, ValueError, KeyError):
        return None
    return found.bootstrap if found is not None else None


def _run(body: dict, wait: bool, as_json: bool, timeout: float, url: str | None, token_file: Path | None) -> None:
    try:
        with AdminClient(*locate(url, token_file)) as api:
            run = api.request("POST", "/v1/workflows", {k: v for k, v in body.items() if v is not None})
            if wait:
                run = _follow(api, run, timeout, Console(stderr=as_json))
    except AdminError as e:
        print(f"fedkafka: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(run, indent=2))
    else:
        _summary(run)
    if run["state"] == "failed":
        raise typer.Exit(1)


def _follow(api: AdminClient, run: dict, timeout: float, console: Console) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[state]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {ph["name"]: progress.add_task(ph["name"], total=1, state="pending") for ph in run["phases"]}
        shown: list[str] = []
        while True:
            for ph in run["phases"]:
                total = max(ph["total"], 1)
                done = total if ph["state"] == "done" else min(ph["done"], total)
                progress.update(tasks[ph["name"]], total=total, completed=done, state=ph["state"])
            waiting = run.get("waiting_for") or []
            if waiting != shown:
                for line in waiting:
                    console.print(f"  waiting: {line}")
                shown = waiting
            if run["state"] != "running":
                return run
            if time.monotonic() > deadline:
                raise AdminError(f"workflow {run['id']} still running after {timeout:.0f} s (it goes on; "
                                 f"GET /v1/workflows/{run['id']} follows it)")
            time.sleep(0.3)
            run = _poll(api, run["id"], deadline)


def _poll(api: AdminClient, run_id: int, deadline: float) -> dict[str, Any]:
    """The run's record. While no controller answers as the active one (503: one taking over, or standing by; or
    none reachable), ask again until `deadline`: in a failover the run goes on, the controller taking over resumes
    it (docs/DESIGN.md §6.2); ending the wait then said exit status 1, as for a failed run."""
    while True:
        try:
            return api.request("GET", f"/v1/workflows/{run_id}")
        except AdminError as e:
            if e.status not in (None, 503) or time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def _summary(run: dict) -> None:
    console = Console()
    what = f"{run['kind']} {run['cluster']} (run {run['id']})"
    if run["state"] == "failed":
        console.print(f"[red]{what} failed:[/red] {run['error']}")
    elif run["state"] == "running":
        console.print(f"{what} started, at phase {run['step']}; follow it with --wait or GET /v1/workflows/{run['id']}")
    else:
        took = (run["finished_at"] or time.time()) - run["created_at"]
        moved = (f"{run['moved']} partitions moved" if run["kind"] in ("scale_up", "failover") or run["moved"]
                 else f"{run.get('groups', 0)} groups moved from {run.get('from')}"
                 if run["kind"] == "coordination_move" else "nothing to move")
        console.print(f"{what} done in {took:.1f} s: {moved}{'' if run['changed'] else ' (nothing changed)'}")


def register(app: typer.Typer) -> None:
    app.command("scale-up")(scale_up)
    app.command("decommission")(decommission)
    app.command("failover")(failover)
    app.add_typer(coordination_app, name="coordination")
