"""Topic names inside the classic consumer protocol's opaque group bytes (subscriptions, assignments).

The group coordinator reads a consumer group's subscription to decide which committed offsets may expire
(offsets of topics a Stable group is not subscribed to expire `offsets.retention.minutes` after their last
commit). Its offsets live on shadow topics, so the proxy renames the topics in these bytes on the way to the
coordinator and back. Format: int16 version, then the schema of that version (kio's generated types).
Anything that does not decode exactly (another protocol type, a future version) is passed through unchanged.

The bytes come from clients (through a JoinGroup or a SyncGroup) and, via the coordinator, from other members: a
16 MiB subscription can name ~5 million topics. A `counted` rename takes its decode's array elements from the
budget `bounds.set_budget` gave (the request's --max-request-elements): past it, `codec.TooManyElements` is
raised (never passed through), before kio decodes anything. Each distinct name is renamed once.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Callable
from functools import cache
from typing import Any

from kio.serial import entity_writer

from fedkafka.protocol.codec import DecodeError, TooManyElements, read_entity

Rename = Callable[[str], str | None]  # None: keep the name

_VERSION = struct.Struct(">h")
_MAX_VERSION = 3


@cache
def _schema(kind: str, version: int) -> type:
    module = __import__(f"kio.schema.consumer_protocol_{kind}.v{version}.data", fromlist=["x"])
    schema: type = getattr(module, f"ConsumerProtocol{kind.capitalize()}")
    return schema


def _rewrite(kind: str, data: bytes | None, change: Callable[[Any], Any], counted: bool) -> bytes | None:
    if not data or len(data) < 2:
        return data
    (version,) = _VERSION.unpack_from(data, 0)
    if not 0 <= version <= _MAX_VERSION:
        return data
    tp = _schema(kind, version)
    try:  # these bytes come from clients and, via the coordinator, from other members: bounds-checked
        value, size = read_entity(tp, memoryview(data)[2:], counted=counted)
    except TooManyElements:
        raise
    except DecodeError:
        return data
    if size + 2 != len(data):
        return data
    buf = io.BytesIO()
    buf.write(data[:2])
    entity_writer(tp)(buf, change(value))
    return buf.getvalue()


def _renamer(rename: Rename) -> Callable[[str], str]:
    """`rename` keeping a name it maps to None, asked once per distinct name."""
    done: dict[str, str] = {}

    def name(topic: str) -> str:
        renamed = done.get(topic)
        if renamed is None:
            renamed = rename(topic)
            renamed = done[topic] = topic if renamed is None else renamed
        return renamed

    return name


def rename_subscription(data: bytes | None, rename: Rename, counted: bool = False) -> bytes | None:
    """A ConsumerProtocolSubscription's bytes with its topics (and owned partitions' topics) renamed."""
    name = _renamer(rename)

    def change(sub: Any) -> Any:
        owned = getattr(sub, "owned_partitions", None)
        updates: dict[str, tuple[Any, ...]] = {"topics": tuple(name(t) for t in sub.topics)}
        if owned is not None:
            updates["owned_partitions"] = tuple(dataclasses.replace(tp, topic=name(tp.topic)) for tp in owned)
        return dataclasses.replace(sub, **updates)
    return _rewrite("subscription", data, change, counted)


def rename_assignment(data: bytes | None, rename: Rename, counted: bool = False) -> bytes | None:
    """A ConsumerProtocolAssignment's bytes with its assigned partitions' topics renamed."""
    name = _renamer(rename)

    def change(assignment: Any) -> Any:
        return dataclasses.replace(assignment, assigned_partitions=tuple(
            dataclasses.replace(tp, topic=name(tp.topic)) for tp in assignment.assigned_partitions))
    return _rewrite("assignment", data, change, counted)
