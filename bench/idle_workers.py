"""A proxy's CPU with no load, per worker count, and this tree against `--compare-ref REF`: one broker, one
controller, and for each tree and worker count a proxy with an admin listener (/metrics on every worker, as
deployed), all measured over the same windows (so the machine's load is the same for all), with their epoll
waits per second (perf stat), i.e. how often something wakes them.

    .venv/bin/python bench/idle_workers.py [--workers 1,4] [--windows 5] [--seconds 20] [--compare-ref HEAD]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import httpx
from data_path import export_tree, free_port, tree_path
from scratch import scratch_dir
from workers_bench import (
    ROOT,
    TOKEN,
    all_applied,
    cpu_by_process,
    family,
    start_controller,
    stop_processes,
    wait_for,
)

from fedkafka.kafka.cluster import start_clusters


def start_proxy(tmp: Path, url: str, workers: int, tree: Path | None, name: str) -> tuple[subprocess.Popen, int]:
    port, admin = free_port(), free_range(workers)
    env = None if tree is None else dict(os.environ, PYTHONPATH=tree_path(tree))
    with open(tmp / f"proxy-{name}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                                 f"127.0.0.1:{port}", "--controller", url, "--token-file", str(tmp / "token"),
                                 "--workers", str(workers), "--pool", name, "--admin-listen", f"127.0.0.1:{admin}"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=tree or ROOT, env=env)  # cwd: sys.path[0]
    return proc, port


def free_range(n: int) -> int:
    """A port whose next n - 1 are free too (worker i's admin listener takes base + i)."""
    while True:
        base = random.randrange(40000, 60000, 10)
        with contextlib.ExitStack() as stack:
            try:
                for i in range(n):
                    stack.enter_context(socket.create_server(("127.0.0.1", base + i)))
            except OSError:
                continue
        return base


def waits(pids: list[int], out: Path) -> subprocess.Popen:
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", "syscalls:sys_enter_epoll_pwait", "-p",
                             ",".join(map(str, pids)), "-o", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def counted(proc: subprocess.Popen, out: Path) -> int:
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    return sum(int(f[0]) for f in (line.split(",") for line in out.read_text().splitlines())
               if len(f) > 2 and f[0].isdigit())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,4")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--compare-ref", default=None)
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with scratch_dir("idle-workers-") as tmp:
        trees: dict[str, Path | None] = {"this": None}
        if args.compare_ref:
            trees[args.compare_ref] = export_tree(args.compare_ref, tmp / "ref")
        (cluster,) = start_clusters(["b1"], tmp / "k")
        procs: list[subprocess.Popen] = []
        try:
            controller, url = start_controller(tmp, cluster.bootstrap, ["t"], 1)
            procs.append(controller)
            proxies = {(t, n): start_proxy(tmp, url, n, tree, f"{t[:8]}-w{n}".replace("/", "_"))
                       for t, tree in trees.items() for n in counts}
            procs += [p for p, _ in proxies.values()]
            api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            wait_for(lambda: all_applied(api, {n: port for (_, n), (_, port) in proxies.items()}), 300,
                     "every worker registered and applied the view")
            api.close()
            time.sleep(5)
            cpu: dict = {k: [] for k in proxies}
            wakeups: dict = {k: [] for k in proxies}
            for w in range(args.windows):
                perf = {k: waits(family(p.pid), tmp / f"w{i}.txt") for i, (k, (p, _)) in enumerate(proxies.items())}
                time.sleep(0.5)
                before = {k: sum(cpu_by_process(p.pid).values()) for k, (p, _) in proxies.items()}
                time.sleep(args.seconds)
                for k, (p, _) in proxies.items():
                    cpu[k].append((sum(cpu_by_process(p.pid).values()) - before[k]) / args.seconds)
                for i, k in enumerate(proxies):
                    wakeups[k].append(counted(perf[k], tmp / f"w{i}.txt") / (args.seconds + 0.5))
                print(f"window {w + 1} load {os.getloadavg()[0]:.2f}: " + ", ".join(
                    f"{t} w{n} {cpu[(t, n)][-1] * 1000:.2f} ms/s {wakeups[(t, n)][-1]:.0f} waits/s"
                    for t, n in proxies), flush=True)
        finally:
            stop_processes(procs)
            cluster.stop()
    print("\nmedians: " + ", ".join(f"{t} workers {n}: {median(cpu[(t, n)]) * 1000:.2f} ms CPU/s, "
                                    f"{median(wakeups[(t, n)]):.0f} epoll waits/s" for t, n in proxies))


if __name__ == "__main__":
    main()
