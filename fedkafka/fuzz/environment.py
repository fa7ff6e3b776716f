"""The processes under fuzz: a controller (SQLite), a pproxy, a cproxy and the name service over real clusters.

Each is a `fedkafka` subprocess on a free port with its own log. The pproxy serves pool `produce`, the
cproxy pool `consume`; client rules send client ids `fuzz-p*`/`good-p*` to the first and `fuzz-c*`/`good-c*`
to the second, so the name service relays to both. A dead process is recorded (exit code or signal, log
tail) and restarted on the same port, so the run goes on and counts every death.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fedkafka.kafka.cluster import free_port

POOLS = {"produce": ("fuzz-p", "good-p", "probe-p"), "consume": ("fuzz-c", "good-c", "probe-c")}


@dataclass
class Death:
    service: str
    returncode: int
    at: float  # seconds into the run
    log_tail: str
    noticed_at: float = 0.0  # time.monotonic() when the watch saw it

    @property
    def cause(self) -> str:
        """The log line that names why (a native abort, a panic, a fatal Python error), if any."""
        for line in self.log_tail.splitlines():
            if any(m in line for m in ("memory allocation of", "panicked", "Fatal Python error", "Segmentation",
                                       "MemoryError", "Killed")):
                return line.strip()[:300]
        return ""

    @property
    def how(self) -> str:
        if self.returncode < 0:
            with contextlib.suppress(ValueError):
                return f"signal {signal.Signals(-self.returncode).name}"
            return f"signal {-self.returncode}"
        return f"exit {self.returncode}"


@dataclass
class Service:
    name: str
    args: list[str]
    port: int
    log: Path
    extra_ports: tuple[int, ...] = ()  # also served (the name service's HTTP): up when every port listens
    proc: subprocess.Popen | None = None
    peak_rss_kb: int = 0
    peak_fds: int = 0
    starts: int = 0

    def start(self, cwd: Path) -> None:
        with open(self.log, "ab") as log:
            log.write(f"\n=== fuzz: start #{self.starts + 1} of {self.name}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", *self.args], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
        self.starts += 1

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.proc
        assert proc is not None, f"{self.name} was never started"
        waiting = [self.port, *self.extra_ports]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {proc.returncode}:\n{self.tail()}")
            waiting = [port for port in waiting if not _listens(port)]
            if not waiting:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {waiting}:\n{self.tail()}")

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def sample(self) -> None:
        """Peak resident memory (VmHWM covers the time between samples) and open descriptors."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
            self.peak_fds = max(self.peak_fds, len(os.listdir(f"/proc/{self.proc.pid}/fd")))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def log_counts(self) -> dict:
        """Tracebacks in the log (the exceptions' last lines, most frequent first) and native aborts."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        exceptions: dict[str, int] = {}
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback (most recent call last)"):
                end = next((j for j in range(i + 1, len(lines)) if lines[j] and not lines[j][0].isspace()), None)
                if end is not None:  # numbers vary (tags, sizes): one entry per kind of failure
                    kind = re.sub(r"\d+", "N", lines[end][:200])
                    exceptions[kind] = exceptions.get(kind, 0) + 1
        top = sorted(exceptions.items(), key=lambda kv: -kv[1])[:10]
        return {"tracebacks": sum(exceptions.values()), "exceptions": dict(top),
                "memory_allocation_failed": text.count("memory allocation of")}


@dataclass
class Environment:
    workdir: Path
    clusters: dict[str, str]  # cluster id -> bootstrap
    tag: str = "fuzz"
    partitions: int = 4
    services: dict[str, Service] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    started_at: float = field(default_factory=time.monotonic)
    deaths: list[Death] = field(default_factory=list)

    @property
    def good_topic(self) -> str:
        return f"{self.tag}-good"

    @property
    def fuzz_topics(self) -> dict[str, int]:
        return {f"{self.tag}-a": self.partitions, f"{self.tag}-b": 1, self.idle_topic: 1}

    @property
    def idle_topic(self) -> str:
        """Never produced to by the fuzz, so a Fetch at offset 0 there waits for its max_wait."""
        return f"{self.tag}-idle"

    def address(self, name: str) -> tuple[str, int]:
        return "127.0.0.1", self.services[name].port

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.services['controller'].port}"

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.controller_url, headers={"Authorization": f"Bearer {self.token}"},
                            timeout=60)

    # -- start ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        token_file = self.workdir / "token"
        token_file.write_text(self.token + "\n")
        ctl_port = free_port()
        self._add("controller", ctl_port, ["controller", "--db", f"sqlite:///{self.workdir / 'controller.db'}",
                                           "--listen", f"127.0.0.1:{ctl_port}", "--token-file", str(token_file),
                                           "--scan-interval", "2"])
        self._start("controller")
        with self.api() as api:
            _wait(lambda: api.get("/v1/status").status_code == 200, "controller")
            self._configure(api)
        for role, pool in (("pproxy", "produce"), ("cproxy", "consume")):
            port = free_port()
            self._add(role, port, ["proxy", "--role", role, "--listen", f"127.0.0.1:{port}", "--pool", pool,
                                   "--controller", self.controller_url, "--token-file", str(token_file)])
            self._start(role)
        with self.api() as api:
            ports = {self.services["pproxy"].port, self.services["cproxy"].port}
            _wait(lambda: ports <= {p["port"] for p in api.get("/v1/view").json()["proxies"]}, "proxies registered")
        ns_port, http_port = free_port(), free_port()
        self._add("nameservice", ns_port, ["nameservice", "--listen", f"127.0.0.1:{ns_port}", "--http-listen",
                                           f"127.0.0.1:{http_port}", "--controller", self.controller_url,
                                           "--token-file", str(token_file)], extra_ports=(http_port,))
        self.ns_http_port = http_port
        self._start("nameservice")
        self.started_at = time.monotonic()

    def _configure(self, api: httpx.Client) -> None:
        names = sorted(self.clusters)
        coordination = names[1] if len(names) > 1 else names[0]
        for cid in names:
            api.put(f"/v1/clusters/{cid}", json={"bootstrap": self.clusters[cid], "coordination": cid == coordination}
                    ).raise_for_status()
        for topic, partitions in {self.good_topic: self.partitions, **self.fuzz_topics}.items():
            api.put(f"/v1/topics/{topic}", json={"partitions": partitions, "placement": "blocks"}).raise_for_status()
        for pool, prefixes in POOLS.items():
            for prefix in prefixes:
                api.put(f"/v1/client-rules/{self.tag}-{prefix}",
                        json={"match": "prefix", "pattern": prefix, "pool": pool}).raise_for_status()

    def _add(self, name: str, port: int, args: list[str], extra_ports: tuple[int, ...] = ()) -> None:
        self.services[name] = Service(name, args, port, self.workdir / f"{name}.log", extra_ports)

    def _start(self, name: str) -> None:
        svc = self.services[name]
        svc.start(self.workdir)
        svc.wait_listening()

    # -- watch ------------------------------------------------------------------------------------------------
    def check(self) -> list[Death]:
        """Deaths since the last check (each service restarted by `restart`)."""
        found = []
        for svc in self.services.values():
            svc.sample()
            code = svc.returncode()
            if code is not None:
                death = Death(svc.name, code, round(time.monotonic() - self.started_at, 1), svc.tail(400),
                              time.monotonic())
                self.deaths.append(death)
                found.append(death)
        return found

    def restart(self, name: str) -> None:
        svc = self.services[name]
        svc.proc = None
        svc.start(self.workdir)
        svc.wait_listening()

    def stop(self) -> None:
        for name in ("nameservice", "pproxy", "cproxy", "controller"):
            if name in self.services:
                self.services[name].stop()


def _listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, KeyError) as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what} ({last})")
