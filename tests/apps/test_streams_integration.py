"""Kafka Streams word count (at_least_once) through a federation: the application creates its repartition and
changelog topics through the admin API (CreateTopics with configs), purges the repartition topic (DeleteRecords)
and produces the exact expected counts, through the name service of a local federation and (heavier, with
FEDKAFKA_APPS=1: `make test-apps`) while a scale-up moves the active segments of every topic, its own included.
kafka-streams is resolved from Maven Central once (`fedkafka.kafka.apps`)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from fedkafka.kafka.apps import ensure_apps

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HEAVY = pytest.mark.skipif(os.environ.get("FEDKAFKA_APPS") != "1",
                           reason="heavy: runs with FEDKAFKA_APPS=1 (make test-apps)")

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]


def _lines(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(1 + i % 4)) for i in range(n)]


def _latest_counts(bootstrap: str, topic: str, want: dict[str, int], timeout: float) -> dict[str, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    latest: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and latest != want:
            msg = c.poll(1.0)
            if msg is None or msg.error():
                continue
            latest[msg.key().decode()] = int.from_bytes(msg.value(), "big", signed=True)
    finally:
        c.close()
    return latest


class StreamsApp:
    """The word count as a subprocess; stopped with SIGTERM (its shutdown hook closes it cleanly)."""

    def __init__(self, bootstrap: str, app_id: str, source: str, sink: str, tmp):
        self.log_path = tmp / "streams.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(ensure_apps().command("WordCount", bootstrap, app_id, source, sink,
                                                           str(tmp / "state")),
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _produce_lines(bootstrap: str, topic: str, lines: list[str], first: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i, line in enumerate(lines, start=first):
        producer.produce(topic, key=str(i).encode(), value=line.encode())
    assert producer.flush(120) == 0


@HEAVY
@pytest.mark.timeout(1800)
def test_streams_word_count_keeps_counting_through_a_scale_up(kafka_clusters, tmp_path):
    from workflows.support import Federation

    c1, c2, c3 = kafka_clusters
    fed = Federation(tmp_path)
    try:
        fed.start_controller()
        app_id = f"wcs-{uuid.uuid4().hex[:6]}"
        source, sink = f"{app_id}-lines", f"{app_id}-counts"
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, source, 4, coordination="c1")
        fed.start_proxies(2)
        admin = AdminClient({"bootstrap.servers": fed.bootstrap})
        admin.create_topics([NewTopic(sink, 4)])[sink].result(120)
        lines = _lines(400)
        want = collections.Counter(w for line in lines for w in line.split())
        _produce_lines(fed.bootstrap, source, lines[:200], 0)
        app = StreamsApp(fed.bootstrap, app_id, source, sink, tmp_path)
        try:
            half = collections.Counter(w for line in lines[:200] for w in line.split())
            assert _latest_counts(fed.bootstrap, sink, dict(half), timeout=600) == dict(half), app.output()
            run = fed.workflow({"kind": "scale_up", "cluster": "c3", "bootstrap": c3.bootstrap}, timeout=600)
            assert run["state"] == "done", run
            moved = [c for c in fed.chains(source) if c["segments"][-1]["cluster"] == "c3"]
            assert moved, fed.chains(source)
            _produce_lines(fed.bootstrap, source, lines[200:], 200)
            got = _latest_counts(fed.bootstrap, sink, dict(want), timeout=600)
            assert app.proc.poll() is None, app.output()
            assert got == dict(want), app.output()
        finally:
            app.stop()
    finally:
        fed.stop()


@pytest.mark.timeout(1500)
def test_streams_word_count_exact_through_the_federation(local_federation, tmp_path):
    _state_dir, status = local_federation
    ns = status["nameservice"]["bootstrap"]
    apps = ensure_apps()
    app_id = f"wc-{uuid.uuid4().hex[:6]}"
    source, sink = f"{app_id}-lines", f"{app_id}-counts"
    admin = AdminClient({"bootstrap.servers": ns})
    for fut in admin.create_topics([NewTopic(source, 4), NewTopic(sink, 4)]).values():
        fut.result(120)
    lines = _lines(300)
    want = collections.Counter(w for line in lines for w in line.split())
    producer = Producer({"bootstrap.servers": ns, "acks": "all"})
    for i, line in enumerate(lines[:150]):
        producer.produce(source, key=str(i).encode(), value=line.encode())
    assert producer.flush(60) == 0

    log = open(tmp_path / "streams.log", "wb")  # noqa: SIM115
    app = subprocess.Popen(apps.command("WordCount", ns, app_id, source, sink, str(tmp_path / "state")),
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        for i, line in enumerate(lines[150:], start=150):  # while it runs
            producer.produce(source, key=str(i).encode(), value=line.encode())
        assert producer.flush(60) == 0
        got = _latest_counts(ns, sink, dict(want), timeout=600)
        assert app.poll() is None, (tmp_path / "streams.log").read_text()[-5000:]
        assert got == dict(want), (tmp_path / "streams.log").read_text()[-5000:]
        topics = admin.list_topics(timeout=30).topics
        internal = sorted(t for t in topics if t.startswith(app_id + "-") and t not in (source, sink))
        assert any(t.endswith("-repartition") for t in internal), internal
        assert any(t.endswith("-changelog") for t in internal), internal
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(60)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        log.close()
