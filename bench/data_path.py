"""Data path cost: produce and consume through a proxy of this tree, of an older tree (`--compare-ref`) and
direct, alternating in one run, with each proxy's CPU-seconds per GB and the load average.

One broker, 1 KB records, confluent-kafka clients (acks=all). Rounds alternate direct / ref / new so that a
burst of load from elsewhere on the machine hits every side alike; read the ratios, not the absolute figures.
`--compare-ref REF` exports REF with `git archive` into a scratch directory (nothing in the repository changes)
and runs a second proxy from it. `--profile` samples the new proxy with py-spy during its produce and its
consume runs and writes top-N tables and a text flame graph to bench/profiles/. `--perf` samples it with
`perf record -e cpu-clock` instead (kernel, interpreter and libraries, no Python frames: where the CPU goes
below the Python code) and writes each run's shares by library and by symbol to bench/profiles/perf-<kind>.txt.

`--compare-pure` runs a third proxy, of this tree with FEDKAFKA_PURE_PYTHON=1 (records.py without its compiled
twin). `--relay` adds a side through a bare TCP relay with no Kafka work (relay.py; it produces to and reads the
physical topics, as direct does): the floor any proxy pays for one more hop on this machine, its process's CPU and
user/system split recorded as a proxy's, and each proxy's throughput ÷ the relay's in the table.

    .venv/bin/python bench/data_path.py [--records 100000] [--rounds 3] [--compare-ref main] [--compare-pure] [--relay]
        [--profile [--native] | --perf] [--idempotent]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from relay import relay_listener, start_relay
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View, shadow_topic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
PROFILES = Path(__file__).parent / "profiles"
RECORD = 1024
PARTITIONS = 4
MOVED_BASE = 10**9
JUNK = 1000
PHYSICAL_SIDES = ("direct", "relay")  # the sides that read and write the physical topics (no view)


def cpu_seconds(pid: int) -> float:
    """CPU time of all of a process' threads, in nanoseconds from schedstat (/proc/<pid>/stat counts ticks of
    10 ms: a tenth of a CPU-second per GB on a 100 MB run)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (/proc/<pid>/stat field 10): a buffer malloc serves from fresh
    mmap pages faults on each of its pages, one it serves from the heap does not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])


def user_system_ticks(pid: int) -> tuple[int, int]:
    """A process' user and system CPU so far, in clock ticks (/proc/<pid>/stat fields 14 and 15): their split
    says how much of the proxy's CPU is the kernel's (its socket reads and writes, on loopback the receiving
    side's TCP work too), which no change to the proxy's Python can cut."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_tree(ref: str, into: Path) -> Path:
    """The files of `ref` (a commit, branch or tag) as a plain directory."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "ref.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), ref, "fedkafka"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def tree_path(tree: Path) -> str:
    """The proxy's PYTHONPATH: the tree, then the caller's (a fedkafka_speedups built outside the virtualenv, as
    `maturin build` into a worktree, serves both sides of a comparison)."""
    return os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])


def start_proxy(tree: Path, view_file: Path, log: Path, pure_python: bool = False) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=tree_path(tree))
    if pure_python:  # records.py without its compiled twin (fedkafka_speedups)
        env["FEDKAFKA_PURE_PYTHON"] = "1"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                                 f"127.0.0.1:{port}", "--view-file", str(view_file)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tree)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()  # the caller has no handle on it yet: it would outlive the run
    raise SystemExit(f"proxy from {tree} did not start: {log.read_text()[-2000:]}")


def produce(bootstrap: str, topic: str, records: int, partition: int = -1, idempotent: bool = False) -> float:
    """Records per second of a confluent-kafka producer, acks=all, every record acknowledged (to `partition`, or
    where the default partitioner puts them); `idempotent`: with enable.idempotence=true (as the Java producer's
    default since Kafka 3.0)."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 65536,
                  "queue.buffering.max.messages": 200000, "enable.idempotence": idempotent})
    payload = os.urandom(RECORD)
    acked = [0]

    def done(err, _msg):
        acked[0] += err is None

    start = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                p.produce(topic, payload, partition=partition, on_delivery=done)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(300)
    elapsed = time.perf_counter() - start
    del p  # its threads and connections go now, not at the end of the run
    if acked[0] != records:
        raise SystemExit(f"only {acked[0]} of {records} records acknowledged by {bootstrap}")
    return records / elapsed


def consume(bootstrap: str, topic: str, starts: list[int] | dict[int, int], records: int) -> float:
    """Records per second of an assigned confluent-kafka consumer reading `records` records from `starts` (a start
    offset per partition: a list for all partitions, a dict for some)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"b-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    pairs = starts.items() if isinstance(starts, dict) else enumerate(starts)
    c.assign([TopicPartition(topic, p, s) for p, s in pairs])
    n, t0 = 0, None
    deadline = time.time() + 300
    while n < records and time.time() < deadline:
        for m in c.consume(1000, 5.0):
            if m.error():
                continue
            t0 = t0 or time.perf_counter()
            n += 1
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    if n < records:
        raise SystemExit(f"read only {n} of {records} records from {topic} at {bootstrap}")
    return n / elapsed


