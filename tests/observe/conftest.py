"""A real controller (subprocess on SQLite) for the observability tests."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from proxy.support import ROOT, free_port

from observe.support import TOKEN


@pytest.fixture
def controller(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    log = open(tmp_path / "controller.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                             f"sqlite:///{tmp_path / 'ctl.db'}", "--listen", f"127.0.0.1:{port}", "--token-file",
                             str(token), "--lease-ms", "60000", "--scan-interval", "5"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "controller.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
