"""Start and stop real Apache Kafka clusters (KRaft) on loopback: one node by default, or several.

Each node is one JVM in its own process group with its own data dir and free ports; a cluster id is
derived from the cluster's name, so restarting a node from the same dir finds the same identity. Storage
is formatted only once. `owned=True` clusters are tied to the launching process (PR_SET_PDEATHSIG and an
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

DEFAULT_HEAP = "512m"  # a one-node cluster
REPLICATED_HEAP = "384m"  # each node of a multi-node cluster
MAX_CONTROLLERS = 3  # quorum voters of a multi-node cluster; also its replication factor
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


@dataclass(frozen=True)
class SaslSslListener:
    """A cluster whose client listener requires SASL_SSL with SCRAM (the brokers of a secured federation).

    PEM certificate and unencrypted PKCS#8 key of the brokers; `users` (name -> password) get SCRAM-SHA-512 and
    SCRAM-SHA-256 credentials, written through the internal listener once the cluster runs (no password on a
    command line). Not kept in the state file: its owner (`fedkafka local`, a test) gives it again on a restart.

    Without `service_user`, inter-broker and controller traffic stays PLAINTEXT on loopback (the INTERNAL
    listener, which the launcher's own readiness checks use) and nothing is authorized. With it (one of
    `users`, and `ca`, the CA that signed `cert`), the brokers cannot be bypassed: the INTERNAL and CONTROLLER
    listeners require SASL_SSL with PLAIN as that user (PLAIN over TLS: its password never crosses loopback in
    clear; it is only in the 0600 server.properties; KRaft controllers cannot check SCRAM, whose credentials live
    in the metadata they serve), the StandardAuthorizer is on and that user is the only super user, so with no
    ACL on the brokers every other principal is refused everything."""

    cert: Path
    key: Path
    users: dict[str, str] = field(default_factory=dict, repr=False)
    service_user: str | None = None
    ca: Path | None = None

    def __post_init__(self) -> None:
        if self.service_user is not None and self.service_user not in self.users:
            raise ValueError(f"the service user {self.service_user!r} needs a password in users")
        if self.service_user is not None and self.ca is None:
            raise ValueError("a hardened listener needs the CA: its internal and controller listeners use TLS")

    @property
    def internal_protocol(self) -> str:
        return "SASL_SSL" if self.service_user else "PLAINTEXT"

    def broker_config(self) -> dict[str, str]:
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        cfg = {"listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
               "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
               "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
               "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": jaas,
               "ssl.keystore.type": "PEM",
               # inline PEM: a PEM keystore file would need an encrypted key and its password
               "ssl.keystore.certificate.chain": self.cert.read_text().strip(),
               "ssl.keystore.key": self.key.read_text().strip(),
               "ssl.client.auth": "none"}
        return cfg | self._hardening() if self.service_user else cfg

    def _hardening(self) -> dict[str, str]:
        assert self.service_user is not None and self.ca is not None
        user, password = self.service_user, self.users[self.service_user]
        plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                 f'username="{user}" password="{password}" user_{user}="{password}";')
        return {"sasl.mechanism.inter.broker.protocol": "PLAIN", "sasl.mechanism.controller.protocol": "PLAIN",
                "listener.name.internal.sasl.enabled.mechanisms": "PLAIN",
                "listener.name.internal.plain.sasl.jaas.config": plain,
                "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
                "listener.name.controller.plain.sasl.jaas.config": plain,
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": f"User:{user}",
                # the brokers' and controllers' own connections to each other check the peer's certificate
                "ssl.truststore.type": "PEM", "ssl.truststore.certificates": self.ca.read_text().strip()}

    def internal_client_config(self) -> dict[str, str]:
        """librdkafka settings of the launcher's own clients on the INTERNAL listener."""
        if not self.service_user:
            return {}
        return {"security.protocol": "SASL_SSL", "ssl.ca.location": str(self.ca), "sasl.mechanism": "PLAIN",
                "sasl.username": self.service_user, "sasl.password": self.users[self.service_user]}


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


