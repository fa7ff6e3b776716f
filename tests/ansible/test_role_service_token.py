"""fedkafka_controller_service_token: the common role writes it 0600 and refuses a weak one or the operator's;
site.yml gives the controller `--service-token-file` and a proxy the service token's file as its `--token-file`
(the name service role does the same); fedkafka_controller_routing_token likewise, given to the name services only;
the tokens themselves never reach Ansible's output."""

from __future__ import annotations

import json
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_harness import site_check

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
API_TOKEN = "api-" + secrets.token_hex(12)
SERVICE_TOKEN = "svc-" + secrets.token_hex(12)
ROUTING_TOKEN = "routing-" + secrets.token_hex(12)
CONTROLLER, PROXY, NAME_SERVICE = "fedkafka_controller", "fedkafka_proxies", "fedkafka_nameservice"


PLAY_ORDER = (CONTROLLER, NAME_SERVICE, PROXY)  # site.yml's and upgrade.yml's plays of the roles that read tokens


def _token_tasks(tmp_path: Path, service_token: str, routing_token: str = "", groups: tuple[str, ...] = (CONTROLLER,),
                 *options: str, prune_group: str = "", api_token: str = API_TOKEN) -> subprocess.CompletedProcess:
    """token.yml then token_prune.yml (as a role of `prune_group` includes it after its service; default: the
    host's last group in the plays' order) on localhost, a host of `groups` (the files follow the host's groups)."""
    prune_group = prune_group or max(groups, key=lambda g: PLAY_ORDER.index(g) if g in PLAY_ORDER else -1)
    tmp_path.mkdir(parents=True, exist_ok=True)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {group: {"hosts": {"localhost": {}}} for group in groups}}}))
    book = tmp_path / "token.yml"
    book.write_text(f"""
- hosts: localhost
  gather_facts: false
  vars_files:
    - {ROOT}/roles/fedkafka_common/defaults/main.yml
    - {ROOT}/roles/fedkafka_common/vars/main.yml
  tasks:
    - name: The common role's token tasks
      ansible.builtin.include_tasks: {ROOT}/roles/fedkafka_common/tasks/token.yml
    - name: The stale token files removed (after the service, in the roles)
      ansible.builtin.include_tasks: {ROOT}/roles/fedkafka_common/tasks/token_prune.yml
      vars:
        fedkafka_token_prune_group: {prune_group}
""")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"fedkafka_state_dir": str(tmp_path), "fedkafka_config_dir": str(tmp_path / "etc"),
                                 "fedkafka_api_token": api_token, "fedkafka_controller_service_token": service_token,
                                 "fedkafka_controller_routing_token": routing_token}))
    extra.chmod(0o600)
    (tmp_path / "etc").mkdir(exist_ok=True)
    proc = subprocess.run([PLAYBOOK, str(book), "-i", str(inventory), *options, "-e", f"@{extra}", "-v",
                           "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    extra.unlink()
    for token in (API_TOKEN, SERVICE_TOKEN, ROUTING_TOKEN):
        assert token not in proc.stdout + proc.stderr
    return proc


def test_the_service_token_is_written_0600_and_checked(tmp_path):
    proc = _token_tasks(tmp_path, SERVICE_TOKEN)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    written = tmp_path / "etc" / "service-token"
    assert written.read_text().strip() == SERVICE_TOKEN and stat.S_IMODE(written.stat().st_mode) == 0o600
    assert (tmp_path / "etc" / "api-token").read_text().strip() == API_TOKEN
    for bad in (API_TOKEN, "short"):
        refused = _token_tasks(tmp_path / bad[:5], bad)
        assert refused.returncode != 0 and "differs from fedkafka_api_token" in refused.stdout, refused.stdout[-3000:]


def test_without_a_service_token_no_file_is_written(tmp_path):
    assert _token_tasks(tmp_path, "").returncode == 0
    assert not (tmp_path / "etc" / "service-token").exists() and not (tmp_path / "etc" / "routing-token").exists()


def test_the_routing_token_is_written_0600_and_checked(tmp_path):
    proc = _token_tasks(tmp_path, SERVICE_TOKEN, ROUTING_TOKEN)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    written = tmp_path / "etc" / "routing-token"
    assert written.read_text().strip() == ROUTING_TOKEN and stat.S_IMODE(written.stat().st_mode) == 0o600
    for bad in (API_TOKEN, SERVICE_TOKEN, "short"):
        refused = _token_tasks(tmp_path / bad[:5], SERVICE_TOKEN, bad)
        assert refused.returncode != 0 and "fedkafka_controller_routing_token must be" in refused.stdout, \
            refused.stdout[-3000:]


def test_site_yml_gives_the_service_token_to_proxies_and_name_service_only(tmp_path):
    out = site_check(tmp_path, "localhost,proxy1,controller",
                     {"fedkafka_api_token": API_TOKEN, "fedkafka_controller_service_token": SERVICE_TOKEN})
    assert API_TOKEN not in out and SERVICE_TOKEN not in out
    flat, etc = " ".join(out.split()), tmp_path / "etc"
    assert f"--token-file {etc}/api-token --scan-interval" in flat, out[-4000:]  # the controller: both tokens
    assert f"--service-token-file {etc}/service-token" in flat
    assert f"--token-file {etc}/service-token --view-cache" in flat  # the proxy: the service token only


def test_site_yml_gives_the_routing_token_to_the_name_service(tmp_path):
    out = site_check(tmp_path, "localhost,nameservice,controller",
                     {"fedkafka_api_token": API_TOKEN, "fedkafka_controller_service_token": SERVICE_TOKEN,
                      "fedkafka_controller_routing_token": ROUTING_TOKEN})
    assert API_TOKEN not in out and SERVICE_TOKEN not in out and ROUTING_TOKEN not in out
    flat, etc = " ".join(out.split()), tmp_path / "etc"
    assert f"--routing-token-file {etc}/routing-token" in flat, out[-4000:]  # the controller accepts it
    assert f"--token-file {etc}/routing-token --max-connections" in flat  # the name service: the routing token only


def _token_files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "etc").iterdir()}


