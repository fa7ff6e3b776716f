"""CPU per broker answer of the upstream reader (`upstream.FrameProtocol`, issue #20) with and without its
SO_RCVLOWAT (`wake_for_whole_reads`): a FrameProtocol under uvloop asks a forked "broker" for one answer at a time
(an 8-byte request, as a consumer's fetch waits for its answer), the broker writes each answer of `--sizes` bytes
`--piece` bytes at a time (a broker writes a fetch answer a partition at a time); the reader process' CPU time
and its system calls (perf stat) over the answers. Both ways alternate, the best of `--repeats` runs each.

    .venv/bin/python bench/upstream_reader_cost.py --sizes 300000 1000000 4000000

No broker, no handler: the reader's own work (epoll_wait, read, get_buffer, buffer_updated per wake-up), far
steadier than data_path.py's CPU-seconds per GB on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import sys
import time
from pathlib import Path

import uvloop
from syscalls import SyscallCounter

from fedkafka.proxy.core.upstream import FrameProtocol


def _broker(listener: socket.socket, size: int, answers: int, piece: int) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answer = memoryview(struct.pack(">i", size) + os.urandom(size))
    for _ in range(answers):
        if len(conn.recv(8)) < 8:
            return
        for at in range(0, len(answer), piece):  # a broker writes an answer a partition at a time
            conn.sendall(answer[at:at + piece])
    conn.close()


async def _read_answers(port: int, answers: int, low_water: bool) -> None:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future = loop.create_future()
    protocol = FrameProtocol(lambda frame: arrived.set_result(len(frame)), lambda reason: None)
    transport, _ = await loop.create_connection(lambda: protocol, "127.0.0.1", port)
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if low_water:
        protocol.wake_for_whole_reads(socket.socket(sock.family, sock.type, sock.proto, sock.fileno()))
    for _ in range(answers):
        transport.write(b"\0" * 8)
        await arrived
        arrived = loop.create_future()
    transport.close()


def _measure(size: int, answers: int, low_water: bool, piece: int, tmp: Path) -> tuple[float, dict[str, int]]:
    """Seconds of CPU per answer, and system calls per answer, of the reading process."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            _broker(listener, size, answers, piece)
        finally:
            os._exit(0)
    listener.close()
    counter = SyscallCounter(os.getpid(), tmp / "perf.txt")
    started = time.process_time()
    uvloop.run(_read_answers(port, answers, low_water))
    cpu = time.process_time() - started
    counts = counter.stop()
    os.waitpid(pid, 0)
    return cpu / answers, {k: v // answers for k, v in counts.items() if v >= answers}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[300_000, 1_000_000, 4_000_000])
    ap.add_argument("--megabytes", type=int, default=400, help="answers per run: this much in all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--piece", type=int, default=64 * 1024, help="bytes the broker writes with one send")
    ap.add_argument("--low-water", type=int, default=FrameProtocol.LOW_WATER_BYTES, help="FrameProtocol's cap")
    args = ap.parse_args()
    FrameProtocol.LOW_WATER_BYTES = args.low_water
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    print(f"{'answer bytes':>12} {'low water µs':>13} {'without µs':>11} {'ratio':>6}  "
          "calls per answer (with; without)")
    for size in args.sizes:
        answers = max(20, args.megabytes * 1_000_000 // size)
        best: dict[bool, tuple[float, dict]] = {}
        for _ in range(args.repeats):
            for low_water in (True, False):
                cpu, calls = _measure(size, answers, low_water, args.piece, tmp)
                if low_water not in best or cpu < best[low_water][0]:
                    best[low_water] = (cpu, calls)
        (with_cpu, with_calls), (without_cpu, without_calls) = best[True], best[False]
        print(f"{size:12} {with_cpu * 1e6:13.0f} {without_cpu * 1e6:11.0f} {with_cpu / without_cpu:6.2f}  "
              f"{_calls(with_calls)}; {_calls(without_calls)}", flush=True)


def _calls(counts: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "all") or "-"


if __name__ == "__main__":
    sys.exit(main())
