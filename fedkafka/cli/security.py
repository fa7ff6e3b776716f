"""`fedkafka user ...` and `fedkafka acl ...` (docs/DESIGN.md §11).

A user's password is hashed here (SCRAM, RFC 5802); only the salted keys go to the controller, so no password
crosses the network, sits in the database or shows in `ps`."""

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


acl_app = typer.Typer(no_args_is_help=True, help="ACLs on logical topics, groups, the cluster and transactional ids.")
PRINCIPAL = typer.Option(None, "--principal", help="User:alice, or User:* for everyone")
TOPIC = typer.Option(None, "--topic", help="a topic name (* for all)")
GROUP = typer.Option(None, "--group", help="a consumer group id (* for all)")
TXN = typer.Option(None, "--transactional-id", help="a transactional id (* for all)")
CLUSTER = typer.Option(False, "--cluster", help="the cluster resource")
PREFIXED = typer.Option(False, "--prefixed", help="the name is a prefix (PREFIXED pattern), not a literal")
HOST = typer.Option(None, "--host", help="client address the binding applies to (default * on add)")


def _resource(topic: str | None, group: str | None, txn: str | None, cluster: bool) -> tuple[str | None, str | None]:
    given = [(t, n) for t, n in (("TOPIC", topic), ("GROUP", group), ("TRANSACTIONAL_ID", txn)) if n is not None]
    if cluster:
        given.append(("CLUSTER", "kafka-cluster"))
    if len(given) > 1:
        raise typer.BadParameter("name one resource: --topic, --group, --transactional-id or --cluster")
    return given[0] if given else (None, None)


@acl_app.command("add")
def acl_add(principal: str = typer.Option(..., "--principal", help="User:alice, or User:* for everyone"),
            operation: list[str] = typer.Option(..., "--operation", help="READ, WRITE, DESCRIBE, ALL, ... "
                                                "(repeatable)"),
            topic: str | None = TOPIC, group: str | None = GROUP, txn: str | None = TXN, cluster: bool = CLUSTER,
            prefixed: bool = PREFIXED, host: str = typer.Option("*", "--host"),
            deny: bool = typer.Option(False, "--deny", help="a DENY binding (wins over any ALLOW)"),
            url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    """Allow (or deny) a principal operations on one resource."""
    rtype, name = _resource(topic, group, txn, cluster)
    if rtype is None:
        raise typer.BadParameter("name a resource: --topic, --group, --transactional-id or --cluster")
    bindings = [{"resource_type": rtype, "name": name, "pattern_type": "PREFIXED" if prefixed else "LITERAL",
                 "principal": principal, "host": host, "operation": op, "permission": "DENY" if deny else "ALLOW"}
                for op in operation]
    res = _call(url, token_file, lambda api: api.create_acls(bindings))
    _out(res, as_json, lambda r: console.print(f"{len(r['created'])} ACL(s) added"))


def _filter(principal, topic, group, txn, cluster, prefixed, host, operation) -> dict:
    rtype, name = _resource(topic, group, txn, cluster)
    return {"resource_type": rtype, "name": name, "pattern_type": ("PREFIXED" if prefixed else "LITERAL")
            if name is not None else None, "principal": principal, "host": host, "operation": operation}


@acl_app.command("list")
def acl_list(principal: str | None = PRINCIPAL, topic: str | None = TOPIC, group: str | None = GROUP,
             txn: str | None = TXN, cluster: bool = CLUSTER, prefixed: bool = PREFIXED, host: str | None = HOST,
             url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    f = _filter(principal, topic, group, txn, cluster, prefixed, host, None)
    res = _call(url, token_file, lambda api: api.acls(**f))
    _out(res, as_json, lambda r: _table("ACLs", ["resource", "name", "pattern", "principal", "host", "operation",
                                                 "permission"], [list(b.values()) for b in r]))


@acl_app.command("remove")
def acl_remove(principal: str | None = PRINCIPAL, topic: str | None = TOPIC, group: str | None = GROUP,
               txn: str | None = TXN, cluster: bool = CLUSTER, prefixed: bool = PREFIXED, host: str | None = HOST,
               operation: str | None = typer.Option(None, "--operation"),
               url: str | None = URL, token_file: Path | None = TOKEN, as_json: bool = JSON) -> None:
    """Remove every binding matching the options given (at least one)."""
    f = {k: v for k, v in _filter(principal, topic, group, txn, cluster, prefixed, host, operation).items()
         if v is not None}
    if not f:
        raise typer.BadParameter("give at least one of --principal, a resource, --host or --operation")
    res = _call(url, token_file, lambda api: api.delete_acls(**f))
    _out(res, as_json, lambda r: console.print(f"{len(r['deleted'])} ACL(s) removed"))


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(acl_app, name="acl")
