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
from pathlib import Path

import produce_count
from data_path import consume, export_tree, produce
from produce_count import ROOT, TOPIC
from scratch import scratch_dir

FETCH_FILES = ("fetch.py", "records.py", "plan.py", "dispatch.py", "connection.py", "upstream.py", "<string>")


def count(tree: Path, records: int, tmp: Path) -> dict:
    return produce_count.traced_counts(
        tree, tmp, lambda addr: consume(addr, TOPIC, [0] * produce_count.PARTITIONS, 2000),
        lambda addr: consume(addr, TOPIC, [0] * produce_count.PARTITIONS, records),
        # straight to the broker, before the proxy starts: only the reads are counted
        prepare=lambda cluster: produce(cluster.bootstrap, TOPIC, records + 2000))


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
    produce_count.report(counts, before, args.top, files, request=("fetch.py:handle",), kind="Fetch",
                         total_of=(FETCH_FILES, "the fetch path: " + ", ".join(FETCH_FILES)))


if __name__ == "__main__":
    main()
