"""The molecule scenarios, as CI runs them: converge, idempotence (changed=0), testinfra verify, cleanup.

Each one provisions real brokers, the controller, the name service and proxies on this machine through
the playbooks and inventory/local with molecule/local-overrides.yml (port base 39100, state in
/tmp/fedkafka-molecule: apart from the federation `make up` runs), so they run one after another.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.ansible]


@pytest.mark.parametrize("scenario", ["default", "scale_up", "decommission"])
def test_molecule_scenario(scenario):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_FORCE_COLOR": "0",
           "PY_COLORS": "0"}
    proc = subprocess.run([str(BIN / "molecule"), "test", "-s", scenario], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "idempotence" in output, output[-3000:]  # the changed=0 step really ran
