"""Cost of records.py's calls on the data path, pure Python vs its compiled twin (fedkafka_speedups), in one process.

- produce: `produce_batch` (walk, count check, CRC-32C) of one 64 KiB batch of 1 KB records (a producer's
  batch.size), then `with_producer` (copy, producer id rewrite, CRC-32C) as a part of an idempotent produce.
- fetch, moved: `fit_to_segment` of a 1 MiB answer of 16 such batches moved by a delta (copy + patch).
- fetch, identity: `fit_to_segment` of the same answer with nothing to change (the walk only).
- gap: `gap_batches` over 2^40 offsets (512 batches).

Both variants run interleaved; prints µs per call (best of the rounds) and the ratio, and writes
bench/results/records_cost.json.

Then the produce path's batch work before and after the CRC change (`--produce` runs only this), old and new
interleaved in one process, under each implementation: per batch of 16 KiB, 64 KiB and 1 MiB of 1 KB records, the
check and the upstream request's parts (`produce_request_parts`, as UpstreamProduce writes it), and for an idempotent
batch the rewrite to a physical id between them.
- old: `produce_batch` (walk, counts, CRC-32C), `with_producer` as it was (a copy of the batch, the producer fields
  rewritten, the CRC recomputed: `bytearray` + `rewrite_producer`), the copy written by reference.
- new: `forwarded_batch` (a plain batch's CRC left to its broker, an idempotent one's checked), `with_producer` (a
  61-byte head, its CRC updated for the change in O(log n), the rest of the client's buffer by reference).
Prints µs per batch, new / old, and what the new code saves per GB produced in such batches.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from fedkafka.protocol import records as rec

ROUNDS, REPEAT = 7, 200


def batch(base_offset: int, records: int = 64, producer_id: int = 7) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
                                        producer_epoch=0 if producer_id >= 0 else -1,
                                        base_sequence=0 if producer_id >= 0 else -1, batch_size=1 << 21)
    value = os.urandom(1000)
    for i in range(records):
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


def _old_with_producer(records: bytes, h: rec.BatchHeader, producer_id: int, epoch: int) -> bytearray:
    """`records.with_producer` before the change: a copy, rewritten, its CRC-32C recomputed."""
    out = bytearray(records)
    rec.rewrite_producer(out, h, producer_id, epoch)
    return out


def _upstream(records) -> list:
    return rec.produce_request_parts(9, 7, "proxy", -1, 30000, [("phys", [(0, records)])])


def produce_path_cases() -> dict[str, tuple]:
    """name -> (old, new, bytes per call): one batch through the check, the rewrite (idempotent) and the parts."""
    out = {}
    for kib, count in ((16, 16), (64, 64), (1024, 1024)):
        plain, idempotent = batch(0, count, -1), batch(0, count, 7)

        def old_plain(b=plain):
            rec.produce_batch(b)
            _upstream(b)

        def new_plain(b=plain):
            rec.forwarded_batch(b)
            _upstream(b)

        def old_idempotent(b=idempotent):
            h = rec.produce_batch(b)
            _upstream(_old_with_producer(b, h, 9_000_000_001, 3))

        def new_idempotent(b=idempotent):
            h = rec.forwarded_batch(b)
            _upstream(rec.with_producer(b, h, 9_000_000_001, 3))

        out[f"plain batch, {kib} KiB"] = (old_plain, new_plain, len(plain))
        out[f"idempotent batch, {kib} KiB"] = (old_idempotent, new_idempotent, len(idempotent))
    return out


def produce_path() -> dict:
    results: dict = {}
    for impl in ("compiled", "python"):
        rec.use(impl)  # type: ignore[arg-type]
        print(f"produce path, records.py {impl}: µs per batch, best of {ROUNDS} (old and new interleaved)")
        for name, (old, new, size) in produce_path_cases().items():
            best = {"old": float("inf"), "new": float("inf")}
            for _ in range(ROUNDS):
                best["old"] = min(best["old"], per_call_us(old))
                best["new"] = min(best["new"], per_call_us(new))
            saved = (best["old"] - best["new"]) * (1 << 30) / size / 1e6
            results[f"{impl}: {name}"] = {**best, "ratio": best["new"] / best["old"], "saved_cpu_s_per_gb": saved}
            print(f"  {name:28} old {best['old']:8.2f}  new {best['new']:8.2f}  "
                  f"new/old {best['new'] / best['old']:5.2f}  saves {saved:.3f} CPU-s/GB", flush=True)
    return results


def main() -> None:
    if not rec.compiled_available():
        raise SystemExit("fedkafka_speedups is not built (rust/fedkafka_speedups: `make install` with cargo)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    produce = produce_path()
    (out / "records_cost_produce.json").write_text(json.dumps({**produce, "load_average": os.getloadavg()},
                                                              indent=2))
    if "--produce" in sys.argv[1:]:
        return
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
    (out / "records_cost.json").write_text(json.dumps({**results, "load_average": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
