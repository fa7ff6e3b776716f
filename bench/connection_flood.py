"""A proxy under a connection flood: 5,000 idle connections plus 200 slowloris connections, while a normal
confluent-kafka client produces and consumes through the same proxy. Side by side in one run: the client's
latencies without the attackers, then with them; the proxy's RSS; what the attackers saw.

Attackers (a separate process, so their event loop does not slow the measuring client):
- idle: connect and send nothing, spread over 127.0.0.2-6 (1,000 each: the default per-address cap);
- over the cap: 100 more from 127.0.0.2, each should be closed at once;
- slowloris: 200 from 127.0.0.7, each announcing a 16 MiB frame and sending one byte a second; when the
  proxy cuts one (--frame-timeout), it reconnects at once.

The client is one idempotent producer (200 records/s, delivery latency) and one consumer (end-to-end
latency from the timestamp in each value), both from 127.0.0.1. The proxy runs with its default limits.

    .venv/bin/python bench/connection_flood.py [--seconds 40] [--idle 5000] [--slow 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from scratch import scratch_dir

RESULTS = Path(__file__).parent / "results"
RATE = 200  # records per second


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


# -- attackers (run as `connection_flood.py --attack PORT ...`) -------------------------------------

async def attack(port: int, idle: int, slow: int) -> None:
    stats = {"idle_open": 0, "idle_closed_by_proxy": 0, "over_cap_tried": 0, "over_cap_closed_at_once": 0,
             "slow_connections": 0, "slow_cut_by_proxy": 0}
    held: list = []

    async def open_idle(i: int) -> None:
        source = f"127.0.0.{2 + i // 1000}"
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        held.append((reader, writer))
        stats["idle_open"] += 1

    for start in range(0, idle, 250):
        await asyncio.gather(*(open_idle(i) for i in range(start, min(idle, start + 250))))

    async def watch_idle(reader) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        stats["idle_closed_by_proxy"] += 1
        stats["idle_open"] -= 1

    watchers = [asyncio.create_task(watch_idle(r)) for r, _ in held]

    async def over_cap() -> None:
        stats["over_cap_tried"] += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(10):
                if await reader.read() == b"":
                    stats["over_cap_closed_at_once"] += 1
        writer.close()

    await asyncio.gather(*(over_cap() for _ in range(100)))

    async def slowloris() -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.7", 0))
            except OSError:
                await asyncio.sleep(1)
                continue
            stats["slow_connections"] += 1
            try:
                writer.write(struct.pack(">i", 16 * 1024 * 1024 - 1))
                while True:
                    writer.write(b"\0")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            if await reader.read(1) == b"":
                                raise ConnectionError("closed")
            except (ConnectionError, OSError):
                stats["slow_cut_by_proxy"] += 1
            writer.close()

    slow_tasks = [asyncio.create_task(slowloris()) for _ in range(slow)]
    await asyncio.sleep(2)
    print("ready", json.dumps(stats), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("final", json.dumps(stats), flush=True)
    for t in [*watchers, *slow_tasks]:
        t.cancel()


# -- the measuring client ------------------------------------------------------------------------

def client_run(bootstrap: str, topic: str, seconds: float) -> dict:
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"flood-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    consumer.assign([TopicPartition(topic, 0, high)])
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})
    delivery_ms: list[float] = []
    errors: list[str] = []
    end_to_end_ms: list[float] = []
    sent = 0
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set() or len(end_to_end_ms) < sent:
            msg = consumer.poll(0.2)
            if msg is None:
                if stop.is_set() and time.monotonic() > stop_at + 30:
                    return
                continue
            if msg.error():
                errors.append(f"consume: {msg.error()}")
                continue
            end_to_end_ms.append((time.time() - struct.unpack(">d", msg.value()[:8])[0]) * 1e3)

    def on_delivery(err, _msg, started: float) -> None:
        if err is not None:
            errors.append(f"produce: {err}")
        else:
            delivery_ms.append((time.monotonic() - started) * 1e3)

    reader = threading.Thread(target=consume)
    reader.start()
    stop_at = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < stop_at:
        started = time.monotonic()
        producer.produce(topic, struct.pack(">d", time.time()) + b"x" * 92, partition=0,
                         on_delivery=lambda err, msg, s=started: on_delivery(err, msg, s))
        sent += 1
        producer.poll(0)
        next_at += 1 / RATE
        time.sleep(max(0.0, next_at - time.monotonic()))
    left = producer.flush(30)
    stop.set()
    reader.join(60)
    consumer.close()
    return {"sent": sent, "delivered": len(delivery_ms), "consumed": len(end_to_end_ms), "not_flushed": left,
            "errors": len(errors), "first_errors": errors[:5],
            "delivery_p50_ms": percentile(delivery_ms, 50), "delivery_p99_ms": percentile(delivery_ms, 99),
            "end_to_end_p50_ms": percentile(end_to_end_ms, 50), "end_to_end_p99_ms": percentile(end_to_end_ms, 99)}


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=100)[p - 1] if p < 100 and len(values) > 1 else max(values)


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def start_proxy(tmp: Path, cluster_bootstrap: str, topic: str) -> tuple[subprocess.Popen, int]:
    from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View

    view = View(version=1, clusters={"c1": Cluster("c1", cluster_bootstrap)}, topics={topic: LogicalTopic(
        topic, uuid.uuid4().hex, (PartitionChain(segments=(Segment("c1", topic, 0, 0, None, 0),)),))})
    (tmp / "view.json").write_text(json.dumps(view.to_dict()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                             f"127.0.0.1:{port}", "--view-file", str(tmp / "view.json")],
                            stdout=open(tmp / "proxy.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise RuntimeError("proxy did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--attack", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    fd_limit = raise_fd_limit(args.idle + args.slow + 2000)
    if args.attack:
        asyncio.run(attack(args.attack, args.idle, args.slow))
        return
    from confluent_kafka.admin import AdminClient, NewTopic

    from fedkafka.kafka.cluster import start_clusters

    result: dict = {"fd_soft_limit": fd_limit, "idle": args.idle, "slow": args.slow, "seconds": args.seconds}
    with scratch_dir("fedkafka-flood-") as tmp:
        (cluster,) = start_clusters(["c1"], tmp / "kafka")
        proxy = attacker = None
        try:
            topic = "flood"
            admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
            admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
            while admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader < 0:
                time.sleep(0.1)
            proxy, port = start_proxy(tmp, cluster.bootstrap, topic)
            bootstrap = f"127.0.0.1:{port}"
            client_run(bootstrap, topic, 5)  # warm up: connections, producer id, metadata
            result["quiet"] = client_run(bootstrap, topic, args.seconds)
            result["quiet"]["proxy_rss_mib"] = rss_mib(proxy.pid)[0]
            attacker = subprocess.Popen([sys.executable, __file__, "--attack", str(port), "--idle", str(args.idle),
                                         "--slow", str(args.slow)], stdout=subprocess.PIPE, text=True)
            line = attacker.stdout.readline()
            if not line.startswith("ready"):
                raise RuntimeError(f"attackers did not start: {line!r}")
            result["attackers_ready"] = json.loads(line.split(" ", 1)[1])
            rss: list[float] = []
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    rss.append(rss_mib(proxy.pid)[0])
                    time.sleep(1)

            sampler = threading.Thread(target=sample)
            sampler.start()
            result["flood"] = client_run(bootstrap, topic, args.seconds)
            sampling.set()
            sampler.join()
            result["flood"]["proxy_rss_max_mib"] = max(rss)
            result["proxy_peak_rss_mib"] = rss_mib(proxy.pid)[1]
            attacker.send_signal(signal.SIGTERM)
            out, _ = attacker.communicate(30)
            final = next((ln for ln in out.splitlines() if ln.startswith("final")), None)
            result["attackers_final"] = json.loads(final.split(" ", 1)[1]) if final else None
            result["proxy_alive"] = proxy.poll() is None
            log = (tmp / "proxy.log").read_text(errors="replace")
            result["proxy_log"] = {"refusal_lines": log.count("refusing connection"),
                                   "frame_timeouts": log.count("--frame-timeout"),
                                   "tracebacks": log.count("Traceback")}
        finally:
            for proc in (attacker, proxy):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(30)
                    if proc.poll() is None:
                        proc.kill()
            cluster.stop()
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "connection_flood.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
