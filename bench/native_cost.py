"""Where the proxy's produce CPU goes at the C level, and what Python's cyclic garbage collector does per request.

One broker, one proxy of this tree (or of `--ref`, exported as data_path.py does) started through a small wrapper
that counts the collector's runs per generation (`gc.callbacks`, with the main thread's CPU time of each run)
between SIGUSR1 and SIGUSR2, and then times one full collection. While confluent-kafka produces `--records` 1 KB
records through it (64 KiB batches, acks=all, syscalls.py's producer, which counts its Produce requests from
librdkafka's statistics), `perf record -g -p <proxy>` samples it; the samples are grouped by C symbol into the
collector, malloc and pymalloc, memcpy, the eval loop, the rest of libpython, uvloop, the kernel and the rest.
`--call-graph dwarf` unwinds through libpython (built without frame pointers) to show who calls a symbol
(`perf report -i DIR/produce.perf -S SYMBOL -G` with `--keep DIR`).

    .venv/bin/python bench/native_cost.py [--records 100000] [--ref main] [--keep DIR] [--top 40]
        [--call-graph dwarf] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from data_path import ROOT, cpu_seconds, export_tree
from produce_count import start_traced_proxy, write_one_topic_view
from scratch import scratch_dir
from syscalls import produce

from fedkafka.kafka.cluster import start_clusters

TOPIC = "native"

# Runs the proxy: python -c GC_COUNTER <dump file> <proxy arguments...>
GC_COUNTER = r'''
import gc, json, runpy, signal, sys, time
dump = sys.argv.pop(1)
state = {"on": False, "t0": 0.0}
runs, seconds, collected = [0, 0, 0], [0.0, 0.0, 0.0], [0, 0, 0]

def callback(phase, info):
    if not state["on"]:
        return
    if phase == "start":
        state["t0"] = time.thread_time()
        return
    g = info["generation"]
    runs[g] += 1
    seconds[g] += time.thread_time() - state["t0"]
    collected[g] += info["collected"]

def on(*_):
    runs[:], seconds[:], collected[:] = [0, 0, 0], [0.0, 0.0, 0.0], [0, 0, 0]
    state["on"] = True

def off(*_):
    state["on"] = False
    tracked = [len(gc.get_objects(g)) for g in range(3)]
    t0 = time.thread_time()
    gc.collect()  # what a full collection costs this process now (after the counted run)
    full = time.thread_time() - t0
    with open(dump, "w") as out:
        json.dump({"runs": runs, "seconds": seconds, "collected": collected, "threshold": gc.get_threshold(),
                   "frozen": gc.get_freeze_count(), "tracked": tracked, "full_collection_s": full}, out)

gc.callbacks.append(callback)
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
sys.argv[0] = "fedkafka.cli"
runpy.run_module("fedkafka.cli", run_name="__main__", alter_sys=True)
'''

# Symbol groups, first match wins; the collector's traverse functions (dict_traverse, subtype_traverse...) are only
# called by the collector on this path.
GROUPS = [
    ("gc", re.compile(r"^(gc_\w+|collect\w*|visit_\w+|subtract_refs|move_\w+|update_refs|deduce_unreachable|"
                      r"handle_\w+|\w*_?traverse\w*|untrack_\w+|_PyTuple_MaybeUntrack|_PyDict_MaybeUntrack|"
                      r"_PyGC_\w+|PyGC_\w+|finalize_garbage|delete_garbage|invoke_gc_callback)$")),
    ("malloc/free (pymalloc, glibc)", re.compile(r"^(_?PyObject_(Malloc|Calloc|Realloc|Free)|_?PyMem_\w+|"
                                                 r"pymalloc_\w+|_PyObject_GC_(New|NewVar|Link|Del|Resize)|"
                                                 r"PyObject_GC_(Del|Track|UnTrack)|gc_alloc|"
                                                 r"(__libc_|_int_|__)?(malloc|free|calloc|realloc)\w*|cfree\w*|"
                                                 r"malloc_consolidate|unlink_chunk\w*|tcache_\w+|sysmalloc)$")),
    ("memcpy/memmove", re.compile(r"^(__)?mem(cpy|move|set)\w*$")),
    ("eval loop", re.compile(r"^_PyEval_EvalFrameDefault$")),
]


def group_of(symbol: str, dso: str) -> str:
    if dso.startswith("[kernel"):
        return "kernel"
    for name, pattern in GROUPS:
        if pattern.match(symbol):
            return name
    if "uvloop" in dso or dso.startswith("loop.cpython"):
        return "uvloop"
    if "libpython" in dso or dso.startswith("python"):
        return "libpython, the rest"
    return "the rest"


def perf_symbols(data: Path) -> list[tuple[float, str, str]]:
    """(self %, symbol, dso) of every symbol in a perf.data, biggest first."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "sym,dso", "-g", "none",
                          "--stdio", "--percent-limit", "0"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+\[[.kKu]\]\s+(.+?)\s{2,}(\S+)\s*$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2).strip(), m.group(3)))
    return rows


