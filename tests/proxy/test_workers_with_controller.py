"""`fedkafka proxy --workers 2 --controller`: real processes, no Kafka (a federation without clusters).

Every worker registers as a member of one node (clients see one broker), acks each view itself, and one that dies
is started again by the parent as the same member (docs/DESIGN.md §4.10)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time

import pytest

from proxy.controller_process import controller_process, start_proxy, stop_proxy, wait_for
from proxy.support import free_port
from proxy.workers import kill, worker_pids

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # a controller process and proxy workers


@pytest.fixture
def controller(tmp_path):
    yield from controller_process(tmp_path, 2000)


def _secret_hash(tmp_path, instance_id: str) -> str | None:
    """The hash of the member secret the latest registration of `instance_id` was given (the controller's db)."""
    with contextlib.closing(sqlite3.connect(tmp_path / "ctl.db")) as db:
        row = db.execute("SELECT secret_hash FROM proxies WHERE instance_id = ?", (instance_id,)).fetchone()
    return row[0] if row else None


def _predecessor_fence(tmp_path, instance_id: str) -> float | None:
    """The previous process's fence a takeover of `instance_id` recorded (docs/DESIGN.md §4.9 F4), None if none."""
    with contextlib.closing(sqlite3.connect(tmp_path / "ctl.db")) as db:
        row = db.execute("SELECT predecessor_fence_expires FROM proxies WHERE instance_id = ?",
                         (instance_id,)).fetchone()
    return row[0] if row else None


def _node(api, port: int) -> dict | None:
    """The status entry of the proxy on `port`, once both its workers applied the current view."""
    status = api.get("/v1/status").json()
    found = [p for p in status["proxies"] if p["port"] == port]
    if len(found) != 1 or len(found[0].get("workers", [])) != 2:
        return None
    return found[0] if all(w["applied_version"] == status["view_version"] for w in found[0]["workers"]) else None


def test_workers_register_as_one_node_and_a_dead_one_comes_back_as_itself(controller, tmp_path):
    api, token = controller
    port = free_port()
    proxy, log = start_proxy(api, token, tmp_path, port, 2, "proxy.log")
    try:
        node = wait_for(lambda: _node(api, port), what="both workers registered")
        view = api.get("/v1/view").json()
        assert [p["node_id"] for p in view["proxies"]] == [node["node_id"]]  # one broker for clients
        assert (tmp_path / "view.json").is_file() and (tmp_path / "view.json.w1").is_file()  # one cache each
        first, second = worker_pids(proxy.pid)

        first_secret = _secret_hash(tmp_path, f"127.0.0.1:{port}/w1")
        assert first_secret is not None
        kill(second)  # worker 1 dies: the parent starts it again, and it registers as the same member
        # once its previous run's lease ran out (docs/DESIGN.md §5.2), with a secret of its own
        wait_for(lambda: _secret_hash(tmp_path, f"127.0.0.1:{port}/w1") not in (None, first_secret),
                 what="worker 1's new process registered")
        wait_for(lambda: len(worker_pids(proxy.pid)) == 2 and worker_pids(proxy.pid)[0] == first
                 and second not in worker_pids(proxy.pid), what="worker 1 started again")
        again = wait_for(lambda: _node(api, port), what="worker 1 registered again")
        assert again["node_id"] == node["node_id"]
        assert [w["worker"] for w in again["workers"]] == [0, 1]  # the same two members, no third row
        assert "exited with -9; starting it again" in (tmp_path / "proxy.log").read_text()
        # the parent vouched for the dead process's exit (its secret): its fence is recorded as ending at the
        # registration, not the 15 min it had left, so a move waits out the grace only (§4.10)
        recorded = _predecessor_fence(tmp_path, f"127.0.0.1:{port}/w1")
        assert recorded is not None and recorded <= time.time()
        workers = worker_pids(proxy.pid)
    finally:
        stop_proxy(proxy, log)
    assert proxy.returncode == 0
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]  # SIGTERM stopped every worker
