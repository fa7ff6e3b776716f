"""`fedkafka` command line: thin typer front end; each command family lives in its own module."""

from __future__ import annotations

import typer

from fedkafka.cli import admin, check, local, moves, nameservice, security, services, workflows

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="fedkafka: many physical Kafka clusters behind one logical cluster.")
app.add_typer(local.app, name="local", help="A whole federation on this machine (for trying and testing).")
admin.register(app)
services.register(app)
nameservice.register(app)
workflows.register(app)
moves.register(app)
check.register(app)
security.register(app)


def main() -> None:
    app()
