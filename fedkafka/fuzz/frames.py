"""Valid request frames of any (api key, version), built from kio's schemas as tokens with plausible values.

The walk follows kio's own serializer (`kio.serial._serialize`): dataclass fields in order, each field's
`kafka_type` metadata, compact (flexible) or classic lengths, nullable structs, and a tagged-field
section per flexible entity. Values come from the field names (partition indexes within the topic's
partitions, real topic names and group ids, short timeouts), so a valid frame reaches the handlers
instead of the decoder's first check. `records` fields get real v2 record batches and the
consumer-protocol bytes of JoinGroup and SyncGroup real subscriptions and assignments.
"""

from __future__ import annotations

import dataclasses
import random
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeGuard

from kio.index import load_request_schema
from kio.static.protocol import Entity, Header, RequestPayload

from fedkafka.fuzz import mutate, records
from fedkafka.fuzz.tokens import BLOB, COUNT, DATA, FLOAT, INT, LEN, TAGS, Tok, serialize

CONSUMER_PROTOCOL_VERSIONS = range(4)  # kio's consumer_protocol_{subscription,assignment} v0-v3


@dataclass
class Values:
    """What a plausible request names: real topics (with their partition counts), groups, client ids."""

    topics: dict[str, int]
    groups: list[str]
    client_ids: list[str] = field(default_factory=lambda: ["fuzz"])
    idle: frozenset[str] = frozenset()  # topics never produced to: a Fetch there waits its whole max_wait

    def topic(self, rng: random.Random, writing: bool = False) -> str:
        if rng.random() < 0.05:
            return rng.choice(["", "no-such-topic", "x" * 300, "__consumer_offsets", "a/b", "ü"])
        return rng.choice(sorted(set(self.topics) - self.idle if writing else self.topics))

    def partition(self, rng: random.Random, topic: str | None = None) -> int:
        count = self.topics[topic] if topic in self.topics else max(self.topics.values())
        if rng.random() < 0.05:
            return rng.choice([-1, count, 2**31 - 1])
        return rng.randrange(count)


@dataclass
class Frame:
    """One request: header tokens + body tokens; `correlation_id` is what the answer must carry."""

    api_key: int
    version: int
    correlation_id: int
    header: list[Tok]
    body: list[Tok]
    expect_answer: bool = True  # Produce with acks=0 is never answered
    mutations: list[str] = field(default_factory=list)

    def payload(self) -> bytes:
        return serialize(self.header) + serialize(self.body)


def request_schema(api_key: int, version: int) -> type[RequestPayload] | None:
    try:
        return load_request_schema(api_key, version)
    except Exception:  # kio raises its own errors and ImportError for unknown pairs
        return None


def build_frame(rng: random.Random, api_key: int, version: int, correlation_id: int, values: Values,
                client_id: str | None = None, nested: str | None = None) -> Frame:
    """A valid frame for (api_key, version); `nested` ("records" or "consumer") mutates that blob inside."""
    schema = request_schema(api_key, version)
    if schema is None:
        raise ValueError(f"kio has no request schema for api_key={api_key} v{version}")
    walker = _Walker(rng, values, nested)
    body = walker.entity(schema, "")
    header = header_tokens(schema.__header_schema__, api_key, version, correlation_id,
                           client_id if client_id is not None else rng.choice(values.client_ids))
    frame = Frame(api_key, version, correlation_id, header, body, expect_answer=walker.acks != 0)
    frame.mutations.extend(walker.nested_done)
    return frame


def header_tokens(header_schema: type[Header], api_key: int, version: int, correlation_id: int,
                  client_id: str | None) -> list[Tok]:
    tokens = [Tok(INT, "i16", api_key, "header.api_key"), Tok(INT, "i16", version, "header.api_version"),
              Tok(INT, "i32", correlation_id, "header.correlation_id")]
    names = {f.name for f in dataclasses.fields(header_schema)}
    if "client_id" in names:  # always a classic nullable string, even in flexible headers (Kafka's rule)
        tokens += _string_tokens(None if client_id is None else client_id.encode(), False, "header.client_id")
    if header_schema.__flexible__:
        tokens.append(Tok(TAGS, "uvarint", 0, "header.tags"))
    return tokens


