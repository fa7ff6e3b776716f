"""Consume path: direct from the cluster vs through the fedkafka proxy, side by side in one run.

Two logical topics on one cluster: `identity` (segments pass offsets through) and `moved` (a non-identity
segment: physical data starts after 1000 records that belong to nobody, logical base 10^9, so every
batch's baseOffset is patched). For each: the Java `kafka-consumer-perf-test` (fetch MB/s, group join
excluded) and a confluent-kafka consumer (assigned, 1 KB records) read the same records directly and
through the proxy; then end-to-end latency (confluent producer -> consumer, 1 record every 2 ms) direct vs
produce-through-proxy/consume-through-proxy. Prints ratios (proxy/direct), p50/p99, and the proxy's
CPU-seconds per GB next to the broker's (schedstat, `produce_bench.cpu_seconds`), for the Java tool and
confluent-kafka apart.

`--compare-ref REF` runs a second proxy, of an older commit (exported with `git archive` as data_path.py does it;
nothing in the repository changes), and `--rounds N` repeats the throughput runs N times; each round reads direct
first, then through the proxies, their order rotating by round. The table shows medians over the rounds; the
latency runs are of this tree's proxy only.

`--relay` adds a side through a bare TCP relay with no Kafka work (relay.py; it reads the physical topics, as direct
does, and for `moved` from the same offset past the junk) in the throughput rounds, its process's CPU-seconds per GB
counted as a proxy's, and a latency mode produced and consumed through it: the floor any proxy pays for one more hop
on this machine.

    .venv/bin/python bench/consume_bench.py [--records 200000] [--workers 1] [--compare-ref REF] [--rounds 1] [--relay]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from data_path import PHYSICAL_SIDES, export_tree, tree_path
from produce_bench import cpu_seconds, medians
from relay import relay_listener, start_relay
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters
from fedkafka.kafka.tools import run_tool
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View, shadow_topic

RESULTS = Path(__file__).parent / "results"
RECORD = 1024
PARTITIONS = 2
JUNK = 1000
MOVED_BASE = 10**9
LATENCY_ROUNDS = 4
LATENCY_PROBES = 500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        fut.result(30)
    time.sleep(1)


def fill(bootstrap: str, topic: str, records: int) -> None:
    out = run_tool("kafka-producer-perf-test", "--topic", topic, "--num-records", str(records), "--record-size",
                   str(RECORD), "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=1",
                   "linger.ms=5", "batch.size=262144", timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"producer-perf-test failed: {out.stderr[-2000:]}")


def start_proxy(view: View, tmp: Path, workers: int, tree: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A proxy of this tree, or of `tree` (an exported commit: `data_path.export_tree`)."""
    port = free_port()
    view_file = tmp / "view.json"
    view_file.write_text(json.dumps(view.to_dict()))
    env = None if tree is None else dict(os.environ, PYTHONPATH=tree_path(tree))
    with open(tmp / f"proxy{'' if tree is None else '-ref'}.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                                 f"127.0.0.1:{port}", "--view-file", str(view_file), "--workers", str(workers)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tree)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()  # the caller has no handle on it yet: it would outlive the run
    raise SystemExit("proxy did not start")


def perf_test(bootstrap: str, topic: str, records: int) -> float:
    """fetch MB/s of kafka-consumer-perf-test (excludes the group join)."""
    out = run_tool("kafka-consumer-perf-test", "--bootstrap-server", bootstrap, "--topic", topic, "--messages",
                   str(records), "--group", f"perf-{uuid.uuid4().hex[:6]}", "--timeout", "60000", timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if re.match(r"\d{4}-", ln)]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"consumer-perf-test failed: {out.stdout[-1000:]} {out.stderr[-2000:]}")
    return float(lines[-1].split(",")[8])


