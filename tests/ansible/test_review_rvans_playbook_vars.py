"""Review rvans: decommission.yml's own variables (-e drain=, -e stop_brokers=, -e timeout=) and scale_up.yml's
-e timeout= checked first, as failover.yml and coordination_move.yml check theirs: a typo must stop the run in
the first play, before any inventory host is touched.

Every inventory host other than localhost is made unreachable here (ssh to a closed port, a second inventory
source overriding the local one): a play that reaches one shows it in the recap (unreachable=1) and does nothing
on it, so a missing check is seen as a touched host, and nothing is installed or asked of a controller."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOK = str(BIN / "ansible-playbook")
FIRST_TASK = {"decommission.yml": "Check cluster, drain, stop_brokers and timeout",
              "scale_up.yml": "Check cluster, strategy, bootstrap and timeout"}


@pytest.fixture(scope="module")
def unreachable_inventory(tmp_path_factory) -> Path:
    listed = subprocess.run([str(BIN / "ansible-inventory"), "--list"], cwd=ROOT, capture_output=True, text=True,
                            check=True, timeout=120)
    hosts = sorted(json.loads(listed.stdout)["_meta"]["hostvars"])
    assert "controller" in hosts and "c3-broker1" in hosts, hosts
    closed = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1,
              "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes"}
    path = tmp_path_factory.mktemp("inventory") / "unreachable.yml"
    path.write_text(json.dumps({"all": {"hosts": {h: closed for h in hosts}}}))
    return path


def _run(inventory: Path, playbook: str, *extra: str) -> tuple[subprocess.CompletedProcess, str, list[str]]:
    proc = subprocess.run([PLAYBOOK, "-i", "inventory/local", "-i", str(inventory), f"playbooks/{playbook}",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    return proc, out, re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M)


def _assert_stopped_first(playbook: str, proc, out: str, recap: list[str], message: str) -> None:
    assert recap == ["localhost"], f"hosts other than localhost were touched: {recap}\n{out[-2000:]}"
    assert proc.returncode != 0, out[-3000:]
    failed_task = re.findall(r"^TASK \[(.+?)\]", proc.stdout, re.M)[-1]
    assert failed_task == FIRST_TASK[playbook], f"stopped at {failed_task!r}, not the first check\n{out[-2000:]}"
    assert message in " ".join(out.split()), out[-3000:]


@pytest.mark.parametrize(("extra", "message"), [
    (["-e", "drain=ture"], "drain must be true or false (got 'ture')"),
    (["-e", "drain=2"], "drain must be true or false (got '2')"),
    (["-e", "timeout=soon"], "timeout must be a positive number of seconds (got 'soon')"),
    (["-e", "timeout=0"], "timeout must be a positive number of seconds (got '0')"),
    (["-e", "timeout=-5"], "timeout must be a positive number of seconds (got '-5')"),
    (["-e", "stop_brokers=yes-please"], "stop_brokers must be true or false (got 'yes-please')"),
], ids=["drain-typo", "drain-2", "timeout-word", "timeout-zero", "timeout-negative", "stop_brokers-typo"])
def test_decommission_bad_option_fails_first_and_touches_nothing(unreachable_inventory, extra, message):
    proc, out, recap = _run(unreachable_inventory, "decommission.yml", "-e", "cluster=c3", *extra)
    _assert_stopped_first("decommission.yml", proc, out, recap, message)


def test_decommission_accepts_what_ansible_reads_as_a_boolean(unreachable_inventory):
    """YES / 0 / a real boolean and a number of seconds pass the check: the run goes on to the controller (here
    unreachable), which the typos above never reach."""
    proc, out, recap = _run(unreachable_inventory, "decommission.yml", "-e", "cluster=c3", "-e", "drain=YES",
                            "-e", "timeout=60", "-e", '{"stop_brokers": false}')
    assert proc.returncode != 0 and "controller" in recap, out[-3000:]  # got past the checks
    proc, out, recap = _run(unreachable_inventory, "decommission.yml", "-e", "cluster=c3", "-e", "drain=0",
                            "-e", "stop_brokers=No")
    assert proc.returncode != 0 and "controller" in recap, out[-3000:]


@pytest.mark.parametrize("cluster", ["c3", "c9"], ids=["inventory-cluster", "bootstrap-cluster"])
def test_scale_up_timeout_typo_fails_first_and_touches_nothing(unreachable_inventory, cluster):
    """c3 has an inventory group (kafka_c3): without the check its broker play runs first; c9 is given by
    bootstrap: the controller host is next. Either shows in the recap."""
    proc, out, recap = _run(unreachable_inventory, "scale_up.yml", "-e", f"cluster={cluster}",
                            "-e", "bootstrap=127.0.0.1:1", "-e", "timeout=soon")
    _assert_stopped_first("scale_up.yml", proc, out, recap, "timeout must be a positive number of seconds "
                                                           "(got 'soon')")


def test_scale_up_a_good_timeout_passes_the_check(unreachable_inventory):
    proc, out, recap = _run(unreachable_inventory, "scale_up.yml", "-e", "cluster=c9", "-e", "bootstrap=127.0.0.1:1",
                            "-e", "timeout=900")
    assert proc.returncode != 0 and "controller" in recap, out[-3000:]  # got past the checks, to the controller
