"""One client request has at most `max_elements` array elements and tagged fields, all its arrays together
(--max-request-elements, 100,000 by default): a count is otherwise only checked against the bytes left, and one
element can take 1-3 bytes, so a 16 MiB frame could declare millions, each decoded into an object (and, for
Metadata, answered with one entry). Refused as a malformed frame: codec.DecodeError, records.MalformedFrame.
Answers of the brokers are not counted."""

from __future__ import annotations

import struct

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.list_offsets.v7.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.proxy.handlers import produce
from protocol.test_hostile_decode import uvarint


def metadata_v9(names: list[bytes], body_tags: bytes = b"\x00") -> bytes:
    """Metadata v9 (flexible): header v2 (null client id, no tags), then the topics by name."""
    head = struct.pack(">hhih", 3, 9, 7, -1) + b"\x00"
    topics = uvarint(len(names) + 1) + b"".join(uvarint(len(n) + 1) + n + b"\x00" for n in names)
    return head + topics + b"\x00\x00\x00" + body_tags  # allow auto-create, two authorized-operations flags


def unknown_tags(count: int) -> bytes:
    """A tagged-fields section of `count` empty fields with tags no schema knows (Kafka skips them)."""
    return uvarint(count) + b"".join(uvarint(1000 + i) + b"\x00" for i in range(count))


def produce_v3(partitions: int, topics: int = 1) -> bytes:
    """Produce v3: null transactional id, acks 1, `topics` topics of `partitions` partitions with null records."""
    frame = struct.pack(">hhih", 0, 3, 7, -1) + struct.pack(">h", -1) + struct.pack(">hii", 1, 1000, topics)
    for t in range(topics):
        frame += struct.pack(">h", 2) + b"t%d" % t + struct.pack(">i", partitions)
        frame += b"".join(struct.pack(">ii", i, -1) for i in range(partitions))
    return frame


def produce_v9(partitions: int, partition_tags: int = 0) -> bytes:
    """Produce v9 (flexible): one topic of `partitions` partitions with null records, each partition with
    `partition_tags` unknown tagged fields."""
    frame = struct.pack(">hhih", 0, 9, 7, -1) + b"\x00" + b"\x00" + struct.pack(">hi", 1, 1000)
    frame += uvarint(2) + uvarint(2) + b"t" + uvarint(partitions + 1)
    frame += b"".join(struct.pack(">i", i) + b"\x00" + unknown_tags(partition_tags) for i in range(partitions))
    return frame + b"\x00" + b"\x00"  # the topic's and the body's tags


def test_a_metadata_request_naming_more_topics_than_the_default_limit_is_refused():
    """The reviewer's frame: N copies of "x", 3 bytes each."""
    assert codec.MAX_REQUEST_ELEMENTS == 100_000
    _, body = codec.decode_request(metadata_v9([b"x"] * 100_000))
    assert len(body.topics) == 100_000
    with pytest.raises(codec.DecodeError, match=r"more than 100000 array elements .*--max-request-elements"):
        codec.decode_request(metadata_v9([b"x"] * 100_001))


def test_the_limit_counts_the_elements_of_every_array_of_a_request_together():
    request = ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=tuple(
        ListOffsetsTopic(name=f"t{t}", partitions=tuple(
            ListOffsetsPartition(partition_index=p, current_leader_epoch=-1, timestamp=-1) for p in range(6)))
        for t in range(2)))
    frame = codec.encode_request(request, 7)[4:]  # 2 topics + 12 partitions: 14 elements
    assert len(codec.decode_request(frame, max_elements=14)[1].topics) == 2
    with pytest.raises(codec.DecodeError, match="more than 13 array elements"):
        codec.decode_request(frame, max_elements=13)
    assert len(codec.decode_request(frame, max_elements=None)[1].topics) == 2


def test_tagged_fields_count_and_a_request_at_the_limit_with_unknown_tags_still_decodes():
    """Unknown tags are skipped as Kafka skips them (read_entity walks such a frame twice: the second walk
    does not count what the first one did)."""
    frame = metadata_v9([b"a", b"b"], body_tags=unknown_tags(3))  # 2 topics + 3 tagged fields
    assert [t.name for t in codec.decode_request(frame, max_elements=5)[1].topics] == ["a", "b"]
    with pytest.raises(codec.DecodeError, match="more than 4 array elements"):
        codec.decode_request(frame, max_elements=4)


