"""Soak on replicated clusters (issue 12): the checker for a long run over 3 clusters of 3 brokers each
(RF 3, min.insync 2), with a scale-up, a decommission, a rolling restart and broker kills every few minutes.

Producers of every kind write through two proxies: idempotent (acks=all), plain acks=all, plain acks=1. The
schedule (one event every --interval seconds, cycled until --duration runs out):
  kill -9 a random broker (restarted 30 s later) | scale-up onto r3, killing the leader of a moving partition |
  kill -9 a random broker | rolling restart of r2 | decommission r3, killing the leader of a moving partition |
  kill -9 a random broker | ...
A killed broker is always started again and waited for (every replica back in sync) before the next event.
Prints the checker's verdict and every event with its time; writes JSON under bench/results/. Exits 1 when an
acked record was lost, a key was reordered, an idempotent record was stored twice or a client died.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import scratch_dir  # noqa: E402

from fedkafka.checker import Checker, CheckerConfig  # noqa: E402
from fedkafka.kafka.cluster import start_clusters  # noqa: E402
from tests.workflows.replicated import kill_leader_during_move, restart, rolling_restart  # noqa: E402
from tests.workflows.support import Federation, wait_for  # noqa: E402

TOPIC = "soak-replicated"


class Soak:
    def __init__(self, fed: Federation, clusters: dict, checker: Checker, rng: random.Random) -> None:
        self.fed, self.clusters, self.checker, self.rng = fed, clusters, checker, rng
        self.events: list[dict] = []
        self.scaled_up = self.decommissioned = False

    def note(self, what: str, **details) -> None:
        self.checker.mark(what)
        at = round(time.monotonic() - self.checker._started, 1)
        self.events.append({"t": at, "event": what, **details})
        print(f"[{at:>7}s] {what} {details or ''}", flush=True)

    def kill_random_broker(self) -> None:
        cluster = self.rng.choice([c for name, c in self.clusters.items() if self._registered(name)])
        broker = self.rng.choice(cluster.brokers)
        broker.kill()
        self.note(f"killed {cluster.name} broker {broker.node_id}")
        time.sleep(30)
        restart(broker, cluster)
        self.note(f"{cluster.name} broker {broker.node_id} back in sync")

    def _registered(self, name: str) -> bool:
        return name != "r3" or (self.scaled_up and not self.decommissioned)

    def workflow_with_leader_kill(self, body: dict, moving_off: str) -> None:
        resp = self.fed.api.post("/v1/workflows", json=body)
        resp.raise_for_status()
        run_id = resp.json()["id"]
        cluster = self.clusters[moving_off]
        killed = kill_leader_during_move(self.fed, TOPIC, cluster, run_id)
        self.note(f"killed {moving_off} broker {killed.node_id} (leader of a moving partition)")
        wait_for(lambda: self._moved(run_id), 300, what=f"workflow {run_id}'s moves")
        self.note(f"{body['kind']} {body['cluster']}: segments moved")
        restart(killed, cluster)
        self.note(f"{moving_off} broker {killed.node_id} back in sync")
        # a decommission's groups drain lasts until the consumers committed past the old segments
        run = wait_for(lambda: self.fed._finished(run_id), 1800, what=f"workflow {run_id}")
        self.note(f"{body['kind']} {body['cluster']}: {run['state']}", moved=run.get("moved"), error=run.get("error"))

    def _moved(self, run_id: int) -> bool:
        run = self.fed.api.get(f"/v1/workflows/{run_id}").json()
        publish = next((p for p in run["phases"] if p["name"] == "publish"), None)
        return run["state"] in ("done", "failed") or (publish is not None and publish["state"] == "done")

    def scale_up(self) -> None:
        self.note("scale-up onto r3")
        body = {"kind": "scale_up", "cluster": "r3", "bootstrap": self.clusters["r3"].bootstrap}
        self.workflow_with_leader_kill(body, moving_off="r1")
        self.scaled_up = True

    def decommission(self) -> None:
        self.note("decommission r3")
        self.workflow_with_leader_kill({"kind": "decommission", "cluster": "r3", "drain": "groups"}, moving_off="r3")
        self.decommissioned = True

    def rolling_restart(self) -> None:
        self.note("rolling restart of r2")
        rolling_restart(self.clusters["r2"], self.checker.mark)
        self.note("rolling restart of r2 done")

    def schedule(self):
        yield self.kill_random_broker
        yield self.scale_up
        yield self.kill_random_broker
        yield self.rolling_restart
        yield self.decommission
        while True:
            yield self.kill_random_broker
            yield self.rolling_restart


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=1800, help="seconds of load (default 30 minutes)")
    ap.add_argument("--interval", type=float, default=150, help="seconds between the starts of two events")
    ap.add_argument("--rate", type=float, default=60, help="records/s per producer (4 producers)")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--heap", default="384m", help="heap of each broker JVM (9 of them)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--lease-ms", type=int, default=10_000,
                    help="proxy lease (default: the controller's own default; tests shorten it to run faster)")
    args = ap.parse_args()
    with scratch_dir("fedkafka-soak-") as tmp:
        clusters = {c.name: c for c in start_clusters(["r1", "r2", "r3"], tmp / "kafka", brokers=3, heap=args.heap)}
        fed = Federation(tmp, lease_ms=args.lease_ms)
        checker = None
        try:
            fed.start_controller()
            fed.setup({"r1": clusters["r1"].bootstrap, "r2": clusters["r2"].bootstrap}, TOPIC, args.partitions,
                      coordination="r1")
            fed.start_proxies(2)
            checker = Checker(CheckerConfig(
                bootstrap=fed.bootstrap, topic=TOPIC, producers=4, consumers=2, rate=args.rate,
                idempotent=(True, False), acks=("all", "1"),
                extra_consumer_config={"auto.commit.interval.ms": 500})).start()
            soak = Soak(fed, clusters, checker, random.Random(args.seed))
            end = time.monotonic() + args.duration
            events = soak.schedule()
            while time.monotonic() + 60 < end:
                started = time.monotonic()
                next(events)()
                time.sleep(max(0.0, min(args.interval - (time.monotonic() - started), end - time.monotonic())))
            time.sleep(max(0.0, end - time.monotonic()))
            soak.note("load stopped")
            report = checker.stop(drain_timeout=180)
            checker = None
        finally:
            if checker is not None:
                checker.stop(drain_timeout=5)
            fed.stop()
            for c in clusters.values():
                c.stop()
        verdict = {k: report[k] for k in ("acked", "consumed", "lost", "duplicates", "duplicates_idempotent",
                                          "order_violations", "produce_errors", "error_kinds", "client_failures",
                                          "producers", "lost_acks", "order_sample")}
        verdict["order_violations_unacked"] = report["order_violations_unacked"]
        # each lease that ran out moved partition leaders between the proxies (docs/DESIGN.md §4.2)
        services_log = (tmp / "services.log").read_text(errors="replace")
        verdict["leases_run_out"] = services_log.count("lease ran out: proxies")
        result = {"args": vars(args), "checker": verdict, "events": soak.events}
        print("checker:", json.dumps(verdict, indent=1))
        out = ROOT / "bench" / "results" / f"replicated_soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({**result, "timeline": report["timeline"]}, indent=2))
        out.with_suffix(".services.log").write_text(services_log)
        print("wrote", out)
        failed = ("lost", "order_violations", "duplicates_idempotent", "client_failures")
        return 1 if any(report[k] for k in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
