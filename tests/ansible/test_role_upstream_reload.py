"""A changed upstream config (rotated broker credentials) reloads the running proxy with SIGHUP instead of
restarting it (roles/fedkafka_common/tasks/reload.yml, wired in roles/fedkafka_proxy/tasks/main.yml): a restarted
proxy moves its clients to a sibling (docs/DESIGN.md §4.2). The controller, which loads the file only at start,
still restarts.

reload.yml runs in the real ansible-playbook; supervisorctl is a stand-in that logs what it is asked and answers
`status` as told. --check must predict the run's change exactly and signal nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_harness import ROOT

PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

# the play both tests run: the common role's defaults and vars, then the tasks under test (formatted with root)
PLAY_HEAD = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {root}/roles/fedkafka_common/defaults/main.yml
    - {root}/roles/fedkafka_common/vars/main.yml
  tasks:
"""

PLAY = PLAY_HEAD + """    - name: What the proxy role does after writing a changed upstream config
      ansible.builtin.include_tasks: {root}/roles/fedkafka_common/tasks/reload.yml
"""

SUPERVISORCTL = """#!/bin/sh
# a stand-in for supervisorctl: logs what it is asked; `status` answers {status}
echo "$*" >> {log}
case "$*" in
  *" status "*) echo "proxy                            {status}   pid 4242, uptime 1:00:00" ;;
  *" signal "*) echo "proxy: signalled" ;;
esac
"""


