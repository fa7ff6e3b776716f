"""Test support for real processes without Kafka: a controller process on a SQLite file and `fedkafka proxy
--workers N --controller` processes registering with it (tests/proxy/test_workers_with_controller.py,
test_deregister_restart.py, test_killed_restart_exit_proof.py)."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from proxy.support import ROOT, free_port
from proxy.workers import kill, worker_pids

TOKEN = "secret-token"


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    """`predicate`'s first true value, asked every 0.2 s (an HTTP error counts as not yet)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            value = predicate()
            if value:
                return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def controller_process(tmp_path: Path, lease_ms: int) -> Iterator[tuple[httpx.Client, Path]]:
    """The body of a fixture (`yield from` it): a controller process on `tmp_path`/ctl.db with leases of
    `lease_ms`; yields (a client of its API with the token, the token file), stops it with SIGTERM after the test."""
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\n")
    port = free_port()
    log = open(tmp_path / "controller.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                             f"sqlite:///{tmp_path / 'ctl.db'}", "--listen", f"127.0.0.1:{port}", "--token-file",
                             str(token), "--lease-ms", str(lease_ms)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=30)
    try:
        wait_for(lambda: api.get("/v1/status").status_code == 200, what="controller up")
        yield api, token
    finally:
        api.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def members(tmp_path, port: int) -> list[tuple[str, str | None, float, float, int]]:
    """(instance id, secret hash, lease expiry, fence expiry, applied version) of the proxy on `port`'s members."""
    with contextlib.closing(sqlite3.connect(tmp_path / "ctl.db")) as db:
        return db.execute("SELECT instance_id, secret_hash, lease_expires, fence_expires, applied_version "
                          "FROM proxies WHERE instance_id LIKE ? AND role != '' ORDER BY instance_id",
                          (f"127.0.0.1:{port}%",)).fetchall()


def registered(tmp_path, port: int, workers: int, not_hashes: set = frozenset()):
    """Its members, once each holds a live lease under a secret not among `not_hashes`."""
    found = members(tmp_path, port)
    now = time.time()
    if len(found) == workers and all(h is not None and h not in not_hashes and lease > now
                                     for _i, h, lease, _f, _a in found):
        return found
    return None


def predecessor_fences(tmp_path, port: int) -> list[float | None]:
    """The predecessor fence each member of the proxy on `port` recorded at its latest takeover (docs/DESIGN.md §4.9
    F4), in `members`' order."""
    with contextlib.closing(sqlite3.connect(tmp_path / "ctl.db")) as db:
        return [f for (f,) in db.execute("SELECT predecessor_fence_expires FROM proxies WHERE instance_id LIKE ? "
                                         "AND role != '' ORDER BY instance_id", (f"127.0.0.1:{port}%",))]


def start_proxy(api: httpx.Client, token: Path, tmp_path: Path, port: int, workers: int,
                log_name: str) -> tuple[subprocess.Popen, IO[bytes]]:
    """`fedkafka proxy --role both --workers N --controller` on `port`, its view cache `tmp_path`/view.json, its
    output in `tmp_path`/`log_name`: (the parent process, its open log)."""
    log = open(tmp_path / log_name, "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
                             f"127.0.0.1:{port}", "--controller", str(api.base_url), "--token-file", str(token),
                             "--workers", str(workers), "--view-cache", str(tmp_path / "view.json")],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, log


def stop_proxy(proc: subprocess.Popen, log: IO[bytes]) -> None:
    """SIGTERM to the parent and a wait for its exit (its returncode is set); whatever worker or parent is still
    alive after that is killed, so none outlives the test."""
    left = worker_pids(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    finally:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                kill(pid)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        log.close()