def test_each_request_gets_the_whole_limit_and_answers_are_not_counted():
    frame = metadata_v9([b"x"] * 8)
    for _ in range(5):  # nothing is carried over from one request to the next
        assert len(codec.decode_request(frame, max_elements=8)[1].topics) == 8
    response_t = codec.response_schema(3, 9)
    unknown = ErrorCode.unknown_topic_or_partition
    topics = [{"error_code": unknown, "name": f"t{i}", "partitions": []} for i in range(20)]
    answer = codec.encode_response(build(response_t, {"brokers": [], "controller_id": 1, "topics": topics}), 7)
    assert len(codec.decode_response(response_t, answer[4:])[1].topics) == 20


@pytest.mark.usefixtures("records_implementation")
@pytest.mark.parametrize(("frame", "elements"), [
    (produce_v3(9), 10), (produce_v3(4, topics=2), 10), (produce_v9(9), 10), (produce_v9(3, partition_tags=2), 10),
], ids=["v3", "v3-two-topics", "v9", "v9-tagged-fields"])
def test_a_produce_request_is_held_to_the_limit_under_both_walks(frame, elements):
    """Topics, partitions and tagged fields together: the compiled walk counts as the Python walk does and
    leaves a request past the limit to it (an older build, which does not count, gets only frames too small to
    hold more than the limit)."""
    assert len(rec.read_produce_request(frame, elements).topic_data) >= 1
    assert len(rec.read_produce_request(frame).topic_data) >= 1  # no limit
    with pytest.raises(rec.MalformedFrame, match=f"more than {elements - 1} topics, partitions and tagged fields"):
        rec.read_produce_request(frame, elements - 1)


class CountedCalls:
    """Stands in for the compiled module records.py calls: counts read_produce_request's calls and answers."""

    def __init__(self, module):
        self.module, self.answers = module, []

    def read_produce_request(self, *args):
        answer = self.module.read_produce_request(*args)
        self.answers.append(answer is not None)
        return answer


@pytest.mark.parametrize("elements", [3, 4, 100_000])
def test_a_large_produce_frame_of_few_partitions_is_read_by_the_compiled_walk(records_implementation, monkeypatch,
                                                                           elements):
    """A 1 MiB request (librdkafka's and Java's max.request.size) of three partitions: far larger than
    `max_elements * _MIN_ELEMENT_BYTES`, yet the compiled walk reads it, counting (an older build, which does
    not, is given only frames too small to hold more: this one runs in Python there)."""
    topics = [("orders", [(0, b"x" * 500_000), (1, b"y" * 500_000)]), ("audit", [(0, b"z" * 48_000)])]
    frame = b"".join(rec.produce_request_parts(9, 7, "app", -1, 30_000, topics))[4:]  # 2 topics + 3 partitions
    assert len(frame) > 1_000_000 > elements * rec._MIN_ELEMENT_BYTES
    attribute = "_counted" if getattr(rec, "_counted", None) is not None else "_frames"
    spy = CountedCalls(getattr(rec, attribute)) if getattr(rec, attribute) is not None else None
    monkeypatch.setattr(rec, attribute, spy)
    counted = records_implementation == "compiled" and getattr(rec._compiled, "REVISION", 0) >= 4
    if elements < 5:
        with pytest.raises(rec.MalformedFrame, match=f"more than {elements} topics, partitions and tagged fields"):
            rec.read_produce_request(frame, elements)
    else:
        read = rec.read_produce_request(frame, elements)
        assert [(t.name, [(p.index, bytes(p.records)) for p in t.partition_data]) for t in read.topic_data] == topics
    assert (spy.answers if spy is not None else []) == ([elements >= 5] if counted else [])


@pytest.mark.usefixtures("records_implementation")
def test_the_produce_handler_reads_at_most_the_default_limit_of_partitions():
    """The reviewer's other frame: one topic of a million partitions of null records, 8 bytes each (here just
    past the limit)."""
    assert sum(len(t.partition_data) for t in produce.read_request(produce_v3(99_999)).topic_data) == 99_999
    with pytest.raises(codec.DecodeError, match="more than 100000 topics, partitions"):
        produce.read_request(produce_v3(100_000))
