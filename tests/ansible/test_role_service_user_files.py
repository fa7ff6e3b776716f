"""A non-root `fedkafka_service_user` (systemd runs the services as that user: `User=` in the unit) must be able to
read the secret files the roles write for it and enter the directories that hold them: the API and service token
files, the TLS private key, the brokers' TLS/SASL settings (fedkafka_common), and the controller's SQLite database
directory. The common role's tasks run here for real as root, the way `become` runs them on a host, with
`fedkafka_service_user: nobody`; then `nobody` reads each file. The secrets keep their mode 0600."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ansible,
              pytest.mark.skipif(os.geteuid() != 0, reason="writes files owned by another user: needs root")]
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
SERVICE_USER = "nobody"
API_TOKEN = "api-" + secrets.token_hex(12)
SERVICE_TOKEN = "svc-" + secrets.token_hex(12)
KEY = f"-----BEGIN PRIVATE KEY-----\n{secrets.token_hex(24)}\n-----END PRIVATE KEY-----\n"
UPSTREAM_PASSWORD = "up-" + secrets.token_hex(12)

# What the proxy and name service roles run of fedkafka_common before they start their service.
COMMON_TASKS = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The common role (directories, install check)
      ansible.builtin.include_role:
        name: fedkafka_common
    - name: The token files
      ansible.builtin.include_role:
        name: fedkafka_common
        tasks_from: token
    - name: The TLS files
      ansible.builtin.include_role:
        name: fedkafka_common
        tasks_from: tls
      vars:
        fedkafka_tls_owner: fedkafka_proxy
        fedkafka_tls_needed: true
        fedkafka_tls_cert: "{{ fedkafka_config_dir }}/tls/proxy.pem"
        fedkafka_tls_key: "{{ fedkafka_config_dir }}/tls/proxy.key"
        fedkafka_tls_ca: ""
        fedkafka_tls_cert_content: "cert"
        fedkafka_tls_key_content: "{{ proxy_key }}"
        fedkafka_tls_ca_content: ""
    - name: The brokers' TLS and SASL settings
      ansible.builtin.include_role:
        name: fedkafka_common
        tasks_from: upstream
"""


@pytest.fixture
def host_root():
    """A directory any user may enter (like /var/lib), holding the role's state dir; removed after."""
    root = Path(tempfile.mkdtemp(prefix="fk-user-"))
    root.chmod(0o755)
    yield root
    conf = root / "state" / "supervisor" / "supervisord.conf"
    if conf.exists():  # the supervisord the common role started (fedkafka_service_manager: supervisord)
        subprocess.run([str(Path(sys.executable).with_name("supervisorctl")), "-c", str(conf), "shutdown"],
                       capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def _run_common_tasks(tmp_path: Path, state: Path, service_manager: str) -> str:
    book = tmp_path / "common.yml"
    book.write_text(COMMON_TASKS)
    extra = tmp_path / "vars.json"
    extra.touch(mode=0o600)
    extra.write_text(json.dumps({
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "fedkafka_install_source": "present", "fedkafka_venv": sys.prefix, "fedkafka_state_dir": str(state),
        "fedkafka_service_manager": service_manager, "fedkafka_service_user": SERVICE_USER,
        "fedkafka_api_token": API_TOKEN, "fedkafka_controller_service_token": SERVICE_TOKEN, "proxy_key": KEY,
        "fedkafka_upstream_config": {"sasl.password": UPSTREAM_PASSWORD}}))
    inventory = tmp_path / "hosts.json"  # a controller host: token.yml writes it every token file
    inventory.write_text(json.dumps({"all": {"children": {"fedkafka_controller": {"hosts": {"localhost": {}}}}}}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([PLAYBOOK, str(book), "-i", str(inventory), "-e", f"@{extra}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    extra.unlink()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for secret in (API_TOKEN, SERVICE_TOKEN, KEY.splitlines()[1], UPSTREAM_PASSWORD):
        assert secret not in out
    return out


def _read_as_service_user(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["cat", str(path)], user=SERVICE_USER, capture_output=True, text=True, timeout=60)


def test_a_systemd_service_user_reads_its_secret_files(tmp_path, host_root):
    state = host_root / "state"
    _run_common_tasks(tmp_path, state, "systemd")
    etc = state / "etc"
    secret_files = {etc / "api-token": API_TOKEN, etc / "service-token": SERVICE_TOKEN,
                    etc / "tls" / "proxy.key": KEY.splitlines()[1], etc / "upstream.json": UPSTREAM_PASSWORD}
    unreadable = {str(path): _read_as_service_user(path).stderr.strip() for path in secret_files
                  if _read_as_service_user(path).returncode != 0}
    assert not unreadable, f"{SERVICE_USER} (User= of the units) cannot read: {unreadable}"
    for path, secret in secret_files.items():
        assert secret in _read_as_service_user(path).stdout, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert pwd.getpwuid(path.stat().st_uid).pw_name == SERVICE_USER, path
    for directory in (state, etc, state / "log", etc / "tls"):
        assert pwd.getpwuid(directory.stat().st_uid).pw_name == SERVICE_USER, directory
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750, directory  # still closed to other users


def test_under_supervisord_the_files_stay_the_ansible_users(tmp_path, host_root):
    """supervisord runs its programs as the user who started it (the Ansible user): no chown to the service user."""
    state = host_root / "state"
    _run_common_tasks(tmp_path, state, "supervisord")
    for path in (state, state / "etc", state / "etc" / "api-token", state / "etc" / "tls" / "proxy.key"):
        assert path.stat().st_uid == os.geteuid(), path


def test_the_controllers_sqlite_directory_belongs_to_the_service_user():
    """The controller creates its SQLite database in that directory: the service user must own it (the run of the
    controller role needs systemd, so its task's arguments are checked)."""
    tasks = yaml.safe_load((ROOT / "roles" / "fedkafka_controller" / "tasks" / "main.yml").read_text())
    task = next(t for t in tasks if t["name"] == "Create the database dir of a SQLite config database")
    assert task["ansible.builtin.file"].get("owner") == "{{ __fedkafka_controller_file_owner }}", task