def copies_by_caller(data: Path, depth: int = 4) -> list[tuple[float, str]]:
    """Share of all samples that are a memcpy/memmove, by the C functions that called it (`--call-graph dwarf`)."""
    out = subprocess.run(["perf", "script", "-i", str(data)], capture_output=True, text=True).stdout
    callers: collections.Counter[str] = collections.Counter()
    total = 0
    for sample in out.split("\n\n"):
        frames = [m.group(1) for m in re.finditer(r"^\s+[0-9a-f]+ (\S+?)\+0x", sample, re.M)]
        if not frames:
            continue
        total += 1
        if GROUPS[2][1].match(frames[0]):
            callers[" < ".join(frames[1:1 + depth])] += 1
    return [(100 * n / total, chain) for chain, n in callers.most_common(8)]


def measure(tree: Path, records: int, tmp: Path, keep: Path | None, call_graph: str = "fp") -> dict:
    (cluster,) = start_clusters(["b1"], tmp / "k")
    proc = None
    try:
        write_one_topic_view(cluster, TOPIC, tmp / "view.json")
        dump = tmp / "gc.json"
        proc, addr = start_traced_proxy(tree, tmp / "view.json", dump, tmp / "proxy.log", GC_COUNTER)
        produce(addr, TOPIC, 20000)  # warm: connections, metadata, caches, the broker's JIT
        data = (keep or tmp) / "produce.perf"
        proc.send_signal(signal.SIGUSR1)
        perf = subprocess.Popen(["perf", "record", "-q", "-F", "2999", "--call-graph", call_graph, "-p",
                                 str(proc.pid), "-o", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        c0 = cpu_seconds(proc.pid)
        requests = produce(addr, TOPIC, records)
        cpu = cpu_seconds(proc.pid) - c0
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
        proc.send_signal(signal.SIGUSR2)
        for _ in range(100):
            if dump.exists() and dump.stat().st_size:
                break
            time.sleep(0.1)
        time.sleep(0.2)
        return {"requests": requests, "cpu_s": cpu, "gc": json.loads(dump.read_text()),
                "symbols": perf_symbols(data), "load": os.getloadavg()[0],
                "copies": copies_by_caller(data) if call_graph == "dwarf" else []}
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        cluster.stop()


def report(result: dict, top: int) -> None:
    requests, gc = result["requests"], result["gc"]
    print(f"{requests} Produce requests, proxy CPU {result['cpu_s']:.2f} s, load average {result['load']:.1f}")
    print(f"gc threshold {gc['threshold']}, frozen {gc['frozen']}, tracked by generation {gc['tracked']}; "
          f"a full collection afterwards took {gc['full_collection_s'] * 1e3:.1f} ms")
    for g in range(3):
        n = gc["runs"][g]
        print(f"  gen{g}: {n} collections ({n / max(1, requests):.3f} per request), "
              f"{gc['seconds'][g] * 1e3:.1f} ms main-thread CPU ({100 * gc['seconds'][g] / result['cpu_s']:.1f}% of "
              f"the proxy's), {gc['collected'][g]} objects collected")
    groups: collections.Counter[str] = collections.Counter()
    for share, symbol, dso in result["symbols"]:
        groups[group_of(symbol, dso)] += share
    print("\nperf self time by group")
    for name, share in groups.most_common():
        print(f"{share:6.1f}%  {name}")
    if result["copies"]:
        print("\nmemcpy/memmove by caller (% of all samples)")
        for share, chain in result["copies"]:
            print(f"{share:6.2f}%  {chain}")
    print(f"\ntop {top} symbols by self time")
    for share, symbol, dso in result["symbols"][:top]:
        print(f"{share:6.2f}%  {symbol:45} {dso:28} {group_of(symbol, dso)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--ref", help="measure a proxy of this git ref instead of the working tree")
    ap.add_argument("--keep", type=Path, help="keep perf.data in this directory (produce.perf)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--call-graph", default="fp", help="perf record's --call-graph: fp (default) or dwarf, for "
                                                         "the callers of a symbol in libpython (no frame pointers)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    with scratch_dir("native-cost-") as tmp:
        tree = export_tree(args.ref, tmp / "ref") if args.ref else ROOT
        result = measure(tree, args.records, tmp, args.keep, args.call_graph)
    if args.json:
        args.json.write_text(json.dumps(result))
    report(result, args.top)


if __name__ == "__main__":
    main()
