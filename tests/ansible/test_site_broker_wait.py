"""site.yml waits, on one host of each cluster, until Metadata lists every broker of its group, and registers no
cluster while one did not: a broker host that failed (here: unreachable) leaves the run while the other hosts
carry on, and its cluster used to be registered half up. The roles are stand-ins (a tmp roles path): what is
tested is the playbook's order, against a real Kafka broker (the session's c1) and a real controller. About 40 s."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_harness import TOKEN, FedkafkaApi, running_controller

from fedkafka.kafka.cluster import free_port

pytestmark = [pytest.mark.ansible, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
ROLES = ("kafka_broker", "fedkafka_controller", "fedkafka_nameservice", "fedkafka_proxy")
WAIT_TASK = "TASK [fedkafka_common : Wait until the cluster has every broker]"  # roles/fedkafka_common, shared


@pytest.fixture
def controller(tmp_path):
    yield from running_controller(tmp_path)


def site(tmp_path: Path, api: dict, clusters: dict[str, dict], *flags: str) -> tuple[int, str]:
    """site.yml with stand-in roles on an inventory of this machine: `clusters` maps a cluster to its hosts (and
    their variables) and c1 coordinates; (exit code, whole output)."""
    roles = tmp_path / "roles"
    for role in ROLES:
        (roles / role / "tasks").mkdir(parents=True, exist_ok=True)
        (roles / role / "tasks" / "main.yml").write_text(f"- name: Stand in for {role}\n  ansible.builtin.meta: noop\n")
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "fedkafka_venv": sys.prefix, "fedkafka_api_token": TOKEN,
                 "fedkafka_controller_url": api["controller_url"], "fedkafka_coordination_cluster": "c1"},
        "children": {
            "kafka_brokers": {"children": {f"kafka_{name}": {"vars": {"kafka_broker_cluster": name}, "hosts": hosts}
                                           for name, hosts in clusters.items()}},
            "fedkafka_controller": {"hosts": {"controller": {}}},
        }}}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": f"{roles}:{ROOT / 'roles'}", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([PLAYBOOK, "-i", str(inventory), "playbooks/site.yml", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def registered(api: dict) -> dict[str, str]:
    clusters = FedkafkaApi(api["controller_url"], api["token"]).request("GET", "/v1/clusters")
    return {c["id"]: c["bootstrap"] for c in clusters}


def broker_host(kafka, **extra) -> dict:
    return {"kafka_broker_port": kafka.brokers[0].port, "kafka_broker_wait_timeout": 10, **extra}


def test_site_registers_clusters_once_every_broker_answered_and_check_mode_predicts_no_change(
        kafka_clusters, controller, tmp_path):
    c1 = kafka_clusters[0]
    clusters = {"c1": {"c1-a": broker_host(c1)}, "c2": {"c2-a": broker_host(c1)}}
    code, out = site(tmp_path, controller, clusters)
    assert code == 0, out[-5000:]
    assert len(re.findall(r"^ok: \[c\d-a\]", out.split(WAIT_TASK)[1], re.M)) >= 2
    assert registered(controller) == {"c1": c1.bootstrap, "c2": c1.bootstrap}
    code, out = site(tmp_path, controller, clusters, "--check", "--diff")
    assert code == 0, out[-5000:]
    assert re.findall(r"changed=(\d+)", out) == ["0"] * len(re.findall(r"changed=", out)), out[-3000:]


@pytest.mark.parametrize("others", [[], ["c2-b"]])
def test_site_registers_no_cluster_while_a_broker_host_of_one_is_unreachable(kafka_clusters, controller, tmp_path,
                                                                             others):
    """c2 lists a broker host that cannot be reached: the other hosts carry on, c2-a's wait wants every broker in
    Metadata and gives up, and the controller play stops before registering any cluster. With a third host c2-b
    (reachable), c2-b is first of c2 in the batch once c2-a failed: it must not mark c2 as answered."""
    c1 = kafka_clusters[0]
    down = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": free_port(),
            "kafka_broker_node_id": 2, "kafka_broker_port": free_port()}
    c2 = {"c2-a": broker_host(c1), **{name: broker_host(c1) for name in others}, "c2-down": down}
    clusters = {"c1": {"c1-a": broker_host(c1)}, "c2": c2}
    code, out = site(tmp_path, controller, clusters)
    assert code != 0
    assert re.search(r"^c2-down\s*:.*unreachable=1", out, re.M), out[-5000:]
    assert registered(controller) == {}  # c2 and c1 used to be registered
    assert f"1 broker(s) in Metadata, {len(c2)} wanted" in out, out[-5000:]
    flat = " ".join(out.split())
    assert f"the brokers of c2 ({', '.join(c2)}) did not all answer Metadata" in flat, out[-5000:]
    assert "the brokers of c1" not in flat
    assert "TASK [Register each cluster]" not in out


def test_site_limited_to_other_hosts_leaves_a_cluster_outside_the_limit_unchecked(kafka_clusters, controller,
                                                                                 tmp_path):
    """--limit without any host of c2: this run provisions nothing of c2, so it is registered as before, unchecked."""
    c1 = kafka_clusters[0]
    down = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": free_port()}
    clusters = {"c1": {"c1-a": broker_host(c1)}, "c2": {"c2-a": broker_host(c1), "c2-down": down}}
    code, out = site(tmp_path, controller, clusters, "--limit", "localhost,controller,c1-a")
    assert code == 0, out[-5000:]
    assert registered(controller) == {"c1": c1.bootstrap, "c2": f"{c1.bootstrap},127.0.0.1:9092"}


def test_site_limited_by_a_file_checks_every_cluster(kafka_clusters, controller, tmp_path):
    """--limit @file (the inventory lookup does not read it): every cluster is checked, so c2, whose hosts the file
    names and one of which is unreachable, is not registered (it used to be, unchecked)."""
    c1 = kafka_clusters[0]
    down = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": free_port()}
    clusters = {"c1": {"c1-a": broker_host(c1)}, "c2": {"c2-a": broker_host(c1), "c2-down": down}}
    limit = tmp_path / "limit.txt"
    limit.write_text("localhost\ncontroller\nc1-a\nc2-a\nc2-down\n")
    code, out = site(tmp_path, controller, clusters, "--limit", f"@{limit}")
    assert code != 0
    assert registered(controller) == {}
    assert "the brokers of c2 (c2-a, c2-down) did not all answer Metadata" in " ".join(out.split()), out[-5000:]


def test_site_registers_no_cluster_whose_metadata_lacks_a_node_id_of_its_group(kafka_clusters, controller, tmp_path):
    """c2's one host is node 7, but Metadata at its address lists node 1 only (as a stale registration of a removed
    node would): the count of brokers is met, the wait wants node 7 by id, names it, and no cluster is registered.
    It used to count brokers only, and registered both."""
    c1 = kafka_clusters[0]
    clusters = {"c1": {"c1-a": broker_host(c1)}, "c2": {"c2-a": broker_host(c1, kafka_broker_node_id=7)}}
    code, out = site(tmp_path, controller, clusters)
    assert code != 0
    assert registered(controller) == {}
    assert "1 broker(s) in Metadata, 1 wanted; node id(s) 7 missing (listed: 1)" in out, out[-5000:]
    assert "the brokers of c2 (c2-a) did not all answer Metadata" in " ".join(out.split()), out[-5000:]
