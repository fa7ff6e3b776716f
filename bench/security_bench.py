"""PLAINTEXT next to SASL_SSL (SCRAM-SHA-512) on both hops, side by side in one run.

One Kafka node whose client listener requires SASL_SSL with SCRAM-SHA-512 (the service user `fedkafka`) and whose
internal listener is PLAINTEXT on loopback, one topic, and one proxy (role both, static view) per path, all on
the same broker and the same records:

- `plaintext`: client -> proxy PLAINTEXT, proxy -> broker PLAINTEXT (the internal listener);
- `sasl_ssl-client`: client -> proxy SASL_SSL SCRAM-SHA-512, proxy -> broker PLAINTEXT (the cost of the first hop);
- `sasl_ssl`: client -> proxy SASL_SSL SCRAM-SHA-512, proxy -> broker SASL_SSL SCRAM-SHA-512 (--upstream-config).

For each path, in an order that rotates each round so all see the same machine: a confluent-kafka producer
(1 KB, acks=all; throughput and per-message delivery latency), an assigned confluent-kafka consumer reading as
many records back (MB/s), and the connection setup time (connect + TLS + SASL until Metadata answered). Prints
each path's figures and its ratio to `plaintext`, the proxy's and the broker's CPU-seconds per GB during produce
and during consume (from /proc/<pid>/stat), and writes JSON under bench/results/.

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
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from produce_bench import cpu_seconds, free_port
from scratch import scratch_dir

from fedkafka.demo import ensure_topic
from fedkafka.kafka.cluster import LocalKafkaCluster, SaslSslListener, start_clusters
from fedkafka.security import scram
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View

RESULTS = Path(__file__).parent / "results"
PASSWORD = "bench-" + uuid.uuid4().hex
UPSTREAM_USER = "fedkafka"
UPSTREAM_PASSWORD = "upstream-" + uuid.uuid4().hex
PARTITIONS = 4


@dataclass(frozen=True)
class BenchPath:
    name: str
    client_protocol: str  # client -> proxy
    secured_brokers: bool  # proxy -> broker SASL_SSL (else the broker's PLAINTEXT internal listener)


PATHS = (BenchPath("plaintext", "PLAINTEXT", False), BenchPath("sasl_ssl-client", "SASL_SSL", False),
         BenchPath("sasl_ssl", "SASL_SSL", True))


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

    def acked_since(sent: float):
        def on_delivery(err, _msg) -> None:
            if err is None:
                latencies.append(time.perf_counter() - sent)
        return on_delivery

    for _ in range(records):
        callback = acked_since(time.perf_counter())
        while True:
            try:
                producer.produce(topic, payload, on_delivery=callback)
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
                size += len(m.value() or b"")
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


def start_proxy(tmp: Path, path: BenchPath, cluster: LocalKafkaCluster, certs: dict[str, Path],
                upstream: Path) -> tuple[subprocess.Popen, int]:
    bootstrap = cluster.bootstrap if path.secured_brokers else cluster.internal_bootstrap
    chains = tuple(PartitionChain(segments=(Segment("b1", "phys", p, 0, None, 0),)) for p in range(PARTITIONS))
    view = View(version=1, clusters={"b1": Cluster("b1", bootstrap)},
                topics={"bench": LogicalTopic("bench", uuid.uuid4().hex, chains)},
                credentials=(scram.make_credential("bench", "SCRAM-SHA-512", PASSWORD),))
    view_file = tmp / f"view-{path.name}.json"
    view_file.write_text(json.dumps(view.to_dict()))
    port = free_port()
    if path.client_protocol == "PLAINTEXT":
        listen = ["--listen", f"127.0.0.1:{port}"]
    else:
        listen = ["--listener", f"SASL_SSL://127.0.0.1:{port}", "--ssl-cert", str(certs["server.pem"]),
                  "--ssl-key", str(certs["server.key"])]
    secured = ["--upstream-config", str(upstream)] if path.secured_brokers else []
    proxy = subprocess.Popen(
        [sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", *listen, *secured,
         "--view-file", str(view_file)],
        stdout=open(tmp / f"proxy-{path.name}.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    wait_listening(proxy, [port])
    return proxy, port


def write_upstream_config(path: Path, ca: Path) -> Path:
    path.touch(mode=0o600)
    path.write_text(json.dumps({"security.protocol": "SASL_SSL", "ssl.ca.location": str(ca),
                                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": UPSTREAM_USER,
                                "sasl.password": UPSTREAM_PASSWORD}))
    return path


def run_path(conf: dict, records: int, proxy_pid: int, broker_pid: int) -> dict:
    """One produce and one consume of `records` 1 KB records, with the CPU each took in the proxy and the broker."""
    gb = records * 1024 / 1e9
    pids = {"proxy": proxy_pid, "broker": broker_pid}
    before = {k: cpu_seconds(pid) for k, pid in pids.items()}
    prod = produce(conf, "bench", records)
    middle = {k: cpu_seconds(pid) for k, pid in pids.items()}
    cons = consume(conf, "bench", records)
    after = {k: cpu_seconds(pid) for k, pid in pids.items()}
    cpu = {f"{k}_cpu_s_per_gb_{phase}": (end[k] - start[k]) / gb for k in pids
           for phase, start, end in (("produce", before, middle), ("consume", middle, after))}
    return {**{f"produce_{k}": v for k, v in prod.items()}, "consume_mb_per_s": cons["mb_per_s"],
            "consume_records": cons["records"], "connect_ms": connect_ms(conf), **cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    load = [os.getloadavg()[0]]
    with scratch_dir("security-bench-") as tmp:
        certs = make_certs(tmp)
        upstream = write_upstream_config(tmp / "upstream.json", certs["ca.pem"])
        cluster = start_clusters(["b1"], tmp / "kafka", sasl_ssl=SaslSslListener(
            certs["server.pem"], certs["server.key"], {UPSTREAM_USER: UPSTREAM_PASSWORD}))[0]
        assert cluster.pid is not None
        proxies: dict[str, tuple[subprocess.Popen, int]] = {}
        try:
            ensure_topic(cluster.internal_bootstrap, "phys", PARTITIONS)
            for path in PATHS:
                proxies[path.name] = start_proxy(tmp, path, cluster, certs, upstream)
            confs = {p.name: client_conf(proxies[p.name][1], p.client_protocol, certs["ca.pem"]) for p in PATHS}
            for conf in confs.values():  # warm up: connections, metadata, JIT of the broker
                AdminClient(conf).list_topics(timeout=60)
                produce(conf, "bench", 2000)
            results: dict[str, list[dict]] = {p.name: [] for p in PATHS}
            for r in range(args.rounds):
                names = [p.name for p in PATHS]
                for name in names[r % len(names):] + names[:r % len(names)]:
                    results[name].append(run_path(confs[name], args.records, proxies[name][0].pid, cluster.pid))
                    load.append(os.getloadavg()[0])
        finally:
            for proxy, _port in proxies.values():
                proxy.terminate()
                proxy.wait(30)
            cluster.stop(timeout=10)
    report(results, args, load)


def report(results: dict[str, list[dict]], args, load: list[float]) -> None:
    med = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in results.items()}
    base = med["plaintext"]
    print(f"{args.records} x 1 KB records per path, {args.rounds} rounds (medians), load average (1 min) "
          f"{min(load):.1f}-{max(load):.1f}; ratio: the path / plaintext")
    print(f"  {'':28}" + "".join(f"{name:>26}" for name in med))
    for key in ("produce_records_per_s", "produce_p50_ms", "produce_p99_ms", "consume_mb_per_s", "connect_ms",
                "proxy_cpu_s_per_gb_produce", "proxy_cpu_s_per_gb_consume", "broker_cpu_s_per_gb_produce",
                "broker_cpu_s_per_gb_consume"):
        cells = "".join(f"{m[key]:>16.2f} ({m[key] / base[key]:5.2f})" if base[key] else f"{m[key]:>26.2f}"
                        for m in med.values())
        print(f"  {key:28}{cells}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"security-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "load_average": load, "rounds": results, "medians": med},
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
