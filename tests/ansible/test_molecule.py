"""The molecule scenarios, as CI runs them: converge, idempotence (changed=0), testinfra verify, cleanup.

Each one provisions real brokers, the controller, the name service and proxies on this machine through
the playbooks and inventory/local with molecule/local-overrides.yml (port base 39100, state in
/tmp/fedkafka-molecule: apart from the federation `make up` runs), so they run one after another.
They take 4-10 minutes each: `make test-molecule` (FEDKAFKA_MOLECULE=1) runs them. `make test` keeps the
syntax check of every scenario's converge and cleanup playbooks (ansible-lint covers roles/ and playbooks/,
not molecule/): an import path, a variable file or a play keyword gone wrong fails there in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCENARIOS = sorted(path.parent.name for path in (ROOT / "molecule").glob("*/molecule.yml"))

pytestmark = pytest.mark.ansible


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_FORCE_COLOR": "0",
            "PY_COLORS": "0"}


def test_every_scenario_playbook_passes_the_syntax_check():
    assert SCENARIOS == ["decommission", "default", "scale_up"]  # a new scenario is run by both tests here
    playbooks = [f"molecule/{scenario}/{name}.yml" for scenario in SCENARIOS for name in ("converge", "cleanup")]
    # The inventory and extra vars of molecule.yml's ansible_args, as molecule passes them.
    proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "--inventory=inventory/local",
                           "--extra-vars=@molecule/local-overrides.yml", *playbooks],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("playbook: ") == len(playbooks), proc.stdout  # every one was read


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FEDKAFKA_MOLECULE") != "1",
                    reason="heavy: runs with FEDKAFKA_MOLECULE=1 (make test-molecule)")
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario):
    proc = subprocess.run([str(BIN / "molecule"), "test", "-s", scenario], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "idempotence" in output, output[-3000:]  # the changed=0 step really ran
