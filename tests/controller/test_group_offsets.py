"""Committed offsets on fedkafka's own wire code (docs/DESIGN.md §10): the requests as Kafka's AdminClient sends
them, the answers parsed, every error an exception, and a broker that does not answer a KafkaUnavailable (never
a hang, never a crash). Against a real broker: tests/controller/test_group_offsets_integration.py."""

from __future__ import annotations

import datetime
import socket
import threading

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v4.response import Coordinator, FindCoordinatorResponse
from kio.schema.offset_commit.v8.response import (
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
)
from kio.schema.offset_delete.v0.response import (
    OffsetDeleteResponse,
    OffsetDeleteResponsePartition,
    OffsetDeleteResponseTopic,
)
from kio.schema.offset_fetch.v8.response import (
    OffsetFetchResponse,
    OffsetFetchResponseGroup,
    OffsetFetchResponsePartitions,
    OffsetFetchResponseTopics,
)
from kio.schema.types import BrokerId, GroupId, TopicName
from kio.static.primitive import i32, i32Timedelta, i64

from fedkafka.controller import group_offsets
from fedkafka.controller.kafka_admin import KafkaAdmin, KafkaRefused, KafkaUnavailable
from fedkafka.protocol import codec
from fedkafka.security.upstream import PLAINTEXT

NO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))


def round_trip(request):
    """The request as a broker reads it off the wire."""
    frame = codec.encode_request(request, 7, "test")
    _header, decoded = codec.decode_request(frame[4:])
    return decoded


def test_offset_fetch_asks_every_partition_of_each_group():
    request = round_trip(group_offsets.offset_fetch_request(["g1", "g2"]))
    assert [(g.group_id, g.topics) for g in request.groups] == [("g1", None), ("g2", None)]
    assert request.require_stable is False


def test_offset_commit_is_an_admin_commit():
    """Generation -1, no member id, no group instance: what Kafka's AdminClient sends for
    alterConsumerGroupOffsets (a group without active members takes it)."""
    request = round_trip(group_offsets.offset_commit_request("g", [
        ("s.a", 0, 10, 3, "meta"), ("s.b", 2, 20, None, None), ("s.a", 1, 11, -1, None)]))
    assert (request.group_id, request.generation_id_or_member_epoch, request.member_id,
            request.group_instance_id) == ("g", -1, "", None)
    parts = {(t.name, p.partition_index): (p.committed_offset, p.committed_leader_epoch, p.committed_metadata)
             for t in request.topics for p in t.partitions}
    assert parts == {("s.a", 0): (10, 3, "meta"), ("s.a", 1): (11, -1, None), ("s.b", 2): (20, -1, None)}


def test_find_coordinator_asks_for_every_group_at_once():
    request = round_trip(group_offsets.find_coordinator_request(["g1", "g2"]))
    assert (request.key_type, request.coordinator_keys) == (0, ("g1", "g2"))


def coordinator(key, node=1, port=9092, error=ErrorCode.none):
    return Coordinator(key=key, node_id=BrokerId(node), host=f"b{node}", port=i32(port), error_code=error,
                       error_message=None)


def test_groups_are_asked_of_their_own_coordinator():
    response = FindCoordinatorResponse(throttle_time=NO_THROTTLE, coordinators=(
        coordinator("g1", 1), coordinator("g2", 2, 9093), coordinator("g3", 1)))
    assert group_offsets.coordinators_of(response) == {("b1", 9092): ["g1", "g3"], ("b2", 9093): ["g2"]}


@pytest.mark.parametrize("error, raised", [
    (ErrorCode.coordinator_not_available, KafkaUnavailable), (ErrorCode.coordinator_load_in_progress,
                                                              KafkaUnavailable),
    (ErrorCode.not_coordinator, KafkaUnavailable), (ErrorCode.group_authorization_failed, KafkaRefused)])
def test_a_group_without_a_coordinator_raises(error, raised):
    response = FindCoordinatorResponse(throttle_time=NO_THROTTLE, coordinators=(
        coordinator("g1"), coordinator("g2", error=error)))
    with pytest.raises(raised, match="g2"):
        group_offsets.coordinators_of(response)


def fetched(group="g", group_error=ErrorCode.none, partition_error=ErrorCode.none):
    partitions = (
        OffsetFetchResponsePartitions(partition_index=i32(0), committed_offset=i64(5), committed_leader_epoch=i32(2),
                                      metadata="m", error_code=ErrorCode.none),
        OffsetFetchResponsePartitions(partition_index=i32(1), committed_offset=i64(7), committed_leader_epoch=i32(-1),
                                      metadata="", error_code=partition_error),
        OffsetFetchResponsePartitions(partition_index=i32(2), committed_offset=i64(-1), committed_leader_epoch=i32(-1),
                                      metadata="", error_code=ErrorCode.none))
    return OffsetFetchResponseGroup(group_id=GroupId(group), error_code=group_error, topics=(
        OffsetFetchResponseTopics(name=TopicName("s.t"), partitions=partitions),))


def test_committed_offsets_are_parsed_per_group():
    response = OffsetFetchResponse(throttle_time=NO_THROTTLE, groups=(
        fetched("g1"), OffsetFetchResponseGroup(group_id=GroupId("empty"), topics=())))
    assert group_offsets.committed_of(response) == {
        "g1": [("s.t", 0, 5, 2, "m"), ("s.t", 1, 7, None, None)],  # partition 2: nothing committed
        "empty": []}


