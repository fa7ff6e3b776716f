"""CPU per request of one client connection's reader and writer (issue #20): a ClientConnection under uvloop with
a stub dispatcher that answers each request at once, a client process pipelining frames of one size (16 in
flight); the server process' CPU time over the requests. This tree against `--compare-ref` (exported with `git
archive`, as data_path.py does), alternating, the best of `--repeats` runs each.

    .venv/bin/python bench/client_reader_cost.py --compare-ref main --sizes 300 8000 65000 100000 1000000 [--later]

`--later`: each answer comes a loop step after its request was dispatched (`call_soon`), as a broker's does, so
its future completes after it was queued (the path of every answer that waits for a broker); without it, answers
exist when queued.

No broker, no handler: what it shows is the core's reading and writing alone, far steadier than data_path.py's
CPU-seconds per GB on this machine (a best-of-3 still moves by 10-20% between runs).
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from data_path import ROOT, export_tree
from scratch import scratch_dir

WINDOW = 16


class _Stub:
    """The dispatcher: an 8-byte answer with the request's correlation id, at once (`later`: a loop step later)."""

    def __init__(self, loop, later: bool = False):
        self.loop, self.later = loop, later

    async def start(self, frame, slot, session=None):
        answer = self.loop.create_future()
        frame = struct.pack(">ii", 4, struct.unpack_from(">i", frame, 4)[0])
        if self.later:
            self.loop.call_soon(answer.set_result, frame)
        else:
            answer.set_result(frame)
        return answer

    def forget(self, slot):
        pass


def _client(port: int, size: int, requests: int) -> None:
    body = os.urandom(size - 10)
    frames = [struct.pack(">ihhih", size, 0, 7, i, -1) + body for i in range(WINDOW)]
    with socket.create_connection(("127.0.0.1", port)) as s:
        sent = answered = 0
        pending = 0
        while answered < requests:
            while sent < requests and sent - answered < WINDOW:
                s.sendall(frames[sent % WINDOW])
                sent += 1
            pending += len(s.recv(65536))
            answered += pending // 8
            pending %= 8


async def _serve_one(size: int, requests: int, later: bool = False) -> float:
    """µs of this process' CPU per request."""
    import asyncio

    from fedkafka.proxy.core.connection import ClientConnection
    from fedkafka.proxy.core.limits import ByteBudget, Limits
    try:
        from fedkafka.proxy.core.client_frames import start_server
        kwargs: dict = {}
    except ImportError:  # before client_frames: a StreamReader
        from fedkafka.proxy.core.connection import start_server  # type: ignore[attr-defined,no-redef]
        kwargs = {"limit": 64 * 1024}
    done = asyncio.Event()
    dispatcher = _Stub(asyncio.get_running_loop(), later)

    async def on_client(reader, writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await ClientConnection(reader, writer, dispatcher, Limits(), ByteBudget(1 << 30)).run()
        done.set()

    server = await start_server(on_client, "127.0.0.1", 0, **kwargs)
    pid = os.fork()
    if pid == 0:
        _client(server.sockets[0].getsockname()[1], size, requests)
        os._exit(0)
    started = time.process_time()
    await done.wait()
    cpu = time.process_time() - started
    os.waitpid(pid, 0)
    server.close()
    return cpu / requests * 1e6


def _measure(tree: Path, size: int, requests: int, later: bool = False) -> float:
    command = [sys.executable, __file__, "--child", str(size), str(requests)] + ["--later"] * later
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(tree)))
    return float(out.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare-ref", help="also measure this git ref (e.g. main)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 8000, 65000, 100000, 1000000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=600_000_000, help="bytes sent per run (requests = bytes / size)")
    ap.add_argument("--later", action="store_true", help="answers come a loop step after their requests")
    ap.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import uvloop

        from fedkafka.proxy.core.server import pin_malloc_thresholds
        pin_malloc_thresholds()  # as the proxy does (server._run_one)
        print(uvloop.run(_serve_one(*args.child, args.later)))
        return
    with scratch_dir("client-reader-") as tmp:
        trees = {"new": ROOT} | ({"ref": export_tree(args.compare_ref, tmp)} if args.compare_ref else {})
        print(f"{'bytes':>9} " + " ".join(f"{side + ' µs/req':>14}" for side in trees) + "   new ÷ ref")
        for size in args.sizes:
            requests = max(1000, min(20000, args.bytes // size))
            runs: dict[str, list[float]] = {side: [] for side in trees}
            for _ in range(args.repeats):  # alternating: a slower minute hits both
                for side, tree in trees.items():
                    runs[side].append(_measure(tree, size, requests, args.later))
            best = {side: min(values) for side, values in runs.items()}
            ratio = f"{best['new'] / best['ref']:11.2f}" if "ref" in best else ""
            print(f"{size:>9} " + " ".join(f"{best[side]:14.1f}" for side in trees) + f" {ratio}", flush=True)


if __name__ == "__main__":
    main()
