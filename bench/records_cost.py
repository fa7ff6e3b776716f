"""Cost of records.py's calls on the data path, pure Python vs its compiled twin (fedkafka_speedups), in one process.

- produce: `produce_batch` (walk, count check, CRC-32C) of one 64 KiB batch of 1 KB records (a producer's
  batch.size), then `with_producer` (copy, producer id rewrite, CRC-32C) as a part of an idempotent produce.
- fetch, moved: `fit_to_segment` of a 1 MiB answer of 16 such batches moved by a delta (copy + patch).
- fetch, identity: `fit_to_segment` of the same answer with nothing to change (the walk only).
- gap: `gap_batches` over 2^40 offsets (512 batches).

Both variants run interleaved; prints µs per call (best of the rounds) and the ratio, and writes
bench/results/records_cost.json.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from fedkafka.protocol import records as rec

ROUNDS, REPEAT = 7, 200


def batch(base_offset: int) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=7,
                                        producer_epoch=0, base_sequence=0, batch_size=1 << 20)
    value = os.urandom(1000)
    for i in range(64):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=None, value=value, headers=[])
    out = bytearray(builder.build())
    struct.pack_into(">q", out, 0, base_offset)
    return bytes(out)


def cases() -> dict[str, object]:
    one = batch(0)
    answer = b"".join(batch(64 * i) for i in range(16))

    def produce():
        h = rec.produce_batch(one)
        rec.with_producer(one, h, 9_000_000_001, 3)

    return {
        "produce batch check + producer rewrite (64 KiB)": produce,
        "fetch moved: fit_to_segment (1 MiB, delta)": lambda: rec.fit_to_segment(answer, phys_end=None,
                                                                                 delta=10**9, max_epoch=5),
        "fetch identity: fit_to_segment (1 MiB, no change)": lambda: rec.fit_to_segment(answer, phys_end=None,
                                                                                       delta=0, max_epoch=5),
        "gap_batches (2^40 offsets)": lambda: rec.gap_batches(0, 1 << 40, 5),
    }


def per_call_us(fn) -> float:
    start = time.perf_counter()
    for _ in range(REPEAT):
        fn()
    return (time.perf_counter() - start) / REPEAT * 1e6


def main() -> None:
    if not rec.compiled_available():
        raise SystemExit("fedkafka_speedups is not built (rust/fedkafka_speedups: `make install` with cargo)")
    results = {}
    for name, fn in cases().items():
        best = {"python": float("inf"), "compiled": float("inf")}
        for _ in range(ROUNDS):
            for impl in best:
                rec.use(impl)  # type: ignore[arg-type]
                best[impl] = min(best[impl], per_call_us(fn))
        results[name] = best
        print(f"{name:52} python {best['python']:8.1f} µs  compiled {best['compiled']:8.1f} µs  "
              f"÷ {best['python'] / best['compiled']:5.1f}", flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "records_cost.json").write_text(json.dumps({**results, "load_average": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
