"""Under systemd the broker runs as `fedkafka_service_user` (`User=` of its unit): that user must read the broker's
config and write its data dir, the KRaft log dirs the storage format made (logs/, meta.properties, the metadata
log) and server.log, or a non-root broker cannot start. The kafka_broker role runs here for real as root (the way
`become` runs it on a host) with `fedkafka_service_user: nobody`, up to the service task (no systemd here, no Kafka
starts; the storage format runs its JVM); then `nobody` tries each. A second run must change nothing and `--check`
on a fresh host must predict exactly the tasks the run changes. Under supervisord the files stay the Ansible
user's. Storage an earlier run left root's, given over (about a minute): `make test-ansible-heavy`
(FEDKAFKA_ANSIBLE_HEAVY=1)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fedkafka.kafka.dist import cached_libs

pytestmark = [pytest.mark.ansible,
              pytest.mark.skipif(os.geteuid() != 0, reason="writes files owned by another user: needs root")]
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
SERVICE_USER = "nobody"
VERSION = "4.4.0"
# The probe runs as the service user, who cannot run the test's own Python when it lives in root's home.
PROBE_PYTHON = "/usr/bin/python3"
SERVICE_TASK = "- name: Run the broker as a service"
PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: kafka_broker
"""

# Run as the service user: every directory under the data dir it must write (a probe file), every file it must
# append to (opened, nothing written; read-only ones read) and the config it must read; prints what it could not.
PROBE = """
import json, os, sys
data = sys.argv[1]
denied = []
def attempt(path, action):
    try:
        action(path)
    except OSError as err:
        denied.append(f"{path}: {err.strerror}")
def write_dir(path):
    probe = os.path.join(path, ".probe")
    open(probe, "w").close()
    os.unlink(probe)
attempt(data, write_dir)
for name in ("server.properties", "log4j2.properties"):
    attempt(os.path.join(data, name), lambda p: open(p).read())
attempt(os.path.join(data, "server.log"), lambda p: open(p, "a").close())
def unlisted(err):
    denied.append(f"{err.filename}: {err.strerror}")
for top, dirs, files in os.walk(os.path.join(data, "logs"), onerror=unlisted):
    attempt(top, write_dir)
    for name in files:  # snapshots (*.checkpoint) are read-only, 0400: read
        attempt(os.path.join(top, name), lambda p: open(p, "a" if os.stat(p).st_mode & 0o200 else "r").close())
print(json.dumps(denied))
"""


