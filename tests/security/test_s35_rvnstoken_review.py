"""Review of s35-nstoken (the name services' routing token): each finding was a strict xfail failing on the branch,
fixed on s35-fixnstoken (these now pass).

No privilege widening was found in the controller: the routing token reaches GET /v1/client-routing and, with
--metrics-token-required, /metrics (documented; since s36 it answers 403 there too,
tests/controller/test_token_scopes.py); every other route, the view and its stream answer 403 in the guard and
again in the route dependency; an empty or missing --routing-token-file and one equal to another token after
stripping refuse the start; without --routing-token-file the tokens are as before. The findings:

1. (medium: the feature's claim does not hold under Ansible) roles/fedkafka_common/tasks/token.yml writes every
   token the inventory sets on every host that includes it: a name-service host still gets the service-token file
   (ACL and topic writes, the view with every SCRAM StoredKey/ServerKey) and the operator's api-token file, both
   readable by the name service's own user, though token.yml, the defaults and DESIGN §11 say such a host "holds no
   token that writes ACLs or topics or reads the view's SCRAM keys". Proxy hosts get the routing-token file too.
2. (pre-existing, reported by the author; medium) the operator's api-token file is written on proxy and name-service
   hosts that run with a narrower token: only the controller reads it (--token-file), the modules get the token as a
   module argument, never from the file. rolling_restart.yml and upgrade.yml also run fedkafka_proxy/fedkafka_info on
   the proxy hosts with `token: fedkafka_api_token` (no delegate_to), sending the operator token there each run.
3. (low) The role's assert compares the raw strings while the controller compares them stripped: a routing token
   equal to another but for surrounding blanks, or of 16 blanks, passes the assert and the controller then refuses
   to start (fails closed, but only once the play restarts it).
4. (low) `fedkafka local up` creates routing.token (as controller.token) with write_text and then chmod 0600: the
   token is on disk with the umask's mode (0644 usually) in between.
5. (informational) scopes.Tokens accepts an empty routing (or service) token: `Authorization: Bearer ` then is that
   token. Only the CLI refuses an empty file; create_app takes any Tokens.
6. (low) site.yml's name-service play is not serial: the rollout the docs give it restarts every name service at
   once (upgrade.yml's is serial: 1), so clients lose every bootstrap together.

Static: the tasks' and plays' YAML read and their conditions rendered with Jinja; no playbook runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import jinja2
import pytest
import typer
import yaml
from ansible.plugins.test.core import TestModule as AnsibleTests

from fedkafka.cli.admin import _read_tokens
from fedkafka.controller.scopes import Tokens

ROOT = Path(__file__).resolve().parents[2]
API, SERVICE, ROUTING = "api-token-0123456789", "svc-token-0123456789", "routing-token-0123456789"
GROUPS = {"fedkafka_controller": ["c1"], "fedkafka_nameservice": ["ns1"], "fedkafka_proxies": ["p1"]}
HOST_OF = {"fedkafka_controller": "c1", "fedkafka_nameservice": "ns1", "fedkafka_proxies": "p1"}


def _true(expression: Any, variables: dict[str, Any]) -> bool:
    """An Ansible `when` (a string or a list of them, all true), rendered with Jinja as Ansible would: with
    Ansible's tests (token.yml's `match`, the one-word rule)."""
    expressions = expression if isinstance(expression, list) else [expression]
    environment = jinja2.Environment()
    environment.tests.update(AnsibleTests().tests())
    return all(bool(environment.compile_expression(str(e))(**variables)) for e in expressions)


def _written_token_files(group: str, service: str = SERVICE, routing: str = ROUTING) -> set[str]:
    """Which token files token.yml leaves on a host of `group` only (a file task skipped or `state: absent` is not
    written), with the inventory's tokens."""
    tasks = yaml.safe_load((ROOT / "roles/fedkafka_common/tasks/token.yml").read_text())
    variables = {"fedkafka_api_token": API, "fedkafka_controller_service_token": service,
                 "fedkafka_controller_routing_token": routing, "group_names": [group],
                 "inventory_hostname": HOST_OF[group], "groups": GROUPS,
                 "fedkafka_token_file": "api-token", "fedkafka_service_token_file": "service-token",
                 "fedkafka_routing_token_file": "routing-token"}
    written = set()
    for task in tasks:
        module = task.get("ansible.builtin.copy") or task.get("ansible.builtin.template")
        if module is None or module.get("state") == "absent" or not _true(task.get("when", True), variables):
            continue
        written.add(jinja2.Environment().from_string(module["dest"]).render(**variables))
    return written


