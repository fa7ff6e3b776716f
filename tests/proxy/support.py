"""Test support: views over real clusters, physical topics, and a real proxy process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    """Whether a listener bound to host:port accepts (one bound to every address is asked on loopback)."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        return s.connect_ex((host, port)) == 0


_LISTEN_FLAGS = ("--listen", "--listener", "--admin-listen")


def listen_addresses(cmd: list[str]) -> list[tuple[str, int]]:
    """(host, port) of every listener a proxy command line names: --listen, each --listener and --admin-listen,
    as `--flag value` or `--flag=value`, `[PROTOCOL://]HOST:PORT` with an IPv6 host in brackets (`[::1]:9092`).
    A port 0 is left out: the kernel picks that port when the proxy binds, and the command line cannot tell
    which, so nothing can wait for it (a test that needs it must learn the port another way)."""
    values = []
    for i, arg in enumerate(cmd):
        flag, eq, value = arg.partition("=")
        if flag in _LISTEN_FLAGS:
            if eq:
                values.append(value)
            elif i + 1 < len(cmd):
                values.append(cmd[i + 1])
    out = []
    for value in values:
        address = value.split("://", 1)[-1]
        if address.startswith("["):
            host, _, port = address[1:].partition("]:")
        else:
            host, _, port = address.rpartition(":")
        if int(port) != 0:
            out.append((host, int(port)))
    return out


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        fut.result(30)
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until every partition has a leader
        md = admin.list_topics(name, timeout=10)
        t = md.topics.get(name)
        if t and len(t.partitions) == partitions and all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} has no leaders on {bootstrap}")


def split_view(clusters: dict[str, str], logical: str, layout: list[tuple], version: int = 1,
               proxies=()) -> View:
    """A view with one logical topic; layout[p] = (cluster, physical topic, physical partition[, phys_start,
    logical_base])."""
    chains = []
    for entry in layout:
        cluster, topic, partition, *rest = entry
        phys_start, logical_base = rest if rest else (0, 0)
        chains.append(PartitionChain(segments=(Segment(cluster, topic, partition, phys_start, None, logical_base),)))
    return View(version=version, clusters={c: Cluster(c, b) for c, b in clusters.items()},
                topics={logical: LogicalTopic(logical, uuid.uuid4().hex, tuple(chains))}, proxies=tuple(proxies))


class ProxyProcess:
    """`fedkafka proxy` as a real process on a free port, serving a view file."""

    def __init__(self, tmp: Path, view: View, role: ProxyRole = ProxyRole.PPROXY, workers: int = 1,
                 extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.view_file = tmp / f"view-{self.port}.json"
        self.write_view(view)
        self.log = tmp / f"proxy-{self.port}.log"
        self.cmd = [sys.executable, "-m", "fedkafka.cli", "proxy", "--role", role.value,
                    "--listen", f"127.0.0.1:{self.port}", "--view-file", str(self.view_file),
                    "--workers", str(workers), *extra]
        self.proc: subprocess.Popen | None = None

    def ports(self) -> list[int]:
        """Every port the command listens on that can be waited for: --listen, each --listener and --admin-listen
        (`listen_addresses`: not a port 0). The proxy opens them one after another, so a test that waited for
        --listen alone could connect to a --listener too early."""
        return [port for _host, port in listen_addresses(self.cmd)]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_view(self, view: View) -> None:
        tmp = self.view_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(view.to_dict()))
        os.replace(tmp, self.view_file)

    def __enter__(self) -> ProxyProcess:
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"proxy exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if all(_accepts(host, port) for host, port in listen_addresses(self.cmd)):
                return self
            time.sleep(0.05)
        self.__exit__(None, None, None)  # not left running once the test gave up on it
        raise AssertionError("proxy did not start listening")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def read_partition(bootstrap: str, topic: str, partition: int, start: int = 0, count: int | None = None,
                   timeout: float = 30.0) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) read directly from a physical partition, from `start` up to its end (or `count`)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"direct-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        _lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        end = hi if count is None else min(hi, start + count)
        out: list[tuple[int, bytes | None, bytes | None]] = []
        if end <= start:
            return out
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.time() + timeout
        while time.time() < deadline and (not out or out[-1][0] < end - 1):
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            out.append((msg.offset(), msg.key(), msg.value()))
        return out
    finally:
        consumer.close()
