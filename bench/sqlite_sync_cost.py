"""What synchronous=FULL costs the controller on SQLite, side by side with NORMAL (docs/DESIGN.md §3, durability).

A controller's writes on its own SQLite file: heartbeat renewals written one batch per heartbeat (one commit each,
the worst case: no two heartbeats share a batch) and drain/undrain of a proxy (its row, then the composed view:
two commits). Rounds alternate FULL (as shipped) and NORMAL (the old setting, an extra connect hook that runs after
the shipped one) on a fresh database each, in a scratch directory on disk. Prints per-operation medians and the
FULL / NORMAL ratio; writes bench/results/sqlite_sync_cost.json.

    .venv/bin/python bench/sqlite_sync_cost.py --rounds 3 --heartbeats 300 --drains 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from scratch import scratch_dir
from sqlalchemy import event

from fedkafka.controller import db
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.service import ANY_SECRET, Controller, Settings

PROXIES = 10
_make_engine = db.make_engine


def _engine_with(mode: str):
    def make(url: str):
        engine = _make_engine(url)
        if mode == "NORMAL":
            @event.listens_for(engine, "connect")
            def _normal(dbapi_conn, _record):
                dbapi_conn.execute("PRAGMA synchronous=NORMAL")
        return engine
    return make


def one_round(mode: str, tmp: Path, heartbeats: int, drains: int) -> dict[str, float]:
    db.make_engine = _engine_with(mode)
    try:
        ctl = Controller(Settings(db_url=f"sqlite:///{tmp / f'{mode}-{time.monotonic_ns()}.db'}"),
                         kafka=KafkaAdmin(2.0))
    finally:
        db.make_engine = _make_engine
    try:
        with ctl.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == {"FULL": 2, "NORMAL": 1}[mode]
        members = [ctl.register_proxy(f"h{i}:1", f"h{i}", 1, "pproxy", "default", [], 0)["member_id"]
                   for i in range(PROXIES)]
        hb = []
        for i in range(heartbeats):
            t = time.perf_counter()
            ctl.renew_lease(members[i % PROXIES], ctl.view.version, {}, ANY_SECRET)
            hb.append(time.perf_counter() - t)
        dr = []
        for i in range(drains):
            t = time.perf_counter()
            ctl.set_draining(members[0], i % 2 == 0)
            dr.append(time.perf_counter() - t)
        return {"heartbeat_ms": statistics.median(hb) * 1000, "drain_ms": statistics.median(dr) * 1000}
    finally:
        ctl.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--heartbeats", type=int, default=300)
    ap.add_argument("--drains", type=int, default=40)
    args = ap.parse_args()
    results: dict[str, list[dict[str, float]]] = {"FULL": [], "NORMAL": []}
    with scratch_dir("fedkafka-sqlite-sync-") as tmp:
        for r in range(args.rounds):
            for mode in (("FULL", "NORMAL") if r % 2 == 0 else ("NORMAL", "FULL")):
                results[mode].append(one_round(mode, tmp, args.heartbeats, args.drains))
    summary = {}
    for key in ("heartbeat_ms", "drain_ms"):
        full = statistics.median(x[key] for x in results["FULL"])
        normal = statistics.median(x[key] for x in results["NORMAL"])
        summary[key] = {"FULL": round(full, 3), "NORMAL": round(normal, 3), "ratio": round(full / normal, 2)}
        print(f"{key:>13}: FULL {full:8.3f}  NORMAL {normal:8.3f}  FULL/NORMAL {full / normal:5.2f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sqlite_sync_cost.json").write_text(json.dumps({"rounds": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
