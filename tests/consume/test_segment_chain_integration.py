"""A logical partition whose chain spans 3 real clusters: identity on c1, then two moved segments on c2
and c3 (non-identity: physical data before phys_start and after the seals belongs to nobody).

    logical p0: c1/p0 phys [0, 30) -> logical 0..29      (junk at phys 30..33, after the seal)
                c2/p0 phys [5, 45) -> logical 30..69     (junk at phys 0..4 and 45..47)
                c3/p1 phys [3, ..) -> logical 70..94     (junk at phys 0..2; active)
    logical p1: c1/p1 identity, active
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from proxy.support import ProxyProcess, create_topic

from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

from .support import consumer, wait_for, with_coordination

pytestmark = pytest.mark.integration

# recent timestamps: records older than retention.ms (7 days) would be deleted by the broker at once
BASE = int(time.time() * 1000) - 3_600_000
TS1, TS_JUNK_C2, TS2, TS3, TS_LATE = BASE, BASE + 500_000, BASE + 1_000_000, BASE + 2_000_000, BASE + 3_000_000


def lay_down(bootstrap: str, topic: str, partition: int, values: list[str], ts0: int,
             compression: str = "none") -> None:
    """Each call is its own batch(es): flushed before the next call, so a seal falls on a batch boundary.
    Compressed batches keep offsets as deltas inside: patching the header's baseOffset must be enough."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "compression.type": compression})
    for i, v in enumerate(values):
        producer.produce(topic, value=v.encode(), partition=partition, timestamp=ts0 + i)
    assert producer.flush(30) == 0


@pytest.fixture
def chain(kafka_clusters, unique_name, tmp_path):
    c1, c2, c3 = kafka_clusters
    physical = f"phys-{unique_name}"
    for c in (c1, c2, c3):
        create_topic(c.bootstrap, physical, 2)
    lay_down(c1.bootstrap, physical, 0, [f"r{i}" for i in range(30)], TS1)
    lay_down(c1.bootstrap, physical, 0, [f"junk-c1-{i}" for i in range(4)], TS_LATE)
    lay_down(c2.bootstrap, physical, 0, [f"junk-c2-{i}" for i in range(5)], TS_JUNK_C2)
    lay_down(c2.bootstrap, physical, 0, [f"r{30 + i}" for i in range(40)], TS2, "lz4")
    lay_down(c2.bootstrap, physical, 0, [f"junk-c2-late-{i}" for i in range(3)], TS_LATE)
    lay_down(c3.bootstrap, physical, 1, [f"junk-c3-{i}" for i in range(3)], TS1)
    lay_down(c3.bootstrap, physical, 1, [f"r{70 + i}" for i in range(25)], TS3, "zstd")
    lay_down(c1.bootstrap, physical, 1, [f"q{i}" for i in range(10)], TS1)
    p0 = PartitionChain(segments=(Segment("c1", physical, 0, 0, 30, 0), Segment("c2", physical, 0, 5, 45, 30),
                                  Segment("c3", physical, 1, 3, None, 70)), leader_epoch=2)
    p1 = PartitionChain(segments=(Segment("c1", physical, 1, 0, None, 0),))
    view = View(version=1, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2, c3)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, (p0, p1))})
    view = with_coordination(view, "c1", c1.bootstrap)
    with ProxyProcess(tmp_path, view, role=ProxyRole.CPROXY) as proxy:
        yield proxy, unique_name, c1, physical
        assert proxy.alive(), proxy.output()[-3000:]


def read(c, n: int, timeout: float = 60.0) -> list:
    got: list = []
    wait_for(lambda: got.extend(m for m in c.consume(200, 0.5) if not m.error()) or len(got) >= n, timeout,
             f"{n} records")
    return got


def test_reads_every_record_once_in_order_with_contiguous_logical_offsets(chain):
    proxy, topic, _, _ = chain
    c = consumer(proxy.bootstrap)
    c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
    got = read(c, 105)
    c.close()
    p0 = [(m.offset(), m.value().decode()) for m in got if m.partition() == 0]
    assert p0 == [(i, f"r{i}") for i in range(95)]
    assert [(m.offset(), m.value().decode()) for m in got if m.partition() == 1] == [(i, f"q{i}") for i in range(10)]


