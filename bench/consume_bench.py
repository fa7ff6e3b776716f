"""Consume path: direct from the cluster vs through the fedkafka proxy, side by side in one run.

Two logical topics on one cluster: `identity` (segments pass offsets through) and `moved` (a non-identity
segment: physical data starts after 1000 records that belong to nobody, logical base 10^9, so every
batch's baseOffset is patched). For each: the Java `kafka-consumer-perf-test` (fetch MB/s, group join
excluded) and a confluent-kafka consumer (assigned, 1 KB records) read the same records directly and
through the proxy; then end-to-end latency (confluent producer -> consumer, 1 record every 2 ms) direct vs
produce-through-proxy/consume-through-proxy. Prints ratios (proxy/direct), p50/p99, and the proxy's
CPU-seconds per GB next to the broker's (from /proc/<pid>/stat).

    .venv/bin/python bench/consume_bench.py [--records 200000] [--workers 1]
"""

from __future__ import annotations

import argparse
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
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters
from fedkafka.kafka.tools import run_tool
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View, shadow_topic

RESULTS = Path(__file__).parent / "results"
TICKS = os.sysconf("SC_CLK_TCK")
RECORD = 1024
PARTITIONS = 2
JUNK = 1000
MOVED_BASE = 10**9
LATENCY_ROUNDS = 4
LATENCY_PROBES = 500