@pytest.fixture
def host_root():
    """A directory any user may enter (like /var/lib), holding the role's state dir; removed after."""
    root = Path(tempfile.mkdtemp(prefix="fk-broker-user-"))
    root.chmod(0o755)
    yield root
    conf = root / "state" / "supervisor" / "supervisord.conf"
    if conf.exists():  # the supervisord the common role started (fedkafka_service_manager: supervisord)
        subprocess.run([str(Path(sys.executable).with_name("supervisorctl")), "-c", str(conf), "shutdown"],
                       capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def roles_up_to_the_service(tmp_path) -> Path:
    """The bundle's roles, the broker role's tasks cut before it starts the service (which needs systemd)."""
    if not Path(PROBE_PYTHON).exists():
        pytest.skip(f"no {PROBE_PYTHON} for the probe run as {SERVICE_USER}")
    if not (cached_libs(VERSION) / ".complete").exists():
        pytest.skip(f"no complete Kafka {VERSION} jar cache")
    roles = tmp_path / "roles"
    shutil.copytree(ROOT / "roles", roles)
    tasks = roles / "kafka_broker" / "tasks" / "main.yml"
    text = tasks.read_text()
    assert SERVICE_TASK in text
    tasks.write_text(text[:text.index(SERVICE_TASK)])
    return roles


def _run_role(tmp_path: Path, roles: Path, state: Path, service_manager: str, *flags: str) -> str:
    book = tmp_path / "broker.yml"
    book.write_text(PLAY)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "fedkafka_install_source": "present", "fedkafka_venv": sys.prefix, "fedkafka_state_dir": str(state),
        "fedkafka_service_manager": service_manager, "fedkafka_service_user": SERVICE_USER,
        "kafka_broker_cluster": "owned", "kafka_broker_quorum_hosts": ["localhost"],
        "kafka_broker_version": VERSION, "kafka_broker_port": 19392, "kafka_broker_controller_port": 19393}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(roles), "ANSIBLE_LIBRARY": str(ROOT / "library"),
           "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"), "ANSIBLE_NOCOLOR": "1"}
    env.pop("KAFKA_HOME", None)
    proc = subprocess.run([PLAYBOOK, str(book), "-e", f"@{extra}", *flags], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _changed_tasks(out: str) -> list[str]:
    """The tasks of a run's output that reported changed (for any loop item)."""
    changed = []
    for name, body in re.findall(r"^TASK \[([^\]]+)\][^\n]*\n(.*?)(?=^TASK \[|^PLAY RECAP)", out, re.M | re.S):
        if re.search(r"^changed: ", body, re.M):
            changed.append(name)
    return changed


def _denied_to_the_service_user(data_dir: Path) -> list[str]:
    # the service user's own group and no others: subprocess keeps root's groups unless told (systemd's User= does not)
    account = pwd.getpwnam(SERVICE_USER)
    proc = subprocess.run([PROBE_PYTHON, "-c", PROBE, str(data_dir)], user=account.pw_uid, group=account.pw_gid,
                          extra_groups=[], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _owner(path: Path) -> str:
    return pwd.getpwuid(path.lstat().st_uid).pw_name


def test_a_systemd_service_user_writes_the_brokers_data_dir_and_formatted_storage(tmp_path, host_root,
                                                                                   roles_up_to_the_service):
    state = host_root / "state"
    predicted = _changed_tasks(_run_role(tmp_path, roles_up_to_the_service, state, "systemd", "--check"))
    assert not (state / "kafka").exists()  # --check wrote nothing
    changed = _changed_tasks(_run_role(tmp_path, roles_up_to_the_service, state, "systemd"))
    data_dir = state / "kafka" / "owned-1"
    assert (data_dir / "logs" / "meta.properties").exists()  # the storage was formatted
    denied = _denied_to_the_service_user(data_dir)
    assert not denied, f"{SERVICE_USER} (User= of the broker's unit) cannot: {denied}"
    formatted = [Path(top) / name for top, dirs, files in os.walk(data_dir / "logs") for name in dirs + files]
    owned = [data_dir.parent, data_dir, data_dir / "server.log", data_dir / "logs", *formatted]
    not_owned = [str(path) for path in owned if _owner(path) != SERVICE_USER]
    assert not not_owned, f"not {SERVICE_USER}'s: {not_owned}"
    assert oct(data_dir.stat().st_mode & 0o777) == oct(0o750)  # still closed to other users
    assert predicted == changed, f"--check predicted {predicted}, the run changed {changed}"
    again = _changed_tasks(_run_role(tmp_path, roles_up_to_the_service, state, "systemd"))
    assert again == [], f"a second run changed {again}"


@pytest.mark.skipif(os.environ.get("FEDKAFKA_ANSIBLE_HEAVY") != "1",
                    reason="heavy: runs with FEDKAFKA_ANSIBLE_HEAVY=1 (make test-ansible-heavy)")
def test_root_owned_storage_an_earlier_run_left_is_given_to_the_service_user(tmp_path, host_root,
                                                                            roles_up_to_the_service):
    """A host the role formatted before it gave the broker's files to the service user (all of them root's): the
    next run gives them over, --check predicts exactly that, and the run after it changes nothing."""
    state = host_root / "state"
    _run_role(tmp_path, roles_up_to_the_service, state, "systemd")
    kafka_dir = state / "kafka"
    for top, dirs, files in os.walk(kafka_dir):
        for name in [top, *(os.path.join(top, entry) for entry in dirs + files)]:
            os.lchown(name, 0, 0)
    assert _denied_to_the_service_user(kafka_dir / "owned-1")
    predicted = _changed_tasks(_run_role(tmp_path, roles_up_to_the_service, state, "systemd", "--check"))
    changed = _changed_tasks(_run_role(tmp_path, roles_up_to_the_service, state, "systemd"))
    assert _denied_to_the_service_user(kafka_dir / "owned-1") == []
    assert predicted == changed, f"--check predicted {predicted}, the run changed {changed}"
    assert "kafka_broker : Give the formatted storage to the service user" in changed
    again = _changed_tasks(_run_role(tmp_path, roles_up_to_the_service, state, "systemd"))
    assert again == [], f"a second run changed {again}"


def test_a_systemd_service_user_reads_the_brokers_jars_from_the_default_cache(tmp_path, host_root,
                                                                             roles_up_to_the_service, monkeypatch):
    """kafka_broker_cache_dir empty under systemd: the jars go to <state dir>/cache, not the Ansible user's
    ~/.cache/fedkafka (/root/.cache under become, /root being 0700), and the unit's User= reads them."""
    state = host_root / "state"
    _run_role(tmp_path, roles_up_to_the_service, state, "systemd")
    monkeypatch.setenv("FEDKAFKA_CACHE_DIR", str(state / "cache"))
    libs = cached_libs(VERSION)  # where the role's resolver puts them with the default cache under systemd
    assert (libs / ".complete").exists(), f"the role did not fetch the jars into {libs}"
    jar = next(libs.glob("kafka_*.jar"))
    account = pwd.getpwnam(SERVICE_USER)
    proc = subprocess.run(["head", "-c", "4", str(jar)], user=account.pw_uid, group=account.pw_gid, extra_groups=[],
                          capture_output=True, timeout=60, cwd="/")
    assert proc.returncode == 0, f"{SERVICE_USER} cannot read {jar} (on the broker's classpath): {proc.stderr!r}"


def test_under_supervisord_the_brokers_files_stay_the_ansible_users(tmp_path, host_root, roles_up_to_the_service):
    """supervisord runs the broker as the user who started it (the Ansible user): nothing is given to the service
    user."""
    state = host_root / "state"
    _run_role(tmp_path, roles_up_to_the_service, state, "supervisord")
    data_dir = state / "kafka" / "owned-1"
    assert (data_dir / "logs" / "meta.properties").exists()
    for path in (data_dir.parent, data_dir, data_dir / "server.properties", data_dir / "logs",
                 data_dir / "logs" / "meta.properties"):
        assert path.stat().st_uid == os.geteuid(), path
    again = _changed_tasks(_run_role(tmp_path, roles_up_to_the_service, state, "supervisord"))
    assert again == [], f"a second run changed {again}"
