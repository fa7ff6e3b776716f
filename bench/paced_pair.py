"""Paced pair: produce at a fixed rate direct and through the proxy in the same seconds, each side in its own process.

Each side is a spawned process with one confluent-kafka producer (1 KB, acks=all, linger.ms=5 set on both sides,
librdkafka's default written out). Its sending thread sleeps to each record's due time (start + i/rate: a late
record does not shift the ones after it) and takes perf_counter() right before produce(); a second thread blocks in
poll(), which a delivery report wakes at once, and takes perf_counter() in the callback. The first `warmup`
seconds of sending (connections, the broker's and the proxy's first requests of the run) are not counted.

Why: the earlier version ran both producers as threads of the bench and paced them with poll(0.0002), which
confluent-kafka truncates to poll(0) (whole milliseconds): the two threads busy-waited, used 0.5-0.9 of a core of
this 2-core machine, and the broker's threads then waited on the run queue for 0.8-4.2 s per second (schedstat).
The direct side's 60-120 ms p99 (seconds, on a loaded machine) was the bench taking the CPU from the broker
(bench/README.md, "Paced pair: where the stalls came from").

Beside the latencies the run records how quiet the machine was in the measured seconds: the load average, the
CPU pressure (/proc/pressure/cpu "some": the share of time something waited for a CPU), the oversleep of a thread
that sleeps 1 ms in a loop (a stall of the machine, with no Kafka in it), how long the broker's and the proxy's
threads waited on the run queue per second, the CPU of each side's process, per side librdkafka's produce request
round trip (`rtt` from its statistics: median of the per-second p99s), and, given the broker's GC log
(`gc_log_option`), its GC pauses in those seconds. With both sides, also the added p99 per second (the proxy's
p99 less the direct one's over the records sent in each measured second): a stall of the machine falls into a
few seconds of both sides, which make the run's p99 but not the median second.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import re
import resource
import statistics
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from confluent_kafka import Producer

LINGER_MS = 5


def gc_log_option(directory: Path) -> str:
    """A JAVA_TOOL_OPTIONS value that makes every JVM started with it log its GC pauses to gc-<pid>.log."""
    return f"-Xlog:gc:file={directory}/gc-%p.log:uptime,level,tags"


def _rtt_p99(stats_json: str) -> float | None:
    """The p99 produce request round trip (ms) of the last second, from librdkafka's statistics."""
    for broker in json.loads(stats_json)["brokers"].values():
        if broker["nodeid"] >= 0 and broker["rtt"]["cnt"] > 0:
            return broker["rtt"]["p99"] / 1000
    return None


def paced_side(conn: Connection, bootstrap: str, topic: str, rate: int, seconds: float, warmup: float) -> None:
    """One side, in its own process: tell the parent when connected, wait for the start time, send, report."""
    latencies: list[float] = []
    seconds_in: list[int] = []  # the measured second each latency's record was sent in
    rtt: list[float] = []
    counted_from = [float("inf")]
    errors = late = 0

    def on_stats(stats_json: str) -> None:
        if time.perf_counter() >= counted_from[0] + 1.0 and (value := _rtt_p99(stats_json)) is not None:
            rtt.append(value)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": LINGER_MS,
                         "statistics.interval.ms": 1000, "stats_cb": on_stats})
    producer.list_topics(topic, timeout=30)  # metadata and connections before the clock starts
    payload = os.urandom(1024)
    conn.send("ready")
    start: float = conn.recv()
    counted_from[0] = start + warmup

    def on_delivery(err, _msg, sent: float) -> None:
        nonlocal errors
        if err is not None:
            errors += 1
        elif sent >= counted_from[0]:
            latencies.append(time.perf_counter() - sent)
            seconds_in.append(int(sent - counted_from[0]))

    done = threading.Event()

    def serve_deliveries() -> None:
        while not done.is_set():
            producer.poll(0.1)  # returns as soon as a delivery report is there

    poller = threading.Thread(target=serve_deliveries)
    poller.start()
    cpu0 = _own_cpu()
    for i in range(int(rate * (warmup + seconds))):
        due = start + i / rate
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        elif wait < -0.002:
            late += 1
        sent = time.perf_counter()
        producer.produce(topic, payload, on_delivery=functools.partial(on_delivery, sent=sent))
    producer.flush(60)
    done.set()
    poller.join()
    cpu = (_own_cpu() - cpu0) / (time.perf_counter() - start)
    conn.send({"latencies": latencies, "seconds_in": seconds_in, "errors": errors, "late": late, "rtt_p99": rtt,
               "cpu_s_per_s": cpu})


