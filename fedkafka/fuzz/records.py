"""Magic v2 record batches as tokens (every header field, every record varint), valid or mutated.

Layout as in `fedkafka.protocol.records`: baseOffset int64, batchLength int32, partitionLeaderEpoch int32,
magic int8, crc uint32 (CRC-32C of attributes..end), attributes int16, lastOffsetDelta int32, baseTimestamp
int64, maxTimestamp int64, producerId int64, producerEpoch int16, baseSequence int32, recordCount int32,
then records: length, attributes int8, timestampDelta, offsetDelta, key, value, headers (zigzag varints).
"""

from __future__ import annotations

import random
import struct

import crc32c

from fedkafka.fuzz.mutate import record_batch
from fedkafka.fuzz.tokens import COUNT, DATA, INT, LEN, Tok, serialize, uvarint, zigzag

_BATCH_LENGTH_AT, _CRC_AT, _CRC_FROM = 8, 17, 21
_HEAD = struct.Struct(">qiibIhiqqqhii")


def record_tokens(rng: random.Random, offset_delta: int, path: str) -> list[Tok]:
    key = rng.choice([None, b"k", f"key-{rng.randrange(100)}".encode()])
    value = rng.randbytes(rng.choice([0, 5, 30]))
    headers = [(b"h", b"v")] if rng.random() < 0.2 else []
    body = [Tok(INT, "i8", 0, f"{path}.attributes"), Tok(INT, "varint", offset_delta, f"{path}.timestamp_delta"),
            Tok(INT, "varint", offset_delta, f"{path}.offset_delta")]
    body += _varbytes(key, f"{path}.key") + _varbytes(value, f"{path}.value")
    body.append(Tok(COUNT, "varint", len(headers), f"{path}.headers#"))
    for i, (hk, hv) in enumerate(headers):
        body += _varbytes(hk, f"{path}.headers[{i}].key") + _varbytes(hv, f"{path}.headers[{i}].value")
    return [Tok(LEN, "varint", len(serialize(body)), f"{path}.length"), *body]


def _varbytes(value: bytes | None, path: str) -> list[Tok]:
    if value is None:
        return [Tok(LEN, "varint", -1, path + "#")]
    return [Tok(LEN, "varint", len(value), path + "#"), Tok(DATA, "raw", value, path)]


def batch_tokens(rng: random.Random, count: int, path: str = "batch") -> list[Tok]:
    base_ts = 1_700_000_000_000 + rng.randrange(10**9)
    head = [Tok(INT, "i64", 0, f"{path}.base_offset"), Tok(LEN, "i32", 0, f"{path}.batch_length"),
            Tok(INT, "i32", -1, f"{path}.partition_leader_epoch"), Tok(INT, "i8", 2, f"{path}.magic"),
            Tok(INT, "u32", 0, f"{path}.crc"), Tok(INT, "i16", 0, f"{path}.attributes"),
            Tok(INT, "i32", count - 1, f"{path}.last_offset_delta"), Tok(INT, "i64", base_ts, f"{path}.base_timestamp"),
            Tok(INT, "i64", base_ts + count - 1, f"{path}.max_timestamp"), Tok(INT, "i64", -1, f"{path}.producer_id"),
            Tok(INT, "i16", -1, f"{path}.producer_epoch"), Tok(INT, "i32", -1, f"{path}.base_sequence"),
            Tok(COUNT, "i32", count, f"{path}.record_count")]
    for i in range(count):
        head += record_tokens(rng, i, f"{path}.records[{i}]")
    return head


def seal(tokens: list[Tok], fix_length: bool = True, fix_crc: bool = True) -> bytes:
    """The batch's bytes with batchLength and the CRC computed (unless a mutation lies in them)."""
    buf = bytearray(serialize(tokens))
    if fix_length:
        buf[_BATCH_LENGTH_AT:_BATCH_LENGTH_AT + 4] = (len(buf) - 12).to_bytes(4, "big")
    if fix_crc:
        buf[_CRC_AT:_CRC_AT + 4] = crc32c.crc32c(bytes(buf[_CRC_FROM:])).to_bytes(4, "big")
    return bytes(buf)


