"""The Kafka admin API through a real federation: the Java tools and confluent-kafka's AdminClient, through the
name service of `fedkafka local up` (controller, two clusters, two proxies), and DeleteRecords over a moved
segment chain on real brokers. Every API also gets its bad input: an existing or unknown topic, a bad config
name, partitions decreasing, DeleteRecords past the high watermark."""

from __future__ import annotations

import datetime
import json
import re
import socket
import struct
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)
from kio.schema.errors import ErrorCode

from fedkafka.kafka.tools import run_tool
from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View
from proxy.support import ProxyProcess, create_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _tool(*args: str):
    return run_tool(*args, check=False, timeout=240)


def _physical_config(bootstrap: str, topic: str, name: str) -> str | None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entry = admin.describe_configs([res])[res].result(60).get(name)
    return None if entry is None or entry.is_default else entry.value


def _watermarks(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex[:6]}"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in range(partitions)]
    finally:
        c.close()


def _produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(count):
        p.produce(topic, value=b"v%d" % i, partition=i % partitions)
    assert p.flush(60) == 0


@pytest.mark.timeout(1200)
def test_java_admin_tools_through_the_name_service(local_federation, tmp_path):
    _state_dir, status = local_federation
    ns = status["nameservice"]["bootstrap"]
    clusters = {c["id"]: c["bootstrap"] for c in status["clusters"]}
    topic = f"java-admin-{uuid.uuid4().hex[:6]}"

    made = _tool("kafka-topics", "--bootstrap-server", ns, "--create", "--topic", topic, "--partitions", "4",
                 "--config", "retention.ms=3600000")
    assert made.returncode == 0 and f"Created topic {topic}" in made.stdout, made.stderr[-2000:]
    again = _tool("kafka-topics", "--bootstrap-server", ns, "--create", "--topic", topic, "--partitions", "4")
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr
    placed = _tool("kafka-topics", "--bootstrap-server", ns, "--create", "--topic", f"{topic}-placed",
                   "--replica-assignment", "1:2,2:1")
    assert placed.returncode != 0 and "replica assignments are not accepted" in placed.stdout + placed.stderr

    grown = _tool("kafka-topics", "--bootstrap-server", ns, "--alter", "--topic", topic, "--partitions", "6")
    assert grown.returncode == 0, grown.stderr[-2000:]
    shrunk = _tool("kafka-topics", "--bootstrap-server", ns, "--alter", "--topic", topic, "--partitions", "2")
    assert shrunk.returncode != 0 and "InvalidPartitionsException" in shrunk.stdout + shrunk.stderr

    altered = _tool("kafka-configs", "--bootstrap-server", ns, "--alter", "--entity-type", "topics",
                    "--entity-name", topic, "--add-config", "retention.ms=7200000,max.message.bytes=2000000")
    assert altered.returncode == 0, altered.stderr[-2000:]
    for bootstrap in clusters.values():  # every physical topic of the chains carries it
        assert _physical_config(bootstrap, topic, "retention.ms") == "7200000"
        assert _physical_config(bootstrap, topic, "max.message.bytes") == "2000000"
    bad = _tool("kafka-configs", "--bootstrap-server", ns, "--alter", "--entity-type", "topics",
                "--entity-name", topic, "--add-config", "no.such.config=1")
    assert bad.returncode != 0 and "InvalidConfigurationException" in bad.stdout + bad.stderr
    unknown = _tool("kafka-configs", "--bootstrap-server", ns, "--alter", "--entity-type", "topics",
                    "--entity-name", f"{topic}-nope", "--add-config", "retention.ms=1")
    assert unknown.returncode != 0

    _produce(ns, topic, 60, 6)  # 10 per partition
    offsets = tmp_path / "offsets.json"
    offsets.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "offset": 4},
                                                                {"topic": topic, "partition": 1, "offset": 500}]}))
    deleted = _tool("kafka-delete-records", "--bootstrap-server", ns, "--offset-json-file", str(offsets))
    assert re.search(rf"{topic}-0\s+low_watermark: 4", deleted.stdout), deleted.stdout + deleted.stderr[-2000:]
    assert re.search(rf"{topic}-1\s+error: .*OffsetOutOfRange", deleted.stdout), deleted.stdout
    assert _watermarks(ns, topic, 2) == [(4, 10), (0, 10)]  # p1 untouched

    group = f"reset-{uuid.uuid4().hex[:6]}"
    _commit(ns, group, [TopicPartition(topic, p, 9) for p in range(6)])
    reset = _tool("kafka-consumer-groups", "--bootstrap-server", ns, "--group", group, "--topic", topic,
                  "--reset-offsets", "--to-earliest", "--execute")
    assert reset.returncode == 0, reset.stderr[-2000:]
    c = Consumer({"bootstrap.servers": ns, "group.id": group})
    committed = c.committed([TopicPartition(topic, p) for p in range(6)], timeout=30)
    c.close()
    assert [tp.offset for tp in committed] == [4, 0, 0, 0, 0, 0]  # earliest, logical (p0's records deleted)

    kip848 = _tool("kafka-console-consumer", "--bootstrap-server", ns, "--topic", topic, "--group",
                   f"kip848-{uuid.uuid4().hex[:6]}", "--from-beginning", "--max-messages", "56", "--timeout-ms",
                   "90000", "--command-property", "group.protocol=consumer")
    assert len(kip848.stdout.splitlines()) == 56, kip848.stderr[-3000:]  # 60 produced, 4 of p0 deleted

    gone = _tool("kafka-topics", "--bootstrap-server", ns, "--delete", "--topic", topic)
    assert gone.returncode == 0, gone.stderr[-2000:]
    listed = _tool("kafka-topics", "--bootstrap-server", ns, "--list")
    assert topic not in listed.stdout.split()


