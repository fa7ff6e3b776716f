"""Consumer groups' committed offsets, read and written with fedkafka's own Kafka wire code (docs/DESIGN.md §10).

Not librdkafka's ListConsumerGroupOffsets / AlterConsumerGroupOffsets: its coordinator-targeted admin calls can
abort the whole process (an assertion on `eonce->refcnt`, librdkafka issue #4605) when the coordinator's
connection drops mid-request, e.g. while a broker of the coordination cluster restarts. Here FindCoordinator goes
to any bootstrap broker, then OffsetFetch / OffsetCommit / OffsetDelete to the coordinator, each on a blocking
socket of its own with timeouts (TLS and SASL as the cluster is configured): every failure is an exception,
`KafkaUnavailable` (retriable: no answer, coordinator moving or loading) or `KafkaRefused` (the cluster said no).
"""

from __future__ import annotations

import time

from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
from kio.schema.offset_commit.v8.request import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from kio.schema.offset_delete.v0.request import (
    OffsetDeleteRequest,
    OffsetDeleteRequestPartition,
    OffsetDeleteRequestTopic,
)
from kio.schema.offset_fetch.v8.request import OffsetFetchRequest, OffsetFetchRequestGroup
from kio.schema.types import GroupId, TopicName
from kio.static.primitive import i8, i32, i64

from fedkafka.controller.kafka_admin import Committed, KafkaRefused, KafkaUnavailable, _ask, _connect
from fedkafka.security.upstream import UpstreamSecurity

GROUP_KEY_TYPE = 0
RETRY_BACKOFF_S = 0.1
# what a coordinator answers while it moves or loads: ask again (a new FindCoordinator) later
COORDINATOR_ERRORS = frozenset({ErrorCode.coordinator_not_available, ErrorCode.coordinator_load_in_progress,
                                ErrorCode.not_coordinator})


def committed_offsets(bootstrap: str, groups: list[str], timeout: float,
                      security: UpstreamSecurity) -> dict[str, list[Committed]]:
    """Every committed offset of each of `groups` (a group without any: an empty list)."""
    return _patiently(lambda: _committed_once(bootstrap, groups, timeout, security), timeout)


def commit_offsets(bootstrap: str, group: str, offsets: list[Committed], timeout: float,
                   security: UpstreamSecurity) -> dict[tuple[str, int], str]:
    """Commit `offsets` for `group` as an admin does (no member, no generation: the group must have no active
    member); returns the partitions the coordinator refused, with Kafka's error name."""
    if not offsets:
        return {}
    return _patiently(lambda: _commit_once(bootstrap, group, offsets, timeout, security), timeout)


def delete_offsets(bootstrap: str, group: str, partitions: list[tuple[str, int]], timeout: float,
                   security: UpstreamSecurity) -> dict[tuple[str, int], str]:
    """OffsetDelete of `group`'s committed offsets of `partitions`, as kafka-consumer-groups --delete-offsets does:
    the partitions the coordinator refused, with Kafka's error name (GROUP_SUBSCRIBED_TO_TOPIC: a live member
    consumes the topic); a refusal of the whole request (NON_EMPTY_GROUP, an authorization) raises KafkaRefused. A
    group or a partition Kafka does not know holds no offset: nothing to delete, not an error."""
    if not partitions:
        return {}
    return _patiently(lambda: _delete_once(bootstrap, group, partitions, timeout, security), timeout)


