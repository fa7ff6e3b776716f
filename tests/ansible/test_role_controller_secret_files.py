"""The fedkafka_controller role's secrets (fedkafka_controller_db_url, fedkafka_controller_env) against a real
controller the role runs under supervisord on this machine (the local inventory's host `controller`): they reach
the controller through 0600 files (--db-file, --env-file), never its command line or program file, and a changed
secret restarts it, which --check predicts.

About 1.5 minutes: `make test-ansible-heavy` runs it (FEDKAFKA_ANSIBLE_HEAVY=1). `make test` keeps the cheaper cover:
the controller reading --db-file and --env-file (tests/controller/test_cli.py) and neither secret shown by the role's
`--check --diff` (tests/ansible/test_review_rvans_secrets.py)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fedkafka.kafka.cluster import free_port

pytestmark = [pytest.mark.ansible,
              pytest.mark.skipif(os.environ.get("FEDKAFKA_ANSIBLE_HEAVY") != "1",
                                 reason="heavy: runs with FEDKAFKA_ANSIBLE_HEAVY=1 (make test-ansible-heavy)")]
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
SUPERVISORCTL = str(Path(sys.executable).with_name("supervisorctl"))
TOKEN = "tok" + secrets.token_hex(16)


@pytest.fixture
def site(tmp_path):
    state = Path(tempfile.mkdtemp(prefix="fxa1-"))  # short: supervisord's socket path must fit
    base = free_port() - 1  # the controller listens on base + 1
    conf = state / "controller" / "supervisor" / "supervisord.conf"

    playbook = tmp_path / "controller.yml"
    playbook.write_text("- hosts: controller\n  gather_facts: true\n  gather_subset: [min]\n"
                        "  roles: [fedkafka_controller]\n")

    def run(role_vars: dict, *extra: str) -> str:
        extra_vars = tmp_path / "vars.json"
        extra_vars.write_text(json.dumps({
            "fedkafka_api_token": TOKEN, "fedkafka_local_port_base": base, "fedkafka_topics": [],
            "fedkafka_client_rules": [], "fedkafka_local_root": str(state),
            "fedkafka_local_cli_state_dir": str(state / "cli"), "fedkafka_venv": sys.prefix,
            "ansible_python_interpreter": sys.executable, **role_vars}))
        proc = subprocess.run([PLAYBOOK, str(playbook), "-e", f"@{extra_vars}", *extra], cwd=ROOT,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles")})
        extra_vars.unlink()
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        return out

    def pid() -> int:
        out = subprocess.run([SUPERVISORCTL, "-c", str(conf), "pid", "controller"], capture_output=True, text=True,
                             timeout=60).stdout
        return int(out.strip())

    run.state, run.pid = state, pid  # type: ignore[attr-defined]
    yield run
    if conf.exists():
        subprocess.run([SUPERVISORCTL, "-c", str(conf), "shutdown"], capture_output=True, timeout=60)
    shutil.rmtree(state, ignore_errors=True)


def _restart_task(out: str) -> str:
    match = re.search(r"TASK \[[^\]]*Restart after a config change: controller\].*?(?=\n(TASK|PLAY) )", out, re.S)
    assert match, out[-3000:]
    return match.group(0)


def test_controller_reads_its_database_url_and_environment_from_0600_files(site):
    first, second = "s1" + secrets.token_hex(12), "s2" + secrets.token_hex(12)
    database = site.state / "db-here" / "ctl.db"
    role_vars = {"fedkafka_controller_db_url": f"sqlite:///{database}",
                 "fedkafka_controller_env": {"FEDKAFKA_REVIEW_SECRET": first}}
    out = site(role_vars)
    assert first not in out
    assert database.exists()  # the controller opened the URL it read from --db-file
    etc = site.state / "controller" / "etc"
    for name in ("controller-db-url", "controller.env"):
        assert (etc / name).stat().st_mode & 0o777 == 0o600, name
    assert (etc / "controller.env").read_text() == f"FEDKAFKA_REVIEW_SECRET={first}\n"
    program = (site.state / "controller" / "supervisor" / "conf.d" / "controller.conf").read_text()
    assert "--db-file" in program and "--env-file" in program
    assert first not in program and str(database) not in program
    before = site.pid()
    cmdline = Path(f"/proc/{before}/cmdline").read_bytes().decode()
    assert first not in cmdline and str(database) not in cmdline  # nothing secret in `ps`

    changed = {**role_vars, "fedkafka_controller_env": {"FEDKAFKA_REVIEW_SECRET": second}}
    predicted = site(changed, "--check", "--diff")
    assert second not in predicted and first not in predicted
    assert "changed: [controller]" in _restart_task(predicted), "--check did not predict the restart"
    assert site.pid() == before  # check mode restarted nothing
    done = site(changed)
    assert "changed: [controller]" in _restart_task(done)
    restarted = site.pid()
    assert restarted != before  # the new secret is loaded by a new process
    assert (etc / "controller.env").read_text() == f"FEDKAFKA_REVIEW_SECRET={second}\n"
    again = site(changed)  # the same secrets: nothing written, nothing restarted
    assert re.search(r"controller\s+: ok=\d+\s+changed=0 ", again), again[-1500:]
    assert site.pid() == restarted
