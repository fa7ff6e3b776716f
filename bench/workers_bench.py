"""Workers: a proxy's CPU-seconds per GB with `--workers 1, 2, 4` behind a controller, side by side in one run.

One broker, one controller (SQLite) and one proxy per worker count, each alone in its pool (its Metadata names
only itself). The load is the same for every proxy: `--clients` confluent-kafka producers in threads, each on
its own connection and partition (the kernel spreads connections over a proxy's workers), then as many
assigned consumers reading those records back. The proxies take turns within each round, in rotating order.
CPU time is the proxy's parent plus all its workers, from schedstat (data_path.cpu_seconds). Prints each
proxy's CPU-s/GB and its ratio to one worker's, throughput, each worker's share, context switches per MB,
each proxy's CPU use when idle and the load average. A consume run reads everything produced so far (round r:
r times a produce run).

    .venv/bin/python bench/workers_bench.py [--records 80000] [--rounds 2] [--workers 1,2,4]
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import httpx
from data_path import RECORD, consume, cpu_seconds, free_port, produce
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"


def family(pid: int) -> list[int]:
    """A proxy's parent and its live children (the workers, and multiprocessing's resource tracker)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            kids += [int(k) for k in (task / "children").read_text().split()]
    return [pid, *kids]


def cpu_by_process(pid: int) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in family(pid) if Path(f"/proc/{p}").exists()}


def context_switches(pid: int) -> int:
    """Voluntary (waits for I/O) plus involuntary (preempted) switches of all of a proxy's threads."""
    total = 0
    for p in family(pid):
        for status in Path(f"/proc/{p}/task").glob("*/status"):
            with contextlib.suppress(OSError):  # a thread or process that ended meanwhile
                total += sum(int(line.split()[1]) for line in status.read_text().splitlines()
                             if "ctxt_switches:" in line)
    return total


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if value := predicate():
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def start_controller(tmp: Path, bootstrap: str, topics: list[str], partitions: int) -> tuple[subprocess.Popen, str]:
    (tmp / "token").write_text(TOKEN + "\n")
    url = f"http://127.0.0.1:{free_port()}"
    with open(tmp / "controller.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                                 f"sqlite:///{tmp / 'ctl.db'}", "--listen", url.removeprefix("http://"),
                                 "--token-file", str(tmp / "token")], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    wait_for(lambda: api.get("/v1/status").status_code == 200, 240, "controller up")
    api.put("/v1/clusters/b1", json={"bootstrap": bootstrap, "coordination": True}).raise_for_status()
    for t in topics:
        api.put(f"/v1/topics/{t}", json={"partitions": partitions, "placement": "blocks"}).raise_for_status()
    return proc, url