def _patiently(attempt, timeout: float):
    """`attempt()`, again after a KafkaUnavailable until `timeout` ran out, as librdkafka retries within its
    request timeout: a coordinator loading, moving or not created yet (a cluster's first FindCoordinator
    creates __consumer_offsets) answers in a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except KafkaUnavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(RETRY_BACKOFF_S)


def _committed_once(bootstrap: str, groups: list[str], timeout: float,
                    security: UpstreamSecurity) -> dict[str, list[Committed]]:
    found: dict[str, list[Committed]] = {}
    for (host, port), members in _coordinators(bootstrap, groups, timeout, security).items():
        found.update(committed_of(_exchange(host, port, offset_fetch_request(members), timeout, security)))
    return found


def _commit_once(bootstrap: str, group: str, offsets: list[Committed], timeout: float,
                 security: UpstreamSecurity) -> dict[tuple[str, int], str]:
    coordinator = next(iter(_coordinators(bootstrap, [group], timeout, security)), None)
    if coordinator is None:
        raise KafkaUnavailable(f"no coordinator of group {group!r} in the answer")
    host, port = coordinator
    return commit_errors(_exchange(host, port, offset_commit_request(group, offsets), timeout, security))


def _delete_once(bootstrap: str, group: str, partitions: list[tuple[str, int]], timeout: float,
                 security: UpstreamSecurity) -> dict[tuple[str, int], str]:
    coordinator = next(iter(_coordinators(bootstrap, [group], timeout, security)), None)
    if coordinator is None:
        raise KafkaUnavailable(f"no coordinator of group {group!r} in the answer")
    host, port = coordinator
    return delete_errors(group, _exchange(host, port, offset_delete_request(group, partitions), timeout, security))


# -- requests and answers (pure) -------------------------------------------------------------------------

def find_coordinator_request(groups: list[str]) -> FindCoordinatorRequest:
    return FindCoordinatorRequest(key_type=i8(GROUP_KEY_TYPE), coordinator_keys=tuple(groups))


def coordinators_of(response) -> dict[tuple[str, int], list[str]]:
    """(host, port) of each coordinator -> the groups it coordinates; a group without one raises."""
    found: dict[tuple[str, int], list[str]] = {}
    for c in response.coordinators:
        _check(c.error_code, f"coordinator of group {c.key!r}: {c.error_message or ''}")
        found.setdefault((c.host, int(c.port)), []).append(c.key)
    return found


def offset_fetch_request(groups: list[str]) -> OffsetFetchRequest:
    """All the committed offsets of each group (topics null: every partition the group committed)."""
    return OffsetFetchRequest(groups=tuple(OffsetFetchRequestGroup(group_id=GroupId(g), topics=None)
                                           for g in groups), require_stable=False)


def committed_of(response) -> dict[str, list[Committed]]:
    """Each group's committed offsets; a group or a partition answering an error raises (never a group with
    some of its offsets missing: a copy without them would lose commits)."""
    found: dict[str, list[Committed]] = {}
    for group in response.groups:
        _check(group.error_code, f"offsets of group {group.group_id!r}")
        found[group.group_id] = []
        for topic in group.topics:
            for p in topic.partitions:
                _check(p.error_code, f"offset of group {group.group_id!r} on {topic.name}/{p.partition_index}")
                if p.committed_offset >= 0:  # -1: nothing committed
                    found[group.group_id].append((
                        topic.name, int(p.partition_index), int(p.committed_offset),
                        int(p.committed_leader_epoch) if p.committed_leader_epoch >= 0 else None,
                        p.metadata or None))  # Kafka keeps "no metadata" as ""
    return found


def offset_commit_request(group: str, offsets: list[Committed]) -> OffsetCommitRequest:
    """What Kafka's AdminClient sends for alterConsumerGroupOffsets: generation -1, no member, no instance."""
    topics: dict[str, list[OffsetCommitRequestPartition]] = {}
    for topic, partition, offset, epoch, metadata in offsets:
        topics.setdefault(topic, []).append(OffsetCommitRequestPartition(
            partition_index=i32(partition), committed_offset=i64(offset),
            committed_leader_epoch=i32(epoch if epoch is not None and epoch >= 0 else -1),
            committed_metadata=metadata))
    return OffsetCommitRequest(group_id=GroupId(group), generation_id_or_member_epoch=i32(-1), member_id="",
                               group_instance_id=None, topics=tuple(
                                   OffsetCommitRequestTopic(name=TopicName(t), partitions=tuple(ps))
                                   for t, ps in topics.items()))


def commit_errors(response) -> dict[tuple[str, int], str]:
    """The partitions the coordinator refused; a coordinator moving or loading raises KafkaUnavailable (it
    answers that on every partition: the whole commit is to be sent again, to the coordinator found anew)."""
    return _refused_partitions(response.topics, "offset commit")


