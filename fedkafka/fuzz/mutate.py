"""Lies told in a token list: lengths, counts, tag sections, varints, boundary numbers, cuts and splices.

Each function changes `tokens` in place and returns a short description (kept with the frame in the corpus).
"""

from __future__ import annotations

import random

from fedkafka.fuzz.tokens import COUNT, DATA, INT, LEN, TAG, TAGS, Tok, width

# Lengths and counts a hostile client claims; 10**10 is the one that made kio's native decoder allocate ~40 GB.
_UVARINT_LIES = [0, 1, 2, 128, 0x7FFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 10**10, 2**35, 2**62, 2**64 - 1]
_SIGNED_LIES = {"i8": [-128, -2, 127], "i16": [-2, -1, 0x7FFF, -0x8000], "i32": [-2, -1, 2**31 - 1, -(2**31), 0x7FFF],
                "i64": [-2, -1, 2**63 - 1, -(2**63)], "varint": [-2, -1, 2**31 - 1, 2**63 - 1, 10**10, -(2**31)]}


def hostile_length(rng: random.Random, tok: Tok) -> int:
    current = tok.value if isinstance(tok.value, int) else 0
    near = [current + 1, current - 1, current + 2, current * 2 + 1]
    if tok.enc == "uvarint":
        return max(0, rng.choice(near + _UVARINT_LIES))
    return rng.choice(near + _SIGNED_LIES.get(tok.enc, [-1, 0]) + [rng.randrange(1 << 20)])


def hostile_number(rng: random.Random, tok: Tok) -> int:
    bits = 8 * (width(tok.enc) or 8)
    signed = tok.enc.startswith("i") or tok.enc == "varint"
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return rng.choice([lo, hi, -1, 0, 1, lo + 1, hi - 1, rng.randint(lo, hi), tok.value + 1, tok.value - 1])


def change_length(rng: random.Random, tokens: list[Tok]) -> str:
    tok = _pick(rng, tokens, (LEN, COUNT, TAGS))
    if tok is None:
        return ""
    old, tok.value = tok.value, hostile_length(rng, tok)
    return f"len {tok.path} {old}->{tok.value}"


def change_number(rng: random.Random, tokens: list[Tok]) -> str:
    """A boundary value in a number; waits and timeouts (what a hostile client stretches) are drawn more often."""
    timing = [t for t in tokens if t.kind == INT and ("wait" in t.path or "timeout" in t.path)]
    tok = rng.choice(timing) if timing and rng.random() < 0.3 else _pick(rng, tokens, (INT,))
    if tok is None:
        return ""
    old, tok.value = tok.value, hostile_number(rng, tok)
    return f"int {tok.path} {old}->{tok.value}"


def overlong_varint(rng: random.Random, tokens: list[Tok]) -> str:
    """A uvarint written with redundant continuation bytes, or one that never ends."""
    candidates = [t for t in tokens if t.enc in ("uvarint", "varint")]
    if not candidates:
        return ""
    tok = rng.choice(candidates)
    raw = tok.encode()
    if rng.random() < 0.5:
        pad = rng.choice([1, 4, 6, 10, 20])
        tok.value = bytes(b | 0x80 for b in raw) + b"\x80" * (pad - 1) + b"\x00"
        what = f"overlong+{pad}"
    else:
        tok.value = b"\xff" * rng.choice([5, 10, 11, 64])
        what = f"unterminated {len(tok.value)}"
    tok.enc = "raw"
    return f"varint {tok.path} {what}"


def bogus_tags(rng: random.Random, tokens: list[Tok]) -> str:
    """A tagged-field section with unknown, duplicate, out-of-order tags or lying tag lengths."""
    candidates = [i for i, t in enumerate(tokens) if t.kind == TAGS]
    if not candidates:
        return ""
    i = rng.choice(candidates)
    n = rng.choice([1, 2, 3, 50])
    tags = []
    for _ in range(n):
        tag = rng.choice([0, 1, 2, 3, 127, 128, 2**31 - 1, 2**32, rng.randrange(1 << 14)])
        data = rng.randbytes(rng.choice([0, 1, 4, 100]))
        length = len(data) if rng.random() < 0.7 else hostile_length(rng, Tok(LEN, "uvarint", len(data)))
        tags += [Tok(TAG, "uvarint", tag, f"{tokens[i].path}.tag"), Tok(LEN, "uvarint", length, f"{tokens[i].path}.tl"),
                 Tok(DATA, "raw", data, f"{tokens[i].path}.tv")]
    claimed = n if rng.random() < 0.8 else rng.choice([n + 1, 2**31, 10**10])
    tokens[i:i + 1] = [Tok(TAGS, "uvarint", claimed, tokens[i].path), *tags]
    return f"tags {tokens[i].path} x{n} claims {claimed}"


