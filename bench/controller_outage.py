"""Every controller stopped for minutes under keyed load (issue 15, docs/DESIGN.md §4.9): does traffic go on?

Starts two real clusters, one controller (it is every controller: nothing else can answer the proxies) and two
proxies with the controller's own defaults (lease 10 s, fence 15 min), runs the checker through the proxies
(idempotent and not, acks=all), kills the controller with SIGKILL for `--minutes`, starts it again and checks
that nothing acked was lost. The outage must stay shorter than the fence: past it the proxies refuse produce by
design. Reports produce and consume errors, lost records, order violations, acks per minute of the outage and
the longest second-long run without an ack, as JSON under bench/results/.

    .venv/bin/python bench/controller_outage.py              # 10 minutes: for a quiet machine
    .venv/bin/python bench/controller_outage.py --minutes 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import scratch_dir  # noqa: E402

from fedkafka.checker import Checker, CheckerConfig  # noqa: E402
from fedkafka.kafka.cluster import start_clusters, stop_clusters  # noqa: E402
from tests.workflows.support import Federation  # noqa: E402


def outage_seconds(report: dict) -> dict[int, int]:
    """Acks per whole second strictly inside the outage."""
    marks = {m["label"]: m["t"] for m in report["marks"]}
    rows = {row["second"]: row["acked"] for row in report["timeline"]}
    return {s: rows.get(s, 0) for s in range(int(marks["no controller"]) + 1, int(marks["controller back"]))}


def longest_silence(acks: dict[int, int]) -> int:
    longest = run = 0
    for second in sorted(acks):
        run = run + 1 if acks[second] == 0 else 0
        longest = max(longest, run)
    return longest


def under_outage(tmp: Path, args) -> tuple[dict, Counter]:
    c1, c2 = start_clusters(["c1", "c2"], tmp / "kafka")
    fed = Federation(tmp, lease_ms=args.lease_ms, fence_ms=args.fence_ms)
    try:
        fed.start_controller()
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, "bench-outage", args.partitions, coordination="c1")
        fed.start_proxies(2)
        checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic="bench-outage", producers=2, consumers=2,
                                        rate=args.rate, idempotent=(True, False))).start()
        time.sleep(args.steady)
        fed.kill_controller()
        checker.mark("no controller")
        time.sleep(args.minutes * 60)
        checker.mark("controller back")
        fed.start_controller()
        time.sleep(args.steady)
        report = checker.stop(drain_timeout=120)
        consume_errors = Counter(kind for _t, who, kind in checker.errors if who == "<consumer>")
    finally:
        fed.stop()
        stop_clusters([c1, c2])
    return report, consume_errors


def summarise(report: dict, consume_errors: Counter, args) -> dict:
    outage = outage_seconds(report)
    per_minute = [sum(n for s, n in outage.items() if (s - min(outage)) // 60 == m)
                  for m in range(len(outage) // 60 + (len(outage) % 60 > 0))]
    return {"minutes": args.minutes, "acked": report["acked"], "consumed": report["consumed"],
            "lost": report["lost"], "order_violations": report["order_violations"],
            "duplicates": report["duplicates"], "duplicates_idempotent": report["duplicates_idempotent"],
            "produce_errors": report["produce_errors"], "consume_errors": sum(consume_errors.values()),
            "error_kinds": report["error_kinds"], "consume_error_kinds": dict(consume_errors),
            "client_failures": report["client_failures"], "outage_acks_per_minute": per_minute,
            "outage_longest_silence_s": longest_silence(outage), "lost_acks": report["lost_acks"],
            "order_sample": report["order_sample"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long every controller stays stopped")
    ap.add_argument("--lease-ms", type=int, default=10_000, help="the controller's --lease-ms (its default)")
    ap.add_argument("--fence-ms", type=int, default=900_000, help="the controller's --fence-ms (its default)")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--rate", type=float, default=100, help="records/s per producer (2 producers)")
    ap.add_argument("--steady", type=float, default=10.0, help="seconds of load before and after the outage")
    args = ap.parse_args()
    if args.minutes * 60_000 >= args.fence_ms:
        ap.error("--minutes must stay below the fence (--fence-ms): past it proxies refuse produce by design")
    with scratch_dir("fedkafka-outage-bench-") as tmp:
        report, consume_errors = under_outage(tmp, args)
    result = summarise(report, consume_errors, args)
    print(json.dumps({k: v for k, v in result.items() if k not in ("lost_acks", "order_sample")}))
    out = ROOT / "bench" / "results" / f"controller-outage-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "result": result, "timeline": report["timeline"],
                               "marks": report["marks"]}, indent=2))
    print("wrote", out)
    clean = not (result["lost"] or result["order_violations"] or result["produce_errors"]
                 or result["consume_errors"] or result["client_failures"])
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