def confluent_read(bootstrap: str, topic: str, starts: list[int], records: int) -> float:
    """MB/s of an assigned confluent-kafka consumer reading `records` records."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"b-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(topic, p, s) for p, s in enumerate(starts)])
    size, elapsed = read_records(c, records)
    c.close()
    return size / elapsed / 1e6


def read_records(c: Consumer, records: int) -> tuple[int, float]:
    """Bytes of value `c` read in `records` records, and the seconds from its first record to its last."""
    n, size, t0 = 0, 0, None
    while n < records:
        for m in c.consume(1000, 5.0):
            if m.error():
                continue
            t0 = t0 or time.perf_counter()
            n += 1
            size += len(m.value() or b"")
    return size, time.perf_counter() - (t0 or time.perf_counter())


def e2e_latency(produce_to: str, produce_topic: str, consume_from: str, topic: str, count: int) -> list[float]:
    """Milliseconds from produce() call to delivery, per probe, to a consumer polling at the partition's end."""
    c = Consumer({"bootstrap.servers": consume_from, "group.id": f"l-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    lo_hi = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(PARTITIONS)]
    c.assign([TopicPartition(topic, p, hi) for p, (_, hi) in enumerate(lo_hi)])
    latencies: list[float] = []
    done = threading.Event()

    def consume():
        while len(latencies) < count and not done.is_set():
            m = c.poll(0.2)  # one at a time: consume(n, t) would wait for n records and add that to the latency
            if m is not None and not m.error() and m.value().startswith(b"t="):
                latencies.append((time.time() - float(m.value()[2:].split(b";")[0])) * 1000)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(1.5)  # consumer has its fetch position
    p = Producer({"bootstrap.servers": produce_to, "linger.ms": 0, "acks": "1"})
    for i in range(count):
        p.produce(produce_topic, value=f"t={time.time():.6f};".encode().ljust(RECORD, b"x"), partition=i % PARTITIONS)
        p.poll(0)
        time.sleep(0.002)
    p.flush(30)
    reader.join(30)
    done.set()
    c.close()
    if len(latencies) < count * 0.99:
        raise SystemExit(f"only {len(latencies)} of {count} latency probes came back")
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--latency-only", action="store_true", help="skip the throughput runs")
    ap.add_argument("--compare-ref", help="also read through a proxy of this git ref (e.g. main), alternating")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the throughput runs (the table: medians)")
    ap.add_argument("--relay", action="store_true", help="also read through a bare TCP relay (relay.py, no Kafka "
                                                         "work): the floor of one more hop")
    args = ap.parse_args()
    n = args.records
    relay_port, relay_target = free_port(), free_port()
    with scratch_dir("consume-bench-") as tmp:
        with relay_listener(relay_port, relay_target) if args.relay else contextlib.nullcontext():
            (cluster,) = start_clusters(["b1"], tmp / "k")
        proxies: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            phys_id, phys_mv = "bench-id-phys", "bench-moved-phys"
            create_topics(cluster.bootstrap, [phys_id, phys_mv], PARTITIONS)
            create_topics(cluster.bootstrap, [shadow_topic("identity"), shadow_topic("moved")], PARTITIONS)
            fill(cluster.bootstrap, phys_mv, JUNK * PARTITIONS)  # belongs to no segment
            probe = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "probe"})
            junk_end = [probe.get_watermark_offsets(TopicPartition(phys_mv, p), timeout=10)[1]
                        for p in range(PARTITIONS)]
            probe.close()
            fill(cluster.bootstrap, phys_id, n)
            fill(cluster.bootstrap, phys_mv, n)
            identity = LogicalTopic("identity", uuid.uuid4().hex, tuple(
                PartitionChain(segments=(Segment("b1", phys_id, p, 0, None, 0),)) for p in range(PARTITIONS)))
            moved = LogicalTopic("moved", uuid.uuid4().hex, tuple(
                PartitionChain(segments=(Segment("b1", phys_mv, p, junk_end[p], None, MOVED_BASE),), leader_epoch=1)
                for p in range(PARTITIONS)))
            view = View(version=1, clusters={"b1": Cluster("b1", cluster.bootstrap)}, coordination_cluster="b1",
                        topics={"identity": identity, "moved": moved})
            if args.relay:  # reads the physical topics, as direct does
                proxies["relay"] = start_relay(relay_port, relay_target)
            proxies["proxy"] = start_proxy(view, tmp, args.workers)
            if args.compare_ref:
                proxies["ref"] = start_proxy(view, tmp, args.workers, export_tree(args.compare_ref, tmp / "ref"))
            results = run_all(cluster, proxies, n, moved, phys_id, phys_mv, args)
            print_results(results, n)
            RESULTS.mkdir(exist_ok=True)
            out = RESULTS / f"consume-{time.strftime('%Y%m%dT%H%M%S')}.json"
            out.write_text(json.dumps(results, indent=2))
            print(f"\nwritten {out}")
        finally:
            for proc, _ in proxies.values():
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            cluster.stop()


def run_all(cluster, proxies: dict[str, tuple[subprocess.Popen, str]], n: int, moved: LogicalTopic, phys_id: str,
            phys_mv: str, args) -> dict:
    r: dict = {"records": n, "record_bytes": RECORD, "compare_ref": args.compare_ref, "rounds": args.rounds,
               "relay": args.relay}
    proxy_addr = proxies["proxy"][1]
    if not args.latency_only:
        perf_test(cluster.bootstrap, phys_id, min(n, 20000))  # warm-up: JIT, page cache, proxy connections
        for side, (_, addr) in proxies.items():
            perf_test(addr, phys_id if side in PHYSICAL_SIDES else "identity", min(n, 20000))
        moved_starts = [c.segments[0].phys_start for c in moved.partitions]
        topics = {"identity": ((phys_id, [0] * PARTITIONS), [0] * PARTITIONS),
                  "moved": ((phys_mv, moved_starts), [MOVED_BASE] * PARTITIONS)}
        sides = {"direct": (None, cluster.bootstrap), **{s: (proc.pid, addr) for s, (proc, addr) in proxies.items()}}
        rounds: dict[str, dict[str, list]] = {name: {s: [] for s in sides} for name in topics}
        names = [s for s in sides if s != "direct"]
        for i in range(args.rounds):
            order = ["direct", *names[i % len(names):], *names[:i % len(names)]]
            for name, ((phys, starts), logical_starts) in topics.items():
                for side in order:
                    pid, addr = sides[side]
                    topic, offsets = (phys, starts) if side in PHYSICAL_SIDES else (name, logical_starts)
                    rounds[name][side].append(read_both(cluster.pid, pid, addr, topic, offsets, n))
                    print(f"round {i + 1} {name:8} {side:6} " + ", ".join(
                        f"{k} {v:.2f}" for k, v in rounds[name][side][-1].items()), flush=True)
        for name, by_side in rounds.items():
            r[name] = {side: medians(values) for side, values in by_side.items()}
    r["latency_ms"] = latency(cluster, proxy_addr, phys_id, proxies["relay"][1] if "relay" in proxies else None)
    return r


