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
import yaml

from fedkafka.kafka.cluster import free_port

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
SUPERVISORCTL = str(Path(sys.executable).with_name("supervisorctl"))
TOKEN = "tok" + secrets.token_hex(16)


def _rules(pool: str) -> list[dict]:
    return [{"name": "rvans", "match": "prefix", "pattern": "rvans-", "pool": pool}]


def _inventory_without_proxies(directory: Path) -> Path:
    """inventory/local with its proxies left out: site.yml's last play waits for every proxy of the inventory to
    register, 120 s for nothing under --limit localhost,controller (no proxy runs); nothing else changes."""
    hosts = yaml.safe_load((ROOT / "inventory/local/hosts.yml").read_text())
    hosts["all"]["children"]["fedkafka_proxies"]["hosts"] = {}
    (directory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (directory / "group_vars").symlink_to(ROOT / "inventory/local/group_vars")
    return directory


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Runs site.yml, one run after the other, against one controller it starts (--limit localhost,controller):
    the two tests share it, a site run being a minute or more."""
    state = Path(tempfile.mkdtemp(prefix="rvans-"))  # short: supervisord's socket path must fit
    work = tmp_path_factory.mktemp("rvans")
    inventory = _inventory_without_proxies(work)
    base = free_port() - 1  # the controller listens on base + 1

    def run(rules: list[dict], *extra: str) -> str:
        extra_vars = work / "vars.json"
        extra_vars.write_text(json.dumps({
            "fedkafka_api_token": TOKEN, "fedkafka_local_port_base": base, "fedkafka_topics": [],
            "fedkafka_client_rules": rules, "fedkafka_local_root": str(state),
            "fedkafka_local_cli_state_dir": str(state / "cli"), "fedkafka_venv": sys.prefix,
            "ansible_python_interpreter": sys.executable}))
        proc = subprocess.run([PLAYBOOK, "playbooks/site.yml", "-i", str(inventory), "--limit", "localhost,controller",
                               "-e", f"@{extra_vars}", *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
        extra_vars.unlink()
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return proc.stdout + proc.stderr

    yield run
    conf = state / "controller" / "supervisor" / "supervisord.conf"
    if conf.exists():
        subprocess.run([SUPERVISORCTL, "-c", str(conf), "shutdown"], capture_output=True, timeout=60)
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def first_run(site) -> str:
    """The first run, with -vvv: it sets the rule (pool "default") on the new controller."""
    return site(_rules("default"), "-vvv")


def _rule_task(out: str) -> str:
    """The output of the task "Set the client.id rules", up to the next task."""
    match = re.search(r"TASK \[Set the client.id rules\].*?(?=\nTASK \[)", out, re.S)
    assert match, out[-3000:]
    return match.group(0)


def test_client_rules_task_keeps_the_api_token_out_of_verbose_output(first_run):
    task = _rule_task(first_run)
    assert "changed: [controller]" in task, task[-2000:]  # the task ran and set the rule on the new controller
    leaks = [line.strip() for line in task.splitlines() if TOKEN in line]
    assert not leaks, leaks[:3]


def test_check_mode_predicts_a_client_rule_change(site, first_run):
    assert "changed: [controller]" in _rule_task(first_run)  # the controller runs, the rule is set (pool default)
    predicted = _rule_task(site(_rules("other"), "--check", "--diff"))
    done = _rule_task(site(_rules("other")))
    assert "changed: [controller]" in done, done  # the run changed the rule: --check had left it alone
    assert "changed: [controller]" in predicted, f"--check said:\n{predicted}"