class Sampler:
    """py-spy attached to a process for one run: raw collapsed stacks (one `stack count` line each)."""

    def __init__(self, pid: int, out: Path, native: bool = False):
        self.out = out
        spy = str(Path(sys.executable).parent / "py-spy")
        # --native shows the C frames under a Python one (a writev, a crc32c); it must stop the process to unwind
        mode = ["--native"] if native else ["--nonblocking"]
        self.proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250", "--gil", "--format", "raw",
                                      "--output", str(out), *mode],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)


class PerfSampler:
    """`perf record` of a process's CPU clock for one run (kernel frames included): where its CPU time goes by
    library (the kernel, libpython, uvloop, the compiled twin) rather than by Python function."""

    def __init__(self, pid: int, out: Path):
        self.out = out
        self.proc = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-p", str(pid),
                                      "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)


def perf_summary(data: Path, title: str, top: int = 25) -> str:
    """The shares of a `perf record` by library, then by library and symbol (`perf report`)."""
    def report(sort: str) -> list[str]:
        out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort],
                             capture_output=True, text=True, check=True).stdout
        return [line.rstrip() for line in out.splitlines() if line.strip() and not line.startswith("#")]
    samples = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso"], capture_output=True,
                             text=True, check=True).stdout
    count = next((line for line in samples.splitlines() if line.startswith("# Samples")), "")
    return "\n".join([f"## {title} (perf, cpu-clock) {count.lstrip('# ')}", "", "by library:",
                      *report("dso")[:12], "", "by symbol:", *report("dso,sym")[:top]]) + "\n"


