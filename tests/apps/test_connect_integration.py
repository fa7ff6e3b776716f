"""Kafka Connect (distributed mode) through a federation: real workers (`ConnectDistributed` from connect-runtime)
bootstrapped at the name service create their config, offset and status topics themselves (CreateTopics with
cleanup.policy=compact, then DescribeConfigs to check it), run their worker group through the proxies, and copy N
numbered keyed records from a source connector of our own (`apps/src/NumberedSource.java`, its topic created by the
worker) through a logical topic into a file sink (`apps/src/FileSink.java`), both deployed through Connect's REST
API. Every number must arrive at exactly one offset, none lost, in per-key order. Then Connect's offsets API
(read, alter, reset) through the proxies, and a worker asking for exactly-once source support is told why not.
With FEDKAFKA_APPS=1 (`make test-apps`) the copy runs through the proxies while a scale-up moves the active
segments of the source's topic and of the worker's offsets topic. A standalone worker (`ConnectStandalone`) copies
a file through a logical topic with Kafka's own FileStream connectors (connect-file), and resumes after a restart."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from workflows.support import Federation, wait_for

from fedkafka.kafka.apps import CONNECT_DISTRIBUTED, CONNECT_STANDALONE, ensure_apps
from fedkafka.kafka.cluster import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HEAVY = pytest.mark.skipif(os.environ.get("FEDKAFKA_APPS") != "1",
                           reason="heavy: runs with FEDKAFKA_APPS=1 (make test-apps)")

KEYS = 8
LINES = 1000
_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c{1})%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
"""


