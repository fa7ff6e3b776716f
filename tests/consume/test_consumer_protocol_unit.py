"""Topic names inside classic consumer-protocol bytes: renamed both ways, anything else left alone."""

from __future__ import annotations

import io
import struct

import pytest
from kio.serial import entity_writer

from fedkafka.protocol import bounds
from fedkafka.protocol.codec import TooManyElements
from fedkafka.protocol.consumer_protocol import _schema, rename_assignment, rename_subscription
from fedkafka.view.model import logical_from_shadow, shadow_topic


def encoded(kind: str, version: int, **fields) -> bytes:
    tp = _schema(kind, version)
    buf = io.BytesIO()
    buf.write(struct.pack(">h", version))
    entity_writer(tp)(buf, tp(**fields))
    return buf.getvalue()


def owned(version: int, topic: str):
    module = __import__(_schema("subscription", version).__module__, fromlist=["x"])
    return (module.TopicPartition(topic=topic, partitions=(0, 3)),)


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_subscription_round_trip(version):
    fields = {"topics": ("orders", "payments"), "user_data": b"\x00\x01"}
    if version >= 1:
        fields["owned_partitions"] = owned(version, "orders")
    data = encoded("subscription", version, **fields)
    shadow = rename_subscription(data, shadow_topic)
    assert shadow != data and shadow_topic("payments").encode() in shadow and b"\x00\x01" in shadow
    assert rename_subscription(shadow, logical_from_shadow) == data


@pytest.mark.parametrize("version", [0, 3])
def test_assignment_round_trip(version):
    module = __import__(_schema("assignment", version).__module__, fromlist=["x"])
    data = encoded("assignment", version, assigned_partitions=(module.TopicPartition(topic="orders", partitions=(1,)),),
                   user_data=None)
    shadow = rename_assignment(data, shadow_topic)
    assert shadow_topic("orders").encode() in shadow
    assert rename_assignment(shadow, logical_from_shadow) == data


@pytest.mark.parametrize("data", [None, b"", b"\x00", b"\x00\x09whatever", b"\x00\x00\x00\x00\x00\x05ab",
                                  b"\x00\x00" + b"\xff" * 40])
def test_other_bytes_pass_through(data):
    assert rename_subscription(data, shadow_topic) == data
    assert rename_assignment(data, shadow_topic) == data


def names(n: int, topic: bytes = b"a") -> bytes:
    """A v0 subscription of `n` topic names, all `topic`: 3 bytes a name, ~5 million in a 16 MiB JoinGroup."""
    return struct.pack(">hi", 0, n) + (struct.pack(">h", len(topic)) + topic) * n + struct.pack(">i", -1)


def test_a_counted_rename_is_refused_past_the_element_budget_before_anything_is_decoded():
    saved = bounds.set_budget(1000)
    try:
        assert rename_subscription(names(1000), shadow_topic, counted=True) == names(1000, shadow_topic("a").encode())
        bounds.set_budget(1000)
        with pytest.raises(TooManyElements, match="more than 1000 array elements"):
            rename_subscription(names(1001), shadow_topic, counted=True)
        bounds.set_budget(1000)
        module = __import__(_schema("assignment", 0).__module__, fromlist=["x"])
        one_topic = (module.TopicPartition(topic="t", partitions=tuple(range(1000))),)
        with pytest.raises(TooManyElements):  # 1 assigned topic of 1000 partitions: 1001 elements
            rename_assignment(encoded("assignment", 0, assigned_partitions=one_topic, user_data=None), shadow_topic,
                              counted=True)
    finally:
        bounds.restore_budget(saved)
    assert rename_subscription(names(1001), shadow_topic) == names(1001, shadow_topic("a").encode())  # uncounted


def test_each_distinct_name_is_renamed_once():
    asked = []

    def rename(topic):
        asked.append(topic)
        return shadow_topic(topic)

    data = encoded("subscription", 1, topics=("a", "b") * 500, user_data=None,
                   owned_partitions=owned(1, "a") * 100)
    out = rename_subscription(data, rename)
    assert sorted(asked) == ["a", "b"]
    assert rename_subscription(out, logical_from_shadow) == data
