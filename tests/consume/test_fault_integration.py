"""One cluster down: partitions on the other keep being consumed by the group, and the group's committed
offsets (on the coordination cluster) are not lost. Private clusters: this test kills one."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import TopicPartition
from proxy.support import ProxyProcess, create_topic, split_view

from fedkafka.view.model import ProxyRole

from .support import GroupMember, consumer, produce_values, wait_for, with_coordination

pytestmark = pytest.mark.integration


def test_one_cluster_down_others_keep_flowing_and_commits_survive(make_clusters, tmp_path):
    f1, f2 = make_clusters("f1", "f2")
    topic = f"fault-{uuid.uuid4().hex[:6]}"
    physical = f"phys-{topic}"
    create_topic(f1.bootstrap, physical, 2)
    create_topic(f2.bootstrap, physical, 2)
    layout = [("f1", physical, 0), ("f1", physical, 1), ("f2", physical, 0), ("f2", physical, 1)]
    view = split_view({"f1": f1.bootstrap, "f2": f2.bootstrap}, topic, layout)
    view = with_coordination(view, "f1", f1.bootstrap)
    group = f"g-{topic}"
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        first = produce_values(proxy.bootstrap, topic, [f"a{i}" for i in range(200)])
        member = GroupMember(proxy.bootstrap, topic, group)
        member.start()
        wait_for(lambda: len(member.records) >= 200, 90, "first 200 records")
        assert sorted(member.records) == sorted(first)
        committed_before = {p: max(o for pp, o, _ in first if pp == p) + 1 for p in range(4)}

        f2.kill()
        more = [produce_values(proxy.bootstrap, topic, [f"b{p}-{i}" for i in range(30)], partition=p)
                for p in (0, 1)]
        wait_for(lambda: len(member.records) >= 260, 60, "records of the live cluster while f2 is down")
        assert sorted(member.records[200:]) == sorted(more[0] + more[1])
        member.stop()

        c = consumer(proxy.bootstrap, group)
        committed = {tp.partition: tp.offset for tp in
                     c.committed([TopicPartition(topic, p) for p in range(4)], timeout=30)}
        c.close()
        assert committed == {0: committed_before[0] + 30, 1: committed_before[1] + 30,
                             2: committed_before[2], 3: committed_before[3]}
        assert proxy.alive(), proxy.output()[-3000:]
