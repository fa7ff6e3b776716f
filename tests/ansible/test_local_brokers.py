"""site.yml on the local inventory with `-e fedkafka_local_brokers=3`: every physical cluster runs 3 brokers
(a KRaft quorum of 3), the federation's topics get 3 replicas with min.insync.replicas 2, the fedkafka CLI
lists every broker, and teardown.yml stops them all.

Own port base (the first of 39200, 39300, ... whose ports are all free) and state dir, apart from `make up`,
molecule and the AWX test. Six broker JVMs for 4-6 minutes: replication is what it checks, so it runs with the
other 3-broker tests in `make test-replicated` (FEDKAFKA_REPLICATED_FAULTS=1), not `make test`; there the
inventory local_brokers.yml grows to 3 brokers a cluster (the first test here), the broker role's
server.properties for a 3-host quorum (tests/ansible/test_role_broker_security.py) and `fedkafka local up --brokers 3`
(tests/launcher/test_replicated_clusters.py) keep a cover.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from fedkafka.kafka.cluster import port_in_use, port_open

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


def free_port_base() -> int:
    for base in range(39200, 40000, 100):
        if not any(port_in_use(base + offset) for offset in range(1, 50)):
            return base
    raise RuntimeError("no free port base between 39200 and 40000")


def playbook(name: str, extravars: dict) -> str:
    proc = subprocess.run([PLAYBOOK, f"playbooks/{name}", "-e", json.dumps(extravars)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def replicas_and_min_insync(bootstrap: str) -> dict[str, tuple[set[int], str]]:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    topics = admin.list_topics(timeout=10).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics]
    configs = {r.name: f.result(timeout=10) for r, f in admin.describe_configs(resources).items()}
    return {name: ({len(p.replicas) for p in t.partitions.values()}, configs[name]["min.insync.replicas"].value)
            for name, t in topics.items()}


# local_brokers.yml alone (no JVM): the hosts it adds to each cluster of the local inventory, spare c3 included.
GROWN_CLUSTERS = """
- name: Grow the clusters
  ansible.builtin.import_playbook: {root}/playbooks/local_brokers.yml

- name: Write each cluster's brokers
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Hosts, node ids and ports of kafka_c1, kafka_c2, kafka_c3
      ansible.builtin.copy:
        dest: "{out}"
        mode: "0644"
        content: >-
          {{{{ hosts | zip(hosts | map('extract', hostvars, 'kafka_broker_cluster'),
                          hosts | map('extract', hostvars, 'kafka_broker_node_id') | map('int'),
                          hosts | map('extract', hostvars, 'kafka_broker_port') | map('int'),
                          hosts | map('extract', hostvars, 'kafka_broker_controller_port') | map('int'))
             | list | to_json }}}}
      vars:
        hosts: "{{{{ groups['kafka_c1'] + groups['kafka_c2'] + groups['kafka_c3'] }}}}"
"""


def test_local_brokers_gives_every_cluster_three_brokers_on_ports_of_their_own(tmp_path):
    """The fast cover `make test` keeps of the 3-broker site run below: the inventory it provisions."""
    (tmp_path / "grow.yml").write_text(GROWN_CLUSTERS.format(root=ROOT, out=tmp_path / "brokers.json"))
    proc = subprocess.run([PLAYBOOK, str(tmp_path / "grow.yml"), "-e", "fedkafka_local_brokers=3",
                           "-e", "fedkafka_local_port_base=39200"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    brokers = json.loads((tmp_path / "brokers.json").read_text())
    # broker n of cluster k: port base + 10k + 2n - 1, its KRaft controller port the next one
    assert brokers == [[f"c{k}-broker{n}", f"c{k}", n, 39200 + 10 * k + 2 * n - 1, 39200 + 10 * k + 2 * n]
                       for k in (1, 2, 3) for n in (1, 2, 3)]


@pytest.mark.timeout(1200)
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FEDKAFKA_REPLICATED_FAULTS") != "1",
                    reason="heavy: runs with FEDKAFKA_REPLICATED_FAULTS=1 (make test-replicated)")
def test_site_with_three_brokers_per_cluster_replicates_and_teardown_stops_every_broker():
    state = Path(tempfile.mkdtemp(prefix="fk-brokers-", dir="/tmp"))  # short: supervisord's socket lives there
    extravars = {"fedkafka_local_brokers": 3, "fedkafka_local_port_base": free_port_base(),
                 "fedkafka_local_root": str(state), "fedkafka_local_cli_state_dir": str(state / "cli"),
                 "fedkafka_venv": sys.prefix}  # the virtualenv running the tests (a worktree may have none)
    try:
        playbook("site.yml", extravars)
        env = {**os.environ, "FEDKAFKA_STATE_DIR": str(state / "cli")}
        status = json.loads(subprocess.run([sys.executable, "-m", "fedkafka.cli", "local", "status", "--json"],
                                           env=env, capture_output=True, text=True, check=True).stdout)
        clusters = {c["id"]: c for c in status["clusters"]}
        assert set(clusters) == {"c1", "c2"}
        for cluster in clusters.values():
            assert [b["node_id"] for b in cluster["brokers"]] == [1, 2, 3], cluster
            assert all(b["running"] for b in cluster["brokers"]) and cluster["managed_by"] == "ansible"
            topics = replicas_and_min_insync(cluster["bootstrap"])
            assert topics, cluster["id"]  # the demo topic's physical topic at least; the shadow topic on c2
            assert {name: value for name, value in topics.items() if value != ({3}, "2")} == {}
    finally:
        playbook("teardown.yml", {**extravars, "purge": True})
        shutil.rmtree(state, ignore_errors=True)
    base = extravars["fedkafka_local_port_base"]
    broker_ports = [base + 10 * n + k for n in (1, 2) for k in range(1, 7)]
    assert [p for p in broker_ports if port_open("127.0.0.1", p)] == []