@pytest.mark.parametrize("start", [0, 10, 29, 30, 50, 69, 70, 94])
def test_seek_into_each_segment(chain, start):
    proxy, topic, _, _ = chain
    c = consumer(proxy.bootstrap)
    c.assign([TopicPartition(topic, 0, start)])
    got = read(c, 95 - start)
    c.close()
    assert [(m.offset(), m.value().decode()) for m in got] == [(i, f"r{i}") for i in range(start, 95)]


def test_watermarks_and_offsets_for_times_land_in_the_right_segment(chain):
    proxy, topic, _, _ = chain
    c = consumer(proxy.bootstrap)
    assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20) == (0, 95)
    asked = {TS1 + 7: 7, TS_JUNK_C2: 30, TS2 + 12: 42, TS3: 70, TS3 + 24: 94, TS_LATE + 999: -1}
    for ts, expected in asked.items():
        (found,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=20)
        assert found.error is None and found.offset == expected, (ts, found)
    c.close()


def test_committed_offset_in_an_expired_segment_is_reset_to_earliest(chain):
    proxy, topic, c1, physical = chain
    group = f"g-{topic}"
    c = consumer(proxy.bootstrap, group)
    c.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
    assert c.committed([TopicPartition(topic, 0)], timeout=20)[0].offset == 10
    c.close()
    # retention removes the whole first segment (DeleteRecords stands in for time)
    admin = AdminClient({"bootstrap.servers": c1.bootstrap})
    for fut in admin.delete_records([TopicPartition(physical, 0, 34)]).values():
        fut.result(20)
    c = consumer(proxy.bootstrap)
    assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20) == (30, 95)
    c.close()
    c = consumer(proxy.bootstrap, group)
    c.assign([TopicPartition(topic, 0)])  # starts from the committed offset 10: gone, so earliest
    got = read(c, 65)
    c.close()
    assert [(m.offset(), m.value().decode()) for m in got] == [(i, f"r{i}") for i in range(30, 95)]


def test_read_committed_reads_the_whole_chain(chain):
    proxy, topic, _, _ = chain
    c = consumer(proxy.bootstrap, **{"isolation.level": "read_committed"})
    c.assign([TopicPartition(topic, 0, 25)])
    got = read(c, 70)
    c.close()
    assert [(m.offset(), m.value().decode()) for m in got] == [(i, f"r{i}") for i in range(25, 95)]


def test_a_moved_segment_of_large_batches_is_read_whole_and_crc_checked(kafka_clusters, unique_name, tmp_path):
    """Batches of 32 KiB or more in a moved segment reach the client from the broker's frame but for their
    rewritten first 16 bytes (records.fit_to_segment_parts): confluent-kafka with check.crcs reads every record,
    value and logical offset, and none past the seal."""
    _, c2, _ = kafka_clusters
    physical = f"big-{unique_name}"
    create_topic(c2.bootstrap, physical, 1)
    create_topic(c2.bootstrap, f"{physical}-next", 1)  # the active segment after the seal: empty
    lay_down(c2.bootstrap, physical, 0, [f"junk-{i}" for i in range(5)], TS1)
    values = [f"{i:04d}" + "v" * 9000 for i in range(40)]  # about 8 batches of 45 KiB (linger 5 ms, 1 MB cap)
    lay_down(c2.bootstrap, physical, 0, values, TS2)
    lay_down(c2.bootstrap, physical, 0, [f"late-{i}" for i in range(3)], TS_LATE)
    chain = PartitionChain(segments=(Segment("c2", physical, 0, 5, 45, 1000),
                                     Segment("c2", f"{physical}-next", 0, 0, None, 1040)), leader_epoch=1)
    view = View(version=1, clusters={c2.name: Cluster(c2.name, c2.bootstrap)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, (chain,))})
    with ProxyProcess(tmp_path, with_coordination(view, "c2", c2.bootstrap), role=ProxyRole.CPROXY) as proxy:
        c = consumer(proxy.bootstrap, **{"check.crcs": True})
        c.assign([TopicPartition(unique_name, 0, 1000)])
        got = read(c, 40)
        c.close()
        assert proxy.alive(), proxy.output()[-3000:]
    assert [(m.offset(), m.value().decode()) for m in got] == [(1000 + i, v) for i, v in enumerate(values)]
