"""What a relay of bytes costs per GB on this machine: copied through user space, spliced, or under uvloop
(issue #20: is the proxy's fetch path at the floor of a copying relay, and would splice(2) lower that floor?).

A "broker" sends a file from the page cache with sendfile (as Kafka does) to a relay over loopback TCP, and the
relay passes the bytes on to a "client" that reads and drops them. Relay modes, in rotating order each round:
- `copy`: blocking recv_into one buffer of a frame's size, then one send of it (store and forward, as the
  proxy's fetch path: `upstream.FrameProtocol`, then one writev);
- `splice`: socket -> pipe -> socket with splice(2), no byte in user space: what an identity segment's record
  sets could cost if the proxy passed them on without reading them;
- `uvloop`: the copy relay built as the proxy is: a BufferedProtocol reads each frame into a buffer of its own
  (`records.frame_buffer`), `transport.write` passes it on, reading paused while the client's socket is full.
Each relay is a forked process; its CPU (user + system, getrusage of the child) per GB is what is compared.
Nothing here is the proxy: it bounds what the proxy's byte moving can cost at best.

    .venv/bin/python bench/splice_cost.py [--mb 1024] [--rounds 3] [--frame-mb 4] [--pipe-kb 1024]
        [--modes copy,splice,uvloop]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import tempfile
import threading
import time

from fedkafka.protocol.records import frame_buffer  # not zero-filled, as the proxy's (a memset was 20% here)

F_SETPIPE_SZ = 1031


def relay(mode: str, listen: socket.socket, sink_port: int, total: int, frame: int, pipe_bytes: int) -> None:
    src, _ = listen.accept()
    dst = socket.create_connection(("127.0.0.1", sink_port))
    left = total
    if mode == "uvloop":
        import uvloop

        uvloop.run(_loop_relay(src, dst, total, frame))
    elif mode == "copy":
        buf = bytearray(frame)
        view = memoryview(buf)
        while left:
            want = min(frame, left)
            got = 0
            while got < want:
                n = src.recv_into(view[got:want])
                if not n:
                    raise ConnectionError("source closed early")
                got += n
            dst.sendall(view[:want])
            left -= want
    else:
        r, w = os.pipe()
        fcntl.fcntl(w, F_SETPIPE_SZ, pipe_bytes)
        while left:
            n = os.splice(src.fileno(), w, min(pipe_bytes, left), flags=os.SPLICE_F_MOVE)
            if not n:
                raise ConnectionError("source closed early")
            moved = 0
            while moved < n:
                moved += os.splice(r, dst.fileno(), n - moved, flags=os.SPLICE_F_MOVE)
            left -= n
        os.close(r)
        os.close(w)
    dst.close()
    src.close()


async def _loop_relay(src: socket.socket, dst: socket.socket, total: int, frame: int) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    done = loop.create_future()

    class Out(asyncio.Protocol):
        def pause_writing(self) -> None:
            reader.pause_reading()

        def resume_writing(self) -> None:
            reader.resume_reading()

    out, _ = await loop.connect_accepted_socket(Out, dst)

    class In(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.left, self.filled = total, 0
            self.buf = frame_buffer(min(frame, total))

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buf)[self.filled:]

        def buffer_updated(self, nbytes: int) -> None:
            self.filled += nbytes
            if self.filled == len(self.buf):
                out.write(self.buf)
                self.left -= self.filled
                self.filled = 0
                if self.left:
                    self.buf = frame_buffer(min(frame, self.left))
                elif not done.done():
                    done.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if not done.done():
                done.set_result(None)

    reader, _ = await loop.connect_accepted_socket(In, src)
    await done
    while out.get_write_buffer_size():
        await asyncio.sleep(0.001)
    out.close()
    reader.close()


def run(mode: str, path: str, size: int, total: int, frame: int, pipe_bytes: int) -> tuple[float, float]:
    """(relay CPU-seconds per GB, wall-clock MB/s) of one round."""
    sink = socket.create_server(("127.0.0.1", 0))
    listen = socket.create_server(("127.0.0.1", 0))
    received = [0]

    def drain() -> None:
        conn, _ = sink.accept()
        buf = bytearray(1 << 20)
        while n := conn.recv_into(buf):
            received[0] += n
        conn.close()

    reader = threading.Thread(target=drain)
    reader.start()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the relay
        code = 0
        try:
            relay(mode, listen, sink.getsockname()[1], total, frame, pipe_bytes)
        except BaseException as e:  # the child's failure, printed before it exits
            print(f"relay ({mode}) failed: {e!r}", flush=True)
            code = 1
        finally:
            os._exit(code)
    src = socket.create_connection(listen.getsockname())
    with open(path, "rb") as f:
        sent = 0
        while sent < total:
            sent += os.sendfile(src.fileno(), f.fileno(), sent % size, min(size - sent % size, total - sent))
    src.close()
    _, _, usage = os.wait4(pid, 0)
    reader.join()
    elapsed = time.perf_counter() - start
    listen.close()
    sink.close()
    if received[0] != total:
        raise SystemExit(f"{mode}: the client got {received[0]} of {total} bytes")
    return (usage.ru_utime + usage.ru_stime) / (total / 1e9), total / elapsed / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024, help="bytes relayed per round, MB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frame-mb", type=int, default=4, help="copy mode: bytes gathered before each send, MB")
    ap.add_argument("--pipe-kb", type=int, default=1024,
                    help="splice mode: the pipe's size (F_SETPIPE_SZ; at most /proc/sys/fs/pipe-max-size), KiB")
    ap.add_argument("--modes", default="copy,splice,uvloop")
    args = ap.parse_args()
    total, frame = args.mb << 20, args.frame_mb << 20
    size = min(total, 256 << 20)
    with tempfile.NamedTemporaryFile(prefix="splice-cost-") as f:
        f.write(os.urandom(1 << 20) * (size >> 20))
        f.flush()
        with open(f.name, "rb") as warm:  # in the page cache before the first round
            while warm.read(1 << 24):
                pass
        modes = args.modes.split(",")
        results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
        for r in range(args.rounds):
            for mode in modes[r % len(modes):] + modes[:r % len(modes)]:  # each mode goes first in turn
                cpu, rate = run(mode, f.name, size, total, frame, args.pipe_kb << 10)
                results[mode].append((cpu, rate))
                print(f"round {r + 1} {mode:7} relay CPU {cpu:.3f} s/GB  {rate:7.0f} MB/s  "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    for mode, runs in results.items():
        cpus = sorted(c for c, _ in runs)
        rates = sorted(x for _, x in runs)
        print(f"{mode:7} median relay CPU {cpus[len(cpus) // 2]:.3f} s/GB  median {rates[len(rates) // 2]:.0f} MB/s")


if __name__ == "__main__":
    main()