def read_both(broker_pid: int, proxy_pid: int | None, addr: str, topic: str, starts: list[int], n: int) -> dict:
    """The Java tool's and then confluent-kafka's MB/s reading `n` records, each with the broker's and the proxy's
    CPU-seconds per GB, and the load average after them."""
    gb = n * RECORD / 1e9
    out: dict = {}
    for tool, read in (("perf", lambda: perf_test(addr, topic, n)),
                       ("confluent", lambda: confluent_read(addr, topic, starts, n))):
        b0, p0 = cpu_seconds(broker_pid), cpu_seconds(proxy_pid) if proxy_pid else 0.0
        out[f"{tool}_mb_s"] = read()
        out[f"{tool}_broker_cpu_s_per_gb"] = (cpu_seconds(broker_pid) - b0) / gb
        if proxy_pid:
            out[f"{tool}_proxy_cpu_s_per_gb"] = (cpu_seconds(proxy_pid) - p0) / gb
    out["load"] = os.getloadavg()[0]
    return out


def latency(cluster, proxy_addr: str, phys_id: str, relay_addr: str | None = None) -> dict:
    # interleaved rounds, so a burst of load from elsewhere on the machine hits every mode alike
    # consume_only: produced directly to the cluster, consumed through the proxy (the consume path alone)
    # relay: produced and consumed through the bare relay (the floor of one more hop both ways)
    direct = (cluster.bootstrap, phys_id)
    modes = {"direct": (direct, direct), "proxy_identity": ((proxy_addr, "identity"), (proxy_addr, "identity")),
             "proxy_moved": ((proxy_addr, "moved"), (proxy_addr, "moved")),
             "consume_only_identity": (direct, (proxy_addr, "identity"))}
    if relay_addr:
        modes["relay"] = ((relay_addr, phys_id), (relay_addr, phys_id))
    samples: dict[str, list[float]] = {k: [] for k in modes}
    for _ in range(LATENCY_ROUNDS):
        for mode, (src, dst) in modes.items():
            samples[mode].extend(e2e_latency(*src, *dst, LATENCY_PROBES))
    return {k: percentiles(v) for k, v in samples.items()}


def percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return values[len(values) // 2], values[int(len(values) * 0.99)]


def print_results(r: dict, n: int) -> None:
    print(f"\nconsume bench: {n} records x {RECORD} B, {PARTITIONS} partitions, 1 broker; medians over "
          f"{r['rounds']} round(s); ref: {r['compare_ref'] or '-'}\n")
    if "identity" in r:
        print(f"{'':10}{'side':7}{'perf MB/s':>10}{'÷ direct':>9}{'confl MB/s':>11}{'÷ direct':>9}"
              f"{'perf proxy/broker CPU s/GB':>28}{'confl proxy/broker CPU s/GB':>29}")
    for name in ("identity", "moved") if "identity" in r else ():
        d = r[name]["direct"]
        for side, x in r[name].items():
            proxy_cpu = [x.get(f"{t}_proxy_cpu_s_per_gb", float("nan")) for t in ("perf", "confluent")]
            print(f"{name:10}{side:7}{x['perf_mb_s']:10.1f}{x['perf_mb_s'] / d['perf_mb_s']:9.2f}"
                  f"{x['confluent_mb_s']:11.1f}{x['confluent_mb_s'] / d['confluent_mb_s']:9.2f}"
                  f"{proxy_cpu[0]:20.2f}/{x['perf_broker_cpu_s_per_gb']:<7.2f}"
                  f"{proxy_cpu[1]:21.2f}/{x['confluent_broker_cpu_s_per_gb']:<7.2f}")
    lat = r["latency_ms"]
    for k in lat:
        print(f"{'e2e latency ' + k:28}  p50 {lat[k][0]:7.2f} ms   p99 {lat[k][1]:7.2f} ms   "
              f"p99 ÷ direct {lat[k][1] / lat['direct'][1]:5.2f}")
    print(f"{'added p99 (identity)':28}{lat['proxy_identity'][1] - lat['direct'][1]:12.2f} ms")
    print(f"{'added p99 (consume only)':28}{lat['consume_only_identity'][1] - lat['direct'][1]:12.2f} ms")
    if "relay" in lat:
        print(f"{'added p99 (relay)':28}{lat['relay'][1] - lat['direct'][1]:12.2f} ms")


if __name__ == "__main__":
    main()