@pytest.mark.timeout(600)
def test_java_admin_describes_a_topic_by_its_id(local_federation):
    """kafka-topics --describe --topic-id: the Java AdminClient's describeTopics(TopicCollection.ofTopicIds(..)),
    a Metadata v12 naming the id only. The proxy used to drop entries without a name and answer no topic: the
    tool failed with IllegalStateException "Use errors() when managing topic using topic name"
    (MetadataResponse.errorsByTopicId). Now the topic of the id, each partition led by a broker the answer lists,
    and an unknown id is UNKNOWN_TOPIC_ID."""
    _state_dir, status = local_federation
    ns = status["nameservice"]["bootstrap"]
    topic = f"by-id-{uuid.uuid4().hex[:6]}"
    made = _tool("kafka-topics", "--bootstrap-server", ns, "--create", "--topic", topic, "--partitions", "3")
    assert made.returncode == 0, made.stderr[-2000:]
    by_name = _tool("kafka-topics", "--bootstrap-server", ns, "--describe", "--topic", topic)
    found = re.search(r"TopicId:\s*(\S+)", by_name.stdout)
    assert by_name.returncode == 0 and found, by_name.stdout + by_name.stderr[-2000:]
    by_id = _tool("kafka-topics", "--bootstrap-server", ns, "--describe", "--topic-id", found.group(1))
    assert by_id.returncode == 0, by_id.stdout + by_id.stderr[-2000:]
    assert re.search(rf"Topic:\s*{topic}\s+TopicId:\s*{found.group(1)}\s+PartitionCount:\s*3", by_id.stdout), \
        by_id.stdout
    # TopicCommand prints "Leader: none" for a leader id the answer lists no broker for
    assert len(re.findall(r"Partition:\s*\d+\s+Leader:\s*\d+\s", by_id.stdout)) == 3, by_id.stdout
    unknown = _tool("kafka-topics", "--bootstrap-server", ns, "--describe", "--topic-id", "AAAAAAAAAAAAAAAAAAAAAQ")
    assert unknown.returncode != 0 and "TopicId 'AAAAAAAAAAAAAAAAAAAAAQ' does not exist" in unknown.stdout
    assert _tool("kafka-topics", "--bootstrap-server", ns, "--delete", "--topic", topic).returncode == 0