def start_proxy(tmp: Path, url: str, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    with open(tmp / f"proxy-w{workers}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                                 f"127.0.0.1:{port}", "--controller", url, "--token-file", str(tmp / "token"),
                                 "--workers", str(workers), "--pool", f"w{workers}"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, port


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every process, then wait for each (killing one that does not exit in 30 s)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def all_applied(api: httpx.Client, ports: dict[int, int]) -> bool:
    """Every proxy registered with all its workers, each of which applied the current view."""
    status = api.get("/v1/status").json()
    nodes = {p["port"]: p.get("workers") or [p] for p in status["proxies"]}
    return all(len(nodes.get(port, [])) == n and all(w["applied_version"] == status["view_version"]
                                                     for w in nodes[port]) for n, port in ports.items())


def run_clients(fn, bootstrap: str, topic: str, clients: int, each: int, partitions: int) -> float:
    """Records per second of `clients` clients in threads, client i on partition i % partitions."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: fn(bootstrap, topic, i % partitions, each), range(clients)))
    return clients * each / (time.perf_counter() - start)


def produce_part(bootstrap: str, topic: str, partition: int, records: int) -> None:
    produce(bootstrap, topic, records, partition=partition)


def consume_part(bootstrap: str, topic: str, partition: int, records: int) -> None:
    consume(bootstrap, topic, {partition: 0}, records)


def measure(fn, pid: int, broker_pid: int, bootstrap: str, topic: str, clients: int, each: int) -> dict:
    """One run of `clients` clients through one proxy: throughput, the proxy's CPU per GB (all its processes)
    and each worker's share of it."""
    before, b0, s0 = cpu_by_process(pid), cpu_seconds(broker_pid), context_switches(pid)
    rate = run_clients(fn, bootstrap, topic, clients, each, clients)
    after, b1, s1 = cpu_by_process(pid), cpu_seconds(broker_pid), context_switches(pid)
    used = {p: after[p] - before.get(p, 0.0) for p in after}
    total, gb = sum(used.values()), clients * each * RECORD / 1e9
    shares = sorted((round(s / total, 2) for p, s in used.items() if p != pid and s / total >= 0.01), reverse=True)
    return {"records_per_s": rate, "proxy_cpu_s_per_gb": total / gb, "broker_cpu_s_per_gb": (b1 - b0) / gb,
            "worker_shares": shares, "context_switches_per_mb": (s1 - s0) / (gb * 1000)}


def idle_cpu(proxies: dict[int, tuple[subprocess.Popen, int]], counts: list[int], seconds: float = 10.0) -> dict:
    """CPU-seconds per second each proxy spends with no client load (heartbeats, the view stream, metadata
    refreshes: paid once per worker)."""
    before = {n: sum(cpu_by_process(proxies[n][0].pid).values()) for n in counts}
    time.sleep(seconds)
    idle = {n: (sum(cpu_by_process(proxies[n][0].pid).values()) - before[n]) / seconds for n in counts}
    print("idle CPU-s per s: " + ", ".join(f"workers {n}: {idle[n]:.3f}" for n in counts), flush=True)
    return idle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=80_000, help="per proxy and run, over all clients")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    each = args.records // args.clients
    topics = [f"w{n}" for n in counts] + ["warm"]
    with scratch_dir("workers-bench-") as tmp:
        (cluster,) = start_clusters(["b1"], tmp / "k")
        procs: list[subprocess.Popen] = []
        try:
            controller, url = start_controller(tmp, cluster.bootstrap, topics, args.clients)
            procs.append(controller)
            proxies = {n: start_proxy(tmp, url, n) for n in counts}
            procs += [p for p, _ in proxies.values()]
            api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            wait_for(lambda: all_applied(api, {n: port for n, (_, port) in proxies.items()}), 300,
                     "every worker registered and applied the view")
            addr = {n: f"127.0.0.1:{port}" for n, (_, port) in proxies.items()}
            # warm-up on 4x as many connections, so that every worker has served a produce and a fetch (kio
            # builds its readers and writers per process on first use)
            for n in counts:
                run_clients(produce_part, addr[n], "warm", 4 * args.clients, 500, args.clients)
                run_clients(consume_part, addr[n], "warm", 4 * args.clients, 500, args.clients)
            idle = idle_cpu(proxies, counts)
            runs = {kind: {n: [] for n in counts} for kind in ("produce", "consume")}
            loads = []
            for r in range(args.rounds):
                # a consume reads everything produced so far: a run of a second or more, not a fraction
                for kind, fn, per_client in (("produce", produce_part, each), ("consume", consume_part,
                                                                               (r + 1) * each)):
                    order = counts[r % len(counts):] + counts[:r % len(counts)]
                    for n in order:
                        runs[kind][n].append(measure(fn, proxies[n][0].pid, cluster.pid, addr[n], f"w{n}",
                                                     args.clients, per_client))
                        loads.append(os.getloadavg()[0])
                        x = runs[kind][n][-1]
                        print(f"round {r + 1} {kind:7} workers {n}: {x['records_per_s']:7.0f} rec/s  proxy CPU "
                              f"{x['proxy_cpu_s_per_gb']:5.2f} s/GB  {x['context_switches_per_mb']:5.0f} switches/MB"
                              f"  broker {x['broker_cpu_s_per_gb']:5.2f} s/GB  "
                              f"worker shares {x['worker_shares'] or '-'}  load {loads[-1]:.2f}", flush=True)
            api.close()
        finally:
            stop_processes(procs)
            cluster.stop()
    results = {"records": each * args.clients, "clients": args.clients, "runs": runs, "idle_cpu_per_s": idle,
               "load_average": {"min": min(loads), "max": max(loads)}}
    print_table(results, counts)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"workers-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def print_table(results: dict, counts: list[int]) -> None:
    print(f"\n{results['records']} records x {RECORD} B per run, {results['clients']} clients, medians over rounds; "
          f"load average {results['load_average']['min']:.1f}-{results['load_average']['max']:.1f}\n")
    print("idle CPU-s per s: " + ", ".join(f"workers {n}: {v:.3f}" for n, v in results["idle_cpu_per_s"].items()))
    print(f"{'path':8} {'workers':>7} {'rec/s':>8} {'CPU s/GB':>9} {'÷ 1 worker':>11} {'switches/MB':>12} "
          f"{'broker s/GB':>12}")
    for kind, by_n in results["runs"].items():
        med = {n: median(x["proxy_cpu_s_per_gb"] for x in by_n[n]) for n in counts}
        for n in counts:
            rate = median(x["records_per_s"] for x in by_n[n])
            switches = median(x["context_switches_per_mb"] for x in by_n[n])
            broker = median(x["broker_cpu_s_per_gb"] for x in by_n[n])
            print(f"{kind:8} {n:7} {rate:8.0f} {med[n]:9.2f} {med[n] / med[counts[0]]:11.2f} {switches:12.0f} "
                  f"{broker:12.2f}")


if __name__ == "__main__":
    main()
