"""`fedkafka check`: run the checker (keyed load + verification) against a federation, e.g. during a workflow."""

from __future__ import annotations

import json
import signal
import sys
import threading
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from fedkafka.controller.client import AdminClient, AdminError, locate


class Acks(StrEnum):
    all = "all"
    one = "1"


class Idempotence(StrEnum):
    on = "on"
    off = "off"


SUMMARY = ("acked", "consumed", "lost", "duplicates", "duplicates_idempotent", "order_violations",
           "produce_errors", "error_kinds", "client_failures", "producers")


def check(topic: str = typer.Option("fedkafka-check", "--topic", help="logical topic (created when missing)"),
          partitions: int = typer.Option(8, "--partitions", min=1, help="partitions of a topic it creates"),
          duration: float = typer.Option(60.0, "--duration", help="seconds of load (Ctrl-C ends it early)"),
          rate: float = typer.Option(100.0, "--rate", help="records per second per producer"),
          producers: int = typer.Option(2, "--producers", min=1, help="producers; idempotent and not, in turn"),
          consumers: int = typer.Option(2, "--consumers", min=1, help="consumers in one group"),
          acks: list[Acks] = typer.Option([Acks.all], "--acks", help="acks of the non-idempotent producers, "
                                          "cycled over them (repeat: --acks all --acks 1)"),
          idempotence: list[Idempotence] = typer.Option(
              [Idempotence.on, Idempotence.off], "--idempotence", help="idempotence of each producer, cycled "
              "(repeat: --idempotence on --idempotence off)"),
          bootstrap: str | None = typer.Option(None, "--bootstrap", help="HOST:PORT of the federation (default: "
                                               "the local name service)"),
          as_json: bool = typer.Option(False, "--json", help="print the whole report (timeline included)"),
          reread: bool = typer.Option(False, "--reread", help="at the end, also read every partition from the "
                                      "beginning (after a failover: the records a dead cluster held past the "
                                      "last known end, once it is back)"),
          url: str | None = typer.Option(None, "--controller", envvar="FEDKAFKA_CONTROLLER_URL"),
          token_file: Path | None = typer.Option(None, "--token-file")) -> None:
    """Produce keyed, numbered records through the proxies and consume them back; report what was acked but
    never consumed (lost), duplicates and per-key order violations. Exits 1 when anything was lost or
    reordered, or a client died."""
    from fedkafka.checker import Checker, CheckerConfig

    console = Console(stderr=True)
    try:
        bootstrap = bootstrap or _local_bootstrap()
        with AdminClient(*locate(url, token_file)) as api:
            api.request("PUT", f"/v1/topics/{topic}", {"partitions": partitions, "placement": "blocks",
                                                       "config": {}})
    except AdminError as e:
        print(f"fedkafka: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    checker = Checker(CheckerConfig(bootstrap=bootstrap, topic=topic, producers=producers, consumers=consumers,
                                    rate=rate, acks=tuple(a.value for a in acks),
                                    idempotent=tuple(i is Idempotence.on for i in idempotence))).start()
    console.print(f"checker {checker.run_id}: {producers} producers x {rate:g} rec/s, {consumers} consumers, "
                  f"topic {topic} at {bootstrap}; {duration:g} s (Ctrl-C to stop early)")
    stop.wait(duration)
    with console.status("draining: waiting until every acked record is consumed…"):
        report = checker.stop(drain_timeout=90, reread=reread)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(json.dumps({k: report[k] for k in SUMMARY}))
    if report["lost"] or report["order_violations"] or report["client_failures"]:
        raise typer.Exit(1)


def _local_bootstrap() -> str:
    from fedkafka.local import LocalState

    svc = LocalState.load().services.get("nameservice")
    if not svc:
        raise AdminError("no --bootstrap and no local name service (`make up` or `fedkafka local up`)")
    return svc["bootstrap"]


def register(app: typer.Typer) -> None:
    app.command("check")(check)
