"""A long-poll Fetch held at a real broker while its partition moves away and back (docs/DESIGN.md §4.9, "Readers").

Logical partition 0 lives on c1's physical partition (10 records, logical 0..9). A consumer's Fetch waits at its
end. Meanwhile the partition moves to c2 (5 records there, logical 10..14) and back to c1, which reuses the same
physical partition from its log end (phys 10 = logical 15). Then 3 records land on c1: the broker answers the
waiting Fetch with them. The old proxy translated them with the chain the Fetch was routed with, as logical
10..12 (c2's offsets: a group would commit past c2's records unread); now it answers that partition with no
records and the client fetches again under the new view.
"""

from __future__ import annotations

import dataclasses
import datetime
import socket
import struct
import threading
import time
import uuid

import pytest
from aiokafka.record.memory_records import MemoryRecords
from confluent_kafka import TopicPartition
from kio.schema.errors import ErrorCode
from proxy.support import ProxyProcess, create_topic

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

from .support import consumer, produce_values, wait_for, with_coordination

pytestmark = pytest.mark.integration


def long_poll(port: int, topic: str, offset: int, max_wait_ms: int, out: list) -> None:
    """One raw Fetch v12 of partition 0 from `offset` with min_bytes 1; appends the partition's answer to `out`."""
    request = build(codec.request_type(1, 12), {
        "replica_id": -1, "max_wait": datetime.timedelta(milliseconds=max_wait_ms), "min_bytes": 1,
        "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1, "rack_id": "",
        "forgotten_topics_data": [], "topics": [{"topic": topic, "partitions": [
            {"partition": 0, "current_leader_epoch": -1, "fetch_offset": offset, "last_fetched_epoch": -1,
             "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}]})
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(codec.encode_request(request, 1))
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        frame = s.recv(size, socket.MSG_WAITALL)
    _, body = codec.decode_response(codec.response_type(1, 12), frame)
    out.append(body.responses[0].partitions[0])


@pytest.mark.timeout(300)
def test_a_long_poll_held_across_a_move_and_the_move_back_serves_no_record_at_a_wrong_offset(
        kafka_clusters, unique_name, tmp_path):
    c1, c2, _ = kafka_clusters
    physical = f"phys-{unique_name}"
    for c in (c1, c2):
        create_topic(c.bootstrap, physical, 1)
    produce_values(c1.bootstrap, physical, [f"a{i}" for i in range(10)], partition=0)
    on_c1 = Segment("c1", physical, 0, 0, None, 0)
    sealed_on_c1 = dataclasses.replace(on_c1, phys_end=10)

    def view(version: int, *segments: Segment, epoch: int) -> View:
        chain = PartitionChain(segments, leader_epoch=epoch)
        return View(version=version, clusters={c.name: Cluster(c.name, c.bootstrap) for c in (c1, c2)},
                    topics={unique_name: LogicalTopic(unique_name, topic_id, (chain,))})

    topic_id = uuid.uuid4().hex
    first = with_coordination(view(1, on_c1, epoch=0), "c1", c1.bootstrap)
    coordinated = {"coordination_cluster": "c1"}
    with ProxyProcess(tmp_path, first, role=ProxyRole.CPROXY) as proxy:
        answered: list = []
        poller = threading.Thread(target=long_poll, args=(proxy.port, unique_name, 10, 30_000, answered))
        poller.start()
        time.sleep(2.0)  # routed under view 1 and waiting at c1 (a fetch routed later would wait at c2: no harm)
        # move M: c1 sealed at 10, c2 active from its phys 0 at logical 10; 5 records written there
        proxy.write_view(dataclasses.replace(view(2, sealed_on_c1, Segment("c2", physical, 0, 0, None, 10), epoch=1),
                                             **coordinated))
        wait_for(lambda: "applied view 2" in proxy.output(), 30, "view 2 applied")
        produce_values(c2.bootstrap, physical, [f"b{i}" for i in range(5)], partition=0)
        # the move back: c2 sealed at 5, c1's partition again from its log end 10, at logical 15
        proxy.write_view(dataclasses.replace(view(3, sealed_on_c1, Segment("c2", physical, 0, 0, 5, 10),
                                                  Segment("c1", physical, 0, 10, None, 15), epoch=2), **coordinated))
        wait_for(lambda: "applied view 3" in proxy.output(), 30, "view 3 applied")
        assert poller.is_alive(), "the fetch was answered before the records it waits for were written"
        produce_values(c1.bootstrap, physical, [f"c{i}" for i in range(3)], partition=0)
        poller.join(60)
        (p,) = answered
        assert p.error_code == ErrorCode.none
        written = [(i, f"a{i}") for i in range(10)] + [(10 + i, f"b{i}") for i in range(5)] + \
            [(15 + i, f"c{i}") for i in range(3)]
        # the old proxy answered c1's new records as logical 10..12 (c2's offsets); now: none
        assert set(records(p.records)) <= set(written), records(p.records)
        # the client fetches again under the new view: every record once, at its own logical offset
        c = consumer(proxy.bootstrap)
        c.assign([TopicPartition(unique_name, 0, 0)])
        got: list = []
        wait_for(lambda: got.extend(m for m in c.consume(50, 0.5) if not m.error()) or len(got) >= 18, 60,
                 "18 records")
        c.close()
        assert [(m.offset(), m.value().decode()) for m in got] == written
        assert proxy.alive(), proxy.output()[-3000:]



def records(data: bytes | None) -> list[tuple[int, str]]:
    """(offset, value) of every record in a Fetch answer's record set."""
    out = []
    batches = MemoryRecords(bytes(data or b""))
    while (b := batches.next_batch()) is not None:
        out.extend((r.offset, r.value.decode()) for r in b)
    return out
