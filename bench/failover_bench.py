"""Failover of a whole dead cluster under keyed load (issue 17): how soon producers write again.

Starts two real clusters, a controller and proxies, runs the checker through the proxies, kills every broker of
c1 with SIGKILL, asks for the failover once the controller's scans see c1 unreachable (or lets the controller
start it: --auto-failover-after), then restarts c1 and checks that nothing acked was lost. Reports, per run:
- decision -> first ack: from the failover request (or the run the controller started) to the first produce
  acked on a partition that was on c1 (target <= 10 s);
- kill -> first ack: what producers felt, detection included (scan interval 1 s, Kafka timeout 3 s);
- decision -> run done: freeze, the proxies' acks, seal from the last known ends, publish.
Writes JSON under bench/results/. Read it against the machine's load (2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import scratch_dir  # noqa: E402

from fedkafka.kafka.cluster import start_clusters, stop_clusters  # noqa: E402
from tests.workflows.failover_scenario import failover_under_load  # noqa: E402


def one_run(tmp: Path, i: int, args) -> dict:
    clusters = start_clusters(["c1", "c2"], tmp / f"kafka-{i}")
    (tmp / f"run-{i}").mkdir()
    try:
        res = failover_under_load(tmp / f"run-{i}", *clusters, topic=f"bench-failover-{i}",
                                  partitions=args.partitions, rate=args.rate, steady=args.steady,
                                  auto_after=args.auto_failover_after)
    finally:
        stop_clusters(clusters)
    checker = {k: res.report[k] for k in ("acked", "consumed", "lost", "duplicates", "order_violations",
                                          "produce_errors", "client_failures")}
    run = res.run
    phases = {ph["name"]: round((ph["finished_at"] or 0) - (ph["started_at"] or 0), 2) for ph in run["phases"]}
    return {"decision_to_first_ack_s": round(res.decision_to_first_ack, 2),
            "kill_to_first_ack_s": round(res.kill_to_first_ack, 2),
            "decision_to_done_s": round(res.decision_to_done, 2), "moved": run["moved"], "phase_seconds": phases,
            "checker": checker, "order_sample": res.report["order_sample"], "marks": res.report["marks"],
            "timeline": res.report["timeline"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--rate", type=float, default=100, help="records/s per producer (2 producers)")
    ap.add_argument("--steady", type=float, default=5.0, help="seconds of load before the kill")
    ap.add_argument("--auto-failover-after", type=float, default=None, help="let the controller decide")
    args = ap.parse_args()
    with scratch_dir("fedkafka-failover-bench-") as tmp:
        runs = [one_run(tmp, i, args) for i in range(args.runs)]
    for r in runs:
        print(f"moved {r['moved']}: decision -> first ack {r['decision_to_first_ack_s']} s (target <= 10 s), "
              f"kill -> first ack {r['kill_to_first_ack_s']} s, decision -> done {r['decision_to_done_s']} s "
              f"(phases {r['phase_seconds']}); checker {json.dumps(r['checker'])}")
    firsts = [r["decision_to_first_ack_s"] for r in runs]
    print(f"decision -> first ack over {len(runs)} runs: median {statistics.median(firsts)} s, max {max(firsts)} s")
    out = ROOT / "bench" / "results" / f"failover-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
