"""The proxy's Python per Produce request, counted: bytecodes, Python calls and C calls by function.

CPU time on this shared machine is too noisy to see a few µs per request; a count is exact and the same every
run. One broker, one proxy of this tree (or of `--ref`, exported as data_path.py does) run under a tracer
(`sys.settrace` with opcode events, `sys.setprofile` for C calls) that SIGUSR1 switches on and SIGUSR2 off
and dumps, inside the proxy's event loop thread (the main thread). A confluent-kafka producer sends
`--records` 1 KB records (64 KiB batches, acks=all) to 4 partitions while it counts; the counts are divided by
the Produce requests the handler or the Produce lane (core/produce_lane.py) answered.

    .venv/bin/python bench/produce_count.py [--records 30000] [--ref main] [--top 40] [--json out.json]
        [--before earlier.json] [--idempotent] [--metrics] [--functions-of connection.py,upstream.py]
        [--counts earlier.json]

`--idempotent`: the producer has enable.idempotence=true (the Java producer's default since Kafka 3.0). `--metrics`: the
proxy with an admin listener, so with its metrics observer (a proxy has none without one: the Ansible default).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic
from data_path import export_tree, free_port, produce, tree_path
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "counted"
PARTITIONS = 4

# Runs inside the proxy: python -c TRACER <dump file> <proxy arguments...>
TRACER = r'''
import collections, json, os, runpy, signal, sys
dump = sys.argv.pop(1)
ops, calls, c_calls = collections.Counter(), collections.Counter(), collections.Counter()

def where(frame):
    code = frame.f_code
    name = code.co_qualname
    if code.co_filename == "<string>" and "self" in frame.f_locals:  # a dataclass' generated __init__
        name = f"{type(frame.f_locals['self']).__name__}.{code.co_name}"
    return f"{os.path.basename(code.co_filename)}:{name}"

def tracer(frame, event, arg):
    if event == "call":
        key = where(frame)
        calls[key] += 1
        frame.f_trace_opcodes = True
        def local(frame, event, arg):
            if event == "opcode":
                ops[key] += 1
            return local
        return local
    return None

def profiler(frame, event, arg):
    if event == "c_call":
        c_calls[f"{where(frame)} -> {getattr(arg, '__qualname__', repr(arg))}"] += 1

def on(*_):
    sys.settrace(tracer)
    sys.setprofile(profiler)

def off(*_):
    sys.settrace(None)
    sys.setprofile(None)
    with open(dump, "w") as out:
        json.dump({"ops": ops, "calls": calls, "c_calls": c_calls}, out)

signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
sys.argv[0] = "fedkafka.cli"
runpy.run_module("fedkafka.cli", run_name="__main__", alter_sys=True)
'''


def start_traced_proxy(tree: Path, view_file: Path, dump: Path, log: Path,
                       wrapper: str = TRACER, metrics: bool = False) -> tuple[subprocess.Popen, str]:
    """A proxy of `tree` run inside `wrapper` (a script that takes the dump file, then the CLI's arguments);
    `metrics`: with an admin listener, so with the metrics observer (`--admin-listen`)."""
    port = free_port()
    admin = ["--admin-listen", f"127.0.0.1:{free_port()}"] if metrics else []
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", wrapper, str(dump), "proxy", "--role", "both", "--listen",
                                 f"127.0.0.1:{port}", "--view-file", str(view_file), *admin],
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=tree_path(tree)),
                                cwd=tree)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"proxy did not start: {log.read_text()[-2000:]}")


def write_one_topic_view(cluster, topic: str, path: Path) -> None:
    """Create `topic` (PARTITIONS partitions) on the one-broker `cluster` "b1" and write a view of it, each
    logical partition its physical one, to `path`."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for fut in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        fut.result(30)
    time.sleep(1)
    chains = tuple(PartitionChain(segments=(Segment("b1", topic, p, 0, None, 0),)) for p in range(PARTITIONS))
    view = View(version=1, clusters={"b1": Cluster("b1", cluster.bootstrap)}, coordination_cluster="b1",
                topics={topic: LogicalTopic(topic, uuid.uuid4().hex, chains)})
    path.write_text(json.dumps(view.to_dict()))


def traced_counts(tree: Path, tmp: Path, warm, measured, prepare=None, metrics: bool = False) -> dict:
    """The counts of a traced proxy of `tree` (one broker "b1", one topic of PARTITIONS partitions) over
    `measured(addr)`, after `prepare(cluster)` (before the proxy starts) and `warm(addr)` (connections, metadata,
    caches; not counted): the window is switched on and off by SIGUSR1 and SIGUSR2."""
    (cluster,) = start_clusters(["b1"], tmp / "k")
    proc = None
    try:
        write_one_topic_view(cluster, TOPIC, tmp / "view.json")
        if prepare is not None:
            prepare(cluster)
        dump = tmp / "counts.json"
        proc, addr = start_traced_proxy(tree, tmp / "view.json", dump, tmp / "proxy.log", metrics=metrics)
        warm(addr)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        measured(addr)
        proc.send_signal(signal.SIGUSR2)
        for _ in range(200):
            if dump.exists() and dump.stat().st_size:
                time.sleep(0.2)
                return json.loads(dump.read_text())
            time.sleep(0.1)
        raise SystemExit("the proxy wrote no counts")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        cluster.stop()


def count(tree: Path, records: int, tmp: Path, idempotent: bool = False, metrics: bool = False) -> dict:
    return traced_counts(tree, tmp, lambda addr: produce(addr, TOPIC, 2000, idempotent=idempotent),
                         lambda addr: produce(addr, TOPIC, records, idempotent=idempotent), metrics=metrics)


HANDLER_FILES = ("produce.py", "produce_lane.py", "records.py", "plan.py", "<string>")  # <string>: dataclass __init__s


PRODUCE_REQUEST = ("produce.py:handle", "produce_lane.py:ProduceLane._answer_later")


def per_request(counts: dict, request: tuple[str, ...] = PRODUCE_REQUEST, kind: str = "Produce"
                ) -> tuple[int, dict[str, float], dict[str, float]]:
    """(requests, bytecodes per request by function, Python calls per request by function); a request is a call
    of one of `request`'s functions (Produce: one the handler saw, or one the Produce lane answered, which has no
    `handle` call)."""
    requests = sum(counts["calls"].get(key, 0) for key in request)
    if not requests:
        raise SystemExit(f"no {kind} request was counted")
    return (requests, {k: n / requests for k, n in counts["ops"].items()},
            {k: n / requests for k, n in counts["calls"].items()})


def by_file(ops: dict[str, float]) -> collections.Counter:
    files: collections.Counter = collections.Counter()
    for key, n in ops.items():
        files["dataclass __init__" if key.startswith("<string>:") else key.split(":", 1)[0]] += n
    return files


HANDLER_TOTAL = (HANDLER_FILES, "handler, records.py, plan.py, dataclasses")


def report(counts: dict, before: dict | None, top: int, functions_of: tuple[str, ...] = HANDLER_FILES,
           request: tuple[str, ...] = PRODUCE_REQUEST, kind: str = "Produce",
           total_of: tuple[tuple[str, ...], str] = HANDLER_TOTAL) -> None:
    """Per request (`per_request`'s `request` and `kind`): totals, bytecodes by file, and by function of
    `functions_of`'s files (the handler's unless --functions-of names others), with `before`'s beside; last, the
    bytecodes of `total_of`'s files (whatever --functions-of names), under its label."""
    requests, ops, calls = per_request(counts, request, kind)
    old_ops = per_request(before, request, kind)[1] if before else {}
    print(f"{requests} {kind} requests; per request: {sum(ops.values()):.0f} bytecodes"
          + (f" (before: {sum(old_ops.values()):.0f})" if before else "")
          + f", {sum(calls.values()):.0f} Python calls (resumptions included), "
          f"{sum(counts['c_calls'].values()) / requests:.0f} C calls")
    files, old_files = by_file(ops), by_file(old_ops)
    print("\nbytecodes per request by file" + (" (before, now)" if before else ""))
    for file in sorted(files.keys() | old_files.keys(), key=lambda f: -max(files[f], old_files[f]))[:25]:
        print((f"{old_files[file]:8.0f}" if before else "") + f"{files[file]:8.0f}  {file}")
    print("\nbytecodes per request by function of " + ", ".join(functions_of) + " (calls per request)")
    keys = [k for k in ops.keys() | old_ops.keys() if k.split(":", 1)[0] in functions_of]
    for key in sorted(keys, key=lambda k: -max(ops.get(k, 0), old_ops.get(k, 0)))[:top]:
        print((f"{old_ops.get(key, 0):8.0f}" if before else "")
              + f"{ops.get(key, 0):8.0f}  ({calls.get(key, 0):4.1f})  {key}")
    handler = sum(n for k, n in ops.items() if k.split(":", 1)[0] in total_of[0])
    old_handler = sum(n for k, n in old_ops.items() if k.split(":", 1)[0] in total_of[0])
    print((f"{old_handler:8.0f}" if before else "") + f"{handler:8.0f}  {total_of[1]}")


def main() -> None:
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--idempotent", action="store_true", help="produce with enable.idempotence=true")
        ap.add_argument("--metrics", action="store_true", help="the proxy with an admin listener (--admin-listen): "
                        "its metrics observer on (without, the default, it has none)")

    counting_main("produce-count-", HANDLER_FILES, "the handler",
                  lambda args, tree, tmp: count(tree, args.records, tmp, args.idempotent, args.metrics), add_arguments)


def counting_main(prefix: str, files: tuple[str, ...], whose: str,
                  run: Callable[[argparse.Namespace, Path, Path], dict],
                  add_arguments: Callable[[argparse.ArgumentParser], None] = lambda _ap: None, **report_args) -> None:
    """The command line of a count (this file's, fetch_count.py's): `run(args, tree, tmp)` on this tree or `--ref`'s
    (or the raw counts of `--counts`), then `report` (`report_args`: its request, kind and total), by function of
    `files` (`whose`: what they are) unless --functions-of names others. `add_arguments`: the count's own options."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=30_000)
    ap.add_argument("--ref", help="count a proxy of this git ref instead of the working tree")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--json", type=Path, help="also write the raw counts here")
    ap.add_argument("--before", type=Path, help="raw counts of an earlier run (--json) to show beside")
    add_arguments(ap)
    ap.add_argument("--functions-of", help=f"list by function these files (comma-separated, e.g. connection.py,"
                    f"upstream.py) instead of {whose}'s")
    ap.add_argument("--counts", type=Path, help="report these raw counts (--json of an earlier run): no run")
    args = ap.parse_args()
    before = json.loads(args.before.read_text()) if args.before else None
    if args.counts:
        counts = json.loads(args.counts.read_text())
    else:
        with scratch_dir(prefix) as tmp:
            tree = export_tree(args.ref, tmp / "ref") if args.ref else ROOT
            counts = run(args, tree, tmp)
        if args.json:
            args.json.write_text(json.dumps(counts))
    report(counts, before, args.top, tuple(args.functions_of.split(",")) if args.functions_of else files,
           **report_args)


if __name__ == "__main__":
    main()
