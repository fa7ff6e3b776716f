"""playbooks/local_cli_state.yml describes for the CLI only the clusters the inventory runs: a c3 that `fedkafka
local add-cluster` started beside a `make up` federation is not the inventory's spare c3, whose port nothing serves.
Naming the spare's port in ansible.json hid the added c3 from `fedkafka local demo` after `make down && make up`
(the README walkthrough): the demo read c3's offsets on a port where no broker listens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_harness import ROOT, running_controller
from ansible_harness import run_module as run

from fedkafka.kafka.cluster import free_port

pytestmark = [pytest.mark.ansible]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


@pytest.fixture
def controller(tmp_path):
    yield from running_controller(tmp_path)


def broker_group(cluster: str, port: int, root: Path) -> dict:
    return {"vars": {"kafka_broker_cluster": cluster},
            "hosts": {f"{cluster}-broker1": {"kafka_broker_port": str(port), "kafka_broker_node_id": 1,
                                             "kafka_broker_controller_port": port + 1,
                                             "fedkafka_state_dir": str(root / f"{cluster}-broker1")}}}


def test_a_cluster_registered_on_other_ports_than_the_inventorys_is_left_to_the_cli(controller, tmp_path):
    api = controller
    c1_port, spare_c3_port, added_c3_port = free_port(), free_port(), free_port()
    assert not run("fedkafka_cluster", {**api, "id": "c1", "bootstrap": f"127.0.0.1:{c1_port}"})[0]
    assert not run("fedkafka_cluster", {**api, "id": "c3", "bootstrap": f"127.0.0.1:{added_c3_port}"})[0]
    cli_dir = tmp_path / "cli"
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "fedkafka_venv": sys.prefix, "fedkafka_controller_url": api["controller_url"],
                 "fedkafka_api_token": api["token"], "fedkafka_local_cli_state_dir": str(cli_dir),
                 "fedkafka_local_root": str(tmp_path), "fedkafka_controller_port": 1,
                 "fedkafka_nameservice_port": 2, "fedkafka_nameservice_http_port": 3},
        "children": {"kafka_brokers": {"children": {"kafka_c1": broker_group("c1", c1_port, tmp_path)}},
                     "kafka_spare": {"children": {"kafka_c3": broker_group("c3", spare_c3_port, tmp_path)}},
                     "fedkafka_controller": {"hosts": {"controller": {}}}}}}
    inventory_path = tmp_path / "inventory.yml"
    inventory_path.write_text(json.dumps(inventory))
    proc = subprocess.run([PLAYBOOK, "-i", str(inventory_path), "playbooks/local_cli_state.yml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    described = json.loads((cli_dir / "ansible.json").read_text())["clusters"]
    assert [(c["id"], c["bootstrap"], c["port"]) for c in described] == [("c1", f"127.0.0.1:{c1_port}", c1_port)]
