"""What one fuzz connection sends next: a deterministic stream of `Send`s per (seed, worker).

Most sends are one structure-aware request (valid, or with lies in its tokens, its record batches or its
consumer-protocol bytes); the rest exercise the framing: garbage frames, truncated frames, oversize or
negative size prefixes, slow partial writes and pipelined bursts.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from fedkafka.fuzz import mutate
from fedkafka.fuzz.frames import Frame, Values, build_frame, request_schema
from fedkafka.fuzz.tokens import INT, LEN
from fedkafka.protocol import codec

# Produce, Fetch, JoinGroup and SyncGroup carry nested structures (batches, consumer-protocol bytes): drawn more.
API_WEIGHTS = {0: 4, 1: 3, 11: 3, 14: 3}
MODES = [("frame", 78), ("pipeline", 5), ("slow", 4), ("garbage", 5), ("truncated", 4), ("oversize", 2),
         ("slowloris", 2)]
BODY = [("valid", 15), ("tokens", 50), ("records", 12), ("consumer", 12), ("header", 6), ("flip", 5)]
PIPELINE_LENGTHS = (2, 3, 5, 8)  # requests written back to back in one pipelined send
MAX_FRAME = 100 * 1024 * 1024  # the proxy's default socket.request.max.bytes


@dataclass
class Send:
    """Bytes to write on one connection and what must come back (one correlation id per request frame,
    None where the answer's id cannot be predicted, i.e. after a header lie)."""

    mode: str
    data: bytes
    corrs: list[int | None] = field(default_factory=list)
    desc: str = ""
    api: str = ""  # "key/version" of the (first) request
    closes: bool = False  # the send ends by closing (or expects the peer to close)
    wellformed: bool = False  # every request decodes as its schema (lies only inside records/consumer bytes)

    @property
    def frames(self) -> int:
        return max(1, len(self.corrs))


class Generator:
    def __init__(self, seed: int | str, worker: int, table: dict[int, tuple[int, int]], values: Values):
        self.rng = random.Random(f"{seed}:{worker}")
        self.values = values
        self.apis = [(k, v) for k, (lo, hi) in sorted(table.items()) for v in range(lo, hi + 1)
                     if request_schema(k, v) is not None]
        self.weights = [API_WEIGHTS.get(k, 1) for k, _ in self.apis]
        self.correlation = 0

    def next(self) -> Send:
        mode = _weighted(self.rng, MODES)
        return getattr(self, f"_{mode}")()

    # -- one request --------------------------------------------------------------------------------------------
    def request(self) -> tuple[bytes, int | None, bool, str, str, bool]:
        """(payload, expected correlation id, answer expected, description, api, well-formed) of one request."""
        rng = self.rng
        key, version = rng.choices(self.apis, weights=self.weights)[0]
        self.correlation = (self.correlation + 1) & 0x7FFFFFFF
        style = _weighted(rng, BODY)
        nested = style if style in ("records", "consumer") else None
        frame = build_frame(rng, key, version, self.correlation, self.values, nested=nested)
        corr: int | None = frame.correlation_id
        wellformed = style == "valid" or bool(nested and frame.mutations)
        if style == "tokens" or (nested and not frame.mutations):
            frame.mutations.append(mutate.mutate_tokens(rng, frame.body, mutate.STRUCTURED))
            frame.expect_answer = _expects_answer(frame)
        elif style == "flip":
            frame.mutations.append(mutate.flip_bytes(rng, frame.body))
        elif style == "header":
            frame.mutations.append(_header_lie(rng, frame))
            corr = None
        desc = "; ".join(m for m in frame.mutations if m) or "valid"
        return (frame.payload(), corr if frame.expect_answer else None, frame.expect_answer, desc, f"{key}/{version}",
                wellformed)

    def _frame(self) -> Send:
        payload, corr, answered, desc, api, wellformed = self.request()
        return Send("frame", _prefixed(payload), [corr] if answered else [], desc, api, closes=not answered,
                    wellformed=wellformed)

    def _pipeline(self) -> Send:
        parts, descs, api, all_wellformed = [], [], "", True
        corrs: list[int | None] = []
        for _ in range(self.rng.choice(PIPELINE_LENGTHS)):
            payload, corr, answered, desc, api, wellformed = self.request()
            all_wellformed = all_wellformed and wellformed
            parts.append(_prefixed(payload))
            descs.append(desc)
            if not answered:  # an unanswered request (acks=0) ends the burst: what follows cannot be matched
                return Send("pipeline", b"".join(parts), corrs, " | ".join(descs), api, closes=True)
            corrs.append(corr)
        return Send("pipeline", b"".join(parts), corrs, " | ".join(descs), api, wellformed=all_wellformed)

    def _slow(self) -> Send:
        send = self._frame()
        send.mode = "slow"
        return send

    def _slowloris(self) -> Send:
        send = self._frame()
        send.mode = "slowloris"
        return send

    def _garbage(self) -> Send:
        rng = self.rng
        body = rng.randbytes(rng.choice([0, 1, 4, 8, 12, 64, 1000]))
        if rng.random() < 0.5 and len(body) >= 4:  # a plausible api key and version in front of the garbage
            key, version = rng.choice(self.apis)
            body = struct.pack(">hh", key, version) + body[4:]
        return Send("garbage", _prefixed(body), [None], f"garbage {len(body)}", closes=True)

    def _truncated(self) -> Send:
        payload, _corr, _answered, desc, api, _wellformed = self.request()
        keep = self.rng.randrange(len(payload))
        claimed = len(payload) + self.rng.choice([0, 1, 1000])
        return Send("truncated", struct.pack(">i", claimed) + payload[:keep], [],
                    f"claims {claimed}, sends {keep}: {desc}", api, closes=True)

    def _oversize(self) -> Send:
        size = self.rng.choice([MAX_FRAME + 1, 2**31 - 1, -1, -(2**31), 2**30])
        tail = self.rng.randbytes(self.rng.choice([0, 10, 5000]))
        return Send("oversize", struct.pack(">i", size) + tail, [], f"size prefix {size}", closes=True)


def _header_lie(rng: random.Random, frame: Frame) -> str:
    tok = rng.choice([t for t in frame.header if t.kind in (INT, LEN)])
    old = tok.value
    if tok.path == "header.api_key":
        tok.value = rng.choice([-1, 67, 1000, 0x7FFF, rng.randrange(100)])
    elif tok.path == "header.api_version":
        tok.value = rng.choice([-1, frame.version + 1, 99, 0x7FFF])
    else:
        tok.value = mutate.hostile_length(rng, tok) if tok.kind == LEN else mutate.hostile_number(rng, tok)
    return f"header {tok.path} {old}->{tok.value}"


def _expects_answer(frame: Frame) -> bool:
    """Kafka never answers a Produce with acks=0. Read acks from the mutated bytes as the proxy will: a lie in
    a length before it (or bytes cut or spliced) can put a 0 there without touching the acks token."""
    if frame.api_key != 0:
        return True
    try:
        _, body = codec.decode_request(frame.payload())
    except codec.DecodeError:
        return True  # the proxy closes the connection: nothing is left to wait for either way
    return body.acks != 0


def _prefixed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _weighted(rng: random.Random, choices: list[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]

