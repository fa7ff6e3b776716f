"""A federation of real processes for workflow tests: a controller (SQLite) and proxies over real clusters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from confluent_kafka import Consumer, TopicPartition

from fedkafka.kafka.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "workflow-token"


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class Federation:
    """Controller + N proxies (role both) as subprocesses; `api` is an httpx client with the token."""

    def __init__(self, tmp: Path, lease_ms: int = 2000, db: str | None = None, fence_ms: int | None = None):
        self.tmp = tmp
        self.lease_ms = lease_ms
        # by default a proxy stops producing when its lease runs out, as before the fence (docs/DESIGN.md §4.9)
        # existed: a move then waits seconds, not minutes, for a proxy a test silenced
        self.fence_ms = fence_ms or lease_ms
        self.token_file = tmp / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.db = db or f"sqlite:///{tmp / 'controller.db'}"
        self.ctl_port = free_port()
        self.url = f"http://127.0.0.1:{self.ctl_port}"
        self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        self.controller: subprocess.Popen | None = None
        self.proxies: list[tuple[subprocess.Popen, int]] = []
        self._log = open(tmp / "services.log", "ab")  # noqa: SIM115

    # -- processes ------------------------------------------------------------------------------
    def start_controller(self, env: dict[str, str] | None = None) -> None:
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "fedkafka.cli", "controller", "--db", self.db, "--listen",
             f"127.0.0.1:{self.ctl_port}", "--token-file", str(self.token_file), "--lease-ms", str(self.lease_ms),
             "--fence-ms", str(self.fence_ms), "--scan-interval", "1"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})})
        # a Python service takes a minute or more to start on a loaded 2-core machine
        wait_for(lambda: self.api.get("/v1/status").status_code == 200, 180, what="controller up")

    def kill_controller(self) -> None:
        self.controller.kill()
        self.controller.wait(10)

    def start_proxies(self, n: int) -> None:
        for _ in range(n):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen", f"127.0.0.1:{port}",
                 "--controller", self.url, "--token-file", str(self.token_file)],
                stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
            self.proxies.append((proc, port))
        ports = {p for _, p in self.proxies}
        wait_for(lambda: ports <= {p["port"] for p in self.api.get("/v1/view").json()["proxies"]},
                 what="proxies registered")

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for _, port in self.proxies)

    def stop(self) -> None:
        procs = [p for p, _ in self.proxies] + ([self.controller] if self.controller else [])
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.api.close()
        self._log.close()

    # -- admin API ------------------------------------------------------------------------------
    def setup(self, clusters: dict[str, str], topic: str, partitions: int, coordination: str,
              config: dict[str, str] | None = None) -> None:
        for cid, bootstrap in clusters.items():
            self.api.put(f"/v1/clusters/{cid}", json={"bootstrap": bootstrap, "coordination": cid == coordination}
                         ).raise_for_status()
        self.api.put(f"/v1/topics/{topic}", json={"partitions": partitions, "placement": "blocks",
                                                  "config": config or {}}).raise_for_status()

    def workflow(self, body: dict, timeout: float = 120.0) -> dict:
        resp = self.api.post("/v1/workflows", json=body)
        assert resp.status_code == 200, resp.text
        run = resp.json()
        return wait_for(lambda: self._finished(run["id"]), timeout, what=f"workflow {run['id']}")

    def _finished(self, run_id: int) -> dict | None:
        run = self.api.get(f"/v1/workflows/{run_id}").json()
        return run if run["state"] in ("done", "failed") else None

    def chains(self, topic: str) -> list[dict]:
        return self.api.get(f"/v1/topics/{topic}").json()["chains"]


def log_end(bootstrap: str, topic: str, partition: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fedkafka-test-offsets"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        c.close()
