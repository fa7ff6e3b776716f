"""Test support for a proxy run with --workers N: its worker processes and each worker's admin listener."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import httpx


def worker_pids(parent: int) -> list[int]:
    """The live children of `parent` (the workers), oldest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z" and _is_worker(entry):
            found.append((int(fields[19]), int(entry.name)))  # (start time, pid)
    return [pid for _, pid in sorted(found)]


def _is_worker(proc: Path) -> bool:
    """A spawned worker, not multiprocessing's resource tracker (also a child of the parent)."""
    try:
        return b"spawn_main" in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def free_port_pair() -> int:
    """A port P such that P and P + 1 are free (worker i's admin listener is on P + i)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def produce_requests(admin_port: int) -> int:
    """Produce requests worker (with admin listener `admin_port`) has served."""
    text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=10).text
    return sum(int(float(n)) for n in re.findall(r'^fedkafka_proxy_requests_total\{api="Produce"[^}]*\} (\S+)$',
                                                 text, re.M))


def kill(pid: int) -> None:
    os.kill(pid, 9)