class MachineWatch:
    """What the machine did in the measured seconds: pressure, stalls, run-queue waits, this process's CPU."""

    def __init__(self, pids: dict[str, int], gc_log: Path | None = None) -> None:
        self.pids = pids
        self.gc_log = gc_log
        self.stalls: list[float] = []
        self._stop = threading.Event()
        self._sleeper = threading.Thread(target=self._sleep_loop, daemon=True)

    def _sleep_loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            time.sleep(0.001)
            self.stalls.append(time.perf_counter() - t0 - 0.001)

    def start(self) -> None:
        self._t0, self._psi0, self._cpu0 = time.perf_counter(), _cpu_pressure(), _own_cpu()
        self._sched0 = {name: run_queue_wait(pid) for name, pid in self.pids.items()}
        self._load0 = Path("/proc/loadavg").read_text().split()[0]
        self._gc0 = self._gc_text()
        self._sleeper.start()

    def _gc_text(self) -> str:
        try:
            return self.gc_log.read_text() if self.gc_log else ""
        except OSError:
            return ""

    def _gc_pauses(self) -> list[float]:
        """The broker's GC pauses (ms) logged in the measured seconds (-Xlog:gc writes a line as a pause ends)."""
        text = self._gc_text()[len(self._gc0):]
        return [float(m.group(1)) for line in text.splitlines() if "Pause" in line
                and (m := re.search(r"([\d.]+)ms$", line.strip()))]

    def stop(self) -> dict:
        self._stop.set()
        self._sleeper.join()
        elapsed = time.perf_counter() - self._t0
        psi = _cpu_pressure()
        stalls = sorted(self.stalls)
        gc = self._gc_pauses() if self.gc_log else None
        return {
            "load_average": f"{self._load0}-{Path('/proc/loadavg').read_text().split()[0]}",
            "cpu_pressure": None if psi is None or self._psi0 is None else (psi - self._psi0) / 1e6 / elapsed,
            "sleep_1ms_over_p99_ms": 1000 * stalls[int(len(stalls) * 0.99)] if stalls else None,
            "sleep_1ms_over_max_ms": 1000 * stalls[-1] if stalls else None,
            "run_queue_wait_s_per_s": {name: (run_queue_wait(pid) - self._sched0[name]) / elapsed
                                       for name, pid in self.pids.items()},
            "watch_cpu_s_per_s": (_own_cpu() - self._cpu0) / elapsed,
            "broker_gc_pauses": None if gc is None else len(gc),
            "broker_gc_pause_max_ms": max(gc, default=0.0) if gc is not None else None,
            "broker_gc_pause_total_ms": sum(gc) if gc is not None else None,
        }


def _cpu_pressure() -> float | None:
    """Microseconds some task waited for a CPU since boot (PSI), None where the kernel has no PSI."""
    try:
        return float(Path("/proc/pressure/cpu").read_text().split()[4].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def run_queue_wait(pid: int) -> float:
    """Seconds all threads of a process spent runnable but not running (schedstat), for those alive now."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_pair(sides: dict[str, tuple[str, str]], rate: int, seconds: float, warmup: float,
             pids: dict[str, int], gc_log: Path | None = None) -> dict:
    """Each side (name -> bootstrap, topic) in its own process, started on one shared perf_counter time
    (CLOCK_MONOTONIC: the same clock in every process); the parent watches the machine meanwhile."""
    ctx = mp.get_context("spawn")  # the bench has librdkafka threads already: no fork
    pipes, procs = {}, []
    for name, (bootstrap, topic) in sides.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=paced_side, args=(child, bootstrap, topic, rate, seconds, warmup), daemon=True)
        proc.start()
        pipes[name] = parent
        procs.append(proc)
    try:
        for pipe in pipes.values():
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise RuntimeError("a paced side did not connect")
        start = time.perf_counter() + 0.5
        for pipe in pipes.values():
            pipe.send(start)
        time.sleep(max(0.0, start + warmup - time.perf_counter()))
        watch = MachineWatch(pids, gc_log)
        watch.start()
        raw: dict[str, dict] = {}
        for name, pipe in pipes.items():
            if not pipe.poll(seconds + 120):
                raise RuntimeError(f"the {name} side did not report")
            raw[name] = pipe.recv()
        machine = watch.stop()
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    out = {"sides": {name: summarize(value) for name, value in raw.items()}, "machine": machine}
    if {"direct", "proxy"} <= raw.keys():
        out["machine"] |= added_p99_by_second(raw["direct"], raw["proxy"])
    return out


def _p99_by_second(raw: dict) -> dict[int, float]:
    by_second: dict[int, list[float]] = {}
    for second, latency in zip(raw["seconds_in"], raw["latencies"], strict=True):
        by_second.setdefault(second, []).append(latency)
    return {second: 1000 * sorted(values)[int(len(values) * 0.99)] for second, values in by_second.items()
            if len(values) >= 100}


def added_p99_by_second(direct: dict, proxy: dict) -> dict:
    """Each measured second's p99 of the proxy side less the direct side's (records sent in that second): their
    median and quartiles over the seconds. A machine stall falls in a few seconds, in both sides' p99 of those
    seconds; the run's p99 is made of those seconds, the median second is not."""
    d, p = _p99_by_second(direct), _p99_by_second(proxy)
    seconds = sorted(d.keys() & p.keys())
    if len(seconds) < 4:
        return {}
    added = [p[s] - d[s] for s in seconds]
    quartiles = statistics.quantiles(added, n=4)
    return {"seconds": len(seconds), "added_p99_per_second_median_ms": statistics.median(added),
            "added_p99_per_second_quartiles_ms": [quartiles[0], quartiles[2]],
            "direct_p99_per_second_median_ms": statistics.median(d[s] for s in seconds),
            "proxy_p99_per_second_median_ms": statistics.median(p[s] for s in seconds)}


def summarize(raw: dict) -> dict:
    values = sorted(raw["latencies"])
    pct = {q: 1000 * values[min(int(len(values) * q), len(values) - 1)] for q in (0.5, 0.99, 0.999)}
    rtt = raw["rtt_p99"]
    return {"acked": len(values), "errors": raw["errors"], "late_sends": raw["late"], "p50_ms": pct[0.5],
            "p99_ms": pct[0.99], "p999_ms": pct[0.999], "max_ms": 1000 * values[-1],
            "rtt_p99_ms": statistics.median(rtt) if rtt else None, "cpu_s_per_s": raw["cpu_s_per_s"]}
