"""scale_up.yml through ansible-runner with a private data dir laid out the way AWX lays it out
(env/extravars, env/envvars, inventory/, project/), against a real federation the same way provisioned.

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


@pytest.fixture(scope="module")
def private_data_dir(tmp_path_factory):
    pdd = tmp_path_factory.mktemp("awx-job")
    (pdd / "project").symlink_to(ROOT)  # AWX checks the project out here
    inventory = pdd / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    shutil.copy(ROOT / "inventory/local/hosts.yml", inventory / "hosts.yml")
    shutil.copy(ROOT / "inventory/local/group_vars/all.yml", inventory / "group_vars/all.yml")
    env = pdd / "env"
    env.mkdir()
    (env / "extravars").write_text(json.dumps({
        "fedkafka_repo_root": str(ROOT), "fedkafka_local_root": STATE, "fedkafka_local_port_base": 39050,
        "fedkafka_local_cli_state_dir": f"{STATE}/cli"}))
    (env / "envvars").write_text(json.dumps({
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_LIBRARY": str(ROOT / "library"),
        "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"), "ANSIBLE_FORCE_COLOR": "0",
        # The execution environment's tools: here, this virtualenv's ansible-playbook.
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}))
    (env / "settings").write_text(json.dumps({"job_timeout": 900}))
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