def cut(rng: random.Random, tokens: list[Tok]) -> str:
    """The body ends early, at a token boundary or inside one (the size prefix still matches)."""
    if len(tokens) < 2:
        return ""
    at = rng.randrange(1, len(tokens))
    tok = tokens[at]
    raw = tok.encode()
    keep = rng.randrange(len(raw)) if len(raw) > 1 and rng.random() < 0.5 else 0
    del tokens[at:]
    if keep:
        tokens.append(Tok(DATA, "raw", raw[:keep], tok.path))
    return f"cut at {tok.path}+{keep}"


def splice(rng: random.Random, tokens: list[Tok]) -> str:
    """Delete or duplicate a run of tokens (a field missing or repeated, lengths untouched)."""
    if len(tokens) < 2:
        return ""
    a = rng.randrange(len(tokens))
    b = min(len(tokens), a + rng.choice([1, 1, 2, 5]))
    if rng.random() < 0.5:
        del tokens[a:b]
        return f"delete {tokens[a - 1].path if a else ''}..{b - a}"
    tokens[b:b] = [Tok(t.kind, t.enc, t.value, t.path) for t in tokens[a:b]]
    return f"duplicate {tokens[a].path}..{b - a}"


def garbage_tail(rng: random.Random, tokens: list[Tok]) -> str:
    data = rng.randbytes(rng.choice([1, 3, 16, 300]))
    tokens.append(Tok(DATA, "raw", data, "tail"))
    return f"tail +{len(data)}"


def flip_bytes(rng: random.Random, tokens: list[Tok]) -> str:
    """Random bit flips in the serialized body (no structure: what the other mutations miss)."""
    raw = bytearray(b"".join(t.encode() for t in tokens))
    if not raw:
        return ""
    flips = rng.choice([1, 1, 2, 8])
    for _ in range(flips):
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    tokens[:] = [Tok(DATA, "raw", bytes(raw), "flipped")]
    return f"flip x{flips}"


STRUCTURED = [(change_length, 5), (change_number, 3), (overlong_varint, 2), (bogus_tags, 2), (cut, 2), (splice, 1),
              (garbage_tail, 1)]
ALL = [*STRUCTURED, (flip_bytes, 2)]


def mutate_tokens(rng: random.Random, tokens: list[Tok], ops=None) -> str:
    """One or two mutations drawn from `ops` (weighted); the description of what was done."""
    ops = ops or ALL
    done = []
    for _ in range(rng.choice([1, 1, 1, 2])):
        for _attempt in range(4):
            op = rng.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]
            what = op(rng, tokens)
            if what:
                done.append(what)
                break
    if not done:  # an empty body (ApiVersions v0) has nothing to lie in: give it a tail
        done.append(garbage_tail(rng, tokens))
    return "; ".join(done)


def consumer_protocol(rng: random.Random, tokens: list[Tok]) -> str:
    """Inside JoinGroup/SyncGroup's consumer-protocol bytes (the outer bytes length stays true)."""
    return mutate_tokens(rng, tokens, [(change_length, 4), (change_number, 3), (cut, 1), (garbage_tail, 1)])


def record_batch(rng: random.Random, tokens: list[Tok]) -> str:
    """Inside one record batch: values and varints only, so the header keeps its layout (length and CRC are
    recomputed unless the lie is in them)."""
    return mutate_tokens(rng, tokens, [(change_length, 4), (change_number, 4), (overlong_varint, 1)])


def _pick(rng: random.Random, tokens: list[Tok], kinds: tuple[str, ...]) -> Tok | None:
    candidates = [t for t in tokens if t.kind in kinds and t.enc != "raw" and isinstance(t.value, int)]
    return rng.choice(candidates) if candidates else None