def test_a_name_service_host_with_a_routing_token_holds_no_service_token():
    assert "service-token" not in _written_token_files("fedkafka_nameservice")
    assert "routing-token" not in _written_token_files("fedkafka_proxies")


def test_only_the_hosts_that_read_the_operator_token_get_its_file():
    assert "api-token" in _written_token_files("fedkafka_controller")
    assert "api-token" not in _written_token_files("fedkafka_proxies")
    assert "api-token" not in _written_token_files("fedkafka_nameservice")
    assert "api-token" not in _written_token_files("fedkafka_nameservice", service="")  # the routing token only


def _operator_module_tasks_on(play: dict[str, Any]) -> list[str]:
    """Names of a play's tasks that send the operator token to a fedkafka module run on the play's own hosts."""
    on_hosts = []
    for task in play.get("tasks", []) or []:
        module = next((v for k, v in task.items() if k.startswith("fedkafka_") and isinstance(v, dict)), None)
        if module and "fedkafka_api_token" in str(module.get("token", "")) and "delegate_to" not in task:
            on_hosts.append(task.get("name", "?"))
    return on_hosts


def test_modules_given_the_operator_token_run_on_controller_hosts_or_the_control_node():
    sent_elsewhere = {}
    for book in sorted((ROOT / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(book.read_text()) or []:
            hosts = str(play.get("hosts", ""))
            if hosts not in ("fedkafka_controller", "localhost") and _operator_module_tasks_on(play):
                sent_elsewhere[f"{book.name}: {hosts}"] = _operator_module_tasks_on(play)
    assert sent_elsewhere == {}


@pytest.mark.parametrize("routing", [API + " ", " " + SERVICE, " " * 16])
def test_the_role_refuses_every_routing_token_the_controller_refuses(tmp_path, routing):
    files = {"op": API, "svc": SERVICE, "routing": routing}
    for name, token in files.items():
        (tmp_path / name).write_text(token + "\n")
    with pytest.raises(typer.Exit):  # the controller: equal to another once stripped, or empty
        _read_tokens(tmp_path / "op", tmp_path / "svc", tmp_path / "routing")
    check = next(t for t in yaml.safe_load((ROOT / "roles/fedkafka_common/tasks/token_check.yml").read_text())
                 if t["name"] == "Check the routing token")
    variables = {"fedkafka_api_token": API, "fedkafka_controller_service_token": SERVICE,
                 "fedkafka_controller_routing_token": routing}
    assert _true(check["when"], variables)  # the check runs
    assert not _true(check["ansible.builtin.assert"]["that"], variables)  # and refuses it


def test_local_up_never_leaves_the_routing_token_readable_by_others(tmp_path, monkeypatch):
    from fedkafka import local

    modes_before_chmod: list[int] = []
    chmod = Path.chmod

    def recording_chmod(path: Path, mode: int, **kwargs: Any) -> None:
        modes_before_chmod.append(stat.S_IMODE(path.stat().st_mode))
        chmod(path, mode, **kwargs)

    monkeypatch.setattr(Path, "chmod", recording_chmod)
    state = type("State", (), {"root": tmp_path / "state"})()
    previous = os.umask(0o022)
    try:
        path = local._controller_token(state, local.ROUTING_TOKEN)  # type: ignore[arg-type]
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(mode & 0o077 == 0 for mode in modes_before_chmod), [oct(m) for m in modes_before_chmod]


def test_an_empty_routing_token_is_no_credential():
    try:
        tokens = Tokens("operator-token-1", None, "")
    except ValueError:
        return
    assert tokens.role("Bearer ") is None


def test_site_yml_switches_the_name_services_one_at_a_time():
    plays = yaml.safe_load((ROOT / "playbooks/site.yml").read_text())
    name_services = next(p for p in plays if p.get("hosts") == "fedkafka_nameservice")
    assert name_services.get("serial") == 1