@pytest.mark.timeout(600)
def test_confluent_admin_client_every_write_and_its_bad_input(local_federation):
    _state_dir, status = local_federation
    ns = status["nameservice"]["bootstrap"]
    admin = AdminClient({"bootstrap.servers": ns, "client.id": "admin-test"})
    topic, bad_cfg = f"py-admin-{uuid.uuid4().hex[:6]}", f"py-bad-{uuid.uuid4().hex[:6]}"

    dry = admin.create_topics([NewTopic(topic, 3)], validate_only=True)[topic]
    assert dry.result(60) is None
    assert topic not in admin.list_topics(timeout=30).topics  # validate_only created nothing
    futures = admin.create_topics([NewTopic(topic, 3, config={"retention.ms": "100000"}),
                                   NewTopic(bad_cfg, 1, config={"no.such.config": "1"})], operation_timeout=30)
    assert futures[topic].result(60) is None
    assert _error(futures[bad_cfg]) == KafkaError.INVALID_CONFIG
    assert bad_cfg not in admin.list_topics(timeout=30).topics
    assert _error(admin.create_topics([NewTopic(topic, 3)])[topic]) == KafkaError.TOPIC_ALREADY_EXISTS
    assert len(admin.list_topics(topic, timeout=30).topics[topic].partitions) == 3  # visible at once

    assert admin.create_partitions([NewPartitions(topic, 5)])[topic].result(60) is None
    assert _error(admin.create_partitions([NewPartitions(topic, 2)])[topic]) == KafkaError.INVALID_PARTITIONS
    assert _error(admin.create_partitions([NewPartitions(f"{topic}-nope", 9)])[f"{topic}-nope"]) == \
        KafkaError.UNKNOWN_TOPIC_OR_PART
    assert len(admin.list_topics(topic, timeout=30).topics[topic].partitions) == 5

    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "200000", incremental_operation=AlterConfigOpType.SET)])
    assert admin.incremental_alter_configs([res])[res].result(60) is None
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    assert next(iter(described.values())).result(60)["retention.ms"].value == "200000"
    bad = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    assert _error(admin.incremental_alter_configs([bad])[bad]) == KafkaError.INVALID_CONFIG
    # APPEND starts from Kafka's default ("delete") and only applies to LIST configs, as Kafka's controller
    appended = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    assert admin.incremental_alter_configs([appended])[appended].result(60) is None
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    assert next(iter(described.values())).result(60)["cleanup.policy"].value == "delete,compact"
    subtracted = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[  # keyless records below
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SUBTRACT)])
    assert admin.incremental_alter_configs([subtracted])[subtracted].result(60) is None
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    assert next(iter(described.values())).result(60)["cleanup.policy"].value == "delete"
    not_a_list = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND)])
    assert _error(admin.incremental_alter_configs([not_a_list])[not_a_list]) == KafkaError.INVALID_CONFIG
    broker = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
        ConfigEntry("log.retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    assert _error(admin.incremental_alter_configs([broker])[broker]) == KafkaError.INVALID_REQUEST

    _produce(ns, topic, 50, 5)
    deleted = admin.delete_records([TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 10_000)])
    assert deleted[TopicPartition(topic, 0, 3)].result(60).low_watermark == 3
    assert _error(deleted[TopicPartition(topic, 1, 10_000)]) == KafkaError.OFFSET_OUT_OF_RANGE

    assert admin.delete_topics([topic])[topic].result(60) is None
    assert _error(admin.delete_topics([topic])[topic]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert topic not in admin.list_topics(timeout=30).topics


COORDINATOR_NOT_READY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                         KafkaError.COORDINATOR_NOT_AVAILABLE}


def _commit(bootstrap: str, group: str, offsets: list[TopicPartition]) -> None:
    """A standalone commit; the first one on a fresh coordination cluster may meet its offsets topic still
    being created (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        for attempt in range(30):
            try:
                c.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as e:
                if e.args[0].code() not in COORDINATOR_NOT_READY or attempt == 29:
                    raise
                time.sleep(1)
    finally:
        c.close()


def _error(future) -> int:
    try:
        future.result(60)
    except Exception as e:
        return e.args[0].code()
    raise AssertionError("expected an error")


@pytest.mark.timeout(300)
def test_delete_records_over_a_moved_chain_on_real_brokers(kafka_clusters, unique_name, tmp_path):
    """p0: c1/old[0] sealed at 5 (logical 0..5), then c2/phys[0] from physical 7 at logical 5. Deleting before
    logical 8 empties the sealed segment whole and c2's partition before physical 10."""
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    old, phys = f"old-{unique_name}", f"phys-{unique_name}"
    create_topic(c1.bootstrap, old, 1)
    create_topic(c2.bootstrap, phys, 1)
    for bootstrap, topic, n in ((c1.bootstrap, old, 5), (c2.bootstrap, phys, 7)):
        _produce(bootstrap, topic, n, 1)
    chain = PartitionChain(segments=(Segment("c1", old, 0, 0, 5, 0), Segment("c2", phys, 0, 7, None, 5)),
                           leader_epoch=1)
    view = View(version=1, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, (chain,))})
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        _produce(proxy.bootstrap, unique_name, 6, 1)  # logical 5..10 = c2 physical 7..12
        admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
        past = admin.delete_records([TopicPartition(unique_name, 0, 12)])[TopicPartition(unique_name, 0, 12)]
        assert _error(past) == KafkaError.OFFSET_OUT_OF_RANGE
        assert _watermarks(c1.bootstrap, old, 1) == [(0, 5)]  # nothing older deleted either
        done = admin.delete_records([TopicPartition(unique_name, 0, 8)])[TopicPartition(unique_name, 0, 8)]
        assert done.result(60).low_watermark == 8
        assert _watermarks(c1.bootstrap, old, 1) == [(5, 5)] and _watermarks(c2.bootstrap, phys, 1) == [(10, 13)]
        assert _watermarks(proxy.bootstrap, unique_name, 1) == [(8, 11)]  # earliest skips the emptied segment
        c = Consumer({"bootstrap.servers": proxy.bootstrap, "group.id": f"g-{unique_name}",
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(unique_name, 0, 0)])  # below the log start: reset to the earliest, 8
        seen = []
        while len(seen) < 3:
            msg = c.poll(30)
            assert msg is not None, seen
            if not msg.error():
                seen.append((msg.offset(), msg.value()))
        c.close()
        assert seen == [(8, b"v3"), (9, b"v4"), (10, b"v5")]
        assert proxy.alive(), proxy.output()[-3000:]


