"""The inventory scripts/multihost.py writes for its 8 hosts: the layout, and the playbooks' own checks accept it.
Needs neither root nor namespaces (test_multihost.py runs the hosts for real)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


@pytest.fixture
def multihost(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDKAFKA_HOSTS_ROOT", str(tmp_path))
    spec = importlib.util.spec_from_file_location("multihost", ROOT / "scripts" / "multihost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_puts_each_broker_on_its_own_host_and_each_side_on_two_hosts(multihost):
    layout = multihost.federation_layout()
    brokers = [host for name, (host, group, _) in layout.items() if group.startswith("kafka_")]
    assert sorted(brokers) == [1, 2, 3, 4, 5, 6, 9]
    assert [host for host, group, _ in layout.values() if group == "kafka_c3"] == [9]  # the spare, alone
    sides = Counter(group for _, group, _ in layout.values() if group.startswith("fedkafka_"))
    assert sides == {"fedkafka_controller": 1, "fedkafka_nameservice": 1, "fedkafka_pproxies": 2,
                     "fedkafka_cproxies": 2}
    for side in ("fedkafka_pproxies", "fedkafka_cproxies"):
        assert {host for host, group, _ in layout.values() if group == side} == {7, 8}
    assert {host for host, _, _ in layout.values()} == set(range(1, multihost.MIN_HOSTS + 1))


def test_inventory_state_dirs_are_per_service_and_addresses_in_the_benchmark_range(multihost, tmp_path):
    inv = multihost.inventory(tmp_path / "id_ed25519", Path(sys.prefix))
    hosts = {}

    def walk(group):
        hosts.update(group.get("hosts", {}))
        for child in group.get("children", {}).values():
            walk(child)

    walk(inv["all"])
    assert len(hosts) == 13
    assert len({h["fedkafka_state_dir"] for h in hosts.values()}) == 13
    assert all(h["ansible_host"].startswith("198.18.77.") for h in hosts.values())
    spare = inv["all"]["children"]["kafka_spare"]["children"]
    assert list(spare) == ["kafka_c3"] and "kafka_c3" not in inv["all"]["children"]["kafka_brokers"]["children"]
    assert inv["all"]["vars"]["fedkafka_coordination_cluster"] == "c2"  # so decommission.yml can retire c1


def test_checker_client_ids_land_in_their_sides_pool(multihost):
    """`fedkafka check` producers (fedkafka-checker-p<N>) and consumers (fedkafka-checker) each match a rule of
    their side; the name service takes the longest matching prefix."""
    rules = [(prefix, pool) for prefix, pool in multihost.CLIENT_RULES.values()]

    def pool_of(client_id):
        matches = [(len(prefix), pool) for prefix, pool in rules if client_id.startswith(prefix)]
        return max(matches)[1] if matches else "default"

    assert pool_of("fedkafka-checker-p0") == pool_of("producer-x") == "produce"
    assert pool_of("fedkafka-checker") == pool_of("consumer-x") == "consume"


def test_release_venv_runs_this_checkout(multihost, tmp_path):
    venv = multihost.make_release_venv(tmp_path / "release")
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import fedkafka, importlib.metadata as m, supervisor; print(fedkafka.__file__);"
                            "print(m.version('fedkafka'))"], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    where, version = probe.stdout.split()
    assert Path(where).is_relative_to(ROOT) and version
    assert subprocess.run([str(venv / "bin" / "fedkafka"), "--help"], capture_output=True,
                          timeout=60).returncode == 0


@pytest.mark.ansible
def test_written_inventory_passes_the_playbooks_checks(multihost, tmp_path):
    path = multihost.write_inventory(tmp_path / "id_ed25519")
    json.loads(path.read_text())
    proc = subprocess.run([PLAYBOOK, "-i", str(path), "playbooks/validate.yml"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
