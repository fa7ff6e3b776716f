"""What a confluent-kafka consumer's fetches look like direct and through the proxy, from librdkafka's own counters.

One cluster, one identity topic of 2 partitions (`consume_bench` set-up), read by an assigned consumer alternately
direct and through the proxy, `--rounds` times. Per read, from librdkafka's statistics (`statistics.interval.ms`)
of the connections that fetched: their names (broker ids), Fetch requests sent, bytes received per Fetch, throttle,
per-partition fetch_state and the deepest fetch queue seen; from its `protocol` debug log, per FetchResponse with
records: the API version and librdkafka's round trip (mean, p50, p90, and their sum over the read's time: near 1, the
consumer waits on one Fetch after another). `--set` passes consumer properties to both sides (e.g.
max.partition.fetch.bytes=8388608). `--relay` adds a third side: a bare TCP relay on uvloop with no Kafka in it
(relay.py: the broker gets a second listener advertised at the relay's port, so a client bootstrapped there fetches
through it): what one more loopback hop costs a consumer that waits on each Fetch, with no proxy code in the way.
`--compare-ref` adds a proxy of another commit (e.g. a branch with a switch set by `--ref-env`).

    .venv/bin/python bench/fetch_stats.py [--records 200000] [--rounds 3] [--set key=value ...] [--relay]
        [--compare-ref REF [--ref-env KEY=VALUE ...]]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import uuid

from confluent_kafka import Consumer, TopicPartition
from consume_bench import PARTITIONS, create_topics, fill, free_port, read_records, start_proxy
from data_path import export_tree
from relay import relay_listener, start_relay
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View, shadow_topic


class _FetchLog(logging.Handler):
    """librdkafka's `protocol` debug lines: each FetchResponse with records (its size, API version and round trip as
    librdkafka measured it); its statistics keep only a window's rtt, so these are the per-Fetch figures."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.rtts_ms: list[float] = []
        self.versions: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        m = _RECEIVED.search(record.getMessage())
        if m and int(m.group(2)) > 100_000:  # with records: not the last long polls at the log's end
            self.versions[f"v{m.group(1)}"] += 1
            self.rtts_ms.append(float(m.group(3)))


_RECEIVED = re.compile(r"Received FetchResponse \(v(\d+), (\d+) bytes, CorrId \d+, rtt ([\d.]+)ms")


def read(bootstrap: str, topic: str, records: int, extra: dict[str, str]) -> dict:
    """One assigned read of `records` records from offset 0: MB/s, the Fetches' round trips and librdkafka's
    counters of the connection that fetched."""
    stats: list[dict] = []
    fetch_log = _FetchLog()
    logger = logging.getLogger(f"rdk-{uuid.uuid4().hex[:6]}")
    logger.addHandler(fetch_log)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"s-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800, "statistics.interval.ms": 200,
                  "stats_cb": lambda s: stats.append(json.loads(s)), "debug": "protocol", "logger": logger, **extra})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    size, elapsed = read_records(c, records)
    reported = len(stats)
    for _ in range(10):  # one more statistics report (a short read at low load may end before the first one)
        c.consume(1, 0.5)
        if len(stats) > reported:
            break
    c.close()
    return summarize(stats, size, elapsed, fetch_log)


def summarize(stats: list[dict], size: int, elapsed: float, fetch_log: _FetchLog) -> dict:
    # the report counting the most Fetches (the last one may come from a consumer already closing its connections)
    last = max(stats, key=lambda s: sum(b["req"].get("Fetch", 0) for b in s["brokers"].values()))
    fetchers = [b for b in last["brokers"].values() if b["req"].get("Fetch", 0) > 0]
    states: collections.Counter[str] = collections.Counter()
    for s in stats:
        for t in s["topics"].values():
            states.update(p["fetch_state"] for p in t["partitions"].values() if p["partition"] >= 0)
    rtts = sorted(fetch_log.rtts_ms)
    fetches = sum(b["req"]["Fetch"] for b in fetchers)
    return {"mb_s": round(size / elapsed / 1e6, 1), "elapsed_s": round(elapsed, 2),
            "fetch_connections": [b["name"] for b in fetchers], "fetch_requests": fetches,
            "kib_per_fetch": round(sum(b["rxbytes"] for b in fetchers) / max(1, fetches) / 1024),
            "fetch_versions": dict(fetch_log.versions), "fetches_with_records": len(rtts),
            "rtt_ms_mean_p50_p90": [round(statistics.mean(rtts), 1), rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.9)]]
            if rtts else [],
            "rtt_sum_over_elapsed": round(sum(rtts) / 1000 / elapsed, 2),
            "throttle_max_ms": max((b["throttle"]["max"] for b in fetchers), default=0),
            "fetch_state_samples": dict(states),
            "fetchq_cnt_max": max(p["fetchq_cnt"] for s in stats for t in s["topics"].values()
                                  for p in t["partitions"].values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="extra consumer property key=value (every side)")
    ap.add_argument("--relay", action="store_true", help="also read through a bare TCP relay (no Kafka parsing)")
    ap.add_argument("--compare-ref", help="also read through a proxy of this git ref (exported, as data_path.py does)")
    ap.add_argument("--ref-env", action="append", default=[], help="KEY=VALUE in that proxy's environment")
    args = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.set)
    relay_port, relay_target = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    with scratch_dir("fetch-stats-") as tmp:
        with relay_listener(relay_port, relay_target) if args.relay else contextlib.nullcontext():
            (cluster,) = start_clusters(["b1"], tmp / "k")
        try:
            phys = "bench-id-phys"
            create_topics(cluster.bootstrap, [phys], PARTITIONS)
            create_topics(cluster.bootstrap, [shadow_topic("identity")], PARTITIONS)
            fill(cluster.bootstrap, phys, args.records)
            identity = LogicalTopic("identity", uuid.uuid4().hex, tuple(
                PartitionChain(segments=(Segment("b1", phys, p, 0, None, 0),)) for p in range(PARTITIONS)))
            view = View(version=1, clusters={"b1": Cluster("b1", cluster.bootstrap)}, coordination_cluster="b1",
                        topics={"identity": identity})
            proxy, proxy_addr = start_proxy(view, tmp, 1)
            procs.append(proxy)
            sides = {"direct": (cluster.bootstrap, phys), "proxy": (proxy_addr, "identity")}
            if args.compare_ref:
                os.environ.update(kv.split("=", 1) for kv in args.ref_env)  # start_proxy passes it on to this one
                ref, ref_addr = start_proxy(view, tmp, 1, export_tree(args.compare_ref, tmp / "ref"))
                procs.append(ref)
                sides["ref"] = (ref_addr, "identity")
            if args.relay:
                relay, relay_addr = start_relay(relay_port, relay_target)
                procs.append(relay)
                sides["relay"] = (relay_addr, phys)
            rounds(sides, args.records, args.rounds, extra)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
            cluster.stop()


def rounds(sides: dict[str, tuple[str, str]], records: int, count: int, extra: dict[str, str]) -> None:
    """Each side read once to warm up, then `count` rounds, the order rotating by round."""
    for addr, topic in sides.values():
        read(addr, topic, min(records, 20000), extra)
    names = list(sides)
    for i in range(count):
        for side in names[i % len(names):] + names[:i % len(names)]:
            r = read(*sides[side], records, extra)
            print(f"round {i + 1} {side:6} load {os.getloadavg()[0]:.1f} {json.dumps(r)}", flush=True)


if __name__ == "__main__":
    main()
