"""Produce path: direct to one cluster vs through the fedkafka proxy, side by side in one run.

Runs: the Java `kafka-producer-perf-test` (1 KB records, acks=all) flat out ("perf"), the same paced at
2000 records/s ("paced": latency without saturation queueing), and a confluent-kafka producer ("confluent",
1 KB, acks=all, per-message delivery latency). Both sides are warmed up first.
Prints throughput ratio (proxy/direct), p50/p99 latency of both, and proxy CPU-seconds per GB next to
the broker's CPU-seconds per GB (from /proc/<pid>/stat).

"paced pair": two confluent-kafka producers at the same time, one direct and one through the proxy, each in its
own process at `--paced-rate` records/s (1 KB, acks=all, linger.ms=5), each record's latency from produce() to its
delivery report, after `--paced-warmup` seconds of the same; with it, how quiet the machine was (paced_pair.py).
Running both sides in the same seconds puts the machine's noise (GC elsewhere, other processes) into both, so the
difference of their percentiles is the proxy's added latency; the Java tool's paced run reports whole
milliseconds and its p99 swings by 10-20 ms between runs.

`--relay` adds a side through a bare TCP relay with no Kafka work (relay.py; it produces to the physical topics, as
direct does) in every run, its process's CPU-seconds per GB counted as a proxy's: the floor any proxy pays for one
more hop on this machine (its row in the table; "÷ relay" is each proxy's throughput over the relay's).

`--compare-ref REF` runs a second proxy, of an older commit (exported with `git archive` as data_path.py does it;
nothing in the repository changes), and `--rounds N` repeats every run N times; each round runs direct first, then
the proxies, their order rotating by round, and the paced pair once per proxy (each beside its own direct side).
The table shows medians over the rounds.

    .venv/bin/python bench/produce_bench.py [--records 200000] [--workers 1] [--paced-rate 2000]
        [--paced-seconds 20] [--paced-warmup 5] [--compare-ref REF] [--rounds 1] [--runs perf,...]
        [--java-metrics] [--java-props KEY=VALUE ...] [--proxy-nice N] [--relay]

Every run also records the client's CPU per GB, the machine's busy cores and the broker's and proxy's run-queue
wait (seconds their threads were runnable without a core, per GB): on this 2-core machine a single-threaded
proxy's added latency at saturation is mostly that wait (bench/README.md, "The Java perf tool's produce gap").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from data_path import cpu_seconds as threads_cpu_seconds
from data_path import export_tree, tree_path
from paced_pair import gc_log_option, run_pair, run_queue_wait
from relay import relay_listener, start_relay
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters
from fedkafka.kafka.tools import run_tool
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View

RESULTS = Path(__file__).parent / "results"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live children (workers), each from its threads' schedstat (nanoseconds: a
    200 MB run of a proxy at 0.5 CPU-s/GB is 10 ticks of /proc/<pid>/stat), plus its reaped children's (ticks)."""
    total = 0.0
    for p in [pid] + [int(c) for c in _children(pid)]:
        try:
            total += threads_cpu_seconds(p)
            if p == pid:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[13:15]) / TICKS  # cutime cstime
        except (OSError, IndexError):
            pass
    return total


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(tmp: Path, view: View, workers: int, tree: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A proxy of this tree, or of `tree` (an exported commit: `data_path.export_tree`)."""
    port = free_port()
    view_file = tmp / "view.json"
    view_file.write_text(json.dumps(view.to_dict()))
    env = None if tree is None else dict(os.environ, PYTHONPATH=tree_path(tree))
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "pproxy", "--listen",
                             f"127.0.0.1:{port}", "--view-file", str(view_file), "--workers", str(workers)],
                            stdout=open(tmp / f"proxy{'' if tree is None else '-ref'}.log", "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, env=env, cwd=tree)
    for _ in range(1200):  # a loaded machine takes a while to import everything
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()  # the caller has no handle on it yet: it would outlive the run
    raise RuntimeError("proxy did not start")


# the Java producer's own figures (`--print-metrics`, producer-metrics group) that tell where a request's time goes:
# its round trip as the client sees it, how full its requests are, how long records wait to be sent
JAVA_METRICS = ("request-latency-avg", "request-latency-max", "request-rate", "records-per-request-avg",
                "batch-size-avg", "record-queue-time-avg", "record-queue-time-max", "bufferpool-wait-ratio",
                "io-wait-ratio", "io-ratio", "select-rate", "requests-in-flight", "record-send-rate")
_METRIC_LINE = re.compile(r"^producer-metrics:([\w-]+):\{[^}]*\}\s*:\s*(\S+)$")


def perf_test(bootstrap: str, topic: str, records: int, throughput: int = -1, extra: list[str] | None = None,
              metrics: bool = False) -> dict:
    """`kafka-producer-perf-test` (idempotent, its default since Kafka 3.0); `extra`: more producer properties;
    `metrics`: also the producer's JAVA_METRICS at its end."""
    out = run_tool("kafka-producer-perf-test", "--topic", topic, "--num-records", str(records), "--record-size",
                   "1024", "--throughput", str(throughput), *(["--print-metrics"] if metrics else []),
                   "--producer-props", f"bootstrap.servers={bootstrap}",
                   "acks=all", "linger.ms=5", "batch.size=65536", *(extra or []), timeout=900).stdout
    last = [line for line in out.splitlines() if "records sent" in line][-1]
    num = [float(x) for x in re.findall(r"([\d.]+) (?:records/sec|ms avg|ms 50th|ms 99th)", last)]
    result = {"records_per_s": num[0], "avg_ms": num[1], "p50_ms": num[2], "p99_ms": num[3], "line": last}
    for line in out.splitlines() if metrics else ():
        m = _METRIC_LINE.match(line.strip())
        if m and m[1] in JAVA_METRICS and not math.isnan(value := float(m[2])):  # NaN: never measured, left out
            result[f"java_{m[1].replace('-', '_')}"] = value
    return result


def confluent_run(bootstrap: str, topic: str, records: int) -> dict:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 65536,
                         "queue.buffering.max.messages": 200000})
    latencies: list[float] = []
    payload = os.urandom(1024)

    def on_delivery(err, _msg, sent=None):
        if err is None:
            latencies.append(time.perf_counter() - sent)

    start = time.perf_counter()
    for _ in range(records):
        sent = time.perf_counter()
        while True:
            try:
                producer.produce(topic, payload, on_delivery=lambda e, m, s=sent: on_delivery(e, m, s))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(300)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"records_per_s": len(latencies) / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)], "acked": len(latencies)}


