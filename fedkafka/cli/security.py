"""`fedkafka user ...`: SASL users. The password is hashed here (SCRAM, RFC 5802); only the salted keys go to
the controller, so no password crosses the network, sits in the database or shows in `ps` (docs/DESIGN.md §9)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from fedkafka.cli.admin import JSON, TOKEN, URL, _call, _out, _table, console
from fedkafka.security import scram

user_app = typer.Typer(no_args_is_help=True, help="SASL users (PLAIN and SCRAM-SHA-256/512).")
PASSWORD_ENV = "FEDKAFKA_USER_PASSWORD"


def _password(password_file: Path | None) -> str:
    """From a file, $FEDKAFKA_USER_PASSWORD or a prompt: never from the command line, where `ps` shows it."""
    if password_file is not None:
        try:
            return password_file.read_text().rstrip("\n")
        except OSError as e:
            raise typer.BadParameter(f"cannot read it: {e}", param_hint="--password-file") from None
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@user_app.command("create")
def user_create(name: str,
                password_file: Path | None = typer.Option(None, "--password-file",
                                                          help=f"file holding the password (else ${PASSWORD_ENV}, "
                                                               "stdin or a prompt)"),
                mechanism: list[str] = typer.Option(list(scram.MECHANISMS), "--mechanism",
                                                    help="SCRAM-SHA-256 and/or SCRAM-SHA-512 (PLAIN checks either)"),
                iterations: int = typer.Option(scram.DEFAULT_ITERATIONS, "--iterations",
                                               min=scram.MIN_ITERATIONS, max=1_000_000),
                url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    """Create a user or change its password (also how a password is rotated)."""
    unknown = [m for m in mechanism if m not in scram.MECHANISMS]
    if unknown:
        raise typer.BadParameter(f"unknown {unknown}; use {', '.join(scram.MECHANISMS)}", param_hint="--mechanism")
    password = _password(password_file)
    if not password:
        raise typer.BadParameter("the password is empty", param_hint="--password-file")
    creds = [{k: v for k, v in scram.make_credential(name, m, password, iterations).to_dict().items() if k != "user"}
             for m in dict.fromkeys(mechanism)]
    res = _call(url, token_file, lambda api: api.put_user(name, creds))
    _out(res, as_json, lambda r: console.print(f"user {name}: {'set' if r['changed'] else 'unchanged'}"))


@user_app.command("delete")
def user_delete(name: str, url: str | None = URL, token_file: Path | None = TOKEN) -> None:
    _call(url, token_file, lambda api: api.delete_user(name))
    console.print(f"user {name}: deleted")


@user_app.command("list")
def user_list(url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    res = _call(url, token_file, lambda api: api.users())
    _out(res, as_json, lambda r: _table("users", ["user", "mechanisms"], [
        [u["user"], ", ".join(f"{c['mechanism']} ({c['iterations']})" for c in u["credentials"])] for u in r]))


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
