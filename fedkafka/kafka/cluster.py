"""Start and stop real single-node Apache Kafka clusters (KRaft, combined broker+controller) on loopback.

Each cluster is one JVM in its own process group with its own data dir, free ports and a cluster id
derived from its name, so restarting a cluster from the same dir finds the same identity. Storage is
formatted only once. `owned=True` clusters are tied to the launching process (PR_SET_PDEATHSIG and an
atexit hook), so a crashed or interrupted test run leaves no JVM behind; the CLI starts clusters as
daemons and records their pids instead.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fedkafka.kafka.dist import KafkaDist, ensure_kafka

DEFAULT_HEAP = "512m"
_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
logger.kafka_request.name = kafka.request.logger
logger.kafka_request.level = WARN
"""


class ClusterError(RuntimeError):
    """A local cluster could not be started or reached; the message carries the broker's log tail."""


def cluster_uuid(name: str) -> str:
    """Deterministic Kafka cluster id (a base64url UUID of 22 chars) for a cluster name.

    Like Kafka's own Uuid.randomUuid, never one that starts with "-": the tools would read it as a flag.
    """
    salt = b""
    while True:
        cid = base64.urlsafe_b64encode(hashlib.md5(name.encode() + salt).digest()).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
        salt += b"#"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG survives execve: the JVM gets SIGKILL when the launching process dies.
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setsid()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); read its state to tell.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kill_group(pid: int, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class LocalKafkaCluster:
    """One physical Kafka cluster: a single KRaft node on 127.0.0.1."""

    name: str
    data_dir: Path
    port: int = 0
    controller_port: int = 0
    heap: str = DEFAULT_HEAP
    host: str = "127.0.0.1"
    extra_config: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    start_seconds: float | None = None
    # Who runs it when not this process tree (e.g. "ansible": supervisord, provisioned by playbooks/site.yml).
    managed_by: str | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def cluster_id(self) -> str:
        return cluster_uuid(self.name)

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def config(self) -> dict[str, str]:
        cfg = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "5000",
        }
        cfg.update(self.extra_config)
        return cfg

    def _write_files(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.config().items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file))
        return props

    def _pick_ports(self) -> None:
        for attr in ("port", "controller_port"):
            value = getattr(self, attr)
            if value and port_in_use(value, self.host):
                raise ClusterError(f"cluster {self.name}: port {value} on {self.host} is already in use; "
                                   "pick another port or leave it to fedkafka (0 = a free port)")
        self.port = self.port or free_port(self.host)
        self.controller_port = self.controller_port or free_port(self.host)

    def format_storage(self, dist: KafkaDist) -> None:
        """Format the KRaft log dir once; a formatted dir keeps its data across restarts."""
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        props = self._write_files()
        proc = subprocess.run(
            dist.java_command("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(props),
                              "--standalone", heap="256m",
                              jvm_opts=(f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",)),
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"cluster {self.name}: formatting storage failed:\n{proc.stdout}{proc.stderr}")

    def start(self, dist: KafkaDist | None = None, owned: bool = True) -> None:
        """Launch the JVM (not waiting for it to be ready; see wait_ready)."""
        if self.running:
            return
        dist = dist or ensure_kafka()
        self._pick_ports()
        props = self._write_files()
        self.format_storage(dist)
        self._started_at = time.monotonic()
        cmd = dist.java_command(
            "kafka.Kafka", str(props), heap=self.heap,
            jvm_opts=(f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                      "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", f"-Dfedkafka.cluster={self.name}"))
        with open(self.data_dir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent if owned else os.setsid)
        self.pid = self._proc.pid
        if owned:
            _OWNED.add(self)

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Block until the broker answers Metadata; returns seconds since start()."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000,
                             "reconnect.backoff.max.ms": 200, "log_level": 0})
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise ClusterError(f"cluster {self.name}: the broker exited during start-up\n{self.log_tail()}")
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    started = getattr(self, "_started_at", None)
                    if started is not None:  # started by this process: record how long it took
                        self.start_seconds = round(time.monotonic() - started, 2)
                    return self.start_seconds or 0.0
            except Exception as exc:  # KafkaException while the broker boots
                last_error = exc
            time.sleep(0.2)
        raise ClusterError(f"cluster {self.name}: no Metadata answer within {timeout}s ({last_error})\n"
                           f"{self.log_tail()}")

    @property
    def running(self) -> bool:
        if self.managed_by:  # its supervisor may have restarted it under another pid: ask the port
            return port_open(self.host, self.port)
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Kafka's clean shutdown), then SIGKILL after `timeout`; reaps the process."""
        if self.pid is None or self.managed_by:
            return
        kill_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running:
            kill_group(self.pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        else:
            deadline = time.monotonic() + 10
            while pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        _OWNED.discard(self)

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, for fault tests."""
        if self.pid is not None:
            kill_group(self.pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(timeout=10)

    def log_tail(self, lines: int = 25) -> str:
        parts = []
        for path in (self.data_dir / "stdout.log", self.log_file):
            if path.exists():
                parts.append(f"--- {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return {"id": self.name, "bootstrap": self.bootstrap, "port": self.port,
                "controller_port": self.controller_port, "data_dir": str(self.data_dir), "pid": self.pid,
                "cluster_id": self.cluster_id, "heap": self.heap, "start_seconds": self.start_seconds,
                "extra_config": self.extra_config, "managed_by": self.managed_by}

    @classmethod
    def from_dict(cls, d: dict) -> LocalKafkaCluster:
        return cls(name=d["id"], data_dir=Path(d["data_dir"]), port=d["port"], controller_port=d["controller_port"],
                   heap=d.get("heap", DEFAULT_HEAP), extra_config=d.get("extra_config", {}), pid=d.get("pid"),
                   start_seconds=d.get("start_seconds"), managed_by=d.get("managed_by"))

    def __hash__(self) -> int:
        return id(self)


_OWNED: weakref.WeakSet[LocalKafkaCluster] = weakref.WeakSet()


@atexit.register
def _stop_owned() -> None:
    for cluster in list(_OWNED):
        with contextlib.suppress(Exception):
            cluster.kill()


def start_clusters(names: Iterable[str], base_dir: Path, *, owned: bool = True, heap: str = DEFAULT_HEAP,
                   extra_config: dict[str, str] | None = None, timeout: float = 120.0) -> list[LocalKafkaCluster]:
    """Start several clusters in parallel and wait until all answer; stops them all if one fails."""
    dist = ensure_kafka()
    clusters = [LocalKafkaCluster(name=n, data_dir=Path(base_dir) / n, heap=heap,
                                  extra_config=dict(extra_config or {})) for n in names]
    try:
        for c in clusters:
            c.start(dist, owned=owned)
        with ThreadPoolExecutor(max_workers=max(1, len(clusters))) as pool:
            list(pool.map(lambda c: c.wait_ready(timeout), clusters))
    except BaseException:
        for c in clusters:
            c.stop(timeout=5)
        raise
    return clusters


def dump(clusters: Iterable[LocalKafkaCluster]) -> str:
    return json.dumps([c.to_dict() for c in clusters], indent=2)