def paced_pair(sides: dict[str, tuple[str, str]], rate: int, seconds: float, warmup: float,
               pids: dict[str, int], gc_log: Path) -> dict:
    """Both sides at `rate` records/s for `seconds` (after `warmup`), each in its own process (paced_pair.py)."""
    run = run_pair(sides, rate, seconds, warmup, pids, gc_log)
    for name, side in run["sides"].items():
        print(f"  {name}: {side['acked']} records, p50 {side['p50_ms']:.2f} ms, p99 {side['p99_ms']:.2f} ms, "
              f"p99.9 {side['p999_ms']:.2f} ms, max {side['max_ms']:.1f} ms, request rtt p99 "
              f"{side['rtt_p99_ms'] or float('nan'):.2f} ms, late sends {side['late_sends']}, "
              f"errors {side['errors']}, its CPU {side['cpu_s_per_s']:.2f} s/s", flush=True)
    m = run["machine"]
    print(f"  machine: load {m['load_average']}, CPU pressure {m['cpu_pressure'] or float('nan'):.2f}, 1 ms sleep "
          f"over by p99 {m['sleep_1ms_over_p99_ms']:.1f} / max {m['sleep_1ms_over_max_ms']:.1f} ms, run-queue "
          f"wait s/s " + ", ".join(f"{k} {v:.2f}" for k, v in m["run_queue_wait_s_per_s"].items())
          + f", watcher CPU {m['watch_cpu_s_per_s']:.2f} s/s; broker GC pauses {m['broker_gc_pauses']} "
          f"(max {m['broker_gc_pause_max_ms']:.1f} ms, total {m['broker_gc_pause_total_ms']:.1f} ms)", flush=True)
    if "added_p99_per_second_median_ms" in m:
        q1, q3 = m["added_p99_per_second_quartiles_ms"]
        print(f"  per second ({m['seconds']} s): p99 direct / proxy median {m['direct_p99_per_second_median_ms']:.2f}"
              f" / {m['proxy_p99_per_second_median_ms']:.2f} ms, added p99 median "
              f"{m['added_p99_per_second_median_ms']:+.2f} ms (quartiles {q1:+.2f}, {q3:+.2f})", flush=True)
    return {**run["sides"], "machine": m}