def summarize(raw: Path, title: str, top: int = 30, min_share: float = 0.01) -> str:
    """Top functions by own and by inclusive samples, and the call tree (a flame graph as text)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    tree: dict = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        frames = frames[_below_loop(frames):] or frames
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
        node = tree
        for f in frames:
            entry = node.setdefault(f, [0, {}])
            entry[0] += n
            node = entry[1]
    lines = [f"## {title}: {total} samples", "", "own %   incl %  function"]
    for f, n in own.most_common(top):
        lines.append(f"{100 * n / total:5.1f}  {100 * inclusive[f] / total:6.1f}  {f}")
    lines += ["", "incl %  function (by inclusive samples)"]
    for f, n in inclusive.most_common(top):
        lines.append(f"{100 * n / total:6.1f}  {f}")
    lines += ["", f"call tree (branches of at least {100 * min_share:.0f}% of samples)"]
    _tree_lines(tree, total, min_share, 0, lines)
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`: the line numbers split one function into many."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def _below_loop(frames: list[str]) -> int:
    """Index of the first frame under the event loop (the CLI's frames above it are the same in every sample)."""
    loops = [i for i, f in enumerate(frames) if f.startswith(("Runner.run ", "run (uvloop"))]
    return loops[-1] + 1 if loops else 0


def _tree_lines(node: dict, total: int, min_share: float, depth: int, lines: list[str]) -> None:
    for f, (n, children) in sorted(node.items(), key=lambda kv: -kv[1][0]):
        if n < total * min_share:
            continue
        lines.append(f"{100 * n / total:5.1f} {'  ' * depth}{f}")
        _tree_lines(children, total, min_share, depth + 1, lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare-ref", help="also run a proxy of this git ref (e.g. main)")
    ap.add_argument("--new-ref", help="run the new proxy from this git ref, exported like --compare-ref's, "
                                      "instead of from the working tree")
    ap.add_argument("--compare-pure", action="store_true",
                    help="also run this tree's proxy with FEDKAFKA_PURE_PYTHON=1 (no fedkafka_speedups)")
    ap.add_argument("--relay", action="store_true", help="also run through a bare TCP relay (relay.py, no Kafka "
                                                         "work): the floor of one more hop")
    ap.add_argument("--profile", action="store_true", help="py-spy the new proxy; tables into bench/profiles/")
    ap.add_argument("--native", action="store_true", help="with --profile: C frames too (py-spy --native)")
    ap.add_argument("--perf", action="store_true", help="perf record the new proxy (kernel and libraries); "
                                                      "shares into bench/profiles/perf-<kind>.txt")
    ap.add_argument("--idempotent", action="store_true", help="produce with enable.idempotence=true")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    n = args.records
    relay_port, relay_target = free_port(), free_port()
    with scratch_dir("data-path-") as tmp:
        with relay_listener(relay_port, relay_target) if args.relay else contextlib.nullcontext():
            (cluster,) = start_clusters(["b1"], tmp / "k")
        procs: dict[str, subprocess.Popen] = {}
        try:
            proxies = ["new"] + (["pure"] if args.compare_pure else []) + (["ref"] if args.compare_ref else [])
            own_topics = ["direct"] + (["relay"] if args.relay else []) + proxies  # a produce topic a round each
            names = [f"p-{s}-{r}" for s in own_topics for r in range(args.rounds + 1)]
            names += ["c-identity", "c-moved", shadow_topic("identity"), shadow_topic("moved")]
            fill_topics(cluster.bootstrap, names, n)
            view_file = write_view(tmp, cluster.bootstrap, names)
            trees = {"new": export_tree(args.new_ref, tmp / "new") if args.new_ref else ROOT}
            if args.compare_pure:
                trees["pure"] = trees["new"]
            if args.compare_ref:
                trees["ref"] = export_tree(args.compare_ref, tmp)
            addrs = {"direct": cluster.bootstrap}
            if args.relay:  # reads and writes the physical topics, as direct does
                procs["relay"], addrs["relay"] = start_relay(relay_port, relay_target)
            for side, tree in trees.items():
                procs[side], addrs[side] = start_proxy(tree, view_file, tmp / f"proxy-{side}.log",
                                                       pure_python=side == "pure")
            results = run_rounds(args, cluster, procs, addrs)
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            cluster.stop()
    results.update(records=n, record_bytes=RECORD, compare_ref=args.compare_ref, compare_pure=args.compare_pure,
                   idempotent=args.idempotent)
    print_results(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"data-path-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def fill_topics(bootstrap: str, names: list[str], n: int) -> None:
    """The topics `names`; c-moved with JUNK records per partition that no segment holds, then `n` records in
    c-identity and in c-moved."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in names]).values():
        fut.result(30)
    time.sleep(1)
    fill = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 262144})
    for p in range(PARTITIONS):
        for _ in range(JUNK):
            fill.produce("c-moved", b"junk", partition=p)
    fill.flush(60)
    payload = os.urandom(RECORD)
    for topic in ("c-identity", "c-moved"):
        for i in range(n):
            while True:
                try:
                    fill.produce(topic, payload, partition=i % PARTITIONS)
                    break
                except BufferError:
                    fill.poll(0.05)
        fill.flush(300)


def write_view(tmp: Path, bootstrap: str, names: list[str]) -> Path:
    """The proxies' view: each p- topic its own logical topic, `identity` over c-identity, `moved` over c-moved
    past its junk (logical base MOVED_BASE)."""
    def chain(topic: str, p: int, start: int, base: int) -> PartitionChain:
        return PartitionChain(segments=(Segment("b1", topic, p, start, None, base),))

    topics = {t: LogicalTopic(t, uuid.uuid4().hex, tuple(chain(t, p, 0, 0) for p in range(PARTITIONS)))
              for t in names if t.startswith("p-")}
    topics["identity"] = LogicalTopic("identity", uuid.uuid4().hex, tuple(
        chain("c-identity", p, 0, 0) for p in range(PARTITIONS)))
    topics["moved"] = LogicalTopic("moved", uuid.uuid4().hex, tuple(
        chain("c-moved", p, JUNK, MOVED_BASE) for p in range(PARTITIONS)))
    view = View(version=1, clusters={"b1": Cluster("b1", bootstrap)}, coordination_cluster="b1", topics=topics)
    view_file = tmp / "view.json"
    view_file.write_text(json.dumps(view.to_dict()))
    return view_file


def run_rounds(args, cluster, procs: dict[str, subprocess.Popen], addrs: dict[str, str]) -> dict:
    n = args.records
    gb = n * RECORD / 1e9
    sides = list(addrs)
    runs: dict[str, dict[str, list]] = {k: {s: [] for s in sides} for k in ("produce", "identity", "moved")}
    logical_starts = {"identity": [0] * PARTITIONS, "moved": [MOVED_BASE] * PARTITIONS}
    physical = {"identity": ("c-identity", [0] * PARTITIONS), "moved": ("c-moved", [JUNK] * PARTITIONS)}
    loads = []
    for side in sides:  # warm-up: connections, caches, the JIT of the broker, the page cache
        produce(addrs[side], f"p-{side}-0", min(n, 20000), idempotent=args.idempotent)
        for kind, (topic, starts) in physical.items():
            consume(addrs[side], *((topic, starts) if side in PHYSICAL_SIDES else (kind, logical_starts[kind])), n)
    for r in range(1, args.rounds + 1):
        for kind in ("produce", "identity", "moved"):
            proxies = sides[1:]
            shift = (r - 1) % len(proxies)  # each proxy goes first in turn: the order showed in the figures
            for side in ["direct", *proxies[shift:], *proxies[:shift]]:
                pid = procs[side].pid if side in procs else None
                sampler = None
                if (args.profile or args.perf) and side == "new" and r == 1:
                    PROFILES.mkdir(exist_ok=True)
                    sampler = PerfSampler(pid, PROFILES / f"{kind}.perf") if args.perf else \
                        Sampler(pid, PROFILES / f"{kind}.raw", args.native)
                c0 = cpu_seconds(pid) if pid else 0.0
                f0 = minor_faults(pid) if pid else 0
                t0 = user_system_ticks(pid) if pid else (0, 0)
                b0 = cpu_seconds(cluster.pid)
                if kind == "produce":
                    rate = produce(addrs[side], f"p-{side}-{r}", n, idempotent=args.idempotent)
                else:
                    topic, starts = (physical[kind] if side in PHYSICAL_SIDES else (kind, logical_starts[kind]))
                    rate = consume(addrs[side], topic, starts, n)
                proxy_cpu = (cpu_seconds(pid) - c0) / gb if pid else None
                faults = (minor_faults(pid) - f0) / gb if pid else None
                system_share = _system_share(t0, user_system_ticks(pid)) if pid else None
                broker_cpu = (cpu_seconds(cluster.pid) - b0) / gb
                if sampler is not None:
                    sampler.stop()
                runs[kind][side].append({"records_per_s": rate, "proxy_cpu_s_per_gb": proxy_cpu,
                                         "broker_cpu_s_per_gb": broker_cpu, "proxy_minor_faults_per_gb": faults,
                                         "proxy_system_share": system_share})
                loads.append(os.getloadavg()[0])
                print(f"round {r} {kind:8} {side:6} {rate:9.0f} rec/s  proxy CPU "
                      f"{'-' if proxy_cpu is None else f'{proxy_cpu:.2f}'} s/GB  "
                      f"{'-' if faults is None else f'{faults:.0f}'} faults/GB  "
                      f"{'-' if system_share is None else f'{system_share:.0%}'} system  "
                      f"broker CPU {broker_cpu:.2f} s/GB  "
                      f"load {loads[-1]:.2f}", flush=True)
    for kind in runs:
        data = PROFILES / f"{kind}.perf"
        if args.perf and data.exists():
            (PROFILES / f"perf-{kind}.txt").write_text(perf_summary(data, f"{kind} through the proxy"))
            data.unlink()
    if args.profile:
        for kind in runs:
            raw = PROFILES / f"{kind}.raw"
            if raw.exists():
                (PROFILES / f"{kind}.txt").write_text(summarize(raw, f"{kind} through the proxy (py-spy)"))
                raw.unlink()
    return {"runs": runs, "load_average": {"min": min(loads), "max": max(loads), "mean": sum(loads) / len(loads)}}


def _system_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    user, system = after[0] - before[0], after[1] - before[1]
    return system / (user + system) if user + system else None


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def print_results(results: dict) -> None:
    runs = results["runs"]
    print(f"\n{results['records']} records x {RECORD} B, {PARTITIONS} partitions, 1 broker, confluent-kafka"
          f"{' (idempotent producer)' if results.get('idempotent') else ''}; "
          f"medians over rounds; load average {results['load_average']['min']:.1f}-"
          f"{results['load_average']['max']:.1f}\n")
    sides = list(runs["produce"])
    # each proxy against the relay's floor (the same bytes through a hop with no Kafka work)
    over_relay = [s for s in sides if s not in PHYSICAL_SIDES] if "relay" in sides else []
    print(f"{'path':10}" + "".join(f"{s + ' rec/s':>14}" for s in sides)
          + "".join(f"{s + '/direct':>14}" for s in sides[1:]) + "".join(f"{s + '/relay':>14}" for s in over_relay)
          + "".join(f"{s + ' CPU s/GB':>15}" for s in sides[1:]) + f"{'broker s/GB':>13}")
    for kind, by_side in runs.items():
        rate = {s: _median([x["records_per_s"] for x in by_side[s]]) for s in sides}
        cpu = {s: _median([x["proxy_cpu_s_per_gb"] for x in by_side[s]]) for s in sides[1:]}
        broker = _median([x["broker_cpu_s_per_gb"] for x in by_side["direct"]])
        print(f"{kind:10}" + "".join(f"{rate[s]:14.0f}" for s in sides)
              + "".join(f"{rate[s] / rate['direct']:14.2f}" for s in sides[1:])
              + "".join(f"{rate[s] / rate['relay']:14.2f}" for s in over_relay)
              + "".join(f"{cpu[s]:15.2f}" for s in sides[1:]) + f"{broker:13.2f}")


if __name__ == "__main__":
    main()