def kill_group(pid: int | None, sig: int = signal.SIGTERM) -> None:
    """Signal a process group; nothing for a process that never started (no pid)."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def replication_defaults(brokers: int) -> dict[str, str]:
    """Replication a cluster of `brokers` nodes gives new topics and its internal topics: 3 copies and 2 in sync
    at most, never an unclean leader (a replica that missed acked writes)."""
    copies, in_sync = str(min(MAX_CONTROLLERS, brokers)), str(min(2, brokers))
    return {"default.replication.factor": copies, "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": copies,
            "transaction.state.log.replication.factor": copies, "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": copies,
            "share.coordinator.state.topic.min.isr": in_sync, "unclean.leader.election.enable": "false"}


@dataclass(eq=False)
class LocalBroker:
    """One node of a local cluster: one JVM in its own process group, with its own data dir and ports.

    `start()` after `kill()` or `stop()` restarts the same node from its dir, on the same ports.
    """

    cluster: LocalKafkaCluster = field(repr=False)
    node_id: int
    port: int = 0
    controller_port: int = 0  # 0 on a broker-only node
    internal_port: int = 0  # the inter-broker listener of a SASL_SSL cluster (else 0: none)
    pid: int | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.cluster.host

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def internal_bootstrap(self) -> str:
        """Where the launcher itself talks to the node: the client listener, or the internal one if secured."""
        return f"{self.host}:{self.internal_port or self.port}"

    @property
    def is_controller(self) -> bool:
        return self.node_id <= self.cluster.controller_count

    @property
    def data_dir(self) -> Path:
        # A one-node cluster keeps its files directly in the cluster's dir, as before clusters had several nodes.
        if self.cluster.broker_count == 1:
            return self.cluster.data_dir
        return self.cluster.data_dir / f"node-{self.node_id}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def config(self) -> dict[str, str]:
        listeners = f"PLAINTEXT://{self.host}:{self.port}"
        if self.is_controller:
            listeners += f",CONTROLLER://{self.host}:{self.controller_port}"
        cfg = {
            "process.roles": "broker,controller" if self.is_controller else "broker",
            "node.id": str(self.node_id),
            **self.cluster.quorum_config(),
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            **replication_defaults(self.cluster.broker_count),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "5000",
        }
        if self.cluster.sasl_ssl is not None:
            internal = f"INTERNAL://{self.host}:{self.internal_port}"
            inner = self.cluster.sasl_ssl.internal_protocol
            cfg |= {"listeners": listeners.replace("PLAINTEXT://", "SASL_SSL://", 1) + "," + internal,
                    "advertised.listeners": f"SASL_SSL://{self.host}:{self.port},{internal}",
                    "inter.broker.listener.name": "INTERNAL",
                    "listener.security.protocol.map": f"SASL_SSL:SASL_SSL,INTERNAL:{inner},CONTROLLER:{inner}",
                    **self.cluster.sasl_ssl.broker_config()}
        cfg.update(self.cluster.extra_config)
        return cfg

    def _write_files(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        _write_private(props, "".join(f"{k}={_escaped(v)}\n" for k, v in self.config().items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file))
        return props

    def _log4j_opt(self) -> str:
        return f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}"

    def format_storage(self, dist: KafkaDist) -> None:
        """Format the KRaft log dir once; a formatted dir keeps its data across restarts."""
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        props = self._write_files()
        # One node: a standalone dynamic quorum. Several: the static quorum its config names (no flag).
        quorum = ["--standalone"] if self.cluster.broker_count == 1 else []
        proc = subprocess.run(
            dist.java_command("kafka.tools.StorageTool", "format", "-t", self.cluster.cluster_id, "-c", str(props),
                              *quorum, heap="256m", jvm_opts=(self._log4j_opt(),)),
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"cluster {self.cluster.name}: formatting storage of broker {self.node_id} failed:\n"
                               f"{proc.stdout}{proc.stderr}")

    def start(self, dist: KafkaDist | None = None, owned: bool | None = None) -> None:
        """Launch this node's JVM (not waiting for it to be ready; see wait_ready)."""
        if self.running:
            return
        dist = dist or ensure_kafka()
        owned = self.cluster.owned if owned is None else owned
        self.cluster.pick_ports()
        props = self._write_files()
        self.format_storage(dist)
        cmd = dist.java_command(
            "kafka.Kafka", str(props), heap=self.cluster.heap,
            jvm_opts=(self._log4j_opt(), "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                      f"-Dfedkafka.cluster={self.cluster.name}", f"-Dfedkafka.node={self.node_id}"))
        with open(self.data_dir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent if owned else os.setsid)
        self.pid = self._proc.pid
        if owned:
            self.cluster.owned = True
            _OWNED.add(self.cluster)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until this node answers Metadata itself: a broker serves requests only once it is unfenced."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        # Bootstrapped at this node alone, the client has no other broker to ask until this one answered.
        admin = AdminClient({"bootstrap.servers": self.internal_bootstrap, "socket.timeout.ms": 2000,
                             "reconnect.backoff.max.ms": 200, "log_level": 0, **self.cluster.internal_client_config()})
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise ClusterError(f"cluster {self.cluster.name}: broker {self.node_id} exited during start-up\n"
                                   f"{self.log_tail()}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception as exc:  # KafkaException while the broker boots
                last_error = exc
            time.sleep(0.2)
        raise ClusterError(f"cluster {self.cluster.name}: broker {self.node_id} gave no Metadata answer within "
                           f"{timeout}s ({last_error})\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        if self.cluster.managed_by:  # its supervisor may have restarted it under another pid: ask the port
            return port_open(self.host, self.port)
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid)

    def terminate(self) -> None:
        """SIGTERM (Kafka's clean shutdown) without waiting."""
        if self._signalable():
            kill_group(self.pid, signal.SIGTERM)

    def _signalable(self) -> bool:
        # Only a live node of ours: the pid of one that exited may belong to another process group by now.
        return self.pid is not None and not self.cluster.managed_by and self.running

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; reaps the process."""
        if self.pid is None or self.cluster.managed_by:
            return
        self.terminate()
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running:
            kill_group(self.pid, signal.SIGKILL)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the node's process group: a crash, for fault tests."""
        if self._signalable():
            kill_group(self.pid, signal.SIGKILL)
            self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            return
        deadline = time.monotonic() + 10
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def log_tail(self, lines: int = 25) -> str:
        parts = []
        for path in (self.data_dir / "stdout.log", self.log_file):
            if path.exists():
                parts.append(f"--- {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return {"node_id": self.node_id, "bootstrap": self.bootstrap, "port": self.port,
                "controller_port": self.controller_port, "internal_port": self.internal_port, "pid": self.pid}


class LocalKafkaCluster:
    """One physical Kafka cluster on 127.0.0.1: `broker_count` KRaft nodes, each its own JVM.

    One node (the default) is a combined broker+controller. With several, the first min(3, B) nodes run
    broker+controller (the quorum), the others broker only, and topics get min(3, B) replicas
    (`replication_defaults`). `port`, `controller_port` and `pid` are the first node's; `bootstrap` lists
    every node.
    """

    def __init__(self, name: str, data_dir: Path, port: int = 0, controller_port: int = 0, heap: str | None = None,
                 host: str = "127.0.0.1", extra_config: dict[str, str] | None = None, pid: int | None = None,
                 start_seconds: float | None = None, managed_by: str | None = None, broker_count: int = 1,
                 sasl_ssl: SaslSslListener | None = None) -> None:
        if broker_count < 1:
            raise ValueError(f"cluster {name}: broker_count must be at least 1, not {broker_count}")
        self.name = name
        self.data_dir = Path(data_dir)
        self.broker_count = broker_count
        self.heap = heap or (DEFAULT_HEAP if broker_count == 1 else REPLICATED_HEAP)
        self.host = host
        self.extra_config = dict(extra_config or {})
        self.sasl_ssl = sasl_ssl
        self.start_seconds = start_seconds
        # Who runs it when not this process tree (e.g. "ansible": supervisord, provisioned by playbooks/site.yml).
        self.managed_by = managed_by
        self.owned = True  # tied to this process (see start)
        self._started_at: float | None = None
        self.brokers = [LocalBroker(self, node_id) for node_id in range(1, broker_count + 1)]
        first = self.brokers[0]
        first.port, first.controller_port, first.pid = port, controller_port, pid

    def __repr__(self) -> str:
        return f"LocalKafkaCluster({self.name!r}, bootstrap={self.bootstrap!r}, brokers={self.broker_count})"

    @property
    def controller_count(self) -> int:
        return min(MAX_CONTROLLERS, self.broker_count)

    @property
    def port(self) -> int:
        return self.brokers[0].port

    @property
    def controller_port(self) -> int:
        return self.brokers[0].controller_port

    @property
    def pid(self) -> int | None:
        return self.brokers[0].pid

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    @property
    def cluster_id(self) -> str:
        return cluster_uuid(self.name)

    @property
    def log_file(self) -> Path:
        return self.brokers[0].log_file

    def broker(self, node_id: int) -> LocalBroker:
        return next(b for b in self.brokers if b.node_id == node_id)

    def quorum_config(self) -> dict[str, str]:
        if self.broker_count == 1:
            return {"controller.quorum.bootstrap.servers": f"{self.host}:{self.controller_port}"}
        voters = ",".join(f"{b.node_id}@{self.host}:{b.controller_port}" for b in self.brokers if b.is_controller)
        return {"controller.quorum.voters": voters}

    def config(self, node_id: int = 1) -> dict[str, str]:
        return self.broker(node_id).config()

    def pick_ports(self) -> None:
        """Refuse a busy port given to a stopped node; pick free ones for the others. Every port is known
        before any node's config is written: each names the controllers' ports."""
        for broker in self.brokers:
            if broker.running:
                continue
            for value in (broker.port, broker.controller_port, broker.internal_port):
                if value and port_in_use(value, self.host):
                    raise ClusterError(f"cluster {self.name}: port {value} on {self.host} is already in use; "
                                       "pick another port or leave it to fedkafka (0 = a free port)")
        taken = {p for b in self.brokers for p in (b.port, b.controller_port, b.internal_port) if p}
        for broker in self.brokers:
            broker.port = broker.port or _free_port_besides(taken, self.host)
            if self.sasl_ssl is not None:
                broker.internal_port = broker.internal_port or _free_port_besides(taken, self.host)
            if broker.is_controller:
                broker.controller_port = broker.controller_port or _free_port_besides(taken, self.host)

    def prepare(self, dist: KafkaDist) -> None:
        """Pick the ports and format every node's storage, all nodes at once: each format is a JVM run of
        1.5-2.5 s, which one after another made up a third of a 3-node cluster's start."""
        self.pick_ports()
        with ThreadPoolExecutor(max_workers=self.broker_count) as pool:
            list(pool.map(lambda broker: broker.format_storage(dist), self.brokers))

    def start(self, dist: KafkaDist | None = None, owned: bool = True) -> None:
        """Launch every node that does not run (not waiting for them to be ready; see wait_ready)."""
        if self.running:
            return
        dist = dist or ensure_kafka()
        self.owned = owned
        self._started_at = time.monotonic()
        self.prepare(dist)
        for broker in self.brokers:  # from this thread: PR_SET_PDEATHSIG fires when the forking thread ends
            broker.start(dist, owned=owned)

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Block until every node answers Metadata and the cluster lists them all; returns seconds since start()."""
        deadline = time.monotonic() + timeout
        for broker in self.brokers:
            broker.wait_ready(max(1.0, deadline - time.monotonic()))
        if self.broker_count > 1:
            self._wait_all_registered(deadline)
        if self.sasl_ssl is not None:
            self._add_scram_users()
        if self._started_at is not None:  # started by this process: record how long it took (once)
            self.start_seconds = round(time.monotonic() - self._started_at, 2)
            self._started_at = None
        return self.start_seconds or 0.0

    @property
    def internal_bootstrap(self) -> str:
        return ",".join(b.internal_bootstrap for b in self.brokers)

    def internal_client_config(self) -> dict[str, str]:
        """The login the launcher's own clients need on internal_bootstrap (none unless hardened)."""
        return self.sasl_ssl.internal_client_config() if self.sasl_ssl is not None else {}

    def _add_scram_users(self) -> None:
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialAlteration,
            UserScramCredentialUpsertion,
        )

        assert self.sasl_ssl is not None
        admin = AdminClient({"bootstrap.servers": self.internal_bootstrap, "log_level": 0,
                             **self.internal_client_config()})
        for mechanism in (ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256):  # one per user and request
            upserts: list[UserScramCredentialAlteration] = [
                UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, 8192), password.encode())
                for user, password in self.sasl_ssl.users.items()]
            for fut in admin.alter_user_scram_credentials(upserts).values() if upserts else ():
                fut.result(30)

    def _wait_all_registered(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.internal_bootstrap, "socket.timeout.ms": 2000, "log_level": 0,
                             **self.internal_client_config()})
        wanted = {b.node_id for b in self.brokers}
        listed: set[int] = set()
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # KafkaException while a broker comes back
                listed = set(admin.list_topics(timeout=2).brokers)
                if listed == wanted:
                    return
            time.sleep(0.2)
        raise ClusterError(f"cluster {self.name}: metadata lists brokers {sorted(listed)}, not {sorted(wanted)}\n"
                           f"{self.log_tail()}")

    def leader_of(self, topic: str, partition: int, timeout: float = 10.0) -> LocalBroker:
        """The node leading `topic`/`partition` now (for tests that kill a leader)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.internal_bootstrap, "log_level": 0,
                             **self.internal_client_config()})
        leader = admin.list_topics(topic=topic, timeout=timeout).topics[topic].partitions[partition].leader
        if leader < 0:
            raise ClusterError(f"cluster {self.name}: {topic}/{partition} has no leader")
        return self.broker(leader)

    @property
    def running(self) -> bool:
        """Every node runs (`start()` restarts the ones that do not)."""
        return all(b.running for b in self.brokers)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node at once (Kafka's clean shutdown), SIGKILL what still runs after `timeout`."""
        stop_clusters([self], timeout)

    def kill(self) -> None:
        """SIGKILL every node: a crash, for fault tests."""
        for broker in self.brokers:
            broker.kill()

    def log_tail(self, lines: int = 25) -> str:
        if self.broker_count == 1:
            return self.brokers[0].log_tail(lines)
        return "\n".join(f"=== broker {b.node_id}\n{b.log_tail(lines)}" for b in self.brokers)

    def to_dict(self) -> dict:
        return {"id": self.name, "bootstrap": self.bootstrap, "port": self.port,
                "controller_port": self.controller_port, "data_dir": str(self.data_dir), "pid": self.pid,
                "cluster_id": self.cluster_id, "heap": self.heap, "start_seconds": self.start_seconds,
                "extra_config": self.extra_config, "managed_by": self.managed_by,
                "brokers": [b.to_dict() for b in self.brokers]}

    @classmethod
    def from_dict(cls, d: dict) -> LocalKafkaCluster:
        """Reads what to_dict wrote; a state file from before multi-broker clusters (no "brokers") is one node."""
        nodes = d.get("brokers") or []
        cluster = cls(name=d["id"], data_dir=Path(d["data_dir"]), port=d["port"],
                      controller_port=d["controller_port"], heap=d.get("heap"), extra_config=d.get("extra_config"),
                      pid=d.get("pid"), start_seconds=d.get("start_seconds"), managed_by=d.get("managed_by"),
                      broker_count=max(1, len(nodes)))
        for broker, doc in zip(cluster.brokers, nodes, strict=False):
            broker.node_id = doc.get("node_id", broker.node_id)
            broker.port, broker.controller_port, broker.pid = doc["port"], doc.get("controller_port", 0), doc.get("pid")
            broker.internal_port = doc.get("internal_port", 0)
        return cluster


