"""A KIP-848 group (group.protocol=consumer) through a scale-up and a decommission (docs/DESIGN.md §6, §5.8): a
Java console consumer in a consumer-protocol group reads a logical topic through two proxies while a producer
writes and a scale-up moves active segments to a third cluster (or a decommission moves them off one). Every
record produced is consumed, and the group's committed offsets keep advancing past the seals, to the logical end
of every partition (kafka-consumer-groups --describe)."""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from fedkafka.kafka.tools import popen_tool, run_tool

from .support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARTITIONS = 6


def _values(path) -> set[str]:
    return set(re.findall(r"\bn(\d+)\b", path.read_text(errors="replace")))


def _lags(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (committed offset, log end) as kafka-consumer-groups --describe prints them."""
    out = run_tool("kafka-consumer-groups", "--bootstrap-server", bootstrap, "--describe", "--group", group,
                   timeout=180, check=False)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = {}
    for line in out.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[0] == group and cols[1] == topic and cols[3].isdigit():
            rows[int(cols[2])] = (int(cols[3]), int(cols[4]))
    return rows


class _Writer(threading.Thread):
    """Writes n0, n1, ... (idempotent, acks=all) until stopped; `acked` counts the delivered ones."""

    def __init__(self, bootstrap: str, topic: str, first: int, rate: float):
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
        self.topic, self.next, self.pause = topic, first, 1.0 / rate
        self.stopped = threading.Event()
        self.failed: list[str] = []

    def run(self) -> None:
        while not self.stopped.is_set():
            self.producer.produce(self.topic, key=str(self.next).encode(), value=f"n{self.next}".encode(),
                                  on_delivery=self._delivered)
            self.next += 1
            self.producer.poll(self.pause)

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.failed.append(str(err))

    def stop(self) -> int:
        self.stopped.set()
        self.join(30)
        assert self.producer.flush(120) == 0
        return self.next


@pytest.mark.timeout(900)
@pytest.mark.parametrize("workflow", ["scale_up", "decommission"])
def test_consumer_protocol_group_consumes_everything_and_commits_through_a_move(kafka_clusters, federation,
                                                                                tmp_path, workflow):
    """scale_up: c1, c2 -> c3 joins. decommission: c1 leaves c1, c2, c3 (coordination on c2), its segments read
    to the end by the group before it is removed (drain: groups)."""
    c1, c2, c3 = kafka_clusters
    fed = federation
    topic, group = f"kip848-{workflow[:5]}-{uuid.uuid4().hex[:6]}", f"g848-{uuid.uuid4().hex[:6]}"
    fed.start_controller()
    if workflow == "scale_up":
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, topic, PARTITIONS, coordination="c1")
        body = {"kind": "scale_up", "cluster": "c3", "bootstrap": c3.bootstrap}
    else:
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap, "c3": c3.bootstrap}, topic, PARTITIONS,
                  coordination="c2")
        body = {"kind": "decommission", "cluster": "c1", "drain": "groups"}
    fed.start_proxies(2)
    writer = _Writer(fed.bootstrap, topic, 0, rate=50)
    writer.start()
    out = tmp_path / "consumer.out"
    with open(out, "w") as sink, open(tmp_path / "consumer.err", "w") as err:
        consumer = popen_tool("kafka-console-consumer", "--bootstrap-server", fed.bootstrap, "--topic", topic,
                              "--group", group, "--from-beginning", "--command-property", "group.protocol=consumer",
                              "--command-property", "auto.commit.interval.ms=1000", stdout=sink, stderr=err)
    try:
        wait_for(lambda: len(_values(out)) >= 200, 240, what="the consumer reading before the move")
        run = fed.workflow(body, timeout=600)
        assert run["state"] == "done", run
        # a moved partition's active segment starts at its seal (a decommission then drops the sealed ones)
        seals = {c["partition"]: c["segments"][-1]["logical_base"] for c in fed.chains(topic)}
        moved = {p for p, seal in seals.items() if seal > 0}
        assert moved, fed.chains(topic)
        time.sleep(3)  # writes to the new segments
        produced = writer.stop()
        assert writer.failed == [], writer.failed[:5]
        want = {str(i) for i in range(produced)}
        wait_for(lambda: want <= _values(out), 240, what="every produced record consumed")
        assert consumer.poll() is None, (tmp_path / "consumer.err").read_text()[-3000:]

        def committed_to_the_end():
            lags = _lags(fed.bootstrap, group, topic)
            return lags if len(lags) == PARTITIONS and all(c == end for c, end in lags.values()) else None
        lags = wait_for(committed_to_the_end, 120, what="offsets committed to the end", interval=2)
        for p in moved:  # committed in logical offsets past the seal, on the moved partitions too
            assert lags[p][0] > seals[p], (p, lags, seals)
        assert sum(end for _c, end in lags.values()) == produced
    finally:
        writer.stopped.set()
        consumer.terminate()
        try:
            consumer.wait(60)
        except Exception:
            consumer.kill()
            consumer.wait()


def _read(bootstrap: str, topic: str, group: str, count: int) -> None:
    """A consumer-protocol console consumer reads `count` records and leaves, committing where it stopped."""
    out = run_tool("kafka-console-consumer", "--bootstrap-server", bootstrap, "--topic", topic, "--group", group,
                   "--from-beginning", "--max-messages", str(count), "--timeout-ms", "90000",
                   "--command-property", "group.protocol=consumer", "--command-property", "max.poll.records=1",
                   check=False, timeout=240)
    assert len(out.stdout.split()) == count, out.stdout + out.stderr[-3000:]


@pytest.mark.timeout(400)
def test_group_drain_waits_for_a_consumer_protocol_group(kafka_clusters, federation, unique_name):
    """`decommission --drain groups` counts a KIP-848 group's commits as it does a classic group's: the run waits,
    naming the group, while it lags behind c1's seal, and finishes once the group has read c1's data."""
    c1, c2, _ = kafka_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 2, coordination="c2")
    fed.start_proxies(1)
    producer = Producer({"bootstrap.servers": fed.bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce(unique_name, value=b"%d" % i, partition=0)  # p0 lives on c1
    assert producer.flush(30) == 0
    group = f"g848-{unique_name}"
    _read(fed.bootstrap, unique_name, group, 4)

    resp = fed.api.post("/v1/workflows", json={"kind": "decommission", "cluster": "c1", "drain": "groups"})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["id"]
    run = wait_for(lambda: (r := fed.api.get(f"/v1/workflows/{run_id}").json()).get("waiting_for") and r, 60,
                   what="the drain names what it waits for")
    assert run["state"] == "running" and run["step"] == "drain", run
    assert run["waiting_for"] == [f"{unique_name}/0: group {group!r} committed 4, c1's data ends at 10"], run

    _read(fed.bootstrap, unique_name, group, 6)
    run = wait_for(lambda: fed._finished(run_id), 60, what="decommission finished")
    assert run["state"] == "done" and run["waiting_for"] == [], run
