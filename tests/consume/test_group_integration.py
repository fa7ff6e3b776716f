"""A real confluent-kafka consumer group reads an 8-partition logical topic on 2 real clusters through a
real proxy (identity segments, c1 coordination cluster)."""

from __future__ import annotations

import collections

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from proxy.support import ProxyProcess, create_topic, split_view

from fedkafka.view.model import ProxyRole, shadow_topic

from .support import GroupMember, consumer, produce_values, wait_for, with_coordination

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(kafka_clusters, unique_name, tmp_path):
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 4)
    create_topic(c2.bootstrap, physical, 4)
    layout = [("c1", physical, p) for p in range(4)] + [("c2", physical, p) for p in range(4)]
    view = split_view({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, layout)
    view = with_coordination(view, "c1", c1.bootstrap)
    with ProxyProcess(tmp_path, view, role=ProxyRole.BOTH) as proxy:
        proxy.coordination = c1.bootstrap  # where the group really lives
        yield proxy, unique_name
        assert proxy.alive(), proxy.output()[-3000:]


def test_assigned_consumer_reads_everything_in_order(federation):
    proxy, topic = federation
    acks = produce_values(proxy.bootstrap, topic, [f"v{i}" for i in range(400)])
    c = consumer(proxy.bootstrap)
    c.assign([TopicPartition(topic, p, 0) for p in range(8)])
    got = []
    wait_for(lambda: got.extend(m for m in c.consume(100, 0.5) if not m.error()) or len(got) >= 400, 60, "records")
    c.close()
    assert sorted((m.partition(), m.offset(), m.value().decode()) for m in got) == sorted(acks)


def test_group_of_three_exactly_once_and_offsets_survive_restart(federation):
    proxy, topic = federation
    group = f"group-{topic}"
    first = produce_values(proxy.bootstrap, topic, [f"a{i}" for i in range(600)])
    members = [GroupMember(proxy.bootstrap, topic, group) for _ in range(3)]
    for m in members:
        m.start()
    total = lambda: sum(len(m.records) for m in members)  # noqa: E731
    wait_for(lambda: total() >= 600 and all(m.assignments for m in members), 90, "600 records over 3 members")
    wait_for(lambda: all(m.assignments and m.assignments[-1] for m in members)
             and sorted(p for m in members for p in m.assignments[-1]) == list(range(8)), 60, "a settled assignment")
    sizes = [len(m.assignments[-1]) for m in members]  # before stopping: each leave rebalances the rest
    for m in members:
        m.stop()
    consumed = [r for m in members for r in m.records]
    assert sorted(consumed) == sorted(first)  # exactly once: no loss, no duplicate
    assert all(not m.errors for m in members), [m.errors for m in members]
    assert max(sizes) - min(sizes) <= 1

    second = produce_values(proxy.bootstrap, topic, [f"b{i}" for i in range(200)])
    restarted = [GroupMember(proxy.bootstrap, topic, group) for _ in range(2)]
    for m in restarted:
        m.start()
    wait_for(lambda: sum(len(m.records) for m in restarted) >= 200, 90, "200 new records after restart")
    for m in restarted:
        m.stop()
    again = [r for m in restarted for r in m.records]
    assert sorted(again) == sorted(second)  # committed offsets survived: nothing of the first round again
    per_partition = collections.Counter(p for p, _, _ in again)
    assert len(per_partition) == 8


def test_rebalances_on_member_join_and_leave(federation):
    proxy, topic = federation
    group = f"group-{topic}"
    a = GroupMember(proxy.bootstrap, topic, group)
    a.start()
    wait_for(lambda: a.assignments and len(a.assignments[-1]) == 8, 60, "first member owns all 8 partitions")
    b = GroupMember(proxy.bootstrap, topic, group)
    b.start()
    wait_for(lambda: b.assignments and len(b.assignments[-1]) == 4 and len(a.assignments[-1]) == 4, 60,
             "join: 4 partitions each")
    assert sorted(a.assignments[-1] + b.assignments[-1]) == list(range(8))
    # at the coordinator the group is subscribed to the shadow topic (so its offsets do not expire early)
    admin = AdminClient({"bootstrap.servers": proxy.coordination})
    (described,) = [f.result(20) for f in admin.describe_consumer_groups([group]).values()]
    assert {tp.topic for m in described.members for tp in m.assignment.topic_partitions} == {shadow_topic(topic)}
    assert {m.client_id for m in described.members} == {"rdkafka"}  # the clients' own id, not the proxy's
    sent = produce_values(proxy.bootstrap, topic, [f"j{i}" for i in range(160)])
    wait_for(lambda: len(a.records) + len(b.records) >= 160, 60, "records over two members")
    b.stop()  # LeaveGroup: a takes everything back
    wait_for(lambda: len(a.assignments[-1]) == 8, 60, "leave: first member owns all 8 again")
    more = produce_values(proxy.bootstrap, topic, [f"k{i}" for i in range(80)])
    wait_for(lambda: len(a.records) + len(b.records) >= 240, 60, "records after the leave")
    a.stop()
    assert sorted(a.records + b.records) == sorted(sent + more)
