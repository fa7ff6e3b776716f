"""A request as a flat list of tokens: each length, count, tag section and value is its own token.

Mutations change one token (a length that lies, an overlong varint, a tag section with unknown tags) and
`serialize` writes the list back to bytes, so the lie sits exactly where the schema puts that field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

# kind: what the token means to the schema
INT = "int"  # a fixed-width number (or a bool, an error code, a timedelta)
FLOAT = "float"
LEN = "len"  # the length of a string, bytes or records field, or of a tagged field's value
COUNT = "count"  # an array's element count (or a nullable struct's marker)
TAGS = "tags"  # the number of tagged fields of a flexible entity
TAG = "tag"  # a tagged field's tag number
DATA = "data"  # string/bytes/uuid payload
BLOB = "blob"  # nested bytes with their own structure (record batches, consumer-protocol bytes)

_FIXED = {"i8": ">b", "i16": ">h", "i32": ">i", "i64": ">q", "u8": ">B", "u16": ">H", "u32": ">I", "u64": ">Q"}
_WIDTH = {name: struct.calcsize(fmt) for name, fmt in _FIXED.items()}


@dataclass(slots=True)
class Tok:
    kind: str
    enc: str  # i8..u64 | f64 | uvarint (unsigned) | varint (zigzag, records) | raw
    value: Any
    path: str = ""

    def encode(self) -> bytes:
        if self.enc == "raw":
            return bytes(self.value)
        if self.enc == "uvarint":
            return uvarint(self.value)
        if self.enc == "varint":
            return uvarint(zigzag(self.value))
        if self.enc == "f64":
            return struct.pack(">d", self.value)
        width = _WIDTH[self.enc]
        return (self.value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")  # any int fits: it wraps


def serialize(tokens: list[Tok]) -> bytes:
    return b"".join(t.encode() for t in tokens)


def uvarint(value: int) -> bytes:
    """Unsigned LEB128 of any non-negative int (values past 64 bits too: lies need no range)."""
    value &= (1 << 70) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63) if value < 0 else value << 1


def width(enc: str) -> int | None:
    return _WIDTH.get(enc)
