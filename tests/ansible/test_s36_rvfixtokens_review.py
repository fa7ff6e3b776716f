"""Review of s36-fixtokens (the fixes of s36-rvtokens findings 2-4): a per-service token stamp
(<state_dir>/<service>.token-digest) restarts a service whose tokens differ from the ones it last started with;
the service task applies a definition supervisord (`reread`) or systemd (NeedDaemonReload) has not loaded;
token_prune.yml keeps a file a leftover service still names.

Checked and sound: the stamp is written only after the service task succeeded (a failed `update`/`restart`/
systemd task fails the host before it; a program that then crashes restarts from the files the stamp describes);
it is a SHA-256 of 16+ character random tokens, 0600, written and read under no_log, diff off; `supervisorctl
reread` loads nothing into the running groups (update/add/remove do), so running it in --check is harmless and
later plays' rereads still see their own program as changed; --check predicts the stamp's restart (slurp runs in
check mode) and a second run changes nothing; no new user variable (the new ones are internal vars/main.yml).

Findings (fixed on s36-fixtokens2, each test below passes and failed before; xfails removed). The stamp is now
<state_dir>/<service>.run-digest: a digest of the service's rendered definition and its tokens, written once the
service task (re)started it or found it running with them; one that differs restarts it (supervisord: `update`
when `reread` says the loaded program differs, else `restart`; systemd: daemon-reload and restart), a missing one
restarts a running service that reads a token file. NeedDaemonReload is no longer asked.
1. (medium) "No stamp, no restart" is unsafe on a host in several groups: on the first run of this bundle (no
   stamp yet) a rotation restarts only the first play's service (its token.yml wrote the file); the later play's
   token.yml finds the file written, its stamp is missing, so the proxy keeps the old token - and the stamp task
   then records the NEW digest, so no later run ever restarts it (s36-rvtokens finding 2, made permanent).
2. (low-medium, systemd path) NeedDaemonReload says whether systemd's *loaded* unit is older than the file, not
   whether the *running* process started from it: a run cut off between the module's daemon-reload and its restart
   (an interrupt; or any daemon-reload in between: another play's service task on the host, a package install)
   leaves the new unit loaded and the old process running; the next run sees NeedDaemonReload=no and restarts
   nothing, so the new definition (here a flag) is never applied. DESIGN §11 and OPERATIONS say such a unit "is
   loaded and restarted by the next run". A token change there is still caught by the stamp (when it exists);
   supervisord's per-program `reread`/`update` has no such gap.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_role_service_token import CONTROLLER, PROXY, ROOT, SERVICE_TOKEN, _stale_copies
from test_s36_rvtokens_review import PROXY_PLAY, ROTATION, _play, _supervisord

pytestmark = pytest.mark.ansible



def _asked(calls: Path) -> list[list[str]]:
    return [c.split()[2:] for c in calls.read_text().splitlines()]


def _installed_before_the_stamps(tmp_path: Path) -> tuple[Path, dict]:
    """A controller and proxy host whose proxy runs with svc-old... and has no stamp (the bundle before them); the
    fake supervisorctl's calls log (emptied) and the vars of a rotation to SERVICE_TOKEN."""
    _stale_copies(tmp_path)
    calls, _, settings = _supervisord(tmp_path)
    installed = _play(tmp_path, PROXY_PLAY, (CONTROLLER, PROXY),
                      {**settings, "fedkafka_controller_service_token": "svc-old-0123456789abcdef"})
    assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-2000:]
    for stamp in tmp_path.glob("proxy.*-digest"):
        stamp.unlink()
    calls.write_text("")
    return calls, {**settings, "fedkafka_controller_service_token": SERVICE_TOKEN}


def test_the_first_rotation_after_the_upgrade_restarts_the_proxy_of_a_controller_host(tmp_path):
    calls, settings = _installed_before_the_stamps(tmp_path)
    rotated = _play(tmp_path, ROTATION, (CONTROLLER, PROXY), settings)
    assert rotated.returncode == 0, rotated.stdout[-4000:] + rotated.stderr[-2000:]
    assert (tmp_path / "etc" / "service-token").read_text().strip() == SERVICE_TOKEN
    again = _play(tmp_path, ROTATION, (CONTROLLER, PROXY), settings)
    assert again.returncode == 0, again.stdout[-4000:]
    # the proxy runs with svc-old... (read at its start): this run or the next must restart it
    assert ["restart", "proxy"] in _asked(calls), _asked(calls)


def _proxy_restart(run: subprocess.CompletedProcess) -> str:
    """What the run said of the proxy's restart task: changed, skipping or ok."""
    found = re.search(r"TASK \[fedkafka_common : Restart after a config change: proxy\][^\n]*\n(\w+)", run.stdout)
    assert found, run.stdout[-4000:]
    return found.group(1)


