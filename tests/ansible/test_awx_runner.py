"""Playbooks through ansible-runner with a private data dir laid out the way AWX lays it out (env/extravars,
env/envvars, inventory/, project/).

`make test` runs validate.yml that way (seconds): the job's extra vars, inventory and project reach the play, and a
failed job is reported failed. site.yml then scale_up.yml against a real federation the same way provisioned takes
about 4 minutes: `make test-ansible-heavy` runs it (FEDKAFKA_ANSIBLE_HEAVY=1).

Port base 39050 and /tmp/fedkafka-ansible-runner keep it apart from `make up` (39000) and molecule (39100).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import ansible_runner
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.ansible]
ROOT = Path(__file__).resolve().parents[2]
STATE = "/tmp/fedkafka-ansible-runner"
HEAVY = pytest.mark.skipif(os.environ.get("FEDKAFKA_ANSIBLE_HEAVY") != "1",
                           reason="heavy: runs with FEDKAFKA_ANSIBLE_HEAVY=1 (make test-ansible-heavy)")


def lay_out_job(pdd: Path, state: str) -> Path:
    """`pdd` laid out as AWX lays out a job's private data dir, the federation's state under `state`."""
    pdd.mkdir(exist_ok=True)
    (pdd / "project").symlink_to(ROOT)  # AWX checks the project out here
    inventory = pdd / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    shutil.copy(ROOT / "inventory/local/hosts.yml", inventory / "hosts.yml")
    shutil.copy(ROOT / "inventory/local/group_vars/all.yml", inventory / "group_vars/all.yml")
    env = pdd / "env"
    env.mkdir()
    (env / "extravars").write_text(json.dumps({
        "fedkafka_repo_root": str(ROOT), "fedkafka_local_root": state, "fedkafka_local_port_base": 39050,
        "fedkafka_local_cli_state_dir": f"{state}/cli"}))
    (env / "envvars").write_text(json.dumps({
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_LIBRARY": str(ROOT / "library"),
        "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"), "ANSIBLE_FORCE_COLOR": "0",
        # The execution environment's tools: here, this virtualenv's ansible-playbook.
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}))
    (env / "settings").write_text(json.dumps({"job_timeout": 900}))
    return pdd


@pytest.fixture(scope="module")
def private_data_dir(tmp_path_factory):
    pdd = lay_out_job(tmp_path_factory.mktemp("awx-job"), STATE)
    yield pdd
    ansible_runner.run(private_data_dir=str(pdd), playbook="playbooks/teardown.yml", extravars={"purge": True},
                       quiet=True)
    shutil.rmtree(STATE, ignore_errors=True)  # the generated token file lives beside the host state dirs


def failures(run) -> list[str]:
    if not run.events or run.rc == 127:
        return [run.stdout.read()[-2000:]]
    return [f"{e['event_data'].get('task')}: {e['event_data'].get('res', {}).get('msg')}"
            for e in run.events if e.get("event") == "runner_on_failed"
            and not e["event_data"].get("ignore_errors")]


def test_validate_yml_through_ansible_runner_sees_the_jobs_extra_vars_and_inventory(tmp_path):
    """validate.yml needs the inventory's groups and group_vars (inventory/) and the project's playbooks
    (project/); the api token it checks is generated under fedkafka_local_root, which only env/extravars sets.
    A bad extra var fails the job, named by the task that refused it."""
    state = tmp_path / "state"
    pdd = lay_out_job(tmp_path / "job", str(state))
    run = ansible_runner.run(private_data_dir=str(pdd), playbook="playbooks/validate.yml", quiet=True)
    assert run.status == "successful" and run.rc == 0, failures(run)
    ok_tasks = {e["event_data"].get("task") for e in run.events if e.get("event") == "runner_on_ok"}
    assert {"Check the inventory groups", "Check fedkafka_coordination_cluster", "Check the shared variables"} \
        <= ok_tasks
    assert len((state / "api-token").read_text().strip()) == 40  # where env/extravars put fedkafka_local_root
    assert (pdd / "artifacts" / run.config.ident / "status").read_text() == "successful"

    refused = ansible_runner.run(private_data_dir=str(pdd), playbook="playbooks/validate.yml", quiet=True,
                                 extravars={"fedkafka_coordination_cluster": "c9"})
    assert refused.status == "failed" and refused.rc != 0
    assert [f for f in failures(refused) if f.startswith("Check fedkafka_coordination_cluster:") and "'c9'" in f], \
        failures(refused)


@HEAVY
@pytest.mark.timeout(1500)  # ~240 s on a quiet machine; over 600 s under a loaded one's other tests
def test_scale_up_through_ansible_runner(private_data_dir):
    site = ansible_runner.run(private_data_dir=str(private_data_dir), playbook="playbooks/site.yml", quiet=True)
    assert site.status == "successful" and site.rc == 0, failures(site)
    assert site.stats["failures"] == {}

    run = ansible_runner.run(private_data_dir=str(private_data_dir), playbook="playbooks/scale_up.yml",
                             extravars={"cluster": "c3"}, quiet=True)
    assert run.status == "successful" and run.rc == 0, failures(run)
    ok_tasks = {e["event_data"].get("task") for e in run.events if e.get("event") == "runner_on_ok"}
    assert {"Register the cluster", "Run the scale-up workflow", "Wait until every proxy applied the new view"} \
        <= ok_tasks
    # The run's artifacts are where AWX reads them from.
    assert (private_data_dir / "artifacts" / run.config.ident / "status").read_text() == "successful"

    again = ansible_runner.run(private_data_dir=str(private_data_dir), playbook="playbooks/scale_up.yml",
                               extravars={"cluster": "c3"}, quiet=True)
    assert again.status == "successful"
    assert sum(again.stats["changed"].values()) == 0, again.stats["changed"]