def cpu_seconds(pid: int) -> float:
    """utime+stime (+ reaped children) of a process and its live children."""
    total = 0.0
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for p in [pid, *map(int, kids)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / TICKS
        except (OSError, IndexError):
            pass
    return total


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


def start_proxy(view: View, tmp: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    view_file = tmp / "view.json"
    view_file.write_text(json.dumps(view.to_dict()))
    with open(tmp / "proxy.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                                 f"127.0.0.1:{port}", "--view-file", str(view_file), "--workers", str(workers)],
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
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
    n, size, t0 = 0, 0, None
    while n < records:
        for m in c.consume(1000, 5.0):
            if m.error():
                continue
            t0 = t0 or time.perf_counter()
            n += 1
            size += len(m.value())
    elapsed = time.perf_counter() - t0
    c.close()
    return size / elapsed / 1e6


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
    args = ap.parse_args()
    n = args.records
    with scratch_dir("consume-bench-") as tmp:
        (cluster,) = start_clusters(["b1"], tmp / "k")
        proxy = None
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
            proxy, proxy_addr = start_proxy(view, tmp, args.workers)
            results = run_all(cluster, proxy, proxy_addr, n, moved, phys_id, phys_mv, args.latency_only)
            print_results(results, n)
            RESULTS.mkdir(exist_ok=True)
            out = RESULTS / f"consume-{time.strftime('%Y%m%dT%H%M%S')}.json"
            out.write_text(json.dumps(results, indent=2))
            print(f"\nwritten {out}")
        finally:
            if proxy is not None:
                proxy.send_signal(signal.SIGTERM)
                try:
                    proxy.wait(20)
                except subprocess.TimeoutExpired:
                    proxy.kill()
            cluster.stop()


def run_all(cluster, proxy, proxy_addr: str, n: int, moved: LogicalTopic, phys_id: str, phys_mv: str,
            latency_only: bool = False) -> dict:
    moved_starts = [c.segments[0].phys_start for c in moved.partitions]
    r: dict = {"records": n, "record_bytes": RECORD}
    gb = n * RECORD / 1e9
    if latency_only:
        r["latency_ms"] = latency(cluster, proxy_addr, phys_id)
        return r
    perf_test(cluster.bootstrap, phys_id, min(n, 20000))  # warm-up: JIT, page cache, proxy connections
    perf_test(proxy_addr, "identity", min(n, 20000))
    for name, phys, starts, logical_starts in (("identity", phys_id, [0] * PARTITIONS, [0] * PARTITIONS),
                                               ("moved", phys_mv, moved_starts, [MOVED_BASE] * PARTITIONS)):
        b0 = cpu_seconds(cluster.pid)
        direct = perf_test(cluster.bootstrap, phys, n)
        direct_cf = confluent_read(cluster.bootstrap, phys, starts, n)
        broker_cpu = (cpu_seconds(cluster.pid) - b0) / (2 * gb)
        p0, b1 = cpu_seconds(proxy.pid), cpu_seconds(cluster.pid)
        via = perf_test(proxy_addr, name, n)
        via_cf = confluent_read(proxy_addr, name, logical_starts, n)
        proxy_cpu = (cpu_seconds(proxy.pid) - p0) / (2 * gb)
        broker_cpu_via = (cpu_seconds(cluster.pid) - b1) / (2 * gb)
        r[name] = {"perf_direct_mb_s": direct, "perf_proxy_mb_s": via, "perf_ratio": via / direct,
                   "confluent_direct_mb_s": direct_cf, "confluent_proxy_mb_s": via_cf,
                   "confluent_ratio": via_cf / direct_cf, "proxy_cpu_s_per_gb": proxy_cpu,
                   "broker_cpu_s_per_gb_direct": broker_cpu, "broker_cpu_s_per_gb_via_proxy": broker_cpu_via}
    r["latency_ms"] = latency(cluster, proxy_addr, phys_id)
    return r


def latency(cluster, proxy_addr: str, phys_id: str) -> dict:
    # interleaved rounds, so a burst of load from elsewhere on the machine hits every mode alike
    # consume_only: produced directly to the cluster, consumed through the proxy (the consume path alone)
    direct = (cluster.bootstrap, phys_id)
    modes = {"direct": (direct, direct), "proxy_identity": ((proxy_addr, "identity"), (proxy_addr, "identity")),
             "proxy_moved": ((proxy_addr, "moved"), (proxy_addr, "moved")),
             "consume_only_identity": (direct, (proxy_addr, "identity"))}
    samples: dict[str, list[float]] = {k: [] for k in modes}
    for _ in range(LATENCY_ROUNDS):
        for mode, (src, dst) in modes.items():
            samples[mode].extend(e2e_latency(*src, *dst, LATENCY_PROBES))
    return {k: percentiles(v) for k, v in samples.items()}


def percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return values[len(values) // 2], values[int(len(values) * 0.99)]


def print_results(r: dict, n: int) -> None:
    print(f"\nconsume bench: {n} records x {RECORD} B, {PARTITIONS} partitions, 1 broker\n")
    print(f"{'':28}{'direct':>12}{'proxy':>12}{'ratio':>8}")
    for name in ("identity", "moved") if "identity" in r else ():
        x = r[name]
        print(f"{name + ' perf-test MB/s':28}{x['perf_direct_mb_s']:12.1f}{x['perf_proxy_mb_s']:12.1f}"
              f"{x['perf_ratio']:8.2f}")
        print(f"{name + ' confluent MB/s':28}{x['confluent_direct_mb_s']:12.1f}{x['confluent_proxy_mb_s']:12.1f}"
              f"{x['confluent_ratio']:8.2f}")
        print(f"{name + ' CPU s/GB':28}{x['broker_cpu_s_per_gb_direct']:12.2f}{x['proxy_cpu_s_per_gb']:12.2f}"
              f"   (broker {x['broker_cpu_s_per_gb_via_proxy']:.2f} s/GB while serving the proxy)")
    if "identity" in r:
        m = r["moved"]["perf_proxy_mb_s"] / r["identity"]["perf_proxy_mb_s"]
        print(f"{'moved / identity (proxy)':28}{m:32.2f}")
    lat = r["latency_ms"]
    for k in ("direct", "proxy_identity", "proxy_moved", "consume_only_identity"):
        print(f"{'e2e latency ' + k:28}  p50 {lat[k][0]:7.2f} ms   p99 {lat[k][1]:7.2f} ms")
    print(f"{'added p99 (identity)':28}{lat['proxy_identity'][1] - lat['direct'][1]:12.2f} ms")
    print(f"{'added p99 (consume only)':28}{lat['consume_only_identity'][1] - lat['direct'][1]:12.2f} ms")


if __name__ == "__main__":
    main()
