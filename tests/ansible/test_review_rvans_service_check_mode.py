"""Review rvans: `--check` of the shared service tasks (roles/fedkafka_common, tasks_from: service) on a host whose
supervisord program is defined but stopped. The run starts it (changed); --check must predict that change, as the
role already does for `update` and `restart` (their `true` stand-ins)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
SUPERVISORCTL = str(Path(sys.executable).with_name("supervisorctl"))

PLAY = """
- hosts: localhost
  gather_facts: true
  gather_subset: [min]
  tasks:
    - ansible.builtin.include_role: {name: fedkafka_common}
      vars: {fedkafka_service_manager: supervisord}
    - ansible.builtin.include_role: {name: fedkafka_common, tasks_from: service}
      vars:
        fedkafka_service_manager: supervisord
        fedkafka_service_name: rvans-sleeper
        fedkafka_service_command: ["%(python)s", "-c", "import time; time.sleep(3600)"]
"""


def _run(state: Path, playbook: Path, *extra: str) -> tuple[int, str]:
    local = ["-e", "ansible_connection=local", "-e", "ansible_become=false",
             "-e", f"ansible_python_interpreter={sys.executable}", "-e", "fedkafka_install_source=present",
             "-e", f"fedkafka_venv={sys.prefix}", "-e", f"fedkafka_state_dir={state}"]
    proc = subprocess.run([PLAYBOOK, str(playbook), *local, *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return int(re.search(r"^localhost\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M).group(1)), out


@pytest.fixture
def state_dir():
    state = Path(tempfile.mkdtemp(prefix="rvans-"))  # short: supervisord's socket path must fit
    yield state
    conf = state / "supervisor" / "supervisord.conf"
    if conf.exists():
        subprocess.run([SUPERVISORCTL, "-c", str(conf), "shutdown"], capture_output=True, timeout=60)
    shutil.rmtree(state, ignore_errors=True)


def test_check_mode_predicts_starting_a_stopped_program(state_dir):
    playbook = state_dir / "play.yml"
    playbook.write_text(PLAY % {"python": sys.executable})
    _run(state_dir, playbook)  # first run: supervisord and the program run
    conf = state_dir / "supervisor" / "supervisord.conf"
    subprocess.run([SUPERVISORCTL, "-c", str(conf), "stop", "rvans-sleeper"], check=True, capture_output=True,
                   timeout=60)
    predicted, check_out = _run(state_dir, playbook, "--check")
    done, run_out = _run(state_dir, playbook)
    assert done >= 1, run_out[-2000:]  # the run started the stopped program
    assert predicted == done, f"--check predicted changed={predicted}, the run made changed={done}\n" + "\n".join(
        line for line in check_out.splitlines() if "Start when stopped" in line or "skipping" in line)


def test_check_mode_predicts_starting_a_stopped_supervisord(state_dir):
    """supervisord itself is down (the host rebooted): the run starts it, and it starts the program (autostart);
    --check predicts that start, and the run reports the program's start once (supervisord's), not twice."""
    playbook = state_dir / "play.yml"
    playbook.write_text(PLAY % {"python": sys.executable})
    _run(state_dir, playbook)
    conf = state_dir / "supervisor" / "supervisord.conf"
    subprocess.run([SUPERVISORCTL, "-c", str(conf), "shutdown"], check=True, capture_output=True, timeout=60)
    predicted, check_out = _run(state_dir, playbook, "--check")
    done, run_out = _run(state_dir, playbook)
    assert done == 1, run_out[-2000:]  # Start supervisord; the program came up with it
    status = subprocess.run([SUPERVISORCTL, "-c", str(conf), "status", "rvans-sleeper"], capture_output=True,
                            text=True, timeout=60)
    assert re.search(r"\b(STARTING|RUNNING)\b", status.stdout), status.stdout
    assert predicted == done, f"--check predicted changed={predicted}, the run made changed={done}\n" + "\n".join(
        line for line in check_out.splitlines() if "supervisord" in line.lower() or "skipping" in line)


def test_run_after_check_makes_no_change_when_all_runs(state_dir):
    playbook = state_dir / "play.yml"
    playbook.write_text(PLAY % {"python": sys.executable})
    _run(state_dir, playbook)
    predicted, _ = _run(state_dir, playbook, "--check")
    done, run_out = _run(state_dir, playbook)
    assert (predicted, done) == (0, 0), run_out[-2000:]


def test_check_mode_on_a_new_host_without_a_state_dir_predicts_the_run(state_dir):
    """s37: the first --check of a host, before anything made `fedkafka_state_dir`: the service's run digest
    (`<state dir>/<service>.run-digest`) is read from a directory that is not there and would be written into it.
    --check fails nothing, writes nothing (not even the directory), and predicts the run's changes, the stamp's
    among them; the run then writes the stamp."""
    playbook = state_dir.with_name(state_dir.name + "-play.yml")
    playbook.write_text(PLAY % {"python": sys.executable})
    state_dir.rmdir()  # a brand-new host: the fixture's teardown stops the supervisord the run starts
    try:
        predicted, check_out = _run(state_dir, playbook, "--check")
        assert not state_dir.exists(), check_out[-2000:]
        stamp_task = check_out.split("Stamp what it runs with: rvans-sleeper", 1)[1].split("TASK [", 1)[0]
        assert "changed: [localhost]" in stamp_task, stamp_task
        done, run_out = _run(state_dir, playbook)
    finally:
        playbook.unlink()
    assert (state_dir / "rvans-sleeper.run-digest").read_text().strip(), run_out[-2000:]
    assert predicted == done, f"--check predicted changed={predicted}, the run made changed={done}"