def _write_private(path: Path, text: str) -> None:
    """Write `path` 0600, also when it exists with a wider mode (a secured node's holds its key and a password):
    the mode is tightened before a byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _escaped(value: str) -> str:
    """A Java properties value: a multi-line one (an inline PEM) on one line."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _free_port_besides(taken: set[int], host: str) -> int:
    """A free port not handed to another node yet (the kernel may offer a just-released port twice)."""
    while (port := free_port(host)) in taken:
        pass
    taken.add(port)
    return port


_OWNED: weakref.WeakSet[LocalKafkaCluster] = weakref.WeakSet()


@atexit.register
def _stop_owned() -> None:
    for cluster in list(_OWNED):
        with contextlib.suppress(Exception):
            cluster.kill()


def start_clusters(names: Iterable[str], base_dir: Path, *, owned: bool = True, heap: str | None = None,
                   extra_config: dict[str, str] | None = None, timeout: float = 120.0,
                   brokers: int = 1, sasl_ssl: SaslSslListener | None = None) -> list[LocalKafkaCluster]:
    """Start several clusters of `brokers` nodes each in parallel and wait until all answer; stops them all if
    one fails."""
    dist = ensure_kafka()
    clusters = [LocalKafkaCluster(name=n, data_dir=Path(base_dir) / n, heap=heap, broker_count=brokers,
                                  extra_config=dict(extra_config or {}), sasl_ssl=sasl_ssl) for n in names]
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(clusters))) as pool:
            list(pool.map(lambda c: c.prepare(dist), clusters))
        for c in clusters:
            c.start(dist, owned=owned)
        with ThreadPoolExecutor(max_workers=max(1, len(clusters))) as pool:
            list(pool.map(lambda c: c.wait_ready(timeout), clusters))
    except BaseException:
        stop_clusters(clusters, timeout=5)
        raise
    return clusters


def stop_clusters(clusters: Iterable[LocalKafkaCluster], timeout: float = 30.0) -> None:
    """Stop every node of every cluster at once, under one deadline: SIGTERM, then SIGKILL after `timeout`.

    A combined node first waits for the quorum to approve its controlled shutdown; one that is late for it
    (a loaded machine) may wait for a quorum that is gone, so the deadline is shared, not per cluster.
    """
    clusters = [c for c in clusters if not c.managed_by]
    brokers = [b for c in clusters for b in c.brokers]
    deadline = time.monotonic() + timeout
    for broker in brokers:
        broker.terminate()
    for broker in brokers:
        broker.stop(max(0.0, deadline - time.monotonic()))
    for cluster in clusters:
        _OWNED.discard(cluster)


def dump(clusters: Iterable[LocalKafkaCluster]) -> str:
    return json.dumps([c.to_dict() for c in clusters], indent=2)
