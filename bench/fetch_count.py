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

from pathlib import Path

import produce_count
from data_path import consume, produce
from produce_count import TOPIC

FETCH_FILES = ("fetch.py", "records.py", "plan.py", "dispatch.py", "connection.py", "upstream.py", "<string>")


def count(tree: Path, records: int, tmp: Path) -> dict:
    return produce_count.traced_counts(
        tree, tmp, lambda addr: consume(addr, TOPIC, [0] * produce_count.PARTITIONS, 2000),
        lambda addr: consume(addr, TOPIC, [0] * produce_count.PARTITIONS, records),
        # straight to the broker, before the proxy starts: only the reads are counted
        prepare=lambda cluster: produce(cluster.bootstrap, TOPIC, records + 2000))


def main() -> None:
    produce_count.counting_main("fetch-count-", FETCH_FILES, "the fetch path",
                                lambda args, tree, tmp: count(tree, args.records, tmp),
                                request=("fetch.py:handle",), kind="Fetch",
                                total_of=(FETCH_FILES, "the fetch path: " + ", ".join(FETCH_FILES)))


if __name__ == "__main__":
    main()