def run_reload(tmp_path: Path, status: str, check: bool) -> tuple[subprocess.CompletedProcess, list[str]]:
    venv, log = tmp_path / "venv", tmp_path / "supervisorctl.log"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    ctl = venv / "bin" / "supervisorctl"
    ctl.write_text(SUPERVISORCTL.format(log=log, status=status))
    ctl.chmod(0o755)
    book = tmp_path / "play.yml"
    book.write_text(PLAY.format(root=ROOT))
    given = {"fedkafka_service_name": "proxy", "fedkafka_service_manager": "supervisord",
             "fedkafka_venv": str(venv), "fedkafka_state_dir": str(tmp_path / "state")}
    proc = subprocess.run([PLAYBOOK, str(book), "-e", json.dumps(given), "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}", *(["--check"] if check else [])],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc, [line.split(maxsplit=2)[-1] for line in log.read_text().splitlines()] if log.exists() else []


def recap(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[proc.stdout.rindex("PLAY RECAP"):]


@pytest.mark.ansible
def test_a_running_proxy_gets_sighup_and_no_restart(tmp_path):
    proc, asked = run_reload(tmp_path, "RUNNING", check=False)
    assert asked == ["status proxy", "signal HUP proxy"], asked
    assert "changed=1" in recap(proc), recap(proc)


@pytest.mark.ansible
def test_check_mode_predicts_the_signal_and_sends_none(tmp_path):
    proc, asked = run_reload(tmp_path, "RUNNING", check=True)
    assert asked == ["status proxy"], asked  # asked only
    assert "changed=1" in recap(proc), recap(proc)


@pytest.mark.ansible
@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_a_proxy_that_does_not_run_is_left_alone(tmp_path, check):
    proc, asked = run_reload(tmp_path, "STOPPED", check=check)
    assert asked == ["status proxy"], asked  # its start reads the new file
    assert "changed=0" in recap(proc), recap(proc)


def _tasks(role: str) -> list[dict]:
    return yaml.safe_load((ROOT / "roles" / role / "tasks" / "main.yml").read_text())


def _include(tasks: list[dict], tasks_from: str) -> tuple[int, dict]:
    found = [(i, t) for i, t in enumerate(tasks)
             if t.get("ansible.builtin.include_role", {}).get("tasks_from") == tasks_from]
    assert len(found) == 1, [t.get("name") for t in tasks]
    return found[0]


def test_the_proxy_role_signals_a_changed_upstream_config_before_its_service_task_and_does_not_restart():
    tasks = _tasks("fedkafka_proxy")
    upstream, _ = _include(tasks, "upstream")
    reload, signalled = _include(tasks, "reload")
    service, run = _include(tasks, "service")
    assert upstream < reload < service  # asked before the service task: the same state in --check and the run
    assert signalled["when"] == "__fedkafka_upstream_reloadable | bool"
    assert signalled["vars"]["fedkafka_service_name"] == run["vars"]["fedkafka_service_name"] == "proxy"
    assert ("(__fedkafka_upstream_changed | bool and not __fedkafka_upstream_reloadable | bool)"
            in run["vars"]["fedkafka_service_restart"])


def test_the_controller_role_still_restarts_on_a_changed_upstream_config():
    tasks = _tasks("fedkafka_controller")
    _, run = _include(tasks, "service")
    assert "__fedkafka_upstream_changed" in run["vars"]["fedkafka_service_restart"]
    assert not [t for t in tasks if t.get("ansible.builtin.include_role", {}).get("tasks_from") == "reload"]


UPSTREAM_PLAY = PLAY_HEAD + """    - name: The common role's upstream tasks
      ansible.builtin.include_tasks: {root}/roles/fedkafka_common/tasks/upstream.yml
    - name: Keep what they decided
      ansible.builtin.copy:
        content: >-
          {{{{ {{'changed': __fedkafka_upstream_changed,
                'reloadable': __fedkafka_upstream_reloadable}} | to_json }}}}
        dest: {out}
        mode: "0600"
"""
FIRST = {"security.protocol": "SASL_SSL", "ssl.ca.location": "/etc/fedkafka/tls/kafka-ca.pem",
         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "fedkafka", "sasl.password": "Pw-first-1",
         "clusters": {"eu-2": {"sasl.username": "fedkafka-eu2", "sasl.password": "Pw-eu2-1"}}}


def run_upstream(tmp_path: Path, config: dict) -> dict:
    etc, out = tmp_path / "etc", tmp_path / "decided.json"
    etc.mkdir(exist_ok=True)
    book = tmp_path / "upstream.yml"
    book.write_text(UPSTREAM_PLAY.format(root=ROOT, out=out))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"fedkafka_config_dir": str(etc), "fedkafka_upstream_config": config}))
    extra.chmod(0o600)
    proc = subprocess.run([PLAYBOOK, str(book), "-e", f"@{extra}", "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Pw-" not in proc.stdout + proc.stderr  # no_log
    return json.loads(out.read_text())


@pytest.mark.ansible
@pytest.mark.parametrize("change, reloadable", [
    ({"sasl.password": "Pw-first-2"}, True),
    ({"sasl.username": "fedkafka-b", "sasl.password": "Pw-b-1"}, True),
    ({"clusters": {"eu-2": {"sasl.username": "fedkafka-eu2", "sasl.password": "Pw-eu2-2"}}}, True),
    ({"ssl.certificate.location": "/etc/fedkafka/tls/client.pem", "ssl.key.location": "/etc/fedkafka/tls/c.key"},
     True),
    ({"security.protocol": "SASL_PLAINTEXT"}, False),
    ({"sasl.mechanism": "SCRAM-SHA-256"}, False),
    ({"clusters": {"eu-2": {"security.protocol": "SSL"}}}, False),
], ids=["password", "second-principal", "cluster-password", "client-cert", "protocol", "mechanism",
        "cluster-protocol"])
def test_a_rotation_only_is_reloaded_anything_else_restarts(tmp_path, change, reloadable):
    assert run_upstream(tmp_path, FIRST) == {"changed": True, "reloadable": False}  # a new file: the proxy starts
    assert run_upstream(tmp_path, FIRST) == {"changed": False, "reloadable": False}
    assert run_upstream(tmp_path, FIRST | change) == {"changed": True, "reloadable": reloadable}
