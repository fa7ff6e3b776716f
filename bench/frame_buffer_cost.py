"""Cost of a large broker answer's buffer in `upstream.FrameProtocol`: `records.frame_buffer` allocated and filled
as the socket fills it (256 KiB reads), pure Python (`bytearray(n)`: zero-filled) against the compiled twin (not
zero-filled), with malloc's thresholds pinned as the proxy pins them. `timeit`, best of 7; prints µs per answer
and the CPU-seconds per GB of answers the zero fill costs.
"""

from __future__ import annotations

import timeit

from fedkafka.protocol import records as rec
from fedkafka.proxy.core.server import pin_malloc_thresholds

READ = 256 * 1024


def received(size: int, source: bytes) -> bytearray:
    buf = rec.frame_buffer(size)
    view = memoryview(buf)
    for at in range(0, size, READ):
        view[at:at + READ] = source[at:at + READ]
    return buf


def best_us(fn, number: int = 200) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def main() -> None:
    if not rec.compiled_available():
        raise SystemExit("fedkafka_speedups is not built (rust/fedkafka_speedups: `make install` with cargo)")
    print("malloc thresholds pinned:", pin_malloc_thresholds())
    for size in (1 << 20, 4 << 20, 16 << 20):
        source = bytes(range(256)) * (size // 256)
        us = {}
        for impl in ("python", "compiled"):
            rec.use(impl)
            us[impl] = best_us(lambda s=size, src=source: received(s, src))
        saved = (us["python"] - us["compiled"]) * (1 << 30) / size / 1e6
        print(f"{size >> 20:>3} MiB answer: zero-filled {us['python']:7.0f} µs, not {us['compiled']:7.0f} µs: "
              f"{saved:.3f} CPU-s/GB")


if __name__ == "__main__":
    main()
