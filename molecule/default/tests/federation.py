"""Helpers shared by the molecule scenarios' testinfra tests: the controller's API and a record round trip."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
# The scenarios run inventory/local with these extra vars (molecule.yml): ports and state dirs of their own.
OVERRIDES = yaml.safe_load((ROOT / "molecule/local-overrides.yml").read_text())
PORT_BASE = int(OVERRIDES["fedkafka_local_port_base"])
STATE = Path(OVERRIDES["fedkafka_local_root"])
CLI_STATE = Path(OVERRIDES["fedkafka_local_cli_state_dir"])
CONTROLLER = f"http://127.0.0.1:{PORT_BASE + 1}"
NAMESERVICE = f"127.0.0.1:{PORT_BASE + 2}"


def port(value) -> int:
    """A port of inventory/local/hosts.yml ("{{ fedkafka_local_port_base | int + N }}") under the overrides."""
    import jinja2

    return int(jinja2.Environment().from_string(str(value)).render(fedkafka_local_port_base=PORT_BASE))


def api(path: str):
    token = (STATE / "api-token").read_text().strip()
    req = urllib.request.Request(CONTROLLER + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def active_clusters_of(topic: str) -> list[str]:
    """Cluster of each partition's active (last) segment."""
    chains = api(f"/v1/topics/{topic}")["chains"]
    return [chain["segments"][-1]["cluster"] for chain in chains]


def round_trip(topic: str = "demo", records: int = 20) -> None:
    """Produce `records` keyed records through the name service and read each back at its offset."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    run = uuid.uuid4().hex[:8]
    acked = []
    producer = Producer({"bootstrap.servers": NAMESERVICE, "client.id": "molecule-verify", "acks": "all"})
    for i in range(records):
        producer.produce(topic, key=f"{run}-{i}".encode(), value=f"{run}-{i}".encode(),
                         on_delivery=lambda err, msg: acked.append((err, msg)))
    assert producer.flush(30) == 0
    assert len(acked) == records and all(err is None for err, _ in acked), acked
    consumer = Consumer({"bootstrap.servers": NAMESERVICE, "client.id": "molecule-verify",
                         "group.id": f"molecule-{run}", "enable.auto.commit": False})
    first = {}
    for _, m in acked:
        first[m.partition()] = min(m.offset(), first.get(m.partition(), m.offset()))
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in sorted(first.items())])
    wanted = {m.value() for _, m in acked}
    deadline = time.monotonic() + 30
    try:
        while wanted and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                wanted.discard(msg.value())
    finally:
        consumer.close()
    assert not wanted, f"{len(wanted)} acked records not consumed through the proxies"
