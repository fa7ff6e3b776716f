"""The proxy's Python per Fetch request, counted: bytecodes, Python calls and C calls by function (issue #20).

`produce_count.py`'s tracer (`sys.settrace` with opcode events, `sys.setprofile` for C calls, switched on and off
by SIGUSR1 and SIGUSR2 inside the proxy's event loop thread) around a confluent-kafka consumer reading `--records`
1 KB records of an identity segment (one broker, 4 partitions, librdkafka's default 1 MiB per partition: answers
of up to 4 MiB) through a proxy of this tree (or of `--ref`); the counts are divided by the Fetch requests the
handler saw (`fetch.py:handle`). A count is exact and the same every run: what a change to the Fetch path's
Python per answer saves shows here when CPU time on this shared machine cannot.

    .venv/bin/python bench/fetch_count.py [--records 30000] [--ref main] [--top 40] [--json out.json]
        [--before earlier.json] [--functions-of connection.py,upstream.py] [--counts earlier.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

import produce_count
from data_path import consume, export_tree, produce
from produce_count import ROOT, TOPIC, start_traced_proxy, write_one_topic_view
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters

FETCH_FILES = ("fetch.py", "records.py", "plan.py", "dispatch.py", "connection.py", "upstream.py", "<string>")


def count(tree: Path, records: int, tmp: Path) -> dict:
    (cluster,) = start_clusters(["b1"], tmp / "k")
    proc = None
    try:
        write_one_topic_view(cluster, TOPIC, tmp / "view.json")
        produce(cluster.bootstrap, TOPIC, records + 2000)  # straight to the broker: only the reads are counted
        dump = tmp / "counts.json"
        proc, addr = start_traced_proxy(tree, tmp / "view.json", dump, tmp / "proxy.log")
        consume(addr, TOPIC, [0] * produce_count.PARTITIONS, 2000)  # warm: connections, metadata, caches
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        consume(addr, TOPIC, [0] * produce_count.PARTITIONS, records)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=30_000)
    ap.add_argument("--ref", help="count a proxy of this git ref instead of the working tree")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--json", type=Path, help="also write the raw counts here")
    ap.add_argument("--before", type=Path, help="raw counts of an earlier run (--json) to show beside")
    ap.add_argument("--functions-of", help="list by function these files (comma-separated) instead of the fetch "
                    "path's")
    ap.add_argument("--counts", type=Path, help="report these raw counts (--json of an earlier run): no run")
    args = ap.parse_args()
    files = tuple(args.functions_of.split(",")) if args.functions_of else FETCH_FILES
    before = json.loads(args.before.read_text()) if args.before else None
    if args.counts:
        counts = json.loads(args.counts.read_text())
    else:
        with scratch_dir("fetch-count-") as tmp:
            tree = export_tree(args.ref, tmp / "ref") if args.ref else ROOT
            counts = count(tree, args.records, tmp)
        if args.json:
            args.json.write_text(json.dumps(counts))
    produce_count.report(counts, before, args.top, files, request=("fetch.py:handle",), kind="Fetch")


if __name__ == "__main__":
    main()
