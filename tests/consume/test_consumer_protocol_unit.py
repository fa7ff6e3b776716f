"""Topic names inside classic consumer-protocol bytes: renamed both ways, anything else left alone."""

from __future__ import annotations

import io
import struct

import pytest
from kio.serial import entity_writer

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
