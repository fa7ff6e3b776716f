"""Review of s36-tokens (the Ansible side): token_prune.yml removes a stale token file only after the role's
service task, on a host in several groups only in its last play (controllers, name services, proxies); the
proxies play of site.yml takes one host at a time.

Checked and sound: for site.yml and upgrade.yml, every combination of the three groups keeps each file some
service of the host names (token.yml decides by all the host's groups, and the earlier plays rewrote their units
before the last one prunes); a host failing in an earlier play leaves the later plays, so nothing is pruned
there; --check --diff reports the same removals as the run, and a second run changes nothing; the roles have no
handlers (every restart is inline in the service task, before the prune); the only run_once tasks the proxies
play now runs per batch are install.yml's wheel build and find on localhost (changed_when false: repeated work,
no change); token_prune's argument spec requires its group, with the three choices.

Findings (fixed on s36-fixtokens, each test below passes; xfails removed):
2. (medium, pre-existing, a host in several groups) A rotated token restarts only the first play's service: the
   later play's token.yml finds the file already written (unchanged), so its service keeps the old token it read
   at start (a proxy on a controller host then fails against the controller, which restarted with the new one).
3. (medium, the branch's new guarantee) "a play failing half-way never leaves a unit naming a removed file" does
   not hold when it fails between rendering and applying the definition (supervisorctl update failing, or an
   interrupt before systemd's daemon-reload): the next run finds the definition unchanged on disk, applies
   nothing, and prunes the file the loaded definition (the running process's, the next autorestart's) names.
4. (low, docs) "only once no service of the host names them" (DESIGN §11): a host whose groups changed keeps the
   former group's service and its definition, and the new last group prunes its token file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_role_service_token import (
    API_TOKEN,
    CONTROLLER,
    NAME_SERVICE,
    PLAYBOOK,
    PROXY,
    ROOT,
    ROUTING_TOKEN,
    SERVICE_TOKEN,
    _stale_copies,
    _token_files,
    _token_tasks,
)

pytestmark = pytest.mark.ansible
COMMON = ROOT / "roles" / "fedkafka_common"


def _play(tmp_path: Path, plays: str, groups: tuple[str, ...], extra_vars: dict,
          *options: str) -> subprocess.CompletedProcess:
    """`plays` (YAML, each play on localhost with the common role's defaults) run with localhost in `groups`, with
    ansible-playbook's `options` (--check)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {group: {"hosts": {"localhost": {}}} for group in groups}}}))
    book = tmp_path / "book.yml"
    book.write_text(plays.replace("VARS_FILES", f"[{COMMON}/defaults/main.yml, {COMMON}/vars/main.yml]"))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"fedkafka_state_dir": str(tmp_path), "fedkafka_config_dir": str(tmp_path / "etc"),
                                 "fedkafka_api_token": API_TOKEN, **extra_vars}))
    proc = subprocess.run([PLAYBOOK, str(book), "-i", str(inventory), "-e", f"@{extra}", "-v", *options,
                           "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    extra.unlink()
    return proc


FAKE_SUPERVISORCTL = """#!/bin/sh
# supervisorctl of a supervisord that loaded {loaded} (reread compares the file with it, update loads the file);
# `update` fails while {fail} exists
echo "$*" >> {calls}
case "$3" in
  status) echo "proxy RUNNING pid 4242, uptime 1:00:00"; exit 0;;
  reread) if cmp -s {conf} {loaded}; then echo "No config updates to processes"; else echo "proxy: changed"; fi;;
  update) if [ -e {fail} ]; then echo "error: supervisord does not answer"; exit 2; fi; cp {conf} {loaded}
          echo "proxy: updated";;
esac
exit 0
"""

PROXY_PLAY = f"""
- name: Proxies (the role's token, service and token_prune steps)
  hosts: localhost
  gather_facts: false
  vars_files: VARS_FILES
  tasks:
    - ansible.builtin.include_tasks: {COMMON}/tasks/token.yml
    - ansible.builtin.include_role:
        name: fedkafka_common
        tasks_from: service
      vars:
        fedkafka_service_name: proxy
        fedkafka_service_command: [fedkafka, proxy, --token-file, "{{{{ fedkafka_service_token_file }}}}"]
    - ansible.builtin.include_tasks: {COMMON}/tasks/token_prune.yml
      vars:
        fedkafka_token_prune_group: fedkafka_proxies
"""
# a token rotation on a host that is controller and proxy: the controller play's token step, then the proxy play
ROTATION = f"""
- name: Controller (site.yml's play, its token tasks)
  hosts: localhost
  gather_facts: false
  vars_files: VARS_FILES
  tasks:
    - ansible.builtin.include_tasks: {COMMON}/tasks/token.yml
""" + PROXY_PLAY


def _supervisord(tmp_path: Path, loaded: str = "") -> tuple[Path, Path, dict]:
    """The fake supervisorctl (its program as `loaded`, when given): its calls log, its failure switch, the vars."""
    venv_bin, calls, fail = tmp_path / "venv" / "bin", tmp_path / "calls.log", tmp_path / "update-fails"
    conf, loaded_copy = tmp_path / "supervisor" / "conf.d" / "proxy.conf", tmp_path / "supervisor" / "loaded.conf"
    venv_bin.mkdir(parents=True)
    (venv_bin / "supervisorctl").write_text(FAKE_SUPERVISORCTL.format(calls=calls, fail=fail, conf=conf,
                                                                      loaded=loaded_copy))
    (venv_bin / "supervisorctl").chmod(0o755)
    conf.parent.mkdir(parents=True)
    if loaded:
        conf.write_text(loaded)
        loaded_copy.write_text(loaded)
    return calls, fail, {"fedkafka_venv": str(tmp_path / "venv"), "fedkafka_service_manager_effective": "supervisord"}


def test_a_rotated_service_token_restarts_the_proxy_of_a_controller_host(tmp_path):
    """Finding 2 (fixed: the proxy's token stamp, written after each start, differs from the token it now reads).
    The proxy ran with svc-old...; the controller play writes the rotated file, the proxy play must restart it."""
    _stale_copies(tmp_path)
    calls, _, settings = _supervisord(tmp_path)
    last_run = _play(tmp_path, PROXY_PLAY, (CONTROLLER, PROXY),
                     {**settings, "fedkafka_controller_service_token": "svc-old-0123456789abcdef"})
    assert last_run.returncode == 0, last_run.stdout[-4000:] + last_run.stderr[-2000:]
    calls.write_text("")
    settings["fedkafka_controller_service_token"] = SERVICE_TOKEN
    run = _play(tmp_path, ROTATION, (CONTROLLER, PROXY), settings)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert (tmp_path / "etc" / "service-token").read_text().strip() == SERVICE_TOKEN
    asked = [c.split()[2:] for c in calls.read_text().splitlines()]
    assert ["restart", "proxy"] in asked, asked  # it runs with svc-old... read at its start
    calls.write_text("")
    again = _play(tmp_path, ROTATION, (CONTROLLER, PROXY), settings)
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0 ", again.stdout), again.stdout[-3000:]
    assert [c.split()[2:] for c in calls.read_text().splitlines()] == [["status", "proxy"]]


def test_a_run_after_a_failed_update_applies_the_definition_before_it_prunes(tmp_path):
    """Finding 3 (fixed: `supervisorctl reread` says the loaded program differs from the file: it is applied)."""
    _stale_copies(tmp_path)  # the proxy ran with the api-token file; now the federation has a service token
    calls, fail, settings = _supervisord(
        tmp_path, f"[program:proxy]\ncommand=fedkafka proxy --token-file {tmp_path}/etc/api-token\n")
    plays = PROXY_PLAY
    settings["fedkafka_controller_service_token"] = SERVICE_TOKEN
    fail.touch()
    interrupted = _play(tmp_path, plays, (PROXY,), settings)
    assert interrupted.returncode != 0 and "does not answer" in interrupted.stdout, interrupted.stdout[-3000:]
    assert "api-token" in _token_files(tmp_path)  # as designed: the failed play pruned nothing
    fail.unlink()
    calls.write_text("")
    rerun = _play(tmp_path, plays, (PROXY,), settings)
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-2000:]
    applied = any(c.split()[2:3] in (["update"], ["restart"]) for c in calls.read_text().splitlines())
    # supervisord still runs (and would autorestart) the program naming api-token
    assert applied or "api-token" in _token_files(tmp_path), calls.read_text()


def test_a_host_that_left_the_proxies_keeps_the_file_its_remaining_proxy_names(tmp_path):
    """It was a name service and a proxy (the proxy on the service token); now only a name service, with a routing
    token. Nothing stops the proxy (its program or unit stays, autostart), yet the name service play prunes its
    file: its next start fails."""
    _stale_copies(tmp_path)
    (tmp_path / "supervisor" / "conf.d").mkdir(parents=True)
    (tmp_path / "supervisor" / "conf.d" / "proxy.conf").write_text(
        f"[program:proxy]\ncommand=fedkafka proxy --token-file {tmp_path}/etc/service-token\n")
    run = _token_tasks(tmp_path, SERVICE_TOKEN, ROUTING_TOKEN, (NAME_SERVICE,))
    assert run.returncode == 0, run.stdout[-3000:]
    assert "service-token" in _token_files(tmp_path)
