"""The controller's only contact with physical clusters: confluent-kafka AdminClient, always with timeouts.

A dead cluster shows up as `Scan(reachable=False)` or a `KafkaUnavailable`; nothing here may hang or crash
the controller.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from fedkafka.security.scram import AuthenticationFailed
from fedkafka.security.upstream import PLAINTEXT, UpstreamConfig, UpstreamSecurity, sasl_exchange

log = logging.getLogger(__name__)


# (topic, partition, offset, leader epoch, metadata): a group's committed offset
Committed = tuple[str, int, int, int | None, str | None]


class KafkaUnavailable(RuntimeError):
    """A cluster did not answer in time."""


class KafkaRefused(ValueError):
    """A cluster answered and refused the request (bad config, invalid name): the caller's input is wrong."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code  # Kafka's error name, e.g. "INVALID_CONFIG"


@dataclass(frozen=True, slots=True)
class Scan:
    cluster: str
    reachable: bool
    error: str | None = None
    topics: dict[str, int] = field(default_factory=dict)  # physical topic -> partition count
    leaderless: int = 0  # partitions without a leader
    seconds: float = 0.0


class KafkaAdmin:
    """One cached AdminClient per (cluster, bootstrap)."""

    def __init__(self, timeout: float = 3.0, upstream: UpstreamConfig = PLAINTEXT):
        self.timeout = timeout
        self.upstream = upstream  # each cluster's TLS and SASL settings (docs/DESIGN.md §11)
        self._clients: dict[tuple[str, str], AdminClient] = {}
        self._lock = threading.Lock()

    def client(self, cluster: str, bootstrap: str) -> AdminClient:
        with self._lock:
            key = (cluster, bootstrap)
            if key not in self._clients:
                self._clients[key] = AdminClient({
                    "bootstrap.servers": bootstrap, "socket.timeout.ms": int(self.timeout * 1000),
                    "socket.connection.setup.timeout.ms": int(self.timeout * 1000),
                    "reconnect.backoff.max.ms": 1000,
                    "log_level": 0,  # a dead cluster would log every reconnect; the scan reports it once
                    **self.upstream.for_cluster(cluster).librdkafka()})
            return self._clients[key]

    def scan(self, cluster: str, bootstrap: str) -> Scan:
        import time

        started = time.monotonic()
        try:
            md = self.client(cluster, bootstrap).list_topics(timeout=self.timeout)
        except KafkaException as e:
            return Scan(cluster, False, str(e.args[0]), seconds=time.monotonic() - started)
        if not md.brokers:
            return Scan(cluster, False, "no broker in metadata", seconds=time.monotonic() - started)
        topics = {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}
        leaderless = sum(1 for t in md.topics.values() for p in t.partitions.values() if p.leader < 0)
        return Scan(cluster, True, None, topics, leaderless, time.monotonic() - started)

    def ensure_topic(self, cluster: str, bootstrap: str, name: str, partitions: int,
                     config: dict[str, str] | None = None) -> bool:
        """Create `name` with at least `partitions` partitions (grow it if smaller). True when something changed."""
        admin = self.client(cluster, bootstrap)
        fut = admin.create_topics([NewTopic(name, partitions, replication_factor=-1, config=dict(config or {}))],
                                  request_timeout=self.timeout, operation_timeout=self.timeout)[name]
        try:
            fut.result(timeout=self.timeout + 2)
            return True
        except KafkaException as e:
            err: KafkaError = e.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise _classify(cluster, err) from None
        except TimeoutError:
            raise KafkaUnavailable(f"cluster {cluster} ({bootstrap}) did not answer CreateTopics in time") from None
        have = self._partition_count(cluster, bootstrap, name)
        if have >= partitions:
            return False
        fut = admin.create_partitions([NewPartitions(name, partitions)], request_timeout=self.timeout)[name]
        try:
            fut.result(timeout=self.timeout + 2)
        except KafkaException as e:
            raise _classify(cluster, e.args[0]) from None
        return True

    def log_offsets(self, cluster: str, bootstrap: str, partitions: list[tuple[str, int]]) -> dict[
            tuple[str, int], tuple[int, int]]:
        """(log start, log end) of each physical partition that answered; the others are left out.

        The end is the high watermark. A partition answering an error is left out, never given a low value:
        in particular OFFSET_NOT_AVAILABLE, Kafka's answer while a new leader's high watermark is still
        behind the start of its epoch (it may lag the old leader's). The seal read retries what is left out."""
        if not partitions:
            return {}
        admin = self.client(cluster, bootstrap)
        answers: dict[str, dict] = {}
        for name, spec in (("start", OffsetSpec.earliest()), ("end", OffsetSpec.latest())):
            futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in partitions},
                                         request_timeout=self.timeout)
            answers[name] = {}
            for tp, fut in futures.items():
                try:
                    offset = fut.result(timeout=self.timeout + 2).offset
                except (KafkaException, TimeoutError) as e:
                    log.info("%s %s/%s: %s offset not read: %s", cluster, tp.topic, tp.partition, name, e)
                    continue
                if offset >= 0:  # no offset is no answer
                    answers[name][(tp.topic, tp.partition)] = offset
        return {k: (answers["start"][k], v) for k, v in answers["end"].items() if k in answers["start"]}

    def log_end_offsets(self, cluster: str, bootstrap: str, partitions: list[tuple[str, int]]) -> dict[
            tuple[str, int], int]:
        """Log end offset (not the high watermark) of each physical partition, asked of its leader; partitions
        without a leader or an answer are left out.

        The AdminClient only reads the high watermark. Kafka answers ListOffsets LATEST from the log end when
        the request carries the debugging replica id (-2) instead of a consumer's (-1): what a leader appended
        but its followers do not hold yet shows up as log end > high watermark."""
        if not partitions:
            return {}
        try:
            md = self.client(cluster, bootstrap).list_topics(timeout=self.timeout)
        except KafkaException as e:
            raise _classify(cluster, e.args[0]) from None
        by_leader: dict[int, list[tuple[str, int]]] = {}
        for topic, partition in partitions:
            meta = md.topics.get(topic)
            leader = meta.partitions[partition].leader if meta and partition in meta.partitions else -1
            if leader >= 0 and leader in md.brokers:
                by_leader.setdefault(leader, []).append((topic, partition))
        found: dict[tuple[str, int], int] = {}
        for leader, parts in by_leader.items():
            broker = md.brokers[leader]
            try:
                # confluent-kafka's BrokerMetadata declares `host = None`; librdkafka always fills it in
                found.update(_log_ends_of(cast(str, broker.host), broker.port, parts, self.timeout,
                                          self.upstream.for_cluster(cluster)))
            except (OSError, ValueError, AuthenticationFailed) as e:
                log.info("%s broker %s: log ends not read: %s", cluster, leader, e)
        return found

    def consumer_groups(self, cluster: str, bootstrap: str) -> list[str]:
        """Every consumer group's id (ListGroups goes to every broker: not a coordinator-targeted call). A broker
        that did not answer (librdkafka's `errors`, next to the groups of those that did in `valid`) raises: a
        listing without the groups it coordinates would read as their absence (a coordination move deleting their
        offsets on its target, docs/DESIGN.md §10.1)."""
        try:
            listed = self.client(cluster, bootstrap).list_consumer_groups(request_timeout=self.timeout)
            result = listed.result(timeout=self.timeout + 2)
        except KafkaException as e:
            raise _classify(cluster, e.args[0]) from None
        except TimeoutError:
            raise KafkaUnavailable(f"cluster {cluster} ({bootstrap}) did not list its groups in time") from None
        if result.errors:
            raise KafkaUnavailable(f"cluster {cluster} ({bootstrap}) listed its groups only partly: "
                                   f"{len(result.errors)} error(s), the first {_error_text(result.errors[0])}")
        return [g.group_id for g in result.valid]

    def committed_offsets(self, cluster: str, bootstrap: str, groups: list[str]) -> dict[str, list[Committed]]:
        """Each group's committed offsets, read on fedkafka's own connections, never with librdkafka's
        coordinator calls (see group_offsets). KafkaUnavailable or KafkaRefused when any group's are not read."""
        from fedkafka.controller import group_offsets

        if not groups:
            return {}
        return group_offsets.committed_offsets(bootstrap, groups, self.timeout, self.upstream.for_cluster(cluster))

    def commit_offsets(self, cluster: str, bootstrap: str, group: str,
                       offsets: list[Committed]) -> dict[tuple[str, int], str]:
        """Commit `group`'s offsets as an admin (see group_offsets): the partitions refused, by Kafka's error
        name; KafkaUnavailable when the coordinator did not take the commit at all."""
        from fedkafka.controller import group_offsets

        return group_offsets.commit_offsets(bootstrap, group, offsets, self.timeout,
                                            self.upstream.for_cluster(cluster))

    def delete_offsets(self, cluster: str, bootstrap: str, group: str,
                       partitions: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """Delete `group`'s committed offsets of `partitions` (OffsetDelete, see group_offsets): the partitions
        refused, by Kafka's error name; KafkaRefused when the whole request is, KafkaUnavailable when unanswered."""
        from fedkafka.controller import group_offsets

        return group_offsets.delete_offsets(bootstrap, group, partitions, self.timeout,
                                            self.upstream.for_cluster(cluster))

    def alter_topic_config(self, cluster: str, bootstrap: str, name: str, set_: dict[str, str],
                           delete: list[str], validate_only: bool = False) -> None:
        """Set and delete topic configs incrementally (the other configs of the topic stay as they are)."""
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in set_.items()]
        entries += [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in delete]
        if not entries:
            return
        res = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=entries)
        fut = self.client(cluster, bootstrap).incremental_alter_configs(
            [res], request_timeout=self.timeout, validate_only=validate_only)[res]
        self._settle(cluster, bootstrap, fut)

    def validate_new_topic(self, cluster: str, bootstrap: str, partitions: int, config: dict[str, str]) -> None:
        """Ask a cluster whether it would create a topic with this config (CreateTopics validate_only: nothing
        is created). A name of our own, so a physical topic that happens to exist does not answer instead."""
        name = f"fedkafka-validate-{uuid.uuid4().hex}"
        fut = self.client(cluster, bootstrap).create_topics(
            [NewTopic(name, partitions, replication_factor=-1, config=dict(config))], validate_only=True,
            request_timeout=self.timeout, operation_timeout=self.timeout)[name]
        self._settle(cluster, bootstrap, fut)

    def _settle(self, cluster: str, bootstrap: str, fut) -> None:
        """Wait for an admin future: a cluster's refusal classified, no answer in time KafkaUnavailable."""
        try:
            fut.result(timeout=self.timeout + 2)
        except KafkaException as e:
            raise _classify(cluster, e.args[0]) from None
        except TimeoutError:
            raise KafkaUnavailable(f"cluster {cluster} ({bootstrap}) did not answer in time") from None

    def topic_ids(self, cluster: str, bootstrap: str, names: list[str]) -> dict[str, str]:
        """The Kafka topic id (32 hex digits) of each of `names` that exists on `cluster` (controller.topic_ids); a
        name left out is absent for the cluster's controller too (`_confirm_absent`)."""
        from fedkafka.controller import topic_ids

        found = topic_ids.topic_ids(bootstrap, names, self.timeout, self.upstream.for_cluster(cluster))
        self._confirm_absent(cluster, bootstrap, [name for name in names if name not in found])
        return found

    def _confirm_absent(self, cluster: str, bootstrap: str, names: list[str]) -> None:
        """KafkaUnavailable unless the cluster's controller has none of `names`. The metadata a broker answers may
        lag its controller (a topic created a moment ago is not listed yet), and a name taken as absent lets its
        pending deletion go with the topic left: so a CreateTopics validate-only of them (the KRaft controller
        answers it; nothing is created) must not answer TOPIC_ALREADY_EXISTS."""
        if not names:
            return
        futures = self.client(cluster, bootstrap).create_topics(
            [NewTopic(name, 1, replication_factor=-1) for name in names], validate_only=True,
            request_timeout=self.timeout, operation_timeout=self.timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout=self.timeout + 2)
            except KafkaException as e:
                if e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaUnavailable(f"cluster {cluster}: topic {name} exists but its metadata does not list "
                                           "it yet") from None
                raise _classify(cluster, e.args[0]) from None
            except TimeoutError:
                raise KafkaUnavailable(f"cluster {cluster} ({bootstrap}) did not answer in time") from None

    def delete_topic_by_id(self, cluster: str, bootstrap: str, name: str, topic_id: str) -> bool:
        """Delete the topic of Kafka topic id `topic_id` (named `name` when its id was learned), never whatever
        topic has that name now: False if no topic of that id exists. There is no deletion by name: a late one
        would delete a topic created again under the name (docs/DESIGN.md §5.8)."""
        from fedkafka.controller import topic_ids

        return topic_ids.delete_by_id(bootstrap, topic_id, self.timeout, self.upstream.for_cluster(cluster))

    def _partition_count(self, cluster: str, bootstrap: str, name: str) -> int:
        try:
            md = self.client(cluster, bootstrap).list_topics(name, timeout=self.timeout)
        except KafkaException as e:
            raise _classify(cluster, e.args[0]) from None
        return len(md.topics[name].partitions)


