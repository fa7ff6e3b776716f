"""Unmodified clients across an unclean gap (docs/DESIGN.md §9), through a real proxy on real clusters: librdkafka
(confluent-kafka), aiokafka and the Java console consumer. Logical partition 0 failed over from c1, which is back:
the controller knew its end at 10, it holds 15 records, so 10..14 are read inside the gap, then the reader jumps to
the next segment on c2. Partition 1 failed over from a cluster that is still dead: a reader whose committed position
lies inside the gap is moved to the next segment (no error, no OFFSET_OUT_OF_RANGE loop)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioPartition
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from proxy.support import ProxyProcess, create_topic

from fedkafka.kafka.cluster import free_port
from fedkafka.kafka.tools import run_tool
from fedkafka.view.chains import UNCLEAN_GAP
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View, shadow_topic

from .support import consumer, produce_values, with_coordination

pytestmark = pytest.mark.integration

KNOWN_END = 10  # the last log end the controller read on the failed cluster
NEXT = KNOWN_END + UNCLEAN_GAP  # where the new segment starts
CAME_BACK = [f"a{i}" for i in range(15)]  # on c1: 10 below the known end, 5 in its tail
AFTER = {0: ["b0", "b1", "b2"], 1: ["d0", "d1", "d2"]}  # written to c2 after the failover
EXPECTED = {0: [(i, v) for i, v in enumerate(CAME_BACK)] + [(NEXT + i, v) for i, v in enumerate(AFTER[0])],
            1: [(NEXT + i, v) for i, v in enumerate(AFTER[1])]}
IN_GAP = KNOWN_END + 2  # a committed position inside partition 1's gap (the consumer had read the dead tail)


@pytest.fixture
def federation(kafka_clusters, unique_name, tmp_path):
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 1)
    create_topic(c2.bootstrap, physical, 2)
    produce_values(c1.bootstrap, physical, CAME_BACK, partition=0)
    for p, values in AFTER.items():
        produce_values(c2.bootstrap, physical, values, partition=p)
    chains = (PartitionChain((Segment("c1", physical, 0, 0, KNOWN_END, 0), Segment("c2", physical, 0, 0, None, NEXT)),
                             leader_epoch=1),
              PartitionChain((Segment("dead", physical, 0, 0, KNOWN_END, 0), Segment("c2", physical, 1, 0, None, NEXT)),
                             leader_epoch=1))
    clusters = {c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2)}
    clusters["dead"] = Cluster("dead", f"127.0.0.1:{free_port()}", reachable=False)  # nothing listens there
    view = View(version=1, clusters=clusters, topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, chains)})
    view = with_coordination(view, "c1", c1.bootstrap)
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        yield proxy, unique_name, c1.bootstrap
        assert proxy.alive(), proxy.output()[-3000:]


def committed_in_gap(coordination_bootstrap: str, topic: str) -> str:
    """A group whose committed position on partition 1 lies inside the gap, with the old leader epoch: written
    where the proxies keep it (the shadow topic on the coordination cluster), as a consumer that had read the
    dead cluster's tail before it died would have left it."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    c = consumer(coordination_bootstrap, group)
    deadline = time.monotonic() + 120
    try:
        while True:  # a fresh group's coordinator may still be loading (NOT_COORDINATOR): retriable
            try:
                c.commit(offsets=[TopicPartition(shadow_topic(topic), 1, IN_GAP, leader_epoch=0)], asynchronous=False)
                return group
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        c.close()


def by_partition(records) -> dict[int, list[tuple[int, str]]]:
    out: dict[int, list[tuple[int, str]]] = {0: [], 1: []}
    for p, offset, value in records:
        out[p].append((offset, value))
    return out


@pytest.mark.timeout(400)
def test_librdkafka_reads_the_tail_inside_the_gap_and_skips_what_is_gone(federation):
    proxy, topic, coordination = federation
    group = committed_in_gap(coordination, topic)
    c = consumer(proxy.bootstrap, group)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING), TopicPartition(topic, 1)])  # 1: from the commit
    got, errors = [], []
    try:
        for _ in range(600):
            msg = c.poll(0.2)
            if msg is None:
                if len(got) == 21:
                    break
                continue
            if msg.error():
                errors.append(str(msg.error()))
                continue
            got.append((msg.partition(), msg.offset(), msg.value().decode()))
        positions = {tp.partition: tp.offset for tp in c.position([TopicPartition(topic, 0), TopicPartition(topic, 1)])}
    finally:
        c.close()
    assert errors == []
    assert by_partition(got) == EXPECTED
    assert positions == {0: NEXT + 3, 1: NEXT + 3}