def _ask(bootstrap: str, request, api_key: int, version: int):
    """One request to one proxy, its answer decoded (a raw client: the fields no client library exposes)."""
    host, _, port = bootstrap.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(codec.encode_request(request, 1, "admin-test"))
        head = _exactly(s, 4)
        _, body = codec.decode_response(codec.response_type(api_key, version),
                                        _exactly(s, struct.unpack(">i", head)[0]))
    return body


def _exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "the proxy closed the connection"
        buf += chunk
    return buf


@pytest.mark.timeout(900)
def test_proxies_answer_as_kafka_brokers_list_groups_broker_configs_and_created_topics(local_federation):
    """Each of the two proxies lists only the groups it coordinates (together: each group once); each describes
    its own broker configs and loggers; CreateTopics v7 answers the physical replication factor and every config
    with its source."""
    _state_dir, status = local_federation
    ns, proxies = status["nameservice"]["bootstrap"], [p["bootstrap"] for p in status["proxies"]]
    admin = AdminClient({"bootstrap.servers": ns, "client.id": "admin-test"})
    topic = f"lg-{uuid.uuid4().hex[:6]}"
    created = _ask(proxies[0], build(codec.request_schema(19, 7), {"topics": [
        {"name": topic, "num_partitions": 1, "replication_factor": -1, "assignments": [],
         "configs": [{"name": "retention.ms", "value": "100000"}]}], "timeout": datetime.timedelta(seconds=30),
        "validate_only": False}), 19, 7).topics[0]
    assert (created.error_code, created.num_partitions) == (ErrorCode.none, 1)
    assert created.replication_factor >= 1  # the physical topic's (it was -1)
    sources = {c.name: (c.value, c.config_source) for c in created.configs}
    assert sources["retention.ms"] == ("100000", 1) and sources["cleanup.policy"] == ("delete", 5)
    assert [c.name for c in created.configs] == sorted(sources)

    groups = [f"{topic}-g{i}" for i in range(8)]
    for group in groups:
        _commit(ns, group, [TopicPartition(topic, 0, 1)])
    listed = [g.group_id for p in proxies for g in _ask(p, build(codec.request_schema(16, 4), {
        "states_filter": []}), 16, 4).groups]
    assert sorted(g for g in listed if g in groups) == groups  # each once across the proxies

    for broker in admin.list_topics(timeout=30).brokers.values():  # the proxies, as the client sees them
        res = ConfigResource(ConfigResource.Type.BROKER, str(broker.id))
        assert admin.describe_configs([res])[res].result(60)["node.id"].value == str(broker.id)
        loggers = _ask(f"{broker.host}:{broker.port}", build(codec.request_schema(32, 4), {"resources": [
            {"resource_type": 8, "resource_name": str(broker.id), "configuration_keys": None}],
            "include_synonyms": False, "include_documentation": False}), 32, 4).results[0]
        assert loggers.error_code == ErrorCode.none and "root" in {c.name for c in loggers.configs}
    assert admin.delete_topics([topic])[topic].result(60) is None
