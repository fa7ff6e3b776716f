"""Scale-up and decommission under load: how long, and what producers feel (issue 7).

Starts three real clusters, a controller and proxies, runs the checker through the proxies, then
1. scale-up onto c3 (rebalance): time from the request (registration included, broker provisioning
   excluded) to "every moved partition's new writes land on c3", and producer p99 latency / errors
   during the move side by side with the steady state before it;
2. decommission c1 with the groups drain: the time of each phase.
Prints a table and writes JSON under bench/results/. Read ratios, not absolute numbers (2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import scratch_dir  # noqa: E402

from fedkafka.checker import Checker, CheckerConfig  # noqa: E402
from fedkafka.kafka.cluster import start_clusters  # noqa: E402
from tests.workflows.support import Federation, log_end, wait_for  # noqa: E402


def window(checker: Checker, start: float, end: float) -> dict:
    lat = sorted(a.latency for a in checker.acked.values() if start <= a.at < end)
    errors = sum(1 for at, key, _ in checker.errors if start <= at < end and key != "<consumer>")
    pick = (lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))] * 1000, 1)) if lat else (lambda q: None)
    return {"seconds": round(end - start, 2), "acked": len(lat), "errors": errors, "p50_ms": pick(0.5),
            "p99_ms": pick(0.99), "max_ms": round(lat[-1] * 1000, 1) if lat else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--proxies", type=int, default=2)
    ap.add_argument("--rate", type=float, default=200, help="records/s per producer (2 producers)")
    ap.add_argument("--steady", type=float, default=8.0, help="seconds of steady load before the move")
    args = ap.parse_args()
    with scratch_dir("fedkafka-scale-bench-") as tmp:
        clusters = start_clusters(["c1", "c2", "c3"], tmp / "kafka")
        c1, c2, c3 = clusters
        fed = Federation(tmp)
        checker = None
        try:
            fed.start_controller()
            topic = "bench-scale-up"
            fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, topic, args.partitions, coordination="c2")
            fed.start_proxies(args.proxies)
            checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=topic, producers=2, consumers=2,
                                            rate=args.rate, idempotent=(True, False),
                                            extra_consumer_config={"auto.commit.interval.ms": 500})).start()
            time.sleep(args.steady)
            checker.mark("scale-up")
            t0 = time.monotonic() - checker._started
            posted = time.monotonic()
            run = fed.workflow({"kind": "scale_up", "cluster": "c3", "bootstrap": c3.bootstrap})
            done_s = time.monotonic() - posted
            moved = [(c["segments"][-1]["topic"], c["segments"][-1]["partition"], c["segments"][-1]["phys_start"])
                     for c in fed.chains(topic) if c["segments"][-1]["cluster"] == "c3"]
            try:
                wait_for(lambda: all(log_end(c3.bootstrap, t, p) > start for t, p, start in moved), 60, interval=0.05,
                         what="new writes on c3")
            except AssertionError:
                idle = [(t, p, start, log_end(c3.bootstrap, t, p)) for t, p, start in moved
                        if log_end(c3.bootstrap, t, p) <= start]
                raise AssertionError(f"no new writes on c3 within 60 s for (topic, partition, start, end) {idle}; "
                                     f"checker errors so far: {checker.errors[-5:]}") from None
            flowing_s = time.monotonic() - posted
            t1 = time.monotonic() - checker._started
            time.sleep(2)
            during = window(checker, t0, t1 + 1)
            steady = window(checker, max(0.0, t0 - args.steady + 2), t0)  # skip the clients' warm-up
            checker.mark("decommission")
            dec = fed.workflow({"kind": "decommission", "cluster": "c1", "drain": "groups"}, timeout=300)
            time.sleep(2)
            report = checker.stop(drain_timeout=90)
            chains = fed.chains(topic)
            for sample in report["lost_sample"]:  # where each lost record was acked, next to its chain
                key, seq = sample.rsplit("#", 1)
                ack = checker.acked[(key, int(seq))]
                print("LOST", sample, ack, chains[ack.partition]["segments"], "marks", report["marks"])
            checker = None
        finally:
            if checker is not None:
                checker.stop(drain_timeout=5)
            fed.stop()
            for c in clusters:
                c.stop()
        phases = {p["name"]: round((p["finished_at"] or 0) - (p["started_at"] or 0), 3) for p in dec["phases"]}
        result = {
            "partitions": args.partitions, "proxies": args.proxies, "moved": run["moved"],
            "scale_up_request_to_done_s": round(done_s, 2), "scale_up_request_to_writes_on_c3_s": round(flowing_s, 2),
            "steady": steady, "during_move": during,
            "decommission": {"state": dec["state"], "moved": dec["moved"], "total_s":
                             round(dec["finished_at"] - dec["created_at"], 2), "phase_seconds": phases},
            "checker": {k: report[k] for k in ("acked", "consumed", "lost", "duplicates", "duplicates_idempotent",
                                               "order_violations", "produce_errors", "client_failures")},
        }
        print(f"scale-up onto c3: {run['moved']} of {args.partitions} partitions moved; request -> done "
              f"{done_s:.2f} s, request -> new writes on c3 {flowing_s:.2f} s (target <= 10 s)")
        print(f"{'':14}{'acked':>8}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for name, w in (("steady", steady), ("during move", during)):
            print(f"{name:14}{w['acked']:>8}{w['errors']:>8}{w['p50_ms']!s:>9}{w['p99_ms']!s:>9}{w['max_ms']!s:>9}")
        if steady["p99_ms"] and during["p99_ms"]:
            print(f"p99 during / steady: {during['p99_ms'] / steady['p99_ms']:.2f}x")
        print(f"decommission c1 ({dec['state']}, {dec['moved']} moved, {result['decommission']['total_s']} s):",
              ", ".join(f"{k} {v}s" for k, v in phases.items()))
        print("checker:", json.dumps(result["checker"]))
        out = ROOT / "bench" / "results" / f"scale_up-{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print("wrote", out)


if __name__ == "__main__":
    main()
