"""Topic names inside the classic consumer protocol's opaque group bytes (subscriptions, assignments).

The group coordinator reads a consumer group's subscription to decide which committed offsets may expire
(offsets of topics a Stable group is not subscribed to expire `offsets.retention.minutes` after their last
commit). Its offsets live on shadow topics, so the proxy renames the topics in these bytes on the way to the
coordinator and back. Format: int16 version, then the schema of that version (kio's generated types).
Anything that does not decode exactly (another protocol type, a future version) is passed through unchanged.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Callable
from functools import cache
from typing import Any

from kio.serial import entity_writer

from fedkafka.protocol.codec import DecodeError, read_entity

Rename = Callable[[str], str | None]  # None: keep the name

_VERSION = struct.Struct(">h")
_MAX_VERSION = 3


@cache
def _schema(kind: str, version: int) -> type:
    module = __import__(f"kio.schema.consumer_protocol_{kind}.v{version}.data", fromlist=["x"])
    schema: type = getattr(module, f"ConsumerProtocol{kind.capitalize()}")
    return schema


def _rewrite(kind: str, data: bytes | None, change: Callable[[Any], Any]) -> bytes | None:
    if not data or len(data) < 2:
        return data
    (version,) = _VERSION.unpack_from(data, 0)
    if not 0 <= version <= _MAX_VERSION:
        return data
    tp = _schema(kind, version)
    try:  # these bytes come from clients and, via the coordinator, from other members: bounds-checked
        value, size = read_entity(tp, memoryview(data)[2:])
    except DecodeError:
        return data
    if size + 2 != len(data):
        return data
    buf = io.BytesIO()
    buf.write(data[:2])
    entity_writer(tp)(buf, change(value))
    return buf.getvalue()


def _name(rename: Rename, topic: str) -> str:
    renamed = rename(topic)
    return topic if renamed is None else renamed


def rename_subscription(data: bytes | None, rename: Rename) -> bytes | None:
    def change(sub: Any) -> Any:
        owned = getattr(sub, "owned_partitions", None)
        updates: dict[str, tuple[Any, ...]] = {"topics": tuple(_name(rename, t) for t in sub.topics)}
        if owned is not None:
            updates["owned_partitions"] = tuple(dataclasses.replace(tp, topic=_name(rename, tp.topic)) for tp in owned)
        return dataclasses.replace(sub, **updates)
    return _rewrite("subscription", data, change)


def rename_assignment(data: bytes | None, rename: Rename) -> bytes | None:
    def change(assignment: Any) -> Any:
        return dataclasses.replace(assignment, assigned_partitions=tuple(
            dataclasses.replace(tp, topic=_name(rename, tp.topic)) for tp in assignment.assigned_partitions))
    return _rewrite("assignment", data, change)
