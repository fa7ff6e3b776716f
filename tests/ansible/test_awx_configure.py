"""awx/configure.yml against the awx.awx modules' own argument specs, without an AWX.

The playbook runs for real (templating, loops, omit), but each awx.awx module it calls is a stand-in that takes
the real module's argument_spec (captured from its main()) and lets AnsibleModule validate the task's arguments
with it: an unknown option, a wrong type or a bad choice fails the task as it would against AWX. Needs the
awx.awx collection (`ansible-galaxy collection install -r awx/requirements.yml`); skipped without it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

# The module Ansible runs for awx.awx.<name>: it hands the task's arguments to a fresh interpreter (an AnsiballZ
# payload brings its own ansible_collections package, so the real collection cannot be imported inside it).
STAND_IN = '''#!/usr/bin/python
import json
import subprocess
import sys

from ansible.module_utils.basic import _load_params

child = subprocess.run([{python!r}, {check!r}, {real!r}, {name!r}, {log!r}], input=json.dumps(_load_params()),
                       capture_output=True, text=True)
sys.stdout.write(child.stdout or json.dumps({{"failed": True, "msg": child.stderr[-2000:]}}))
sys.exit(child.returncode)
'''

# Runs the real awx.awx module's main() up to the point where it builds its module object: there the real
# argument_spec (with the collection's connection options) goes to AnsibleModule, which validates the task's
# arguments and fails as it would against AWX; then it exits, recording what it was given.
CHECK = '''import importlib
import json
import sys
from unittest import mock

real, name, log = sys.argv[1:4]
sys.path.insert(0, real)
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

controller_api = importlib.import_module("ansible_collections.awx.awx.plugins.module_utils.controller_api")


def validate_only(self, argument_spec=None, **kwargs):
    spec = dict(controller_api.ControllerAPIModule.AUTH_ARGSPEC, **argument_spec)
    module = basic.AnsibleModule(argument_spec=spec, supports_check_mode=True)
    given = sorted(k for k, v in module.params.items() if v is not None and k in argument_spec)
    with open(log, "a") as out:
        out.write(json.dumps({"module": name, "given": given}) + "\\n")
    module.exit_json(changed=False)


args = {k: v for k, v in json.load(sys.stdin).items() if not k.startswith("_ansible_")}
with patch_module_args(args), mock.patch.object(controller_api.ControllerAPIModule, "__init__", validate_only):
    importlib.import_module("ansible_collections.awx.awx.plugins.modules." + name).main()
'''


def awx_collection() -> Path | None:
    """The directory holding ansible_collections/awx/awx, where Ansible would look for it."""
    paths = os.environ.get("ANSIBLE_COLLECTIONS_PATH", os.environ.get("ANSIBLE_COLLECTIONS_PATHS", ""))
    candidates = [Path(p) for p in paths.split(os.pathsep) if p]
    candidates += [Path.home() / ".ansible/collections", Path("/usr/share/ansible/collections"),
                   *(Path(p) for p in sys.path if p.endswith("site-packages"))]
    return next((c for c in candidates if (c / "ansible_collections/awx/awx/plugins/modules").is_dir()), None)


def used_modules() -> set[str]:
    return set(re.findall(r"^\s+awx\.awx\.(\w+):", (ROOT / "awx/configure.yml").read_text(), re.M))


@pytest.fixture
def stand_ins(tmp_path):
    real = awx_collection()
    if real is None:
        pytest.skip("awx.awx is not installed (ansible-galaxy collection install -r awx/requirements.yml)")
    modules = tmp_path / "collections/ansible_collections/awx/awx/plugins/modules"
    modules.mkdir(parents=True)
    check = tmp_path / "check_awx_args.py"
    check.write_text(CHECK)
    for name in used_modules() | {"credential"}:
        assert (real / f"ansible_collections/awx/awx/plugins/modules/{name}.py").exists(), name
        (modules / f"{name}.py").write_text(STAND_IN.format(python=sys.executable, check=str(check), real=str(real),
                                                           name=name, log=str(tmp_path / "validated.jsonl")))
    return tmp_path / "collections"


def configure(collections: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n")
    args = {"fedkafka_awx_scm_url": "https://git.example.net/fedkafka.git", "fedkafka_awx_ssh_key_file": str(key),
            "fedkafka_awx_vault_password": "vault-password", "fedkafka_awx_ee_image": "registry.example/fedkafka-ee:1"}
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([PLAYBOOK, "awx/configure.yml", "-e", json.dumps(args), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_task_passes_the_awx_modules_argument_specs(stand_ins, tmp_path):
    proc = configure(stand_ins, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    validated: dict[str, list[list[str]]] = {}
    for line in (tmp_path / "validated.jsonl").read_text().splitlines():
        one = json.loads(line)
        validated.setdefault(one["module"], []).append(one["given"])
    assert set(validated) == used_modules() == {"credential", "execution_environment", "project", "inventory",
                                                "inventory_source", "job_template"}
    assert len(validated["job_template"]) == 6 and len(validated["credential"]) == 2
    # every job template carries both credentials and the execution environment the playbook created
    assert all({"credentials", "execution_environment", "survey_enabled"} <= set(g) for g in validated["job_template"])


def test_a_wrong_argument_would_fail_against_awx(stand_ins, tmp_path):
    """The stand-ins do validate: a task with an option awx.awx.credential does not know fails."""
    playbook = tmp_path / "bad.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - awx.awx.credential:\n"
                        "        name: x\n        credential_type: Machine\n        vault_id: nope\n")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(stand_ins)}
    proc = subprocess.run([PLAYBOOK, str(playbook)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Unsupported parameters" in proc.stdout + proc.stderr and "vault_id" in proc.stdout + proc.stderr


def test_configure_checks_its_variables_first(stand_ins, tmp_path):
    proc = configure(stand_ins, tmp_path, "-e", "fedkafka_awx_ee_image=")
    assert proc.returncode != 0
    assert "fedkafka_awx_ee_image" in proc.stdout


def test_execution_environment_definition_builds_a_context(tmp_path):
    """ansible-builder accepts execution-environment.yml and lays out its build context (the image build itself
    needs a container runtime). Skipped unless ansible-builder is installed."""
    builder = shutil.which("ansible-builder")
    if builder is None:
        pytest.skip("ansible-builder is not installed (pip install ansible-builder)")
    proc = subprocess.run([builder, "create", "-f", "execution-environment.yml", "-c", str(tmp_path / "ctx")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "confluent-kafka" in (tmp_path / "ctx/_build/requirements.txt").read_text()
    assert (tmp_path / "ctx/Dockerfile").exists() or (tmp_path / "ctx/Containerfile").exists()
