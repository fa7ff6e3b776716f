"""Review rvans: site.yml's "Set the client.id rules" task (ansible.builtin.uri to the controller) against a real
controller that site.yml itself runs under supervisord on this machine (--limit localhost,controller)."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fedkafka.kafka.cluster import free_port

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
SUPERVISORCTL = str(Path(sys.executable).with_name("supervisorctl"))
TOKEN = "tok" + secrets.token_hex(16)


def _rules(pool: str) -> list[dict]:
    return [{"name": "rvans", "match": "prefix", "pattern": "rvans-", "pool": pool}]


@pytest.fixture
def site(tmp_path):
    state = Path(tempfile.mkdtemp(prefix="rvans-"))  # short: supervisord's socket path must fit
    base = free_port() - 1  # the controller listens on base + 1

    def run(rules: list[dict], *extra: str) -> str:
        extra_vars = tmp_path / "vars.json"
        extra_vars.write_text(json.dumps({
            "fedkafka_api_token": TOKEN, "fedkafka_local_port_base": base, "fedkafka_topics": [],
            "fedkafka_client_rules": rules, "fedkafka_local_root": str(state),
            "fedkafka_local_cli_state_dir": str(state / "cli"), "fedkafka_venv": sys.prefix,
            "ansible_python_interpreter": sys.executable}))
        proc = subprocess.run([PLAYBOOK, "playbooks/site.yml", "--limit", "localhost,controller", "-e",
                               f"@{extra_vars}", *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
        extra_vars.unlink()
        return proc.stdout + proc.stderr

    yield run
    conf = state / "controller" / "supervisor" / "supervisord.conf"
    if conf.exists():
        subprocess.run([SUPERVISORCTL, "-c", str(conf), "shutdown"], capture_output=True, timeout=60)
    shutil.rmtree(state, ignore_errors=True)


def _rule_task(out: str) -> str:
    """The output of the task "Set the client.id rules", up to the next task."""
    match = re.search(r"TASK \[Set the client.id rules\].*?(?=\nTASK \[)", out, re.S)
    assert match, out[-3000:]
    return match.group(0)


def test_client_rules_task_keeps_the_api_token_out_of_verbose_output(site):
    out = site(_rules("default"), "-vvv")
    task = _rule_task(out)
    assert "changed: [controller]" in task or "ok: [controller]" in task, task[-2000:]  # the task did run
    leaks = [line.strip() for line in task.splitlines() if TOKEN in line]
    assert not leaks, leaks[:3]


def test_check_mode_predicts_a_client_rule_change(site):
    site(_rules("default"))  # the controller runs, the rule is set
    predicted = _rule_task(site(_rules("other"), "--check", "--diff"))
    done = _rule_task(site(_rules("other")))
    assert "changed: [controller]" in done, done  # the run changed the rule
    assert "changed: [controller]" in predicted, f"--check said:\n{predicted}"
