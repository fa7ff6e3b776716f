"""Review rvans: decommission.yml's own variables (-e drain=, -e stop_brokers=, -e timeout=) checked first, as
failover.yml and coordination_move.yml check theirs: a typo must stop the run before the controller is asked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


@pytest.mark.parametrize(("extra", "message"), [
    (["-e", "drain=ture"], "drain must be true or false"),
    (["-e", "timeout=soon"], "timeout"),
    (["-e", "stop_brokers=yes-please"], "stop_brokers"),
], ids=["drain-typo", "timeout-word", "stop_brokers-typo"])
def test_decommission_bad_option_fails_first_and_touches_nothing(extra, message):
    proc = subprocess.run([PLAYBOOK, "playbooks/decommission.yml", "-e", "cluster=c3", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    recap = re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M)
    assert proc.returncode != 0 and message in " ".join(out.split()), out[-3000:]
    assert recap == ["localhost"], f"hosts other than localhost were touched: {recap}"


def test_scale_up_timeout_typo_fails_first_and_touches_nothing():
    """scale_up.yml checks cluster, strategy and bootstrap first, not -e timeout=: a word there passes to the
    controller host (and, for an inventory cluster, after the brokers were installed) and fails only in the
    scale-up task's own argument check."""
    proc = subprocess.run([PLAYBOOK, "playbooks/scale_up.yml", "-e", "cluster=c9", "-e", "bootstrap=127.0.0.1:1",
                           "-e", "kafka_broker_wait_timeout=1", "-e", "timeout=soon"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    recap = re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M)
    assert proc.returncode != 0, out[-3000:]
    assert recap == ["localhost"], f"hosts other than localhost were touched: {recap}\n{out[-1500:]}"