def _stale_copies(tmp_path: Path) -> None:
    """Every token file, as the role wrote them on every host before the files followed the host's groups."""
    (tmp_path / "etc").mkdir(parents=True)
    for name, token in (("api-token", API_TOKEN), ("service-token", SERVICE_TOKEN), ("routing-token", ROUTING_TOKEN)):
        (tmp_path / "etc" / name).write_text(token + "\n")
        (tmp_path / "etc" / name).chmod(0o600)


@pytest.mark.parametrize(("groups", "service_token", "routing_token", "kept"), [
    ((NAME_SERVICE,), SERVICE_TOKEN, ROUTING_TOKEN, {"routing-token"}),
    ((NAME_SERVICE,), SERVICE_TOKEN, "", {"service-token"}),
    ((NAME_SERVICE,), "", ROUTING_TOKEN, {"routing-token"}),
    ((NAME_SERVICE,), "", "", {"api-token"}),
    ((PROXY,), SERVICE_TOKEN, ROUTING_TOKEN, {"service-token"}),
    ((PROXY,), "", ROUTING_TOKEN, {"api-token"}),
    ((PROXY, NAME_SERVICE), SERVICE_TOKEN, ROUTING_TOKEN, {"service-token", "routing-token"}),
    ((CONTROLLER,), SERVICE_TOKEN, ROUTING_TOKEN, {"api-token", "service-token", "routing-token"}),
], ids=["ns-routing", "ns-service", "ns-routing-only", "ns-one-token", "proxy-service", "proxy-one-token",
        "proxy-and-ns", "controller"])
def test_a_host_keeps_only_the_token_files_its_groups_read(tmp_path, groups, service_token, routing_token, kept):
    _stale_copies(tmp_path)
    checked = _token_tasks(tmp_path, service_token, routing_token, groups, "--check", "--diff")
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert _token_files(tmp_path) == {"api-token", "service-token", "routing-token"}  # --check removes nothing
    removals = 3 - len(kept)
    assert f"changed={removals} " in checked.stdout, checked.stdout[-3000:]  # but says what the run removes
    assert len(re.findall(r"^\+\s*state: absent", checked.stdout, re.M)) == removals, checked.stdout[-3000:]
    run = _token_tasks(tmp_path, service_token, routing_token, groups)
    assert run.returncode == 0 and f"changed={removals} " in run.stdout, run.stdout[-3000:]
    assert _token_files(tmp_path) == kept
    again = _token_tasks(tmp_path, service_token, routing_token, groups)
    assert again.returncode == 0 and "changed=0 " in again.stdout, again.stdout[-3000:]


def test_a_host_in_none_of_the_groups_is_refused(tmp_path):
    refused = _token_tasks(tmp_path, SERVICE_TOKEN, ROUTING_TOKEN, ("kafka_brokers",))
    assert refused.returncode != 0 and "put localhost in fedkafka_controller" in refused.stdout, refused.stdout[-3000:]
    assert _token_files(tmp_path) == set()