@pytest.mark.timeout(400)
def test_aiokafka_reads_the_tail_inside_the_gap_and_skips_what_is_gone(federation):
    proxy, topic, coordination = federation
    group = committed_in_gap(coordination, topic)

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=proxy.bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest")
        await c.start()
        try:
            c.assign([AioPartition(topic, 0), AioPartition(topic, 1)])
            await c.seek_to_beginning(AioPartition(topic, 0))  # partition 1 starts from the commit (in the gap)
            got = []
            async def pull():
                while len(got) < 21:
                    batch = await c.getmany(timeout_ms=500)
                    got.extend((r.partition, r.offset, r.value.decode()) for rs in batch.values() for r in rs)
            await asyncio.wait_for(pull(), 90)
            return got, {p: await c.position(AioPartition(topic, p)) for p in (0, 1)}
        finally:
            await c.stop()

    got, positions = asyncio.run(run())
    assert by_partition(got) == EXPECTED
    assert positions == {0: NEXT + 3, 1: NEXT + 3}


@pytest.mark.timeout(400)
def test_java_console_consumer_reads_the_tail_inside_the_gap_and_skips_what_is_gone(federation):
    proxy, topic, coordination = federation
    group = committed_in_gap(coordination, topic)
    # partition 0 has no commit: --from-beginning; partition 1 resumes inside the gap, validated with
    # OffsetForLeaderEpoch against the committed epoch 0 (no truncation: it stays there and is moved on)
    out = run_tool("kafka-console-consumer", "--bootstrap-server", proxy.bootstrap, "--topic", topic,
                   "--group", group, "--from-beginning", "--max-messages", "21", "--timeout-ms", "90000",
                   "--property", "print.offset=true", "--property", "print.partition=true", timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    got = [(int(p), int(o), v) for p, o, v in re.findall(r"Partition:(\d+)\s+Offset:(\d+)\s+(\w+)", out.stdout)]
    assert by_partition(got) == EXPECTED, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.timeout(400)
def test_a_reader_in_the_gap_below_the_tail_s_log_start_resets_to_it_and_reads_the_rest_of_the_tail(federation):
    """DeleteRecords on c1 (retention alike) moved the tail's log start to 12. A reader at 11, inside the gap below
    the log start: c1 answers OFFSET_OUT_OF_RANGE there as it would past its log end. The proxy reads c1's log bounds
    (ListOffsets) and passes OFFSET_OUT_OF_RANGE on, so librdkafka resets to earliest (12), reads a12..a14, then the
    next segment (docs/DESIGN.md §9.2). The old code moved it past the whole gap at once: a12..a14 never read."""
    proxy, topic, c1_bootstrap = federation
    admin = AdminClient({"bootstrap.servers": c1_bootstrap})
    for fut in admin.delete_records([TopicPartition(f"phys-{topic}", 0, 12)]).values():
        fut.result(20)
    c = consumer(proxy.bootstrap)  # auto.offset.reset=earliest
    c.assign([TopicPartition(topic, 0, KNOWN_END + 1)])
    got, errors = [], []
    try:
        for _ in range(300):
            msg = c.poll(0.2)
            if msg is None:
                if len(got) >= 6:
                    break
                continue
            if msg.error():
                errors.append(str(msg.error()))
                continue
            got.append((msg.offset(), msg.value().decode()))
    finally:
        c.close()
    assert errors == []
    assert got == [(i, CAME_BACK[i]) for i in (12, 13, 14)] + [(NEXT + i, v) for i, v in enumerate(AFTER[0])]


@pytest.mark.timeout(400)
def test_a_reader_from_the_beginning_reads_a_segment_sealed_at_its_own_start(kafka_clusters, unique_name, tmp_path):
    """No scan read a high watermark of c1's partition before it died, so the failover sealed it at its start: all
    it holds is in the gap. c1 is back: ListOffsets earliest is 0 (it was the next segment's base), so a reader from
    the beginning (`fedkafka check --reread`, a new group) reads them, then the next segment."""
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 1)
    create_topic(c2.bootstrap, physical, 1)
    produce_values(c1.bootstrap, physical, CAME_BACK[:5], partition=0)
    produce_values(c2.bootstrap, physical, AFTER[0], partition=0)
    chain = PartitionChain((Segment("c1", physical, 0, 0, 0, 0), Segment("c2", physical, 0, 0, None, UNCLEAN_GAP)),
                           leader_epoch=1)
    view = View(version=1, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, (chain,))})
    with ProxyProcess(tmp_path, with_coordination(view, "c1", c1.bootstrap), role=ProxyRole.BOTH) as proxy:
        c = consumer(proxy.bootstrap)
        c.assign([TopicPartition(unique_name, 0, OFFSET_BEGINNING)])
        got = []
        try:
            for _ in range(300):
                msg = c.poll(0.2)
                if msg is not None and not msg.error():
                    got.append((msg.offset(), msg.value().decode()))
                if len(got) == 8:
                    break
        finally:
            c.close()
    assert got == [*enumerate(CAME_BACK[:5]), *[(UNCLEAN_GAP + i, v) for i, v in enumerate(AFTER[0])]]
