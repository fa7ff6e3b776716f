"""`ProducerIdTable.note_written`, the Produce lane's one call into the memory of batches not known written (DESIGN
§5.3 rule 3), per batch written by a steady producer: this tree against `--compare-ref` (exported with `git archive`,
as data_path.py does), each table loaded from its own tree's producer_ids.py, alternating rounds, in one process.
Three states of the memory: empty; one key whose batch ran out an hour ago (its producer bumped its epoch and never
wrote that key again); one live key (an ambiguous answer within the last 30 s).

    .venv/bin/python bench/not_known_written_cost.py --compare-ref main

No broker, no handler: the call alone. Read the ratios (2 shared cores: absolute times are noise).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import timeit
from pathlib import Path

from data_path import ROOT, export_tree
from scratch import scratch_dir

STATES = ("empty", "ran out", "live")
STEADY = (2, 0, "topic-name", 1)


def load(name: str, tree: Path):
    """The producer_ids module of `tree` (the rest of fedkafka from this tree: the table imports only protocol
    helpers and the handler contract's types)."""
    spec = importlib.util.spec_from_file_location(name, tree / "fedkafka/proxy/core/producer_ids.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(module, state: str):
    if state == "ran out":
        now = [1000.0]
        t = module.ProducerIdTable(clock=lambda: now[0])
        t.note_ambiguous((1, 0, "t", 0), 5)
        now[0] += 3600
        return t
    t = module.ProducerIdTable(clock=time.monotonic)
    if state == "live":
        t.note_ambiguous((1, 0, "t", 0), 5)
    return t


def per_call_ns(t, calls: int) -> float:
    seq = [0]

    def write() -> None:
        s = seq[0]
        t.note_written(STEADY, s, s + 1)
        seq[0] = s + 1
    return min(timeit.repeat(write, number=calls, repeat=3)) / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-ref", default="main")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with scratch_dir("fedkafka-nkw-") as tmp:
        modules = {"new": load("pids_new", ROOT), "ref": load("pids_ref", export_tree(args.compare_ref, tmp))}
        ns: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for state in STATES:  # a live key must stay live: each table is made just before its run
                for side, module in modules.items():
                    ns.setdefault((state, side), []).append(per_call_ns(table(module, state), args.calls))
    for state in STATES:
        new, ref = ns[(state, "new")], ns[(state, "ref")]
        ratios = [n / r for n, r in zip(new, ref, strict=True)]
        rounds = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"{state:8s} {args.compare_ref} {statistics.median(ref):6.0f} ns  this tree "
              f"{statistics.median(new):6.0f} ns  ratio median {statistics.median(ratios):.2f} (rounds {rounds})")


if __name__ == "__main__":
    main()
