"""Make the bundle's modules importable in-process, the way Ansible finds them at run time.

`library/` holds the modules; `module_utils/` is merged into `ansible.module_utils` (ansible.cfg does the
same for playbooks), so `from ansible.module_utils.fedkafka_api import ...` resolves here too.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from unittest import mock

import ansible.module_utils
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from fedkafka.kafka.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))
if str(ROOT / "library") not in sys.path:
    sys.path.insert(0, str(ROOT / "library"))

from ansible.module_utils.fedkafka_api import ApiError, FedkafkaApi  # noqa: E402  (needs the path above)

__all__ = ["ApiError", "FedkafkaApi", "run_module", "running_controller", "site_check"]
TOKEN = "integration-token-0123456789"


class ModuleExit(BaseException):  # like SystemExit: a module's `except Exception` must not catch it
    def __init__(self, result: dict):
        super().__init__(json.dumps(result, default=str))
        self.result = result


class ModuleFail(ModuleExit):
    pass


def run_module(name: str, args: dict, check_mode: bool = False) -> tuple[bool, dict]:
    """Run module `name`'s main() with args; returns (failed, result)."""
    module = importlib.import_module(name)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}

    def _exit(self, **kwargs):
        raise ModuleExit(kwargs)

    def _fail(self, msg, **kwargs):
        raise ModuleFail({"msg": msg, **kwargs})

    with patch_module_args(args), mock.patch.object(basic.AnsibleModule, "exit_json", _exit), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail):
        try:
            module.main()
        except ModuleFail as exc:
            return True, exc.result
        except ModuleExit as exc:
            return False, exc.result
    raise AssertionError(f"{name} returned without exit_json/fail_json")


def running_controller(root: Path, *extra_args: str):
    """A `fedkafka controller` on a SQLite file under root (a generator for fixtures), with `extra_args` on its
    command line: yields the modules' API arguments, stops it after."""
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    fedkafka = Path(sys.executable).with_name("fedkafka")
    with open(root / "controller.log", "wb") as log:
        proc = subprocess.Popen([str(fedkafka), "controller", "--db", f"sqlite:///{root / 'db.sqlite'}",
                                 "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file),
                                 "--scan-interval", "1", *extra_args], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:  # up and taking writes: a controller still taking over answers /healthz but refuses /v1/ writes (503)
            with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
                if json.load(answer).get("active"):
                    break
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("controller answered /healthz but did not become active")
            time.sleep(0.2)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log_tail = (root / "controller.log").read_text()[-2000:]
                raise AssertionError(f"controller did not start:\n{log_tail}") from None
            time.sleep(0.2)
    yield {"controller_url": url, "token": TOKEN}
    proc.terminate()
    proc.wait(timeout=30)


def site_check(tmp_path: Path, limit: str, extra_vars: dict, succeeds: bool = True) -> str:
    """`site.yml --check --diff` of the local inventory's `limit` hosts, run here through the real roles, with
    `extra_vars` from a file removed after the run (secrets never on a command line); the run's whole output. The
    test fails when the run did not end as `succeeds` says."""
    extra = tmp_path / "extra-vars.json"
    extra.write_text(json.dumps(extra_vars))
    playbook = str(Path(sys.executable).with_name("ansible-playbook"))
    proc = subprocess.run([playbook, "playbooks/site.yml", "--limit", limit, "--check", "--diff",
                           "-e", "ansible_connection=local", "-e", "ansible_become=false",
                           "-e", f"ansible_python_interpreter={sys.executable}",
                           "-e", "fedkafka_install_source=present", "-e", f"fedkafka_venv={sys.prefix}",
                           "-e", f"fedkafka_state_dir={tmp_path}",
                           "-e", f"@{extra}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    extra.unlink()
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == succeeds, out[-4000:]
    return out