def test_check_mode_predicts_the_restart_of_the_proxy_without_a_stamp(tmp_path):
    """--check shows the restart the run makes (the stamp is read in check mode), and writes no stamp."""
    calls, settings = _installed_before_the_stamps(tmp_path)
    (tmp_path / "etc" / "service-token").write_text(SERVICE_TOKEN + "\n")  # the controller play rotated it
    predicted = _play(tmp_path, PROXY_PLAY, (CONTROLLER, PROXY), settings, "--check", "--diff")
    assert predicted.returncode == 0, predicted.stdout[-4000:]
    assert not list(tmp_path.glob("proxy.*-digest")) and _asked(calls) == [["status", "proxy"], ["reread"]]
    done = _play(tmp_path, PROXY_PLAY, (CONTROLLER, PROXY), settings)
    assert done.returncode == 0, done.stdout[-4000:]
    assert ["restart", "proxy"] in _asked(calls), _asked(calls)
    assert _proxy_restart(predicted) == _proxy_restart(done) == "changed"


FAKE_SYSTEMCTL = """#!/bin/sh
# systemd for the units under {disk}: {state}/loaded holds what daemon-reload loaded, {state}/running what the
# running process started from (restart copies the loaded unit to it); while {cut} exists the run is cut off
# between the module's daemon-reload and its restart (the restart never happens)
echo "$*" >> {calls}
for arg in "$@"; do case $arg in fedkafka-*.service) unit=$arg;; esac; done
case "$1" in
  daemon-reload) mkdir -p {state}/loaded; cp {disk}/*.service {state}/loaded/;;
  is-enabled) echo enabled;;
  show) if cmp -s {disk}/$unit {state}/loaded/$unit; then need=no; else need=yes; fi
        if [ "$2" = "--property=NeedDaemonReload" ]; then echo $need; exit 0; fi
        printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nUnitFileState=enabled\\n' $unit
        echo "NeedDaemonReload=$need";;
  restart) if [ -e {cut} ]; then echo "cut off before the restart" >&2; exit 1; fi
           mkdir -p {state}/running; cp {state}/loaded/$unit {state}/running/$unit;;
esac
exit 0
"""

SERVICE_PLAY = """
- name: A proxy whose command the run gives (no token file, so no stamp)
  hosts: localhost
  gather_facts: false
  vars_files: VARS_FILES
  tasks:
    - ansible.builtin.include_role:
        name: fedkafka_common
        tasks_from: service
      vars:
        fedkafka_service_name: proxy
        fedkafka_service_command: "{{ proxy_command }}"
"""


def _systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path, dict]:
    """The common role with its units under tmp_path/system (a copy beside the playbook, which Ansible prefers)
    and a fake systemctl first on PATH: its calls log, its cut-off switch, the running units' dir, the vars."""
    disk, state, calls, cut = tmp_path / "system", tmp_path / "systemd", tmp_path / "calls.log", tmp_path / "cut"
    role = tmp_path / "roles" / "fedkafka_common"
    shutil.copytree(ROOT / "roles" / "fedkafka_common", role)
    tasks = role / "tasks" / "service_systemd.yml"
    tasks.write_text(tasks.read_text().replace("/etc/systemd/system", str(disk)))
    disk.mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "systemctl").write_text(FAKE_SYSTEMCTL.format(disk=disk, state=state, calls=calls, cut=cut))
    (tmp_path / "bin" / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"), prepend=os.pathsep)
    return calls, cut, state / "running", {"fedkafka_service_manager_effective": "systemd",
                                           "fedkafka_service_user": "root"}


def test_a_run_after_a_cut_off_systemd_restart_restarts_the_proxy(tmp_path, monkeypatch):
    calls, cut, running, settings = _systemd(tmp_path, monkeypatch)
    installed = _play(tmp_path, SERVICE_PLAY, (PROXY,), {**settings, "proxy_command": ["fedkafka", "proxy"]})
    assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-2000:]
    assert "--workers" not in (running / "fedkafka-proxy.service").read_text()
    new = {**settings, "proxy_command": ["fedkafka", "proxy", "--workers", "2"]}
    cut.touch()  # the run writes the unit, reloads systemd and is cut off before the restart (an interrupt)
    failed = _play(tmp_path, SERVICE_PLAY, (PROXY,), new)
    assert failed.returncode != 0 and "cut off" in failed.stdout, failed.stdout[-3000:]
    cut.unlink()
    calls.write_text("")
    rerun = _play(tmp_path, SERVICE_PLAY, (PROXY,), new)
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-2000:]
    assert "--workers" in (running / "fedkafka-proxy.service").read_text(), calls.read_text()
