"""Verify the converged local federation for real: supervisord programs, listening ports, and one record
produced and consumed through the name service (and so through the proxies) with confluent-kafka."""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
import testinfra
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from federation import CLI_STATE, NAMESERVICE, PORT_BASE, ROOT, STATE, port  # noqa: E402

INVENTORY = yaml.safe_load((ROOT / "inventory/local/hosts.yml").read_text())
VENV = ROOT / ".venv"

host = testinfra.get_host("local://")


def groups(node=None, name="all"):
    """{group: [hosts]} of the local inventory, with host vars."""
    node = node or INVENTORY["all"]
    out = {name: dict(node.get("hosts") or {})}
    for child, sub in (node.get("children") or {}).items():
        for g, hosts in groups(sub, child).items():
            out[g] = {**out.get(g, {}), **hosts}
            out[name].update(hosts)
    return out


GROUPS = groups()
SITE_HOSTS = [h for g in ("kafka_brokers", "fedkafka_controller", "fedkafka_nameservice", "fedkafka_proxies")
              for h in GROUPS[g]]


@pytest.mark.parametrize("name", SITE_HOSTS)
def test_supervisord_runs_every_program_of_the_host(name):
    conf = STATE / name / "supervisor" / "supervisord.conf"
    out = host.run(f"{VENV}/bin/supervisorctl -c {conf} status")
    assert out.rc == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines and all(" RUNNING " in line for line in lines), out.stdout


@pytest.mark.parametrize("number", [
    *(port(vars_["kafka_broker_port"]) for vars_ in GROUPS["kafka_brokers"].values()),
    PORT_BASE + 1, PORT_BASE + 2, PORT_BASE + 3,
    *(port(vars_["fedkafka_proxy_port"]) for vars_ in GROUPS["fedkafka_proxies"].values()),
])
def test_port_listens(number):
    # A real connect: the JVM listens on the IPv4-mapped IPv6 address, which `ss` shows differently.
    assert accepts(number), f"nothing accepts connections on 127.0.0.1:{number}"


def test_spare_cluster_is_not_started_by_site():
    assert not accepts(port(GROUPS["kafka_c3"]["c3-broker1"]["kafka_broker_port"]))


def test_the_cli_finds_the_federation_site_yml_described():
    """site.yml writes ansible.json for the fedkafka CLI: `local status` sees every service running and
    `local demo` produces and consumes through the name service, counting records per physical cluster."""
    env = f"FEDKAFKA_STATE_DIR={CLI_STATE}"
    out = host.run(f"{env} {VENV}/bin/fedkafka local status --json")
    assert out.rc == 0, out.stderr
    status = json.loads(out.stdout)
    assert [c["id"] for c in status["clusters"]] == ["c1", "c2"] and all(c["running"] for c in status["clusters"])
    assert status["controller"]["running"] and status["nameservice"]["running"], status
    assert len(status["proxies"]) == 2 and all(p["running"] for p in status["proxies"]), status
    demo = host.run(f"{env} {VENV}/bin/fedkafka local demo --messages 40 --topic molecule-demo")
    assert demo.rc == 0, demo.stderr
    report = json.loads(demo.stdout)
    assert report["produced"] == report["consumed"] == 40
    assert sum(report["records_per_cluster"].values()) == 40 and set(report["records_per_cluster"]) == {"c1", "c2"}


def accepts(number: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", number), timeout=2):
            return True
    except OSError:
        return False


def test_keyed_records_round_trip_through_the_name_service_and_proxies():
    sys.path.insert(0, str(Path(__file__).parent))
    from federation import round_trip

    round_trip()


def test_record_round_trips_through_the_name_service_and_proxies():
    from confluent_kafka import Consumer, Producer

    value = uuid.uuid4().hex.encode()
    delivered = []
    producer = Producer({"bootstrap.servers": NAMESERVICE, "client.id": "molecule-verify", "acks": "all"})
    producer.produce("demo", key=b"molecule", value=value, on_delivery=lambda err, msg: delivered.append((err, msg)))
    assert producer.flush(30) == 0
    assert delivered and delivered[0][0] is None, delivered
    partition, offset = delivered[0][1].partition(), delivered[0][1].offset()

    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": NAMESERVICE, "client.id": "molecule-verify",
                         "group.id": f"molecule-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    consumer.assign([TopicPartition("demo", partition, offset)])
    try:
        deadline = time.monotonic() + 30
        got = None
        while time.monotonic() < deadline and got is None:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error() and msg.value() == value:
                got = msg
        assert got is not None, f"record at demo/{partition}@{offset} not consumed through the proxies"
        assert got.key() == b"molecule" and got.offset() == offset
    finally:
        consumer.close()
