"""The bundle on real hosts: 8 network namespaces with their own sshd (scripts/multihost.py), site.yml over SSH,
a client in the root namespace producing and consuming through the name service, then nothing left behind.

Heavy (6 Kafka JVMs, ~8 minutes on 2 cores) and needs root: runs only with FEDKAFKA_MULTIHOST=1
(`make test-multihost`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HARNESS = [sys.executable, str(ROOT / "scripts" / "multihost.py")]
STATE = ROOT / ".fedkafka" / "multihost.json"
RECORDS = 300

pytestmark = [
    pytest.mark.integration, pytest.mark.slow, pytest.mark.ansible, pytest.mark.multihost,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("FEDKAFKA_MULTIHOST") != "1" or os.geteuid() != 0,
                       reason="needs root and FEDKAFKA_MULTIHOST=1 (make test-multihost)"),
]


def run(argv: list[str]) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout


def site(inventory: str) -> dict[str, int]:
    """Runs site.yml; returns changed= of each host of the recap."""
    out = run([str(BIN / "ansible-playbook"), "-i", inventory, "playbooks/site.yml"])
    return {host: int(changed) for host, changed in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", out, re.M)}


def leftovers() -> dict[str, str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return {
        "namespaces": " ".join(n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                         text=True).stdout.split() if n.startswith("fkmh-")),
        "sshd": " ".join(line for line in ps.splitlines() if "fedkafka-hosts" in line and "sshd" in line),
        "kafka": " ".join(line for line in ps.splitlines() if "kafka.Kafka" in line and "fedkafka-hosts" in line),
        "bridge": subprocess.run(["ip", "-br", "link", "show", "fkmh0"], capture_output=True, text=True).stdout,
    }


def round_trip(bootstrap: str) -> set[str]:
    """Produces RECORDS keyed records and consumes them back, both through the name service."""
    keys = {f"k{i}" for i in range(RECORDS)}
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": "producer-multihost", "acks": "all"})
    for key in sorted(keys):
        producer.produce("demo", key=key, value=key.encode())
    assert producer.flush(60) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "client.id": "consumer-multihost",
                         "group.id": f"multihost-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe(["demo"])
    seen: set[str] = set()
    deadline = time.monotonic() + 90
    while not keys <= seen and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            seen.add(msg.key().decode())
    consumer.close()
    return seen & keys


def test_site_on_eight_hosts_over_ssh():
    run([*HARNESS, "down"])
    try:
        run([*HARNESS, "up", "--hosts", "8"])
        run([sys.executable, "-c", "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"])
        inventory = str(Path(os.environ.get("FEDKAFKA_HOSTS_ROOT", "/tmp/fedkafka-hosts")) / "inventory.yml")
        first = site(inventory)
        assert len(first) == 13, first  # localhost + 6 brokers + controller + name service + 4 proxies
        second = site(inventory)
        assert {h: c for h, c in second.items() if c} == {}, second
        run([*HARNESS, "describe"])
        state = json.loads(STATE.read_text())
        assert state["inventory"] == inventory
        assert len(round_trip(state["bootstrap"])) == RECORDS
    finally:
        run([*HARNESS, "down"])
    assert leftovers() == {"namespaces": "", "sshd": "", "kafka": "", "bridge": ""}
    assert not STATE.exists()
