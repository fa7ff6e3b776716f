"""Bad or missing variables stop a playbook in its first task, with a message naming the variable,
before any host is touched. Runs the real ansible-playbook on the local inventory (nothing is started)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

CASES = [
    ("scale_up.yml", [], "scale_up.yml needs -e cluster=<name> (got 'undefined')"),
    ("scale_up.yml", ["-e", "cluster=c9"], "naming an inventory group"),
    ("scale_up.yml", ["-e", "cluster=c3", "-e", "strategy=shuffle"], "strategy must be rebalance or expand"),
    ("decommission.yml", [], "decommission.yml needs -e cluster=<name>"),
    ("decommission.yml", ["-e", "cluster=c2"], "not the coordination cluster"),
    ("site.yml", ["-e", "fedkafka_api_token=short"], "fedkafka_api_token must be set"),
    ("site.yml", ["-e", '{"fedkafka_api_token": "0123456789abcdef and a note"}'], "one word of 16+ printable ASCII"),
    ("site.yml", ["-e", '{"fedkafka_api_token": "0123456789abcdef\\nnote"}'], "one word of 16+ printable ASCII"),
    ("site.yml", ["-e", "fedkafka_controller_url=controller:8780"], "fedkafka_controller_url must be set"),
    ("site.yml", ["-e", "fedkafka_controller_url=http://127.0.0.1:1,ftp://b:2"], "got 'http://127.0.0.1:1,ftp://b:2'"),
    ("site.yml", ["-e", "fedkafka_controller_url= , "], "fedkafka_controller_url must be set"),
    ("failover.yml", [], "failover.yml needs -e cluster=<name> of the dead cluster (got 'undefined')"),
    ("failover.yml", ["-e", "cluster=c1", "-e", "timeout=soon"], "timeout must be a positive number"),
    ("coordination_move.yml", [], "coordination_move.yml needs -e to=<name>"),
    ("coordination_move.yml", ["-e", "to=c3", "-e", "unclean=maybe"], "unclean must be true or false"),
    ("site.yml", ["-e", "fedkafka_coordination_cluster=c9"], "fedkafka_coordination_cluster ('c9') must name"),
    ("site.yml", ["-e", '{"fedkafka_topics": [{"name": "t"}]}'], "fedkafka_topics must be a list of"),
    ("site.yml", ["-e", '{"fedkafka_client_rules": [{"name": "r", "match": "regex", "pattern": "p", "pool": "x"}]}'],
     "fedkafka_client_rules must be a list of"),
]


@pytest.mark.parametrize(("playbook", "args", "message"), CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES])
def test_bad_variable_fails_first_and_touches_nothing(playbook, args, message):
    proc = subprocess.run([PLAYBOOK, f"playbooks/{playbook}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert message in " ".join(out.split()), out
    recap = re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M)
    assert recap == ["localhost"], f"hosts other than localhost were touched: {recap}"


def test_several_controllers_need_a_postgresql_database():
    """The example inventory runs two controllers: on SQLite they could not share the database."""
    proc = subprocess.run([PLAYBOOK, "-i", "inventory/example", "playbooks/site.yml", "-e",
                           "fedkafka_controller_db_url=sqlite:////var/lib/fedkafka/db.sqlite", "-e",
                           "fedkafka_api_token=0123456789abcdef"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out
    assert "2 controllers (fedkafka_controller) need one PostgreSQL database" in out, out
    assert re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M) == ["localhost"]


def test_role_argument_specs_name_the_variable():
    proc = subprocess.run([PLAYBOOK, "playbooks/site.yml", "--limit", "localhost,c1-broker1", "--check",
                           "-e", "kafka_broker_port=not-a-port"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "kafka_broker_port" in out


# Check mode up to the proxy role on one proxy host, on this machine: nothing is started.
CHECK_ONE_PROXY = ["--check", "-e", "ansible_connection=local", "-e", "ansible_become=false",
                   "-e", f"ansible_python_interpreter={sys.executable}", "-e", "fedkafka_install_source=present",
                   "-e", f"fedkafka_venv={sys.prefix}"]


# include_role runs the argument spec of the entry point named exactly as tasks_from: `stop.yml` matched none.
# Each playbook below exited 0 with these values when its includes named `X.yml`.
@pytest.mark.parametrize("playbook, host, bad_value, entry_point, refusal", [
    ("teardown.yml", "controller", "fedkafka_service_manager=bogus", "stop",
     "value of fedkafka_service_manager must be one of: auto, systemd, supervisord, got: bogus"),
    ("site.yml", "proxy1", "fedkafka_service_stop_timeout=soon", "service",
     "argument 'fedkafka_service_stop_timeout' is of type str and we were unable to convert to int"),
    ("rolling_restart.yml", "c1-broker1", "fedkafka_service_wait_timeout=soon", "restart",
     "argument 'fedkafka_service_wait_timeout' is of type str and we were unable to convert to int"),
])
def test_an_entry_point_refuses_what_its_argument_spec_does_not_allow(tmp_path, playbook, host, bad_value,
                                                                      entry_point, refusal):
    proc = subprocess.run([PLAYBOOK, f"playbooks/{playbook}", "--limit", f"localhost,{host}", *CHECK_ONE_PROXY,
                           "-e", f"fedkafka_state_dir={tmp_path}", "-e", bad_value],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out
    assert f"arg spec '{entry_point}'" in out, out
    assert refusal in out, out


def test_proxy_workers_with_a_controller_pass_validation(tmp_path):
    """`fedkafka proxy --workers N` works with a controller (docs/DESIGN.md §4.10); the role used to refuse it."""
    proc = subprocess.run([PLAYBOOK, "playbooks/site.yml", "--limit", "localhost,proxy1", *CHECK_ONE_PROXY,
                           "-e", f"fedkafka_state_dir={tmp_path}", "-e", "fedkafka_proxy_workers=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "needs fedkafka_proxy_view_file" not in out, out
    assert "Run the proxy as a service" in out, out


def test_a_pool_of_mixed_proxy_roles_is_refused_before_anything_starts():
    """One pool for the example's pproxies and cproxies: each would answer Metadata differently."""
    proc = subprocess.run([PLAYBOOK, "-i", "inventory/example", "playbooks/site.yml", "-e",
                           "fedkafka_proxy_pool=everyone", "-e", "fedkafka_api_token=0123456789abcdef"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out
    assert "proxy pool 'everyone' mixes the roles pproxy and cproxy" in out, out
    assert re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M) == ["localhost"]


def test_example_inventory_passes_the_proxy_checks_as_shipped(tmp_path):
    proc = subprocess.run([PLAYBOOK, "-i", "inventory/example", "playbooks/site.yml",
                           "--limit", "localhost,fedkafka-pp-a.example.net", *CHECK_ONE_PROXY,
                           "-e", f"fedkafka_state_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"^fedkafka-pp-a\.example\.net\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", proc.stdout,
                     re.M), proc.stdout[-4000:]


PATH_SETTINGS = {"inventory", "roles_path", "library", "module_utils", "doc_fragment_plugins"}


@pytest.mark.parametrize("cwd", [".", "playbooks"])
@pytest.mark.parametrize("playbook", ["site.yml", "scale_up.yml", "decommission.yml", "rolling_restart.yml",
                                      "upgrade.yml", "failover.yml", "coordination_move.yml"])
def test_playbooks_find_the_bundle_from_the_root_and_from_playbooks(cwd, playbook):
    path = playbook if cwd == "playbooks" else f"playbooks/{playbook}"
    proc = subprocess.run([PLAYBOOK, path, "-e", "cluster=c3", "--list-tasks", "--list-hosts"], cwd=ROOT / cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    host = "proxy1" if playbook == "rolling_restart.yml" else "controller"  # it restarts brokers and proxies
    assert re.search(rf"^\s+{host}$", proc.stdout, re.M), proc.stdout  # the local inventory was found
    assert "couldn't resolve module" not in proc.stderr


def test_playbooks_ansible_cfg_mirrors_the_root_one():
    import configparser

    def read(path: Path) -> dict[str, dict[str, str]]:
        parser = configparser.ConfigParser()
        parser.read(path)
        return {section: dict(parser[section]) for section in parser.sections()}

    root, nested = read(ROOT / "ansible.cfg"), read(ROOT / "playbooks" / "ansible.cfg")
    expected = {section: {key: f"../{value}" if key in PATH_SETTINGS else value for key, value in items.items()}
                for section, items in root.items()}
    assert nested == expected


def test_proxy_admin_port_and_scrape_target_in_check_mode(tmp_path):
    """The proxy role passes --admin-listen and writes its Prometheus file_sd target (shown by --diff)."""
    sd = tmp_path / "prometheus"
    sd.mkdir()
    proc = subprocess.run([PLAYBOOK, "playbooks/site.yml", "--limit", "localhost,proxy1", *CHECK_ONE_PROXY, "--diff",
                           "-e", f"fedkafka_state_dir={tmp_path}", "-e", "fedkafka_proxy_admin_port=9399",
                           "-e", f"fedkafka_prometheus_sd_dir={sd}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "--admin-listen" in out and ":9399" in out, out[-3000:]
    assert "Write the Prometheus scrape target of proxy" in out
    assert '"job": "fedkafka-proxy"' in out


def test_the_scrape_target_of_a_proxy_with_workers_lists_every_workers_metrics_port(tmp_path):
    """With --workers N, worker i serves /metrics on the admin port + i (docs/DESIGN.md §4.10): one target each
    (the role used to list the admin port alone, so Prometheus saw one worker of N)."""
    sd = tmp_path / "prometheus"
    sd.mkdir()
    proc = subprocess.run([PLAYBOOK, "playbooks/site.yml", "--limit", "localhost,proxy1", *CHECK_ONE_PROXY, "--diff",
                           "-e", f"fedkafka_state_dir={tmp_path}", "-e", "fedkafka_proxy_admin_port=9399",
                           "-e", "fedkafka_proxy_admin_host=10.1.2.3", "-e", "fedkafka_proxy_workers=3",
                           "-e", f"fedkafka_prometheus_sd_dir={sd}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    targets = re.search(r'"targets": (\[[^\]]*\])', out)
    assert targets, out[-3000:]
    assert json.loads(targets.group(1)) == ["10.1.2.3:9399", "10.1.2.3:9400", "10.1.2.3:9401"]


# The groups whose services clients connect through (proxies: the data path; name services: the bootstrap): a play
# of site.yml or upgrade.yml that runs their role restarts a changed service, so it must take one host at a time,
# the play then stopping at the first host that fails, before the others (static: the plays' YAML only)
ROLLED_GROUPS = ("fedkafka_proxies", "fedkafka_nameservice")


@pytest.mark.parametrize("playbook", ["site.yml", "upgrade.yml"])
def test_the_plays_that_restart_proxies_or_name_services_roll_one_host_at_a_time(playbook):
    plays = yaml.safe_load((ROOT / "playbooks" / playbook).read_text())
    rolled = {play["hosts"]: play.get("serial") for play in plays if play.get("hosts") in ROLLED_GROUPS
              and any(r.get("role") in ("fedkafka_proxy", "fedkafka_nameservice") for r in play.get("roles", []))}
    assert rolled == {group: 1 for group in ROLLED_GROUPS}, rolled
