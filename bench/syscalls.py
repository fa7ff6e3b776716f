"""System calls per request of a proxy of this tree (and of `--compare-ref REF`) on the data path, counted with
`perf stat -e syscalls:sys_enter_*` attached to the proxy while confluent-kafka produces through it, then
consumes an identity and a moved segment through it (the set-up of data_path.py, one broker, 1 KB records).

Requests are the client's Produce or Fetch requests (librdkafka's statistics), so a figure is the proxy's system
calls of every kind, threads included, per client Produce or Fetch request (the consumer's connections, metadata
and offset requests are among them: count enough records that they are few). Counts do not depend on the
machine's load as CPU time does, but they do on timing: a write that finds the socket full costs more calls, a
read that finds more bytes fewer, a proxy that keeps up with its client reads its requests one at a time, one
that falls behind several at once; rounds alternate the sides, compare sides of one run.

    .venv/bin/python bench/syscalls.py [--records 30000] [--rounds 3] [--compare-ref main] [--profile DIR]
        [--trace DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from data_path import JUNK, MOVED_BASE, PARTITIONS, RECORD, ROOT, export_tree, fill_topics, start_proxy
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View

CALLS = ("read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg", "epoll_wait",
         "epoll_pwait", "epoll_ctl", "getpid", "clock_gettime", "setsockopt", "getsockopt", "futex", "mmap",
         "munmap", "brk", "madvise", "ioctl", "fcntl", "getsockname", "getpeername", "io_uring_enter")


class SyscallCounter:
    """perf stat attached to a process (its threads at the time) for one run."""

    def __init__(self, pid: int, out: Path):
        events = ",".join(["raw_syscalls:sys_enter", *(f"syscalls:sys_enter_{c}" for c in CALLS)])
        self.out = out
        self.proc = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        counts = {}
        for line in self.out.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].isdigit():
                name = fields[2].split(":")[1].removeprefix("sys_enter_").replace("sys_enter", "all")
                counts[name] = int(fields[0])
        return counts


def _requests(stats: list[dict], api: str) -> int:
    """`api` requests (Produce, Fetch) the client sent, from its last statistics."""
    return sum(b.get("req", {}).get(api, 0) for b in stats[-1]["brokers"].values()) if stats else 0


def produce(bootstrap: str, topic: str, records: int) -> int:
    stats: list[dict] = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 65536,
                  "queue.buffering.max.messages": 200000, "statistics.interval.ms": 100,
                  "stats_cb": lambda s: stats.append(json.loads(s))})
    payload = os.urandom(RECORD)
    for _ in range(records):
        while True:
            try:
                p.produce(topic, payload)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(300)
    time.sleep(0.25)
    p.poll(0.2)  # the last statistics
    return _requests(stats, "Produce")


def consume(bootstrap: str, topic: str, start: int, records: int) -> int:
    stats: list[dict] = []
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"s-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800, "statistics.interval.ms": 100,
                  "stats_cb": lambda s: stats.append(json.loads(s))})
    c.assign([TopicPartition(topic, p, start) for p in range(PARTITIONS)])
    n, deadline = 0, time.time() + 300
    while n < records and time.time() < deadline:
        n += sum(1 for m in c.consume(1000, 5.0) if not m.error())
    time.sleep(0.25)
    c.consume(1, 0.2)  # the last statistics
    c.close()
    if n < records:
        raise SystemExit(f"read only {n} of {records} records from {topic}")
    return _requests(stats, "Fetch")


def write_view(path: Path, bootstrap: str) -> None:
    def chain(topic: str, p: int, start: int, base: int) -> PartitionChain:
        return PartitionChain(segments=(Segment("b1", topic, p, start, None, base),))
    topics = {name: LogicalTopic(name, uuid.uuid4().hex, tuple(chain(physical, p, start, base)
                                                               for p in range(PARTITIONS)))
              for name, physical, start, base in [("produce", "p-produce", 0, 0), ("identity", "c-identity", 0, 0),
                                                  ("moved", "c-moved", JUNK, MOVED_BASE)]}
    view = View(version=1, clusters={"b1": Cluster("b1", bootstrap)}, coordination_cluster="b1", topics=topics)
    path.write_text(json.dumps(view.to_dict()))


def measure(pid: int, bootstrap: str, records: int, tmp: Path, profile: Path | None = None,
            trace: Path | None = None) -> dict[str, dict]:
    out = {}
    for kind in ("produce", "identity", "moved"):
        counter = SyscallCounter(pid, tmp / f"perf-{kind}.txt")
        sampler = tracer = None
        if trace is not None:  # each call, its time and duration: a timeline of each answer (slows the proxy)
            tracer = subprocess.Popen(["strace", "-f", "-ttt", "-T", "-e",
                                       "trace=read,readv,recvfrom,write,writev,sendto,epoll_pwait,epoll_wait,"
                                       "epoll_ctl,setsockopt,io_uring_enter", "-p",
                                       str(pid), "-o", str(trace / f"{kind}.strace")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        if profile is not None:  # where the CPU goes, the kernel's functions included
            sampler = subprocess.Popen(["perf", "record", "-q", "-F", "2999", "-g", "-p", str(pid), "-o",
                                        str(profile / f"{kind}.perf")], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        if kind == "produce":
            requests = produce(bootstrap, "produce", records)
        else:
            requests = consume(bootstrap, kind, MOVED_BASE if kind == "moved" else 0, records)
        counts = counter.stop()
        for proc in (sampler, tracer):
            if proc is not None:
                proc.send_signal(signal.SIGINT)
                proc.wait(60)
        out[kind] = {"requests": requests, "counts": counts}
    return out


def report(runs: dict[str, list[dict[str, dict]]], records: int) -> None:
    """Per kind, each call's count per request: the median over rounds of each side, and each round's."""
    sides = list(runs)
    for kind in ("produce", "identity", "moved"):
        print(f"\n{kind}: system calls per client request (median; rounds); requests: "
              + "  ".join(f"{s} {[r[kind]['requests'] for r in runs[s]]}" for s in sides))
        for call in ("all", *CALLS):
            per = {s: [r[kind]["counts"].get(call, 0) / max(1, r[kind]["requests"]) for r in runs[s]] for s in sides}
            if any(any(v) for v in per.values()):
                print(f"{call:12}" + "".join(f"  {s} {_median(per[s]):7.2f} ({' '.join(f'{x:.2f}' for x in per[s])})"
                                             for s in sides))
        mb = records * RECORD / 1e6
        per_mb = {s: _median([r[kind]["counts"].get("all", 0) / mb for r in runs[s]]) for s in sides}
        print(f"{'all per MB':12}" + "".join(f"  {s} {per_mb[s]:7.2f}" for s in sides))


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare-ref", help="also count a proxy of this git ref (e.g. main)")
    ap.add_argument("--profile", type=Path, help="perf record the new proxy into this directory (<kind>.perf)")
    ap.add_argument("--trace", type=Path, help="strace the new proxy into this directory (<kind>.strace)")
    args = ap.parse_args()
    with scratch_dir("syscalls-") as tmp:
        (cluster,) = start_clusters(["b1"], tmp / "k")
        procs: dict[str, subprocess.Popen] = {}
        try:
            fill_topics(cluster.bootstrap, ["p-produce", "c-identity", "c-moved"], args.records)
            write_view(tmp / "view.json", cluster.bootstrap)
            trees = {"new": ROOT}
            if args.compare_ref:
                trees["ref"] = export_tree(args.compare_ref, tmp)
            addrs = {}
            for side, tree in trees.items():
                procs[side], addrs[side] = start_proxy(tree, tmp / "view.json", tmp / f"proxy-{side}.log")
                produce(addrs[side], "produce", 20000)  # warm-up: connections, metadata, the broker's JIT
                consume(addrs[side], "identity", 0, args.records)
            runs: dict[str, list] = {side: [] for side in trees}
            for r in range(args.rounds):
                order = list(trees)[r % len(trees):] + list(trees)[:r % len(trees)]  # each side first in turn
                for side in order:
                    runs[side].append(measure(procs[side].pid, addrs[side], args.records, tmp,
                                              *((args.profile, args.trace) if side == "new" and r == 0 else ())))
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            cluster.stop()
    report(runs, args.records)


if __name__ == "__main__":
    main()