def start_broker(tmp: Path, relay_ports: tuple[int, int] | None = None):
    """The one-node cluster, its JVM logging GC pauses to tmp/gc-<pid>.log (only it: the tools run later);
    `relay_ports` (the relay's, the broker's listener for it): with a listener for relay.py's relay."""
    tool_options = os.environ.get("JAVA_TOOL_OPTIONS")
    os.environ["JAVA_TOOL_OPTIONS"] = f"{tool_options or ''} {gc_log_option(tmp)}".strip()
    try:
        with relay_listener(*relay_ports) if relay_ports else contextlib.nullcontext():
            (cluster,) = start_clusters(["b1"], tmp / "kafka")
    finally:
        if tool_options is None:
            del os.environ["JAVA_TOOL_OPTIONS"]
        else:
            os.environ["JAVA_TOOL_OPTIONS"] = tool_options
    return cluster


def make_topics(bootstrap: str, targets: list[str]) -> tuple[dict[tuple[str, str], str], View]:
    """A 4-partition topic per run and side, and the proxies' view of them (each its own logical topic)."""
    topics = {}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for run in ("warmup", "perf", "paced", "confluent", "paced-pair"):
        for target in targets:
            name = f"bench-{run}-{target}-{uuid.uuid4().hex[:6]}"
            fut = admin.create_topics([NewTopic(name, 4, 1)])
            fut[name].result(30)
            topics[(run, target)] = name
    view = View(version=1, clusters={"b1": Cluster("b1", bootstrap)}, topics={
        name: LogicalTopic(name, uuid.uuid4().hex, tuple(
            PartitionChain(segments=(Segment("b1", name, p, 0, None, 0),)) for p in range(4)))
        for name in topics.values()})
    return topics, view


