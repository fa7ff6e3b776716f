"""Physical topics by Kafka topic id: learn the ids of topics by name (Metadata v12) and delete a topic by its id
(DeleteTopics v6), with fedkafka's own wire code on a socket of its own (TLS and SASL as the cluster is configured).

confluent-kafka's AdminClient deletes topics by name only. A deletion by name deletes whatever topic has the name
when the request arrives; a deletion by id deletes only the topic of that id: a topic created again under the name
has another id, and Kafka answers UNKNOWN_TOPIC_ID (docs/DESIGN.md §5.8, "A stale deletion deletes nothing created
since"). Both go to any bootstrap broker (a KRaft broker forwards DeleteTopics to the active controller).
"""

from __future__ import annotations

import datetime
import time
import uuid

from kio.schema.delete_topics.v6.request import DeleteTopicsRequest, DeleteTopicState
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.types import TopicName
from kio.static.primitive import i32Timedelta

from fedkafka.controller.group_offsets import _exchange, bootstrap_addresses
from fedkafka.controller.kafka_admin import KafkaRefused, KafkaUnavailable
from fedkafka.security.upstream import UpstreamSecurity

ZERO_ID = uuid.UUID(int=0)  # what a broker answers for a topic without an id


def topic_ids(bootstrap: str, names: list[str], timeout: float, security: UpstreamSecurity) -> dict[str, str]:
    """The Kafka topic id (32 hex digits) of each of `names` that exists; a name the cluster does not know is left
    out. KafkaUnavailable when no broker answers or a topic's answer is retriable (a topic whose metadata is not
    settled is never taken as absent); KafkaRefused when the cluster refuses (authorization) or gives no id."""
    if not names:
        return {}
    request = MetadataRequest(topics=tuple(MetadataRequestTopic(topic_id=None, name=TopicName(n)) for n in names),
                              allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    found: dict[str, str] = {}
    for topic in _any_broker(bootstrap, request, timeout, security).topics:
        code = ErrorCode(topic.error_code)
        if code == ErrorCode.unknown_topic_or_partition:
            continue
        _check(code, f"metadata of topic {topic.name}")
        if topic.topic_id is None or topic.topic_id == ZERO_ID:
            raise KafkaRefused(f"topic {topic.name} has no topic id", "UNKNOWN_TOPIC_ID")
        found[str(topic.name)] = topic.topic_id.hex
    return found


def delete_by_id(bootstrap: str, topic_id: str, timeout: float, security: UpstreamSecurity) -> bool:
    """DeleteTopics naming only `topic_id`: True once deleted, False if no topic of that id exists (gone already,
    whatever topic has its name now). KafkaUnavailable when no broker answers or the deletion did not complete in
    time (retried: a later attempt finds it done); KafkaRefused when refused."""
    request = DeleteTopicsRequest(
        topics=(DeleteTopicState(name=None, topic_id=uuid.UUID(hex=topic_id)),),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=timeout)))
    (result,) = _any_broker(bootstrap, request, timeout + 2, security).responses
    code = ErrorCode(result.error_code)
    if code in (ErrorCode.unknown_topic_id, ErrorCode.unknown_topic_or_partition):
        return False
    _check(code, f"deletion of topic id {topic_id}")
    return True


def _check(code: ErrorCode, what: str) -> None:
    if code == ErrorCode.none:
        return
    if code.retriable or code in (ErrorCode.not_controller, ErrorCode.request_timed_out):
        raise KafkaUnavailable(f"{what}: {code.name.upper()}")
    raise KafkaRefused(f"{what}: {code.name.upper()}", code.name.upper())


def _any_broker(bootstrap: str, request, timeout: float, security: UpstreamSecurity):
    """`request` asked of each bootstrap broker in turn until one answers, all of them within `timeout`: a cluster
    that stopped answering costs one timeout (the deletions run under the write lock), not one per address."""
    unanswered: list[str] = []
    deadline = time.monotonic() + timeout
    for host, port in bootstrap_addresses(bootstrap):
        left = deadline - time.monotonic()
        if left <= 0:
            unanswered.append(f"broker {host}:{port}: not asked, no time left")
            continue
        try:
            return _exchange(host, port, request, left, security)
        except KafkaUnavailable as e:  # refused, reset, timed out, TLS, SASL, an answer that does not decode
            unanswered.append(str(e))
    raise KafkaUnavailable("; ".join(unanswered))
