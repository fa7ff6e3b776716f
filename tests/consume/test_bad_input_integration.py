"""Bad input on the consume path gets Kafka error codes and the connection stays usable (docs/DESIGN.md §4.8).

A raw protocol client (kio-encoded requests on one TCP connection) talks to a real proxy over real clusters.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import struct
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
from kio.static.primitive import i8
from proxy.support import ProxyProcess, create_topic

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.upstream import UpstreamConnection
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

from .support import produce_values, with_coordination

pytestmark = pytest.mark.integration

MAX = (1 << 63) - 1


@pytest.fixture
def federation(kafka_clusters, unique_name, tmp_path):
    c1 = kafka_clusters[0]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 2)
    produce_values(c1.bootstrap, physical, [f"v{i}" for i in range(20)], partition=0)
    produce_values(c1.bootstrap, physical, [f"w{i}" for i in range(20)], partition=1)
    chains = (PartitionChain(segments=(Segment("c1", physical, 0, 0, None, 0),), leader_epoch=4),
              PartitionChain(segments=(Segment("c1", physical, 1, 0, 10, 0), Segment("c1", physical, 1, 10, None, 10))))
    view = View(version=1, clusters={"c1": Cluster("c1", c1.bootstrap)},
                topics={unique_name: LogicalTopic(unique_name, uuid.uuid4().hex, chains)})
    view = with_coordination(view, "c1", c1.bootstrap)
    with ProxyProcess(tmp_path, view, role=ProxyRole.CPROXY) as proxy:
        yield proxy, unique_name
        assert proxy.alive(), proxy.output()[-3000:]


def fetch(topic: str, partition: int, offset: int, *, max_bytes: int = 1 << 20, epoch: int = -1, session_id: int = 0):
    return build(request_type(1, 12), {
        "replica_id": -1, "max_wait": datetime.timedelta(milliseconds=50), "min_bytes": 1, "max_bytes": max_bytes,
        "isolation_level": 0, "session_id": session_id, "session_epoch": -1, "rack_id": "",
        "forgotten_topics_data": [], "topics": [{"topic": topic, "partitions": [
            {"partition": partition, "current_leader_epoch": epoch, "fetch_offset": offset,
             "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": max_bytes}]}]})


def commit(group: str, topic: str, partition: int, offset: int):
    return build(request_type(8, 8), {"group_id": group, "generation_id_or_member_epoch": -1, "member_id": "",
                                      "group_instance_id": None, "topics": [{"name": topic, "partitions": [
                                          {"partition_index": partition, "committed_offset": offset,
                                           "committed_leader_epoch": -1, "committed_metadata": None}]}]})


def list_offsets(topic: str, partition: int, timestamp: int, epoch: int = -1):
    return build(request_type(2, 7), {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": topic, "partitions": [{"partition_index": partition, "current_leader_epoch": epoch,
                                        "timestamp": timestamp}]}]})


def first_partition(response):
    topics = getattr(response, "responses", None) or response.topics
    return topics[0].partitions[0]


async def exchange(bootstrap: str, requests: list) -> list:
    host, port = bootstrap.rsplit(":", 1)
    conn = UpstreamConnection(host, int(port), "test-client")
    await conn.connect()
    try:
        return [await asyncio.wait_for(conn.send(r), 30) for r in requests]
    finally:
        conn.close()


def test_bad_fetches_and_commits_get_error_codes_on_one_usable_connection(federation):
    proxy, topic = federation
    answers = asyncio.run(exchange(proxy.bootstrap, [
        fetch("no-such-topic", 0, 0),
        fetch(topic, 9, 0),
        fetch(topic, 0, -5),
        fetch(topic, 0, MAX),
        fetch(topic, 0, 1 << 40),
        fetch(topic, 0, 0, epoch=3),
        fetch(topic, 0, 0, epoch=5),
        fetch(topic, 0, 0, session_id=1234),
        fetch(topic, 0, 0, max_bytes=0),
        commit(f"g-{topic}", topic, 2, 5),
        commit(f"g-{topic}", "no-such-topic", 0, 5),
        commit(f"g-{topic}", topic, -1, 5),
        list_offsets("no-such-topic", 0, -1),
        list_offsets(topic, 0, -1, epoch=9),
        list_offsets(topic, 0, -7),
        fetch(topic, 0, 0),  # after all that: the connection still serves
        fetch(topic, 1, 10),
    ]))
    codes = [a.error_code if i == 7 else first_partition(a).error_code for i, a in enumerate(answers)]
    assert codes == [
        ErrorCode.unknown_topic_or_partition, ErrorCode.unknown_topic_or_partition,
        ErrorCode.offset_out_of_range, ErrorCode.offset_out_of_range, ErrorCode.offset_out_of_range,
        ErrorCode.fenced_leader_epoch, ErrorCode.unknown_leader_epoch, ErrorCode.fetch_session_id_not_found,
        ErrorCode.none,
        ErrorCode.unknown_topic_or_partition, ErrorCode.unknown_topic_or_partition,
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.unknown_topic_or_partition, ErrorCode.unknown_leader_epoch, ErrorCode.invalid_request,
        ErrorCode.none, ErrorCode.none,
    ]
    assert first_partition(answers[8]).records  # max_bytes 0 still returns the first batch, as Kafka does
    ok = first_partition(answers[15])
    assert ok.high_watermark == 20 and ok.records
    sealed_then_active = first_partition(answers[16])
    assert sealed_then_active.high_watermark == 20 and sealed_then_active.records


def test_lengths_that_lie_from_a_client_or_a_group_member_do_not_kill_the_proxy(federation):
    """A Metadata v12 request declaring 2^32 - 1 topics made kio's native reader ask for 34 GB: the
    allocation failure aborted the proxy (every client's connection gone). Consumer-protocol bytes in a
    JoinGroup reach the proxy's decoder too (and, through the coordinator, every member's)."""
    proxy, topic = federation
    host, port = proxy.bootstrap.rsplit(":", 1)
    lie = struct.pack(">hhih", 3, 12, 1, -1) + b"\x00" + b"\x80\x80\x80\x80\x10"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(lie)) + lie)
        assert s.recv(4) == b""  # not decodable: that connection is closed, nothing else
    subscription_lie = struct.pack(">h", 1) + struct.pack(">i", 2**31 - 1)  # v1 with 2^31 - 1 topics
    join = build(request_type(11, 5), {
        "group_id": f"g-{topic}", "session_timeout": datetime.timedelta(seconds=10),
        "rebalance_timeout": datetime.timedelta(seconds=10), "member_id": "", "group_instance_id": None,
        "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": subscription_lie}]})
    for _ in range(40):  # a fresh cluster's coordinator needs a moment, as any client finds out
        joined, after = asyncio.run(exchange(proxy.bootstrap, [join, fetch(topic, 0, 0)]))
        if not joined.error_code.retriable:
            break
        time.sleep(0.5)
    assert joined.error_code == ErrorCode.member_id_required  # forwarded as it came: the broker's answer
    assert first_partition(after).error_code == ErrorCode.none and first_partition(after).records
    assert proxy.alive(), proxy.output()[-3000:]


def test_a_join_group_whose_subscription_is_past_the_element_limit_closes_only_its_connection(federation):
    """A subscription naming 100,001 topics (a 16 MiB one: ~5 million) is decoded against --max-request-elements
    (default 100,000), as the request's own arrays are: past it the connection is closed with one log line; one of
    100,000 names is forwarded, and the proxy serves on."""
    proxy, topic = federation
    host, port = proxy.bootstrap.rsplit(":", 1)

    def join(names: int):
        subscription = struct.pack(">hi", 0, names) + b"\x00\x01a" * names + struct.pack(">i", -1)
        return build(request_type(11, 5), {
            "group_id": f"g-{topic}", "session_timeout": datetime.timedelta(seconds=10),
            "rebalance_timeout": datetime.timedelta(seconds=10), "member_id": "", "group_instance_id": None,
            "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": subscription}]})

    frame = codec.encode_request(join(100_001), 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(frame)
        assert s.recv(4) == b""  # closed, no answer
    for _ in range(40):  # a fresh cluster's coordinator needs a moment, as any client finds out
        joined, after = asyncio.run(exchange(proxy.bootstrap, [join(100_000), fetch(topic, 0, 0)]))
        if not joined.error_code.retriable:
            break
        time.sleep(0.5)
    assert joined.error_code == ErrorCode.member_id_required  # forwarded: the broker's answer
    assert first_partition(after).error_code == ErrorCode.none and first_partition(after).records
    assert "JoinGroup subscriptions of group" in proxy.output() and "--max-request-elements" in proxy.output()


def group_join(group: str, member_id: str, names: int = 1000):
    """JoinGroup v3 (no MEMBER_ID_REQUIRED round): a subscription naming topic "a" `names` times."""
    subscription = struct.pack(">hi", 0, names) + b"\x00\x01a" * names + struct.pack(">i", -1)
    return build(request_type(11, 3), {
        "group_id": group, "session_timeout": datetime.timedelta(seconds=60),
        "rebalance_timeout": datetime.timedelta(seconds=60), "member_id": member_id, "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": subscription}]})


async def oversized_group(bootstrap: str, coordination: str, group: str, members: int):
    """`members` members join through the proxy, each with a subscription at the limit; the first one, alone at
    first and so the leader, joins again once the coordinator holds them all: (its answer, the followers')."""
    host, port = bootstrap.rsplit(":", 1)
    conns = [UpstreamConnection(host, int(port), f"member-{i}") for i in range(members)]
    for conn in conns:
        await conn.connect()
    try:
        for _ in range(40):  # a fresh cluster's coordinator needs a moment, as any client finds out
            first = await asyncio.wait_for(conns[0].send(group_join(group, "")), 60)
            if not first.error_code.retriable:
                break
            await asyncio.sleep(0.5)
        assert (first.error_code, len(first.members)) == (ErrorCode.none, 1)  # alone: renamed, answered
        pending = [asyncio.ensure_future(c.send(group_join(group, ""))) for c in conns[1:]]
        describe = build(request_type(15, 5), {"groups": [group], "include_authorized_operations": False})
        for _ in range(120):  # each follower's JoinGroup is held until the leader joins again
            (described,) = (await asyncio.wait_for(conns[0].send(describe), 30)).groups
            if len(described.members) == members:  # no member bytes before the group is Stable
                break
            await asyncio.sleep(0.5)
        leader = await asyncio.wait_for(conns[0].send(group_join(group, first.member_id)), 60)
        followers = await asyncio.wait_for(asyncio.gather(*pending), 60)
        # the leader syncs at the coordinator itself, around the proxy: the group becomes Stable
        (found,) = (await exchange(coordination, [FindCoordinatorRequest(
            key_type=i8(0), coordinator_keys=(group,))]))[0].coordinators
        (synced,) = await exchange(f"{found.host}:{found.port}", [build(request_type(14, 3), {
            "group_id": group, "generation_id": followers[0].generation_id, "member_id": first.member_id,
            "group_instance_id": None, "assignments": []})])
        assert synced.error_code == ErrorCode.none
        return leader, followers
    finally:
        for conn in conns:
            conn.close()


def test_a_group_whose_members_together_pass_the_answer_budget_is_answered_group_max_size_reached(
        kafka_clusters, unique_name, tmp_path):
    """Review (rev2): each member's subscription is held to --max-request-elements in its own JoinGroup, but only
    the coordinator's answers hold them together (53 x 100,000 names held the loop ~30 s, for the leader's
    JoinGroup answer and for each DescribeGroups). With a limit of 1,000, six members of 1,000 names each are
    accepted; the leader's JoinGroup answer (6,000 > 4 x 1,000) is answered GROUP_MAX_SIZE_REACHED, the followers'
    answers pass, and once the group is Stable a real AdminClient's describe of it fails that group with
    GROUP_MAX_SIZE_REACHED. One WARNING each names the group and the flag; the proxy serves on."""
    c1 = kafka_clusters[0]
    view = with_coordination(View(version=1, clusters={"c1": Cluster("c1", c1.bootstrap)}, topics={}), "c1",
                             c1.bootstrap)
    group = f"big-{unique_name}"
    with ProxyProcess(tmp_path, view, role=ProxyRole.CPROXY, extra=("--max-request-elements", "1000")) as proxy:
        leader, followers = asyncio.run(oversized_group(proxy.bootstrap, c1.bootstrap, group, 6))
        assert (leader.error_code, leader.members) == (ErrorCode.group_max_size_reached, ())
        assert [(f.error_code, f.members) for f in followers] == [(ErrorCode.none, ())] * 5
        admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
        with pytest.raises(KafkaException) as refused:
            admin.describe_consumer_groups([group], request_timeout=30)[group].result()
        assert refused.value.args[0].code() == KafkaError.GROUP_MAX_SIZE_REACHED
        warnings = [line for line in proxy.output().splitlines() if "answered GROUP_MAX_SIZE_REACHED" in line]
        assert len(warnings) == 2 and all(repr(group) in w and "--max-request-elements" in w for w in warnings)
        assert "JoinGroup answer" in warnings[0] and "DescribeGroups answer" in warnings[1]
        assert proxy.alive(), proxy.output()[-3000:]