def valid_batch(rng: random.Random, count: int | None = None) -> bytes:
    """`seal(batch_tokens(rng, count))` with the same draws and the same bytes, written directly: most Produce
    partitions carry valid batches, and building them as tokens was most of the harness's generation time."""
    count = count or rng.choice([1, 1, 2, 5])
    base_ts = 1_700_000_000_000 + rng.randrange(10**9)
    buf = bytearray(_HEAD.pack(0, 0, -1, 2, 0, 0, count - 1, base_ts, base_ts + count - 1, -1, -1, -1, count))
    for i in range(count):
        buf += _record_bytes(rng, i)
    buf[_BATCH_LENGTH_AT:_BATCH_LENGTH_AT + 4] = (len(buf) - 12).to_bytes(4, "big")
    buf[_CRC_AT:_CRC_AT + 4] = crc32c.crc32c(bytes(buf[_CRC_FROM:])).to_bytes(4, "big")
    return bytes(buf)


def _record_bytes(rng: random.Random, offset_delta: int) -> bytes:
    """`serialize(record_tokens(rng, offset_delta, ...))`, drawing as it does."""
    key = rng.choice([None, b"k", f"key-{rng.randrange(100)}".encode()])
    value = rng.randbytes(rng.choice([0, 5, 30]))
    headers = _varint(1) + _raw_varbytes(b"h") + _raw_varbytes(b"v") if rng.random() < 0.2 else _varint(0)
    body = b"\0" + _varint(offset_delta) * 2 + _raw_varbytes(key) + _raw_varbytes(value) + headers
    return _varint(len(body)) + body


def _varint(value: int) -> bytes:
    return uvarint(zigzag(value))


def _raw_varbytes(value: bytes | None) -> bytes:
    return _varint(-1) if value is None else _varint(len(value)) + value


def batches(rng: random.Random, mutate: bool) -> tuple[bytes, str]:
    """Records for a Produce partition: one or two valid batches, or (with `mutate`) a hostile variant."""
    if not mutate:
        return b"".join(valid_batch(rng) for _ in range(rng.choice([1, 1, 1, 2]))), ""
    op = rng.choice(["field", "field", "field", "bad-second-batch", "compressed-garbage", "truncated", "stale-crc",
                     "many-batches"])
    if op == "bad-second-batch":  # a valid batch, then a mutated one (the connection must survive it)
        bad, what = _mutated_batch(rng)
        return valid_batch(rng) + bad, f"second-batch {what}"
    if op == "compressed-garbage":  # attributes name a codec (gzip..zstd), the payload is not compressed
        tokens = batch_tokens(rng, 1)[:13]
        tokens[5].value = rng.choice([1, 2, 3, 4, 5, 7])
        tokens.append(Tok(DATA, "raw", rng.randbytes(rng.choice([0, 3, 40])), "batch.compressed"))
        return seal(tokens), f"codec={tokens[5].value} garbage payload"
    if op == "truncated":
        whole = valid_batch(rng)
        cut = rng.randrange(len(whole))
        return whole[:cut], f"truncated at {cut} of {len(whole)}"
    if op == "stale-crc":
        tokens = batch_tokens(rng, rng.choice([1, 2]))
        tok = rng.choice([t for t in tokens[5:] if t.enc != "raw"])
        tok.value ^= 1 << rng.randrange(7)
        return seal(tokens, fix_crc=False), f"stale crc after {tok.path} changed"
    if op == "many-batches":
        n = rng.choice([50, 500])
        return b"".join(valid_batch(rng, 1) for _ in range(n)), f"{n} batches"
    return _mutated_batch(rng)


def _mutated_batch(rng: random.Random) -> tuple[bytes, str]:
    tokens = batch_tokens(rng, rng.choice([1, 2, 3]))
    what = record_batch(rng, tokens)
    lies_in_length = "batch_length" in what
    return seal(tokens, fix_length=not lies_in_length, fix_crc="crc" not in what and rng.random() < 0.9), what

