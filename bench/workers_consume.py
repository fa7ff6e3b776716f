"""Why a consume's CPU per GB grows with `--workers` (workers_bench.py: 1.00 / 1.13 / 1.25 for 1 / 2 / 4): the
set-up of workers_bench.py (one broker, one controller, one proxy per worker count, 4 assigned confluent-kafka
consumers each on its own partition and connection), but the consumes only, of a fixed topic written once, with
what each run took counted per proxy:

- CPU of the parent and each worker (schedstat), wall time, and the same proxy's idle CPU over the same wall time
  (measured right after the run with no load) so that a figure net of idle can be given;
- Fetch requests and record bytes out (the workers' own /metrics, scraped outside the CPU window), Fetch answers
  that waited out their long poll (latency bucket >= 0.25 s), hence bytes per Fetch answer;
- read/write system calls (/proc/<pid>/io syscr + syscw) and context switches of all the proxy's processes;
- user and system CPU (/proc/<pid>/stat ticks) and minor page faults;
- with `--syscalls`, connects and accepts in the run (perf stat), and each proxy's CPU and epoll waits per second
  with no load, all proxies over the same 20 s.

`--small N` adds, per round and proxy, a consume of N records per consumer (the fixed cost of a consume: four
consumers' connections, metadata, the last long polls), so that its share in workers_bench's short runs (80 000
records: 0.1-0.4 s) can be computed.

    .venv/bin/python bench/workers_consume.py [--records 5000000] [--rounds 3] [--small 10] [--small-repeat 3]
        [--syscalls] [--hold SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import httpx
from data_path import RECORD, free_port, minor_faults
from idle_workers import free_range
from scratch import scratch_dir
from workers_bench import (
    ROOT,
    TOKEN,
    all_applied,
    consume_part,
    context_switches,
    cpu_by_process,
    family,
    produce_part,
    run_clients,
    start_controller,
    stop_processes,
    wait_for,
)

from fedkafka.kafka.cluster import start_clusters

RESULTS = Path(__file__).parent / "results"
CLIENTS = 4
COUNTED = ("connect", "accept4", "epoll_pwait", "epoll_wait", "io_uring_enter", "futex")


def start_proxy(tmp: Path, url: str, workers: int) -> tuple[subprocess.Popen, int, int]:
    """workers_bench's proxy with an admin listener (/metrics) per worker, on ADMIN + i."""
    port, admin = free_port(), free_range(workers)
    with open(tmp / f"proxy-w{workers}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                                 f"127.0.0.1:{port}", "--controller", url, "--token-file", str(tmp / "token"),
                                 "--workers", str(workers), "--pool", f"w{workers}",
                                 "--admin-listen", f"127.0.0.1:{admin}"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, port, admin


def scrape(admin: int, workers: int) -> dict[str, float]:
    """Fetch requests, Fetch answers that took 0.25 s or more (long polls waited out) and record bytes out,
    summed over the workers."""
    total = {"fetches": 0.0, "long_polls": 0.0, "bytes_out": 0.0}
    for i in range(workers):
        for line in httpx.get(f"http://127.0.0.1:{admin + i}/metrics", timeout=10).text.splitlines():
            if line.startswith("fedkafka_proxy_requests_total{"):
                api = line.split('"')[1]
                total[api] = total.get(api, 0.0) + float(line.split()[-1])
            if line.startswith('fedkafka_proxy_requests_total{api="Fetch"'):
                total["fetches"] += float(line.split()[-1])
            elif line.startswith('fedkafka_proxy_request_seconds_bucket{api="Fetch",le="0.1"}'):
                total["long_polls"] -= float(line.split()[-1])
            elif line.startswith('fedkafka_proxy_request_seconds_count{api="Fetch"'):
                total["long_polls"] += float(line.split()[-1])
            elif line.startswith("fedkafka_proxy_topic_bytes_total") and 'direction="out"' in line:
                total["bytes_out"] += float(line.split()[-1])
    return total


def faults(pid: int) -> int:
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            total += minor_faults(p)
    return total


def user_system(pid: int) -> tuple[float, float]:
    """User and system CPU-seconds of a proxy's processes so far (/proc/<pid>/stat, in ticks of 10 ms)."""
    user = system = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    ticks = os.sysconf("SC_CLK_TCK")
    return user / ticks, system / ticks


def io_calls(pid: int) -> int:
    """read- and write-family system calls of a proxy's processes so far."""
    calls = 0
    for p in family(pid):
        try:
            fields = dict(line.split(": ") for line in Path(f"/proc/{p}/io").read_text().splitlines())
        except OSError:
            continue
        calls += int(fields["syscr"]) + int(fields["syscw"])
    return calls


class SyscallCounter:
    """perf stat of every system call of a proxy's processes for one run."""

    def __init__(self, pid: int, out: Path):
        self.out = out
        pids = ",".join(str(p) for p in family(pid))
        events = ",".join(f"syscalls:sys_enter_{c}" for c in COUNTED)
        self.proc = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", pids, "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        return {f[2].removeprefix("syscalls:sys_enter_"): int(f[0])
                for f in (line.split(",") for line in self.out.read_text().splitlines())
                if len(f) > 2 and f[0].isdigit()}


def measure(proxy: tuple, workers: int, topic: str, each: int, tmp: Path, syscalls: bool) -> dict:
    proc, port, admin = proxy
    m0 = scrape(admin, workers)
    counter = SyscallCounter(proc.pid, tmp / f"perf-{workers}.txt") if syscalls else None
    f0, us0 = faults(proc.pid), user_system(proc.pid)
    c0, io0, s0, t0 = cpu_by_process(proc.pid), io_calls(proc.pid), context_switches(proc.pid), time.perf_counter()
    run_clients(consume_part, f"127.0.0.1:{port}", topic, CLIENTS, each, CLIENTS)
    wall = time.perf_counter() - t0
    c1, io1, s1 = cpu_by_process(proc.pid), io_calls(proc.pid), context_switches(proc.pid)
    f1, us1 = faults(proc.pid), user_system(proc.pid)
    calls = counter.stop() if counter else {}
    m1 = scrape(admin, workers)
    # the same proxy with no load for as long as the run took
    i0 = sum(cpu_by_process(proc.pid).values())
    time.sleep(wall)
    idle = sum(cpu_by_process(proc.pid).values()) - i0
    cpu = sum(c1[p] - c0.get(p, 0.0) for p in c1)
    gb = CLIENTS * each * RECORD / 1e9
    fetches = m1["fetches"] - m0["fetches"]
    return {"wall": wall, "gb": gb, "cpu": cpu, "idle_same_wall": idle, "cpu_s_per_gb": cpu / gb,
            "net_of_idle_cpu_s_per_gb": (cpu - idle) / gb, "fetches": fetches, "fetches_per_gb": fetches / gb,
            "long_polls": m1["long_polls"] - m0["long_polls"],
            "kb_per_fetch": (m1["bytes_out"] - m0["bytes_out"]) / max(fetches, 1) / 1e3,
            "io_calls_per_fetch": (io1 - io0) / max(fetches, 1), "switches_per_fetch": (s1 - s0) / max(fetches, 1),
            "connects": calls.get("connect", 0), "accepts": calls.get("accept4", 0),
            "faults_per_fetch": (f1 - f0) / max(fetches, 1),
            "user_s_per_gb": (us1[0] - us0[0]) / gb, "system_s_per_gb": (us1[1] - us0[1]) / gb,
            "load": os.getloadavg()[0],
            "requests": {k: m1[k] - m0.get(k, 0.0) for k in m1 if k not in ("long_polls", "bytes_out")},
            "worker_cpu": sorted((round(c1[p] - c0.get(p, 0.0), 3) for p in c1 if p != proc.pid), reverse=True)}


def idle_wakeups(proxies: dict, tmp: Path, seconds: float = 20.0) -> None:
    """System calls of each proxy with no load, all at once over the same `seconds` (a timer firing too often
    shows as epoll waits per second)."""
    counters = {n: SyscallCounter(proc.pid, tmp / f"idle-{n}.txt") for n, (proc, _, _) in proxies.items()}
    cpu0 = {n: sum(cpu_by_process(proc.pid).values()) for n, (proc, _, _) in proxies.items()}
    time.sleep(seconds)
    for n, counter in counters.items():
        cpu = sum(cpu_by_process(proxies[n][0].pid).values()) - cpu0[n]
        print(f"idle workers {n}: CPU {cpu / seconds:.4f} s/s, per second: "
              + ", ".join(f"{k} {v / seconds:.1f}" for k, v in counter.stop().items() if v), flush=True)


def show(kind: str, n: int, x: dict) -> None:
    print(f"{kind:5} workers {n}: {x['wall']:6.2f} s  {x['gb']:.2f} GB  CPU {x['cpu']:.3f} s = "
          f"{x['cpu_s_per_gb']:.3f} s/GB (idle over same wall {x['idle_same_wall']:.3f} s; net "
          f"{x['net_of_idle_cpu_s_per_gb']:.3f}; user {x['user_s_per_gb']:.3f} system {x['system_s_per_gb']:.3f})  "
          f"fetches {x['fetches']:.0f} ({x['fetches_per_gb']:.0f}/GB, {x['kb_per_fetch']:.0f} kB each, long polls "
          f"{x['long_polls']:.0f})  io calls/fetch {x['io_calls_per_fetch']:.1f}  switches/fetch "
          f"{x['switches_per_fetch']:.2f}  connects {x['connects']} accepts {x['accepts']}  faults/fetch "
          f"{x['faults_per_fetch']:.1f}  requests {x['requests']}  workers' CPU {x['worker_cpu']}  load "
          f"{x['load']:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5_000_000, help="per proxy's topic, over the 4 partitions")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small", type=int, default=0, help="also a consume of this many records per consumer")
    ap.add_argument("--small-repeat", type=int, default=1, help="small consumes per round and proxy")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--syscalls", action="store_true")
    ap.add_argument("--hold", type=float, default=0, help="seconds to wait idle after the rounds (to attach a tool)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    each = args.records // CLIENTS
    with scratch_dir("workers-consume-") as tmp:
        (cluster,) = start_clusters(["b1"], tmp / "k")
        procs: list[subprocess.Popen] = []
        runs: dict = {"long": {n: [] for n in counts}, "small": {n: [] for n in counts}}
        try:
            controller, url = start_controller(tmp, cluster.bootstrap, [f"w{n}" for n in counts], CLIENTS)
            procs.append(controller)
            proxies = {n: start_proxy(tmp, url, n) for n in counts}
            procs += [p for p, _, _ in proxies.values()]
            api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            wait_for(lambda: all_applied(api, {n: port for n, (_, port, _) in proxies.items()}), 300,
                     "every worker registered and applied the view")
            api.close()
            for n in counts:  # written once; warms every worker (16 connections) on produce and fetch
                run_clients(produce_part, f"127.0.0.1:{proxies[n][1]}", f"w{n}", 4 * CLIENTS,
                            args.records // (4 * CLIENTS), CLIENTS)
                run_clients(consume_part, f"127.0.0.1:{proxies[n][1]}", f"w{n}", 4 * CLIENTS, 500, CLIENTS)
            print(f"written {args.records} records per topic", flush=True)
            if args.syscalls:
                idle_wakeups(proxies, tmp)
            for r in range(args.rounds):
                order = counts[r % len(counts):] + counts[:r % len(counts)]
                for n in order:
                    runs["long"][n].append(measure(proxies[n], n, f"w{n}", each, tmp, args.syscalls))
                    show("long", n, runs["long"][n][-1])
                    for _ in range(args.small_repeat if args.small else 0):
                        runs["small"][n].append(measure(proxies[n], n, f"w{n}", args.small, tmp, args.syscalls))
                        show("small", n, runs["small"][n][-1])
            if args.hold:
                print("holding: " + ", ".join(f"workers {n}: {family(p.pid)}" for n, (p, _, _) in proxies.items()),
                      flush=True)
                time.sleep(args.hold)
        finally:
            stop_processes(procs)
            cluster.stop()
    summary(runs, counts)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"workers-consume-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"records": args.records, "small": args.small, "runs": runs}, indent=2))
    print(f"wrote {out}")


def summary(runs: dict, counts: list[int]) -> None:
    keys = ("cpu_s_per_gb", "net_of_idle_cpu_s_per_gb", "user_s_per_gb", "system_s_per_gb", "fetches_per_gb",
            "kb_per_fetch", "io_calls_per_fetch", "switches_per_fetch", "cpu", "wall")
    for kind, by_n in runs.items():
        if not by_n[counts[0]]:
            continue
        print(f"\n{kind}: medians over rounds (per-round ratio to 1 worker, median)")
        for n in counts:
            med = {k: median(x[k] for x in by_n[n]) for k in keys}
            ratio = median(a["cpu_s_per_gb"] / b["cpu_s_per_gb"] for a, b in zip(by_n[n], by_n[counts[0]],
                                                                                  strict=True))
            med["cpu_per_run"] = median(x["cpu"] for x in by_n[n])
            print(f"  workers {n}: " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()) + f"  ÷1w {ratio:.2f}")


if __name__ == "__main__":
    main()