def _error_text(error: object) -> str:
    """A listing's error as text: librdkafka gives a KafkaException, or its KafkaError."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    return error.str() if isinstance(error, KafkaError) else str(error)


def _classify(cluster: str, err: KafkaError) -> Exception:
    transport = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
                 KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_CONTROLLER, KafkaError._RESOLVE}
    if err.code() in transport or err.retriable():
        return KafkaUnavailable(f"cluster {cluster} unavailable: {err.str()}")
    return KafkaRefused(f"cluster {cluster} refused: {err.str()}", err.name())


DEBUGGING_REPLICA_ID = -2
LATEST = -1


def _log_ends_of(host: str, port: int, partitions: list[tuple[str, int]], timeout: float,
                 security: UpstreamSecurity = PLAINTEXT.default) -> dict[tuple[str, int], int]:
    """One ListOffsets (LATEST, debugging replica id) on a socket of its own (TLS and SASL as configured): the
    broker's own log ends."""
    from kio.schema.list_offsets.v8.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
    from kio.schema.types import BrokerId, TopicName
    from kio.static.primitive import i8, i32, i64


    topics: dict[str, list[int]] = {}
    for topic, partition in partitions:
        topics.setdefault(topic, []).append(partition)
    request = ListOffsetsRequest(replica_id=BrokerId(DEBUGGING_REPLICA_ID), isolation_level=i8(0), topics=tuple(
        ListOffsetsTopic(name=TopicName(t), partitions=tuple(
            ListOffsetsPartition(partition_index=i32(p), current_leader_epoch=i32(-1), timestamp=i64(LATEST))
            for p in ps)) for t, ps in topics.items()))
    with _connect(host, port, timeout, security) as sock:
        response = _ask(sock, request, 1)
    return {(t.name, p.partition_index): p.offset for t in response.topics for p in t.partitions
            if p.error_code == 0 and p.offset >= 0}


def _connect(host: str, port: int, timeout: float, security: UpstreamSecurity) -> socket.socket:
    """A blocking connection to one broker, TLS and SASL done (an AuthenticationFailed is a ValueError)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        ctx = security.ssl_context()
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=host)
        if security.sasl:
            exchange = sasl_exchange(security)
            request, correlation = next(exchange), 100
            try:
                while True:
                    correlation += 1
                    request = exchange.send(_ask(sock, request, correlation))
            except StopIteration:
                pass
    except BaseException:
        sock.close()
        raise
    return sock


def _ask(sock: socket.socket, request, correlation: int):
    from fedkafka.protocol import codec

    sock.sendall(codec.encode_request(request, correlation, "fedkafka-controller"))
    (size,) = struct.unpack(">i", _read_exactly(sock, 4))
    if not 0 < size <= 1 << 24:
        raise ValueError(f"answer of {size} bytes")
    _header, response = codec.decode_response(codec.response_schema(request.__api_key__, request.__version__),
                                              _read_exactly(sock, size))
    return response


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by the broker")
        buf += chunk
    return bytes(buf)