# -- the schema walk --------------------------------------------------------------------------------------------
@cache
def _is_entity(tp: Any) -> TypeGuard[type[Entity]]:
    """A field type that is a nested kio entity (a dataclass carrying the entity's class attributes)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _fields(tp: type) -> tuple[tuple[dataclasses.Field, Any, bool, bool], ...]:
    """(field, inner type, is array, optional) for the untagged fields, in order."""
    out = []
    for f in dataclasses.fields(tp):
        if "tag" in f.metadata:
            continue  # valid frames leave tagged fields at their defaults (absent)
        inner, optional = _unwrap_optional(f.type)
        is_array = typing.get_origin(inner) is tuple
        if is_array:
            inner = typing.get_args(inner)[0]
            inner, _ = _unwrap_optional(inner)
        out.append((f, inner, is_array, optional))
    return tuple(out)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


class _Walker:
    def __init__(self, rng: random.Random, values: Values, nested: str | None):
        self.rng, self.values, self.nested = rng, values, nested
        self.acks: int | None = None
        self.topic: str | None = None  # the topic of the entity being filled (for partition indexes)
        self.nested_done: list[str] = []

    def entity(self, tp: type[Entity], path: str) -> list[Tok]:
        flexible = tp.__flexible__
        tokens: list[Tok] = []
        saved_topic = self.topic
        for f, inner, is_array, optional in _fields(tp):
            fpath = f"{path}.{f.name}" if path else f.name
            if is_array:
                tokens += self.array(f, inner, optional, flexible, fpath)
            elif _is_entity(inner):
                if optional:
                    present = self.rng.random() < 0.9
                    tokens.append(Tok(COUNT, "i8", 1 if present else -1, fpath + "?"))
                    if not present:
                        continue
                tokens += self.entity(inner, fpath)
            else:
                tokens += self.primitive(f, tp, optional, flexible, fpath)
        self.topic = saved_topic
        if flexible:
            tokens.append(Tok(TAGS, "uvarint", 0, f"{path}.tags"))
        return tokens

    def array(self, f: dataclasses.Field, inner: Any, optional: bool, flexible: bool, path: str) -> list[Tok]:
        count: int | None = self._array_length(f.name)
        if optional and self.rng.random() < 0.05:
            count = None
        tokens = [_count_token(count, flexible, path)]
        for i in range(count or 0):
            if _is_entity(inner):
                tokens += self.entity(inner, f"{path}[{i}]")
            else:
                tokens += self.primitive(f, None, False, flexible, f"{path}[{i}]")
        return tokens

    def _array_length(self, name: str) -> int:
        if name in ("topics", "topic_data", "partitions", "partition_data", "protocols", "coordinator_keys",
                    "groups", "assignments"):
            return self.rng.choice([1, 1, 1, 2])
        if name in ("forgotten_topics_data", "owned_partitions", "members", "tagged_fields"):
            return self.rng.choice([0, 0, 1])
        return self.rng.choice([0, 1, 1, 2])

    def primitive(self, f: dataclasses.Field, owner: type | None, optional: bool, flexible: bool,
                  path: str) -> list[Tok]:
        kafka_type = f.metadata["kafka_type"]
        name = f.name
        if kafka_type == "string":
            value = self.string(name, owner, optional)
            return _string_tokens(None if value is None else value.encode(), flexible, path, nullable=optional)
        if kafka_type == "bytes":
            return _bytes_tokens(self.bytes_value(name, owner, optional), flexible, path, nullable=optional)
        if kafka_type == "records":
            return self.records(flexible, path, optional)
        if kafka_type == "uuid":
            return [Tok(DATA, "raw", bytes(16) if self.rng.random() < 0.8 else self.rng.randbytes(16), path)]
        if kafka_type == "float64":
            return [Tok(FLOAT, "f64", 0.0, path)]
        if kafka_type == "bool":
            return [Tok(INT, "u8", self.rng.random() < 0.5, path)]
        enc = {"int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16",
               "uint32": "u32", "uint64": "u64", "error_code": "i16", "timedelta_i32": "i32",
               "timedelta_i64": "i64", "datetime_i64": "i64"}[kafka_type]
        number = self.number(name, kafka_type)
        if name == "acks":
            self.acks = number
        return [Tok(INT, enc, number, path)]

    # -- plausible values by field name ---------------------------------------------------------------------
    def string(self, name: str, owner: type | None, optional: bool) -> str | None:
        rng = self.rng
        if optional and name in ("transactional_id", "group_instance_id", "reason", "rack_id", "committed_metadata",
                                 "client_rack"):
            return None
        if name in ("topic", "name", "topic_name") and owner is not None and "Protocol" not in owner.__name__:
            self.topic = self.values.topic(rng, writing="Produce" in owner.__name__)
            return self.topic
        if name in ("group_id", "key", "coordinator_keys", "groups", "groups_names"):
            return rng.choice(self.values.groups)
        if name == "protocol_type":
            return "consumer"
        if name in ("name", "protocol_name") and owner is not None and "Protocol" in owner.__name__:
            return rng.choice(["range", "roundrobin", "cooperative-sticky"])
        if name in ("member_id", "rack_id", "client_software_name", "client_software_version"):
            return rng.choice(["", "fuzz", "fuzz-1.0"]) if "software" in name else ""
        if name == "topics":  # primitive string arrays of topic names
            return self.values.topic(rng)
        return rng.choice(["", "x", "fuzz", rng.choice(self.values.groups)])

    def bytes_value(self, name: str, owner: type | None, optional: bool) -> bytes | None:
        if owner is not None and name == "metadata" and owner.__name__.startswith("JoinGroupRequestProtocol"):
            return self.consumer_bytes("subscription")
        if owner is not None and name == "assignment" and "SyncGroup" in owner.__name__:
            return self.consumer_bytes("assignment")
        if optional and self.rng.random() < 0.3:
            return None
        return self.rng.randbytes(self.rng.choice([0, 1, 8, 40]))

    def number(self, name: str, kafka_type: str) -> int:
        rng = self.rng
        if name in ("partition_index", "partition", "index", "partition_id", "partitions", "partition_indexes"):
            return self.values.partition(rng, self.topic)
        if name == "acks":
            return rng.choice([-1, -1, -1, 1])
        if kafka_type == "timedelta_i32" or kafka_type == "timedelta_i64":
            if "session" in name or "rebalance" in name:
                return rng.choice([6000, 10000])
            return rng.choice([0, 10, 100, 500])
        if "epoch" in name or name in ("replica_id", "broker_id", "generation_id", "generation_id_or_member_epoch",
                                       "producer_id", "log_start_offset", "member_epoch"):
            return -1
        if name in ("session_id", "isolation_level", "key_type", "error_code"):
            return 0
        if "offset" in name or name == "timestamp":
            return rng.choice([0, rng.randrange(100), -1, -2])
        if "max_bytes" in name:
            return rng.choice([1 << 10, 1 << 20])
        if name == "min_bytes":
            return rng.choice([0, 1])
        if kafka_type == "datetime_i64":
            return 1_700_000_000_000
        return rng.randrange(4)

    def records(self, flexible: bool, path: str, optional: bool) -> list[Tok]:
        blob, what = records.batches(self.rng, self.nested == "records")
        if what:
            self.nested_done.append(f"records:{what}")
        return _bytes_tokens(blob, flexible, path, nullable=optional, kind=BLOB)

    def consumer_bytes(self, kind: str) -> bytes:
        """A real ConsumerProtocolSubscription/Assignment: int16 version + that version's entity."""
        version = self.rng.choice(CONSUMER_PROTOCOL_VERSIONS)
        module = __import__(f"kio.schema.consumer_protocol_{kind}.v{version}.data", fromlist=["x"])
        tp = getattr(module, f"ConsumerProtocol{kind.capitalize()}")
        tokens = [Tok(INT, "i16", version, f"{kind}.version"), *self.entity(tp, kind)]
        if self.nested == "consumer":
            self.nested_done.append(f"consumer-{kind}: " + mutate.consumer_protocol(self.rng, tokens))
        return serialize(tokens)


def _count_token(count: int | None, flexible: bool, path: str) -> Tok:
    if flexible:
        return Tok(COUNT, "uvarint", 0 if count is None else count + 1, path + "#")
    return Tok(COUNT, "i32", -1 if count is None else count, path + "#")


def _string_tokens(value: bytes | None, flexible: bool, path: str, nullable: bool = True) -> list[Tok]:
    if flexible:
        length = Tok(LEN, "uvarint", 0 if value is None else len(value) + 1, path + "#")
    else:
        length = Tok(LEN, "i16", -1 if value is None else len(value), path + "#")
    return [length] if value is None else [length, Tok(DATA, "raw", value, path)]


def _bytes_tokens(value: bytes | None, flexible: bool, path: str, nullable: bool = True, kind: str = DATA
                  ) -> list[Tok]:
    if flexible:
        length = Tok(LEN, "uvarint", 0 if value is None else len(value) + 1, path + "#")
    else:
        length = Tok(LEN, "i32", -1 if value is None else len(value), path + "#")
    return [length] if value is None else [length, Tok(kind, "raw", value, path)]