@pytest.mark.parametrize("group_error, partition_error, raised", [
    (ErrorCode.coordinator_load_in_progress, ErrorCode.none, KafkaUnavailable),
    (ErrorCode.not_coordinator, ErrorCode.none, KafkaUnavailable),
    (ErrorCode.group_authorization_failed, ErrorCode.none, KafkaRefused),
    (ErrorCode.none, ErrorCode.unstable_offset_commit, KafkaUnavailable),
    (ErrorCode.none, ErrorCode.topic_authorization_failed, KafkaRefused)])
def test_a_group_with_an_error_raises_never_a_partial_answer(group_error, partition_error, raised):
    """A copy without some of a group's offsets would lose its commits: the whole read fails instead."""
    response = OffsetFetchResponse(throttle_time=NO_THROTTLE, groups=(
        fetched("g1"), fetched("g2", group_error, partition_error)))
    with pytest.raises(raised, match="g2"):
        group_offsets.committed_of(response)


def committed(*errors):
    return OffsetCommitResponse(throttle_time=NO_THROTTLE, topics=(OffsetCommitResponseTopic(
        name=TopicName("s.t"), partitions=tuple(OffsetCommitResponsePartition(partition_index=i32(p), error_code=e)
                                                for p, e in enumerate(errors))),))


def test_commit_answers_name_the_refused_partitions():
    response = committed(ErrorCode.none, ErrorCode.unknown_topic_or_partition, ErrorCode.unknown_member_id)
    assert group_offsets.commit_errors(response) == {("s.t", 1): "UNKNOWN_TOPIC_OR_PARTITION",
                                                    ("s.t", 2): "UNKNOWN_MEMBER_ID"}
    assert group_offsets.commit_errors(committed(ErrorCode.none)) == {}


def test_a_coordinator_moving_during_a_commit_raises_unavailable():
    with pytest.raises(KafkaUnavailable, match="NOT_COORDINATOR"):
        group_offsets.commit_errors(committed(ErrorCode.not_coordinator, ErrorCode.not_coordinator))


def test_offset_delete_asks_each_partition_of_the_group():
    request = round_trip(group_offsets.offset_delete_request("g", [("s.a", 0), ("s.b", 2), ("s.a", 1)]))
    assert request.group_id == "g"
    assert {(t.name, p.partition_index) for t in request.topics for p in t.partitions} == {
        ("s.a", 0), ("s.a", 1), ("s.b", 2)}


def deleted(error=ErrorCode.none, *errors):
    return OffsetDeleteResponse(error_code=error, throttle_time=NO_THROTTLE, topics=(OffsetDeleteResponseTopic(
        name=TopicName("s.t"), partitions=tuple(OffsetDeleteResponsePartition(partition_index=i32(p), error_code=e)
                                                for p, e in enumerate(errors))),))


def test_delete_answers_name_the_refused_partitions_and_nothing_to_delete_is_no_error():
    """A live member subscribed to the topic refuses its partition; a group or a partition Kafka does not know holds
    no offset: nothing to delete."""
    response = deleted(ErrorCode.none, ErrorCode.none, ErrorCode.group_subscribed_to_topic,
                       ErrorCode.unknown_topic_or_partition)
    assert group_offsets.delete_errors("g", response) == {("s.t", 1): "GROUP_SUBSCRIBED_TO_TOPIC"}
    assert group_offsets.delete_errors("g", deleted(ErrorCode.group_id_not_found)) == {}


@pytest.mark.parametrize("error, raised", [(ErrorCode.non_empty_group, KafkaRefused),
                                           (ErrorCode.group_authorization_failed, KafkaRefused),
                                           (ErrorCode.coordinator_load_in_progress, KafkaUnavailable)])
def test_a_deletion_refused_as_a_whole_raises(error, raised):
    with pytest.raises(raised, match="offsets of group 'g' not deleted"):
        group_offsets.delete_errors("g", deleted(error))


def test_a_coordinator_moving_during_a_deletion_raises_unavailable():
    with pytest.raises(KafkaUnavailable, match="NOT_COORDINATOR"):
        group_offsets.delete_errors("g", deleted(ErrorCode.none, ErrorCode.not_coordinator))


def test_bootstrap_addresses():
    assert group_offsets.bootstrap_addresses("a:9092, SASL_SSL://b:9093,[::1]:9094") == [
        ("a", 9092), ("b", 9093), ("::1", 9094)]
    with pytest.raises(KafkaRefused):
        group_offsets.bootstrap_addresses("nohost")


@pytest.fixture
def silent_broker():
    """A listener that accepts connections and never answers (a broker stopped with SIGSTOP, a black hole)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()
    for conn in accepted:
        conn.close()


def test_a_broker_that_never_answers_is_unavailable(silent_broker):
    with pytest.raises(KafkaUnavailable, match=r"TimeoutError|timed out"):
        group_offsets.committed_offsets(silent_broker, ["g"], 0.3, PLAINTEXT.default)
    with pytest.raises(KafkaUnavailable):
        KafkaAdmin(timeout=0.3).commit_offsets("c", silent_broker, "g", [("s.t", 0, 1, None, None)])


def test_a_closed_port_is_unavailable_and_every_bootstrap_broker_is_tried(silent_broker):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(KafkaUnavailable, match=rf"127.0.0.1:{port}: ConnectionRefusedError.*; broker {silent_broker}"):
        group_offsets.committed_offsets(f"127.0.0.1:{port},{silent_broker}", ["g"], 0.3, PLAINTEXT.default)