def _properties(props: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _distributed_props(name: str) -> dict[str, str]:
    return {
        "group.id": name, "config.storage.topic": f"{name}-configs", "offset.storage.topic": f"{name}-offsets",
        "status.storage.topic": f"{name}-status",
        # -1: each physical cluster's default (the proxy applies no requested replication factor anyway)
        "config.storage.replication.factor": "-1", "offset.storage.replication.factor": "-1",
        "status.storage.replication.factor": "-1",
        "offset.storage.partitions": "4", "status.storage.partitions": "2",
    }


def _standalone_props(tmp: Path, name: str) -> dict[str, str]:
    return {"offset.storage.file.filename": str(tmp / f"{name}.offsets")}


class ConnectWorker:
    """One Connect worker as a subprocess, its REST API on a free loopback port: distributed mode, or standalone
    (`standalone`: the connectors' properties files it runs, its source offsets in a local file)."""

    def __init__(self, bootstrap: str, tmp: Path, name: str, member: int = 0, extra: dict[str, str] | None = None,
                 standalone: tuple[Path, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.worker_id = f"127.0.0.1:{self.port}"  # as Connect's status names it
        self.name = name
        props = {
            "bootstrap.servers": bootstrap, "client.id": name,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "offset.flush.interval.ms": "1000",
            # a sink deployed before its topic exists sees it at the next metadata refresh (default 5 minutes)
            "consumer.metadata.max.age.ms": "2000",
            "listeners": self.url, "rest.advertised.host.name": "127.0.0.1", "rest.advertised.port": str(self.port),
            # the connectors carry META-INF/services manifests (apps/src, connect-file): no reflective scan of 60 jars
            "plugin.discovery": "service_load",
            **(_standalone_props(tmp, name) if standalone else _distributed_props(name)),
            **(extra or {}),
        }
        config = tmp / f"{name}-{member}.properties"
        config.write_text(_properties(props))
        (tmp / "connect-log4j2.properties").write_text(_LOG4J2)
        self.log_path = tmp / f"{name}-{member}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        main = CONNECT_STANDALONE if standalone else CONNECT_DISTRIBUTED
        command = ensure_apps().command(main, str(config), *map(str, standalone), heap="384m", jvm_opts=(
            f"-Dlog4j2.configurationFile={tmp / 'connect-log4j2.properties'}",))
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_ready(self, timeout: float) -> None:
        """The REST API answers /connectors only once the worker joined its group and read its config topic."""
        def ready():
            assert self.proc.poll() is None, self.output()
            return self.http.get("/connectors").status_code == 200
        wait_for(ready, timeout, what=f"Connect worker {self.name} ready\n{self.output()}", interval=1)

    def deploy(self, connector: str, config: dict[str, str]) -> None:
        resp = self.http.put(f"/connectors/{connector}/config", json=config)
        assert resp.status_code in (200, 201), resp.text

    def running(self, connector: str) -> bool:
        resp = self.http.get(f"/connectors/{connector}/status")
        if resp.status_code != 200:
            return False
        status = resp.json()
        failed = [t for t in status["tasks"] if t["state"] == "FAILED"]
        assert not failed and status["connector"]["state"] != "FAILED", status
        return status["connector"]["state"] == "RUNNING" and status["tasks"] and all(
            t["state"] == "RUNNING" for t in status["tasks"])

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _sink_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.count("\t") == 4]


def _numbers(path: Path) -> set[int]:
    return {int(value) for _topic, _p, _o, _key, value in _sink_lines(path)}


def check_sink(lines: list[list[str]], topic: str, count: int) -> None:
    """Every number at exactly one (partition, offset), none lost, each key on one partition in increasing order.
    A sink may receive an offset again after a rebalance (Connect's sinks are at least once): that is the same
    record at the same offset, not a duplicate."""
    at: dict[tuple[int, int], tuple[str, int]] = {}
    for line_topic, partition, offset, key, value in lines:
        assert line_topic == topic
        record = (key, int(value))
        assert at.setdefault((int(partition), int(offset)), record) == record, f"two records at {partition}@{offset}"
    where: dict[int, tuple[int, int]] = {}
    for place, (key, seq) in at.items():
        assert key == f"k{seq % KEYS}", (place, key, seq)
        assert seq not in where, f"{seq} written twice: at {where[seq]} and {place}"
        where[seq] = place
    lost = sorted(set(range(count)) - set(where))
    assert not lost, f"{len(lost)} lost, first {lost[:10]}"
    assert len(where) == count, sorted(set(where) - set(range(count)))[:10]
    by_key: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for seq in range(count):
        by_key[f"k{seq % KEYS}"].append(where[seq])
    for key, places in by_key.items():
        assert len({p for p, _o in places}) == 1, f"{key} on several partitions"
        offsets = [o for _p, o in places]
        assert offsets == sorted(offsets), f"{key} out of order"


@contextlib.contextmanager
def connect_workers(bootstrap: str, tmp: Path, count: int = 1):
    """`count` workers of one Connect cluster (one group, one set of topics), each ready."""
    name = f"connect-{uuid.uuid4().hex[:6]}"
    workers: list[ConnectWorker] = []
    try:
        for member in range(count):
            workers.append(ConnectWorker(bootstrap, tmp, name, member))
            workers[-1].wait_ready(300)
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def placements(worker: ConnectWorker, *connectors: str) -> set[str]:
    """The workers running the connectors and their tasks."""
    found = set()
    for connector in connectors:
        status = worker.http.get(f"/connectors/{connector}/status").json()
        found |= {status["connector"]["worker_id"]} | {t["worker_id"] for t in status["tasks"]}
    return found


def copy_numbers(worker: ConnectWorker, topic: str, sink_file: Path, source: dict[str, str], during=None) -> None:
    """Deploys the file sink, then the numbered source, and waits until the sink holds every number."""
    count = int(source["count"])
    # sink first: the source then runs undisturbed (a rebalance restarting a source task may emit again)
    worker.deploy("sink", {"connector.class": "FileSink", "tasks.max": "2", "topics": topic, "file": str(sink_file)})
    wait_for(lambda: worker.running("sink"), 180, what=f"sink running\n{worker.output()}", interval=1)
    worker.deploy("source", {"connector.class": "NumberedSource", "tasks.max": "1", "topic": topic,
                             "keys": str(KEYS), **source})
    wait_for(lambda: worker.running("source"), 180, what=f"source running\n{worker.output()}", interval=1)
    if during is not None:
        during()
    wait_for(lambda: len(_numbers(sink_file)) >= count, 600, what=f"{count} records in the sink "
             f"({len(_numbers(sink_file))} so far)\n{worker.output()}", interval=1)
    assert worker.proc.poll() is None, worker.output()
    check_sink(_sink_lines(sink_file), topic, count)


def check_topics(bootstrap: str, partitions: dict[str, int], config: dict[str, str]) -> None:
    """Topics Connect created through the proxy are as it asked: partitions, and configs as the proxy's
    DescribeConfigs reads them from the physical topic."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = admin.list_topics(timeout=30).topics
    assert {t: len(topics[t].partitions) for t in partitions if t in topics} == partitions
    for resource, future in admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t)
                                                    for t in partitions]).items():
        described = future.result(30)
        assert {k: described[k].value for k in config} == config, resource


def _offsets(worker: ConnectWorker, connector: str) -> list[dict]:
    resp = worker.http.get(f"/connectors/{connector}/offsets")
    assert resp.status_code == 200, resp.text
    return resp.json()["offsets"]


def _sink_offsets(worker: ConnectWorker, topic: str, connector: str = "sink") -> dict[int, int]:
    return {o["partition"]["kafka_partition"]: o["offset"]["kafka_offset"] for o in _offsets(worker, connector)
            if o["partition"]["kafka_topic"] == topic}


def _stop(worker: ConnectWorker, connector: str) -> None:
    assert worker.http.put(f"/connectors/{connector}/stop").status_code in (200, 202, 204)
    wait_for(lambda: worker.http.get(f"/connectors/{connector}/status").json()["connector"]["state"] == "STOPPED",
             120, what=f"{connector} stopped\n{worker.output()}", interval=1)


def check_offsets_api(worker: ConnectWorker, topic: str, sink_file: Path, count: int) -> None:
    """Connect's offsets API (KIP-875) through the proxies: the sink's committed offsets (its consumer group's,
    read with OffsetFetch) are where the sink stopped and the source's (its offsets topic) say `count`; altering
    them (OffsetCommit from an AdminClient, OffsetDelete for a null offset) changes just those partitions; deleting
    them (DeleteGroups) and resuming the sink copies every record once more, at the same offsets."""
    _stop(worker, "sink")
    ends: dict[int, int] = collections.Counter()
    for _t, partition, offset, _k, _v in _sink_lines(sink_file):
        ends[int(partition)] = max(ends[int(partition)], int(offset) + 1)
    assert _sink_offsets(worker, topic) == ends
    resp = worker.http.patch("/connectors/sink/offsets", json={"offsets": [
        {"partition": {"kafka_topic": topic, "kafka_partition": 0}, "offset": {"kafka_offset": 1}},
        {"partition": {"kafka_topic": topic, "kafka_partition": 1}, "offset": None}]})
    assert resp.status_code == 200, resp.text
    assert _sink_offsets(worker, topic) == {**{p: o for p, o in ends.items() if p != 1}, 0: 1}
    assert _offsets(worker, "source") == [{"partition": {"numbers": topic}, "offset": {"next": count}}]
    resp = worker.http.delete("/connectors/sink/offsets")
    assert resp.status_code == 200, resp.text
    assert _offsets(worker, "sink") == []
    assert worker.http.put("/connectors/sink/resume").status_code in (200, 202)
    wait_for(lambda: len(_sink_lines(sink_file)) >= 2 * count, 300, what=f"the sink read again\n{worker.output()}",
             interval=1)
    lines = _sink_lines(sink_file)
    assert collections.Counter(collections.Counter((p, o) for _t, p, o, _k, _v in lines).values()) == {2: count}
    check_sink(lines, topic, count)


@pytest.mark.timeout(900)
def test_connect_copies_numbered_records_through_the_federation(local_federation, tmp_path):
    """Two workers of one Connect cluster, through the name service of `fedkafka local up` as a user would
    bootstrap."""
    _state_dir, status = local_federation
    ns = status["nameservice"]["bootstrap"]
    topic = f"numbers-{uuid.uuid4().hex[:6]}"
    # the source's topic is created by the worker (KIP-158 topic creation: CreateTopics with configs)
    creation = {"topic.creation.default.partitions": "4", "topic.creation.default.replication.factor": "-1",
                "topic.creation.default.retention.ms": "86400000"}
    started = time.monotonic()
    with connect_workers(ns, tmp_path, 2) as (first, second):
        # through the second worker: a request the group's leader must serve is forwarded over REST
        copy_numbers(second, topic, tmp_path / "sink.tsv", {"count": "2000", "batch": "100", **creation})
        print(f"connect: 2 workers up, 2 connectors, 2000 records copied in {time.monotonic() - started:.0f} s")
        assert placements(first, "sink", "source") == {first.worker_id, second.worker_id}  # one group, work shared
        check_topics(ns, {f"{first.name}-configs": 1, f"{first.name}-offsets": 4, f"{first.name}-status": 2},
                     {"cleanup.policy": "compact"})
        check_topics(ns, {topic: 4}, {"retention.ms": "86400000"})
        check_offsets_api(second, topic, tmp_path / "sink.tsv", 2000)


@HEAVY
@pytest.mark.timeout(1800)
def test_connect_copies_through_a_scale_up(kafka_clusters, tmp_path):
    c1, c2, c3 = kafka_clusters
    fed = Federation(tmp_path)
    try:
        fed.start_controller()
        topic = f"numbers-{uuid.uuid4().hex[:6]}"
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, topic, 4, coordination="c1")
        fed.start_proxies(2)
        with connect_workers(fed.bootstrap, tmp_path) as (worker,):
            def scale_up():
                run = fed.workflow({"kind": "scale_up", "cluster": "c3", "bootstrap": c3.bootstrap}, timeout=600)
                assert run["state"] == "done", run
                for moving in (topic, f"{worker.name}-offsets"):  # the worker's offsets topic too (4 partitions)
                    assert [c for c in fed.chains(moving) if c["segments"][-1]["cluster"] == "c3"], fed.chains(moving)

            # about 100 s of records (20 every 0.1 s), so the scale-up moves segments while the source writes
            copy_numbers(worker, topic, tmp_path / "sink.tsv", {"count": "20000", "batch": "20", "interval.ms": "100"},
                         scale_up)
            assert worker.running("sink") and worker.running("source")
    finally:
        fed.stop()



@pytest.mark.timeout(600)
def test_connect_exactly_once_source_support_says_transactions_are_not_available(local_federation, tmp_path):
    """exactly.once.source.support=enabled needs transactions (the leader writes the config topic with a
    transactional producer), which a federation refuses: the worker must say why (it logs it and keeps retrying
    with backoff; its REST API answers, but it cannot write a connector's config)."""
    _state_dir, status = local_federation
    ns = status["nameservice"]["bootstrap"]
    worker = ConnectWorker(ns, tmp_path, f"eos-{uuid.uuid4().hex[:6]}",
                          extra={"exactly.once.source.support": "enabled"})
    try:
        wait_for(lambda: "transactions are not available in this fedkafka federation" in worker.log_path.read_text(
                 errors="replace"), 300,
                 what=f"the worker names the refusal\n{worker.output()}", interval=1)
        # the herder (which meets the refusal) and the REST resources start in threads of their own: the line may
        # come before the REST API answers (seen 1.1 s after it under load, the two having run side by side for 20 s)
        worker.wait_ready(120)
        assert worker.proc.poll() is None and worker.http.get("/connectors").json() == []
    finally:
        worker.stop()


def _connector_file(tmp: Path, name: str, config: dict[str, str]) -> Path:
    """A connector's properties file, as ConnectStandalone takes them on its command line."""
    path = tmp / f"{name}.properties"
    path.write_text(_properties({"name": name, "tasks.max": "1", **config}))
    return path


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _consume_values(bootstrap: str, topic: str, count: int) -> list[str | None]:
    """The values of the topic's one partition from its start, read with confluent-kafka; asserts no record has a
    key (FileStreamSource writes none) and the partition holds exactly `count` records."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values: list[str | None] = []
        deadline = time.monotonic() + 120
        while len(values) < count and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1):
                assert msg.error() is None, msg.error()
                assert msg.key() is None, msg.key()
                values.append(msg.value().decode() if msg.value() is not None else None)
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        assert high - low == count, (low, high)
        return values
    finally:
        consumer.close()


def _standalone_copy(ns: str, tmp: Path, name: str, member: int, connectors: tuple[Path, Path], topic: str,
                     source_file: Path, sink_file: Path, lines: list[str]) -> None:
    """One ConnectStandalone run until the output holds `lines` and both offsets are stored, then stopped."""
    started = time.monotonic()
    worker = ConnectWorker(ns, tmp, name, member, standalone=connectors)
    try:
        def copied() -> bool:
            assert worker.proc.poll() is None, worker.output()
            return _complete_lines(sink_file) >= len(lines)
        wait_for(copied, 300, interval=1, what=f"{len(lines)} lines in the output")
        print(f"connect standalone: {len(lines)} lines in the output through {topic} "
              f"in {time.monotonic() - started:.0f} s")
        assert worker.running("file-source") and worker.running("file-sink")
        assert sink_file.read_text().splitlines() == lines
        # FileStreamSourceTask counts its position in characters read; it skips that many bytes at a restart, so
        # the input is ASCII here
        source_end = {"partition": {"filename": str(source_file)}, "offset": {"position": len(source_file.read_text())}}
        wait_for(lambda: _offsets(worker, "file-source") == [source_end], 60, interval=1,
                 what=f"the source's position stored\n{worker.output()}")
        wait_for(lambda: _sink_offsets(worker, topic, "file-sink") == {0: len(lines)}, 60, interval=1,
                 what=f"the sink's offset committed\n{worker.output()}")
    finally:
        worker.stop()


@pytest.mark.timeout(600)
def test_connect_standalone_copies_a_file_through_a_logical_topic(local_federation, tmp_path):
    """Kafka's own FileStreamSourceConnector and FileStreamSinkConnector (connect-file) in one ConnectStandalone
    worker bootstrapped at the name service: the source reads an input file's lines into a one-partition logical
    topic, the sink writes that topic to an output file. The output is the input, line for line and in order; the
    source's position is the input's length (the worker's local offsets file) and the sink's committed offset (its
    consumer group's, through the proxies) the line count. Lines appended while the worker is down are all that a
    restarted worker copies (it resumes from both offsets); the topic holds exactly the lines, in order."""
    _state_dir, status = local_federation
    ns = status["nameservice"]["bootstrap"]
    topic = f"lines-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": ns})  # kept: a client collected at once fails its futures
    admin.create_topics([NewTopic(topic, 1)])[topic].result(30)
    lines = [f"{n:05d} line {'x' * (n % 37)} end" for n in range(LINES + LINES // 5)]
    first, later = lines[:LINES], lines[LINES:]
    source_file, sink_file = tmp_path / "input.txt", tmp_path / "output.txt"
    source_file.write_text("".join(f"{line}\n" for line in first))
    connectors = (
        _connector_file(tmp_path, "file-source", {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "file": str(source_file), "topic": topic}),
        _connector_file(tmp_path, "file-sink", {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "file": str(sink_file), "topics": topic}))
    name = f"standalone-{uuid.uuid4().hex[:6]}"
    _standalone_copy(ns, tmp_path, name, 0, connectors, topic, source_file, sink_file, first)
    assert (tmp_path / f"{name}.offsets").stat().st_size > 0
    with source_file.open("a") as appending:
        appending.write("".join(f"{line}\n" for line in later))
    _standalone_copy(ns, tmp_path, name, 1, connectors, topic, source_file, sink_file, lines)
    assert _consume_values(ns, topic, len(lines)) == lines
