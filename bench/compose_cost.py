"""Compose cost as the federation grows: 1, 10, 60, 300 clusters; 1,000 logical topics of 16 partitions.

Scan results are simulated (rows written straight into a SQLite config database; every cluster marked
reachable). For each size: time to compose the view from the database, to serialize it, its JSON size,
and the size/time of the delta after one partition's active segment moves (the common change).
Prints a table with ratios to the 1-cluster case and writes bench/results/compose_cost.json.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from scratch import scratch_dir

from fedkafka.controller import db
from fedkafka.controller.compose import build_view
from fedkafka.controller.models import ChainRow, ClusterRow, SegmentRow, TopicRow
from fedkafka.view.chains import move_active
from fedkafka.view.delta import view_delta
from fedkafka.view.model import LogicalTopic, View
from fedkafka.view.placement import place

SIZES, TOPICS, PARTITIONS, REPEAT = (1, 10, 60, 300), 1000, 16, 3


def fill(url: str, clusters: int) -> None:
    engine = db.make_engine(url)
    db.migrate(engine)
    ids = [f"c{i}" for i in range(1, clusters + 1)]
    with db.session_factory(engine)() as s:
        s.add_all(ClusterRow(id=c, ordinal=i, bootstrap=f"10.0.{i // 250}.{i % 250}:9092", state="active",
                             coordination=i == 0, reachable=True) for i, c in enumerate(ids))
        s.add_all(TopicRow(name=f"topic-{t:04d}", topic_id=uuid.uuid4().hex, partitions=PARTITIONS,
                           placement="balanced", config_json="{}") for t in range(TOPICS))
        s.flush()  # chains and segments reference the topics
        for t in range(TOPICS):
            name = f"topic-{t:04d}"
            # rotate the start so 16-partition topics spread over all clusters even when clusters > 16
            rotated = ids[t % clusters:] + ids[:t % clusters]
            for p, slot in enumerate(place(PARTITIONS, rotated, "balanced")):
                s.add(ChainRow(topic=name, partition=p, leader_epoch=0, frozen=False))
                s.add(SegmentRow(topic=name, partition=p, seq=0, cluster=slot.cluster, physical_topic=name,
                                 physical_partition=slot.partition, phys_start=0, phys_end=None, logical_base=0))
        s.commit()
    engine.dispose()


def best_of(fn, repeat=REPEAT):
    best, value = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def measure(clusters: int, tmp: Path) -> dict:
    url = f"sqlite:///{tmp / f'compose-{clusters}.db'}"
    fill(url, clusters)
    engine = db.make_engine(url)
    session = db.session_factory(engine)

    def compose() -> View:
        with session() as s:
            return build_view(s, time.time()).with_version(1)

    compose_s, view = best_of(compose)
    encode_s, body = best_of(lambda: json.dumps(view.to_dict(), separators=(",", ":")).encode())
    topic = view.topics["topic-0007"]
    chains = list(topic.partitions)
    chains[3] = move_active(chains[3], 12345, view.clusters[list(view.clusters)[-1]].id, topic.name, 99, 0)
    moved = View(version=2, clusters=view.clusters, proxies=view.proxies,
                 coordination_cluster=view.coordination_cluster,
                 topics={**view.topics, topic.name: LogicalTopic(topic.name, topic.topic_id, tuple(chains))})
    delta_s, delta = best_of(lambda: json.dumps(view_delta(view, moved), separators=(",", ":")).encode())
    engine.dispose()
    return {"clusters": clusters, "topics": TOPICS, "partitions": TOPICS * PARTITIONS,
            "compose_ms": round(compose_s * 1000, 1), "encode_ms": round(encode_s * 1000, 1),
            "full_bytes": len(body), "delta_ms": round(delta_s * 1000, 1), "delta_bytes": len(delta)}


def main() -> None:
    with scratch_dir("fedkafka-compose-") as tmp:
        rows = [measure(n, tmp) for n in SIZES]
        base = rows[0]
        print(f"compose cost, {TOPICS} topics x {PARTITIONS} partitions (best of {REPEAT}):")
        print(f"{'clusters':>8} {'compose ms':>11} {'x1':>6} {'encode ms':>10} {'full KB':>9} {'x1':>6} "
              f"{'delta ms':>9} {'delta B':>8} {'full/delta':>11}")
        for r in rows:
            print(f"{r['clusters']:>8} {r['compose_ms']:>11} {r['compose_ms'] / base['compose_ms']:>6.2f} "
                  f"{r['encode_ms']:>10} {r['full_bytes'] / 1024:>9.0f} {r['full_bytes'] / base['full_bytes']:>6.2f} "
                  f"{r['delta_ms']:>9} {r['delta_bytes']:>8} {r['full_bytes'] / r['delta_bytes']:>11.0f}")
        out = Path(__file__).parent / "results"
        out.mkdir(exist_ok=True)
        (out / "compose_cost.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
