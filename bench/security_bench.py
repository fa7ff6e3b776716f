"""SASL_SSL (SCRAM-SHA-512) next to PLAINTEXT on the same proxy, side by side in one run.

One Kafka cluster, one proxy (role both, static view with a SCRAM user) with a PLAINTEXT and a SASL_SSL
listener. For each listener, alternating so both see the same machine: a confluent-kafka producer (1 KB,
acks=all; throughput and per-message delivery latency), an assigned confluent-kafka consumer reading the same
records back (MB/s), and the connection setup time (connect + TLS + SASL until Metadata answered). Prints
ratios SASL_SSL/PLAINTEXT and the proxy's CPU-seconds per GB for each, and writes JSON under bench/results/.

    .venv/bin/python bench/security_bench.py [--records 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from produce_bench import cpu_seconds, free_port
from scratch import scratch_dir

from fedkafka.demo import ensure_topic
from fedkafka.kafka.cluster import start_clusters
from fedkafka.security import scram
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View

RESULTS = Path(__file__).parent / "results"
PASSWORD = "bench-" + uuid.uuid4().hex
PARTITIONS = 4


def make_certs(tmp: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 made with openssl."""
    p = {n: tmp / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "ext.cnf")}
    p["ext.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for cmd in (["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                 "-subj", "/CN=bench-ca", "-keyout", p["ca.key"], "-out", p["ca.pem"]],
                ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", p["server.key"], "-out", p["server.csr"]],
                ["x509", "-req", "-in", p["server.csr"], "-CA", p["ca.pem"], "-CAkey", p["ca.key"],
                 "-CAcreateserial", "-days", "1", "-extfile", p["ext.cnf"], "-out", p["server.pem"]]):
        subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
    return p


def wait_listening(proc: subprocess.Popen, ports) -> None:
    for port in ports:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit("the proxy exited; see its log")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)


def client_conf(port: int, protocol: str, ca: Path) -> dict:
    conf = {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": protocol}
    if protocol == "SASL_SSL":
        conf |= {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bench", "sasl.password": PASSWORD,
                 "ssl.ca.location": str(ca)}
    return conf


def produce(conf: dict, topic: str, records: int) -> dict:
    producer = Producer(conf | {"acks": "all", "linger.ms": 5, "batch.size": 65536,
                                "queue.buffering.max.messages": 200000})
    latencies: list[float] = []
    payload = os.urandom(1024)
    start = time.perf_counter()
    for _ in range(records):
        sent = time.perf_counter()
        while True:
            try:
                producer.produce(topic, payload, on_delivery=lambda e, _m, s=sent: e is None and latencies.append(
                    time.perf_counter() - s))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(300)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"records_per_s": len(latencies) / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)], "acked": len(latencies)}


def consume(conf: dict, topic: str, records: int) -> dict:
    c = Consumer(conf | {"group.id": f"b-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False,
                         "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got, size = 0, 0
    start = time.perf_counter()
    while got < records and time.perf_counter() - start < 300:
        for m in c.consume(1000, 5.0):
            if m.error() is None:
                got += 1
                size += len(m.value())
    elapsed = time.perf_counter() - start
    c.close()
    return {"mb_per_s": size / elapsed / 1e6, "records": got}


def connect_ms(conf: dict, n: int = 20) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        AdminClient(conf).list_topics(timeout=30)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with scratch_dir("security-bench-") as tmp:
        certs = make_certs(tmp)
        cluster = start_clusters(["b1"], tmp / "kafka")[0]
        proxy = None
        try:
            ensure_topic(cluster.bootstrap, "phys", PARTITIONS)
            chains = tuple(PartitionChain(segments=(Segment("b1", "phys", p, 0, None, 0),)) for p in range(PARTITIONS))
            view = View(version=1, clusters={"b1": Cluster("b1", cluster.bootstrap)},
                        topics={"bench": LogicalTopic("bench", uuid.uuid4().hex, chains)},
                        credentials=(scram.make_credential("bench", "SCRAM-SHA-512", PASSWORD),))
            (tmp / "view.json").write_text(json.dumps(view.to_dict()))
            ports = {"PLAINTEXT": free_port(), "SASL_SSL": free_port()}
            proxy = subprocess.Popen(
                [sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                 f"127.0.0.1:{ports['PLAINTEXT']}", "--listener", f"SASL_SSL://127.0.0.1:{ports['SASL_SSL']}",
                 "--ssl-cert", str(certs["server.pem"]), "--ssl-key", str(certs["server.key"]),
                 "--view-file", str(tmp / "view.json")],
                stdout=open(tmp / "proxy.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
            wait_listening(proxy, ports.values())
            confs = {p: client_conf(port, p, certs["ca.pem"]) for p, port in ports.items()}
            for conf in confs.values():  # warm up: connections, metadata, JIT of the broker
                AdminClient(conf).list_topics(timeout=60)
                produce(conf, "bench", 2000)
            results: dict[str, list[dict]] = {p: [] for p in confs}
            for r in range(args.rounds):
                for protocol in (list(confs) if r % 2 == 0 else list(confs)[::-1]):
                    cpu0 = cpu_seconds(proxy.pid)
                    prod = produce(confs[protocol], "bench", args.records)
                    cons = consume(confs[protocol], "bench", args.records)
                    gb = 2 * args.records * 1024 / 1e9  # in once, out once
                    results[protocol].append({**{f"produce_{k}": v for k, v in prod.items()},
                                              "consume_mb_per_s": cons["mb_per_s"],
                                              "connect_ms": connect_ms(confs[protocol]),
                                              "proxy_cpu_s_per_gb": (cpu_seconds(proxy.pid) - cpu0) / gb})
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait(30)
            cluster.stop(timeout=10)
    report(results, args)


def report(results: dict[str, list[dict]], args) -> None:
    med = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in results.items()}
    plain, secure = med["PLAINTEXT"], med["SASL_SSL"]
    print(f"{args.records} x 1 KB records, {args.rounds} rounds (medians), SASL_SSL SCRAM-SHA-512 vs PLAINTEXT")
    for key in ("produce_records_per_s", "produce_p50_ms", "produce_p99_ms", "consume_mb_per_s", "connect_ms",
                "proxy_cpu_s_per_gb"):
        print(f"  {key:24} PLAINTEXT {plain[key]:10.2f}  SASL_SSL {secure[key]:10.2f}  "
              f"ratio {secure[key] / plain[key]:.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"security-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "rounds": results, "medians": med}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