def machine_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU ticks so far (/proc/stat: every process's, other engineers' included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def client_cpu_seconds() -> float:
    """This process' CPU (a confluent-kafka client runs in it) and its reaped children's (the Java tool)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(label: str, fn, bootstrap: str, topic: str, records: int, broker_pid: int, proxy_pid: int | None):
    b0, p0 = cpu_seconds(broker_pid), cpu_seconds(proxy_pid) if proxy_pid else 0.0
    c0, (busy0, total0), t0 = client_cpu_seconds(), machine_ticks(), time.perf_counter()
    w0 = {name: run_queue_wait(pid) for name, pid in (("broker", broker_pid), ("proxy", proxy_pid)) if pid}
    result = fn(bootstrap, topic, records)
    gb = records * 1024 / 1e9
    busy1, total1 = machine_ticks()
    result["broker_cpu_s_per_gb"] = (cpu_seconds(broker_pid) - b0) / gb
    # the client's own CPU (the Java tool's JVM start included), and how many of the machine's cores were busy:
    # near 2 (this machine's cores), every process here waits for a core, and a proxy's CPU is the others' loss
    result["client_cpu_s_per_gb"] = (client_cpu_seconds() - c0) / gb
    result["machine_busy_cores"] = os.cpu_count() * (busy1 - busy0) / max(total1 - total0, 1)
    result["wall_s"] = time.perf_counter() - t0
    for name, before in w0.items():  # seconds its threads were runnable but waited for a core (schedstat)
        result[f"{name}_run_queue_wait_s_per_gb"] = (run_queue_wait(broker_pid if name == "broker" else proxy_pid)
                                                     - before) / gb
    if proxy_pid:
        result["proxy_cpu_s_per_gb"] = (cpu_seconds(proxy_pid) - p0) / gb
    result["load"] = os.getloadavg()[0]
    cpu = (f", proxy CPU {result['proxy_cpu_s_per_gb']:.2f} s/GB (waited for a core "
           f"{result['proxy_run_queue_wait_s_per_gb']:.2f})") if proxy_pid else ""
    print(f"  {label}: {result['records_per_s']:.0f} rec/s, p50 {result['p50_ms']:.1f} ms, "
          f"p99 {result['p99_ms']:.1f} ms{cpu}, broker CPU {result['broker_cpu_s_per_gb']:.2f} s/GB (waited "
          f"{result['broker_run_queue_wait_s_per_gb']:.2f}), "
          f"client CPU {result['client_cpu_s_per_gb']:.2f} s/GB, busy cores {result['machine_busy_cores']:.2f}, "
          f"load {result['load']:.2f}", flush=True)
    java = {k[5:]: v for k, v in result.items() if k.startswith("java_")}
    if java:
        print("    java: " + ", ".join(f"{k} {v:.4g}" for k, v in java.items()), flush=True)
    return result


def medians(rounds: list[dict]) -> dict:
    """Each number's median over the rounds, with the rounds themselves."""
    keys = [k for k, v in rounds[0].items() if isinstance(v, int | float) and all(k in r for r in rounds)]
    return {**{k: statistics.median(r[k] for r in rounds) for k in keys}, "rounds": rounds}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--paced-rate", type=int, default=2000)
    ap.add_argument("--paced-seconds", type=float, default=20.0)
    ap.add_argument("--paced-warmup", type=float, default=5.0,
                    help="seconds the paced pair sends before it counts (both sides)")
    ap.add_argument("--runs", default="perf,paced,confluent,paced-pair",
                    help="which runs, comma-separated (the table shows those done)")
    ap.add_argument("--compare-ref", help="also run a proxy of this git ref (e.g. main), alternating with this tree's")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of every run (the table shows medians)")
    ap.add_argument("--java-metrics", action="store_true",
                    help="the Java tool's producer metrics too (request latency, records per request, queue time)")
    ap.add_argument("--proxy-nice", type=int, help="this tree's proxy's nice value (e.g. -10: ahead of the broker "
                    "and the client for a core; root only), to see how much of the gap is the proxy waiting for one; "
                    "with --compare-ref the ref's proxy keeps its own")
    ap.add_argument("--java-props", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more producer properties for the Java tool's flat-out run (e.g. "
                         "max.in.flight.requests.per.connection=1)")
    ap.add_argument("--relay", action="store_true", help="also run through a bare TCP relay (relay.py, no Kafka "
                                                         "work): the floor of one more hop")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    relay_ports = (free_port(), free_port()) if args.relay else None
    with scratch_dir("produce-bench-") as tmp:
        cluster = start_broker(tmp, relay_ports)
        proxies: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            sides = (["relay"] if args.relay else []) + ["proxy"] + (["ref"] if args.compare_ref else [])
            topics, view = make_topics(cluster.bootstrap, ["direct", *sides])
            if relay_ports:  # to the physical topics, as direct (they are in the proxies' view too, by the same name)
                proxies["relay"] = start_relay(*relay_ports)
            proxies["proxy"] = start_proxy(tmp, view, args.workers)
            if args.compare_ref:
                proxies["ref"] = start_proxy(tmp, view, args.workers, export_tree(args.compare_ref, tmp / "ref"))
            time.sleep(1.0)
            results: dict = {"records": args.records, "record_bytes": 1024, "workers": args.workers,
                             "compare_ref": args.compare_ref, "rounds": args.rounds, "relay": args.relay}
            addrs = {"direct": cluster.bootstrap, **{s: addr for s, (_, addr) in proxies.items()}}
            pids = {s: proc.pid for s, (proc, _) in proxies.items()}
            if args.proxy_nice is not None:  # this tree's proxy only: with --compare-ref, the ref's stays as it was
                for task in Path(f"/proc/{pids['proxy']}/task").iterdir():  # every thread (a nice value is a thread's)
                    os.setpriority(os.PRIO_PROCESS, int(task.name), args.proxy_nice)
            results["proxy_nice"] = args.proxy_nice
            for target, bootstrap in addrs.items():
                perf_test(bootstrap, topics[("warmup", target)], 20000)  # JIT and connections warm for every side
            results |= run_rounds(args, cluster, topics, addrs, pids, tmp)
            print_table(results)
            RESULTS.mkdir(exist_ok=True)
            out = RESULTS / f"produce-{time.strftime('%Y%m%dT%H%M%S')}.json"
            out.write_text(json.dumps(results, indent=2))
            print(f"wrote {out}")
        finally:
            for proc, _ in proxies.values():
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            cluster.stop()


def run_rounds(args, cluster, topics: dict, addrs: dict[str, str], pids: dict[str, int], tmp: Path) -> dict:
    """Every run of `--runs`, `--rounds` times: direct, then the proxies in an order rotating by round."""
    def paced(bootstrap: str, topic: str, records: int) -> dict:
        # latency at a rate both sides sustain: the added latency, not queueing at saturation
        return perf_test(bootstrap, topic, records, throughput=2000)

    runs = args.runs.split(",")
    proxies = [s for s in addrs if s != "direct"]
    done: dict = {}
    for r in range(args.rounds):
        order = proxies[r % len(proxies):] + proxies[:r % len(proxies)]
        perf = functools.partial(perf_test, metrics=args.java_metrics, extra=args.java_props)
        for run, fn in (("perf", perf), ("paced", paced), ("confluent", confluent_run)):
            if run not in runs:
                continue
            print(f"round {r + 1} {run}:", flush=True)
            records = args.records if run != "paced" else min(args.records, 20000)
            for side in ["direct", *order]:
                done.setdefault(run, {}).setdefault(side, []).append(
                    measure(f"{side:6}", fn, addrs[side], topics[(run, side)], records, cluster.pid, pids.get(side)))
        if "paced-pair" in runs:
            for side in order:
                print(f"round {r + 1} paced pair, direct and {side}:", flush=True)
                done.setdefault("paced-pair", {}).setdefault(side, []).append(paced_pair(
                    {"direct": (cluster.bootstrap, topics[("paced-pair", "direct")]),
                     "proxy": (addrs[side], topics[("paced-pair", side)])}, args.paced_rate,
                    args.paced_seconds, args.paced_warmup, {"broker": cluster.pid, "proxy": pids[side]},
                    tmp / f"gc-{cluster.pid}.log"))
    out = {run: {side: medians(rounds) for side, rounds in by_side.items()}
           for run, by_side in done.items() if run != "paced-pair"}
    if "paced-pair" in done:
        out["paced-pair"] = done["paced-pair"]
    return out


def print_table(results: dict) -> None:
    print(f"\nmedians over {results['rounds']} round(s); ref: {results['compare_ref'] or '-'}")
    # the relay side's row is relay.py's bare relay (the floor of one more hop): its rec/s, latency and CPU in the
    # proxy columns; "÷ relay" is a proxy's rec/s over the relay's
    print(f"{'producer':<10} {'side':<6} {'direct rec/s':>12} {'proxy rec/s':>12} {'ratio':>6} {'÷ relay':>7} "
          f"{'p50 d/p ms':>13} {'p99 d/p ms':>13} {'p99 p÷d':>7} {'proxy CPU s/GB':>15} {'broker CPU s/GB':>16}")
    for run in ("perf", "paced", "confluent"):
        if run not in results:
            continue
        d, relay = results[run]["direct"], results[run].get("relay")
        for side, p in results[run].items():
            if side == "direct":
                continue
            p99_ratio = p["p99_ms"] / d["p99_ms"] if d["p99_ms"] else float("nan")
            over_relay = f"{p['records_per_s'] / relay['records_per_s']:>7.2f}" if relay and side != "relay" else \
                f"{'-':>7}"
            print(f"{run:<10} {side:<6} {d['records_per_s']:>12.0f} {p['records_per_s']:>12.0f} "
                  f"{p['records_per_s'] / d['records_per_s']:>6.2f} {over_relay} "
                  f"{d['p50_ms']:>6.1f}/{p['p50_ms']:<6.1f} {d['p99_ms']:>6.1f}/{p['p99_ms']:<6.1f} {p99_ratio:>7.2f} "
                  f"{p['proxy_cpu_s_per_gb']:>15.2f} {p['broker_cpu_s_per_gb']:>16.2f}")
    for side, pairs in results.get("paced-pair", {}).items():
        for pair in pairs:
            d, p = pair["direct"], pair["proxy"]
            print(f"paced pair with {side} (confluent, both at once): p50 {d['p50_ms']:.2f}/{p['p50_ms']:.2f} ms, "
                  f"p99 {d['p99_ms']:.2f}/{p['p99_ms']:.2f} ms (added {p['p99_ms'] - d['p99_ms']:+.2f}, per-second "
                  f"median {pair['machine'].get('added_p99_per_second_median_ms', float('nan')):+.2f}), "
                  f"p99.9 {d['p999_ms']:.2f}/{p['p999_ms']:.2f} ms, load {pair['machine']['load_average']}")


if __name__ == "__main__":
    main()