@pytest.mark.parametrize("blank", [" " * 16, API_TOKEN + "  "], ids=["blanks", "operator-token-and-blanks"])
def test_a_routing_token_blank_or_another_but_for_blanks_is_refused(tmp_path, blank):
    refused = _token_tasks(tmp_path, SERVICE_TOKEN, blank)
    assert refused.returncode != 0 and "fedkafka_controller_routing_token must be" in refused.stdout, \
        refused.stdout[-3000:]


NOT_ONE_WORD = {"line-break": "{}\nissued for the CI runner", "blank": "{} and a note", "tab": "{}\tx",
                "non-ascii": "caf\u00e9-{}", "control": "{}\u007f"}
CHECK_OF = {"api": "fedkafka_api_token must be set", "service": "fedkafka_controller_service_token must be",
            "routing": "fedkafka_controller_routing_token must be"}


@pytest.mark.parametrize("which", CHECK_OF)
@pytest.mark.parametrize("kind", NOT_ONE_WORD)
def test_a_token_that_is_not_one_word_of_printable_ascii_is_refused_before_any_file_is_written(tmp_path, which, kind):
    """s37: the roles took any string of 16+ characters; one the controller, proxy or name service then refuses at
    start (`token_problem`: a line break, a blank or a character other than printable ASCII inside) was written and
    the service restarted into the refusal. Refused by the check now, naming the variable, never the token."""
    tokens = {"api": API_TOKEN, "service": SERVICE_TOKEN, "routing": ROUTING_TOKEN}
    tokens[which] = NOT_ONE_WORD[kind].format(tokens[which])  # still 16+ characters, and unlike the others
    refused = _token_tasks(tmp_path, tokens["service"], tokens["routing"], api_token=tokens["api"])
    assert refused.returncode != 0, refused.stdout[-3000:]
    said = " ".join(refused.stdout.split())
    assert CHECK_OF[which] in said and "one word of 16+ printable ASCII characters" in said, refused.stdout[-3000:]
    assert not (tmp_path / "etc" / f"{which}-token").exists()


def _removes_files(tasks: list[dict]) -> bool:
    """Does any of these tasks (or of the blocks and common-role tasks files they include) remove a file?"""
    for task in tasks:
        module = task.get("ansible.builtin.file") or {}
        included = (task.get("ansible.builtin.include_role") or {}).get("tasks_from")
        if module.get("state") == "absent" or _removes_files(task.get("block", [])):
            return True
        if included and _removes_files(yaml.safe_load((COMMON_TASKS / f"{included}.yml").read_text()) or []):
            return True
    return False


COMMON_TASKS = ROOT / "roles" / "fedkafka_common" / "tasks"
TOKEN_ROLES = ("fedkafka_controller", "fedkafka_nameservice", "fedkafka_proxy")


@pytest.mark.parametrize("role", TOKEN_ROLES)
def test_a_role_removes_a_file_only_after_its_service_no_longer_names_it(role):
    """A stale token file (or the controller's environment file) was removed before the unit or program was
    rewritten: a play failing in between, then a restart (a crash, a reboot), found the file the old unit names
    gone. Every removal now follows the service task (it rewrites the unit and restarts the service), and the
    token files are still removed (token_prune.yml). Static: the role's YAML only."""
    tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / "main.yml").read_text())
    service = next(i for i, t in enumerate(tasks) if (t.get("ansible.builtin.include_role") or {}).get("tasks_from")
                   == "service")
    removing_before = [t["name"] for t in tasks[:service] if _removes_files([t])]
    assert removing_before == [], f"{role} removes a file before its service is rewritten: {removing_before}"
    prunes = [i for i, t in enumerate(tasks) if (t.get("ansible.builtin.include_role") or {}).get("tasks_from")
              == "token_prune"]
    assert len(prunes) == 1 and prunes[0] > service, prunes


def test_a_host_in_several_groups_keeps_a_file_until_its_last_service_no_longer_names_it(tmp_path):
    """A name service and a proxy on one host, both switching from the operator token to the service token: the
    name service play (earlier in site.yml) leaves the api-token file to the proxies play, whose unit still names
    it until that play rewrites it."""
    _stale_copies(tmp_path)
    groups = (NAME_SERVICE, PROXY)
    early = _token_tasks(tmp_path, SERVICE_TOKEN, ROUTING_TOKEN, groups, prune_group=NAME_SERVICE)
    assert early.returncode == 0 and "changed=0 " in early.stdout, early.stdout[-3000:]
    assert _token_files(tmp_path) == {"api-token", "service-token", "routing-token"}
    last = _token_tasks(tmp_path, SERVICE_TOKEN, ROUTING_TOKEN, groups, prune_group=PROXY)
    assert last.returncode == 0 and "changed=1 " in last.stdout, last.stdout[-3000:]
    assert _token_files(tmp_path) == {"service-token", "routing-token"}
