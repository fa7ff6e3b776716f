"""`fedkafka moves`: list segment moves; repair a held one (docs/OPERATIONS.md, "A held move")."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedkafka.controller.client import AdminClient, AdminError, locate

URL = typer.Option(None, "--controller", envvar="FEDKAFKA_CONTROLLER_URL",
                   help="controller URL, or several comma-separated (the active one is followed)")
TOKEN = typer.Option(None, "--token-file", help="file holding the controller token (else $FEDKAFKA_TOKEN)")
JSON = typer.Option(False, "--json", help="machine-readable output")
COLUMNS = ("id", "topic", "partition", "from_cluster", "to_cluster", "to_topic", "to_partition", "state", "gap",
           "target_end", "planned_target_end", "held_for", "error")

moves_app = typer.Typer(no_args_is_help=True, help="Segment moves; a held one is repaired here (its partition is "
                        "frozen until then: docs/OPERATIONS.md, \"A held move\").")


def _call(url: str | None, token_file: Path | None, fn) -> Any:
    try:
        with AdminClient(*locate(url, token_file)) as api:
            return fn(api)
    except AdminError as e:
        print(f"fedkafka: {e}", file=sys.stderr)
        raise typer.Exit(1) from None


@moves_app.command("list")
def list_moves(held: bool = typer.Option(False, "--held", help="only the held moves (same as --state held)"),
               state: str | None = typer.Option(None, "--state", help="only the moves in this state (default: every "
                                                "unfinished one)"),
               as_json: bool = JSON, url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    """The unfinished moves (planned, frozen, sealed, held), or those in one state."""
    rows = _call(url, token_file, lambda api: api.moves("held" if held else state))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="held moves" if held else f"moves ({state or 'unfinished'})")
    for c in COLUMNS:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*["" if r[c] is None else str(r[c]) for c in COLUMNS])
    Console(width=max(Console().width, 160)).print(table)


@moves_app.command("publish")
def publish(move_id: int = typer.Argument(..., help="the held move's id (`fedkafka moves list --held`)"),
            seal: int = typer.Option(..., "--seal", help="the source's log end: where the lost publish sealed it "
                                     "(a failover's move: the source segment's phys_end in a proxy's view.json)"),
            target_start: int = typer.Option(..., "--target-start", help="where its segment starts on the target: "
                                             "the move's target_end (a proxy's view.json: the target segment's "
                                             "phys_start)"),
            force: bool = typer.Option(False, "--force", help="publish though a check disagrees (target_start not "
                                       "target_end, the source's or target's log end not as expected; never "
                                       "a target_start below an older segment's seal on the target)"),
            as_json: bool = JSON, url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    """Publish a held move as the publish the config database lost had: its source sealed at --seal, its new
    segment on the target from --target-start. The sweeper publishes it within 30 s; then its partition takes
    writes again and the records written under the lost publish are read at the offsets they were acked at.
    It may take up to a minute (slow acks, a slow source); the same command repeated once the move was published
    (e.g. after no answer) answers the published move and changes nothing."""
    move = _call(url, token_file, lambda api: api.publish_move(move_id, seal, target_start, force))
    if as_json:
        print(json.dumps(move, indent=2))
        return
    then = "published" if move["state"] == "done" else "the sweeper publishes it within 30 s"
    print(f"move {move_id} of {move['topic']}/{move['partition']} sealed at {move['seal']}, its segment on "
          f"{move['to_cluster']}/{move['to_topic']}/{move['to_partition']} from {move['phys_start']}; {then}")
    for line in move.get("checks", []):
        print(f"  checked: {line}")


@moves_app.command("roll-back")
def roll_back(move_id: int = typer.Argument(..., help="the held move's id (`fedkafka moves list --held`)"),
              nothing_was_published: bool = typer.Option(False, "--nothing-was-published", help="the move has no "
                                                         "target_end (no_target_end) or its target cannot be read, "
                                                         "and no proxy's view.json has a segment of it on its "
                                                         "target (a move held target_grew is refused even so)"),
              as_json: bool = JSON, url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    """Roll a held move back (its partition unfrozen, writes go on at the source) when nothing was written under
    a lost publish: its target's log end is still the move's target_end. The same command repeated once the move
    was rolled back (e.g. after no answer) answers the rolled-back move and changes nothing."""
    move = _call(url, token_file, lambda api: api.roll_back_move(move_id, nothing_was_published))
    if as_json:
        print(json.dumps(move, indent=2))
        return
    print(f"move {move_id} of {move['topic']}/{move['partition']} {move['state']}: {move['error']}")
    for line in move.get("checks", []):
        print(f"  {line}")


def register(app: typer.Typer) -> None:
    app.add_typer(moves_app, name="moves")