def offset_delete_request(group: str, partitions: list[tuple[str, int]]) -> OffsetDeleteRequest:
    topics: dict[str, list[OffsetDeleteRequestPartition]] = {}
    for topic, partition in partitions:
        topics.setdefault(topic, []).append(OffsetDeleteRequestPartition(partition_index=i32(partition)))
    return OffsetDeleteRequest(group_id=GroupId(group), topics=tuple(
        OffsetDeleteRequestTopic(name=TopicName(t), partitions=tuple(ps)) for t, ps in topics.items()))


# what leaves no committed offset to delete: a group the coordinator does not know, a partition Kafka does not know
# (a topic deleted since its offsets were read: Kafka deleted them with it)
NOTHING_TO_DELETE = frozenset({ErrorCode.group_id_not_found, ErrorCode.unknown_topic_or_partition})


def delete_errors(group: str, response) -> dict[tuple[str, int], str]:
    """The partitions the coordinator refused to delete; a refusal of the whole request raises (KafkaRefused), and
    a coordinator moving or loading KafkaUnavailable (the deletion is to be sent again, to the one found anew)."""
    if ErrorCode(response.error_code) in NOTHING_TO_DELETE:
        return {}
    _check(response.error_code, f"offsets of group {group!r} not deleted")
    return _refused_partitions(response.topics, "offset deletion", NOTHING_TO_DELETE)


def _refused_partitions(topics, what: str, nothing_to_do: frozenset[ErrorCode] = frozenset()) -> dict[
        tuple[str, int], str]:
    """The partitions of a commit's or deletion's answer refused, by Kafka's error name (those answering a code of
    `nothing_to_do` are not refused); a coordinator moving or loading raises KafkaUnavailable (it answers that on
    every partition: the whole request is to be sent again, to the coordinator found anew)."""
    refused: dict[tuple[str, int], str] = {}
    for topic in topics:
        for p in topic.partitions:
            code = ErrorCode(p.error_code)
            if code in COORDINATOR_ERRORS:
                raise KafkaUnavailable(f"{what} on {topic.name}/{p.partition_index}: {code.name.upper()}")
            if code != ErrorCode.none and code not in nothing_to_do:
                refused[(topic.name, int(p.partition_index))] = code.name.upper()
    return refused


def _check(error_code: int, what: str) -> None:
    code = ErrorCode(error_code)
    if code == ErrorCode.none:
        return
    if code.retriable or code in COORDINATOR_ERRORS:
        raise KafkaUnavailable(f"{what}: {code.name.upper()}")
    raise KafkaRefused(f"{what}: {code.name.upper()}", code.name.upper())


# -- the wire --------------------------------------------------------------------------------------------

def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """"host:port,host:port" (a scheme prefix and IPv6 brackets allowed) as (host, port) pairs."""
    addresses = []
    for entry in bootstrap.split(","):
        entry = entry.strip().rpartition("://")[2]
        host, _sep, port = entry.rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    if not addresses:
        raise KafkaRefused(f"no broker address in bootstrap {bootstrap!r}")
    return addresses


def _coordinators(bootstrap: str, groups: list[str], timeout: float,
                  security: UpstreamSecurity) -> dict[tuple[str, int], list[str]]:
    """FindCoordinator, asked of each bootstrap broker in turn until one answers."""
    unanswered: list[str] = []
    for host, port in bootstrap_addresses(bootstrap):
        try:
            response = _exchange(host, port, find_coordinator_request(groups), timeout, security)
        except KafkaUnavailable as e:
            unanswered.append(str(e))
            continue
        return coordinators_of(response)
    raise KafkaUnavailable("; ".join(unanswered))


def _exchange(host: str, port: int, request, timeout: float, security: UpstreamSecurity):
    """One request, one answer, on a connection of its own; no answer in time is KafkaUnavailable."""
    try:
        with _connect(host, port, timeout, security) as sock:
            return _ask(sock, request, 1)
    except (OSError, ValueError) as e:  # refused, reset, timed out, TLS, SASL, an answer that does not decode
        raise KafkaUnavailable(f"broker {host}:{port}: {type(e).__name__}: {e}") from None
