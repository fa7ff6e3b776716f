"""A single-process proxy killed (SIGKILL: no deregistration) and started again on the same view cache proves its
previous run's exit with the cache's lock, which the kernel released at that run's death: the controller records
the previous run's fence as ending at the restart's registration, so a move waits the grace after it, not the old
fence's 15 minutes (docs/DESIGN.md §4.9 F4). A second process started while the first is alive cannot take the lock
and vouches for nothing: the first's whole fence is recorded. Real processes, no Kafka."""

from __future__ import annotations

import signal
import time

import pytest

from proxy.controller_process import (
    controller_process,
    members,
    predecessor_fences,
    registered,
    start_proxy,
    stop_proxy,
    wait_for,
)
from proxy.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # a controller process and proxy processes

LEASE_MS = 3_000  # the restart registers once the killed run's lease ran out; the fence stays the default 15 min


@pytest.fixture
def controller(tmp_path):
    yield from controller_process(tmp_path, LEASE_MS)


def _first_run(api, token, tmp_path, port):
    """A proxy registered on `port` with the view cache `tmp_path`/view.json: (process, log, its member row)."""
    proc, log = start_proxy(api, token, tmp_path, port, 1, "proxy1.log")
    try:
        return proc, log, wait_for(lambda: registered(tmp_path, port, 1), what="the first run registered")[0]
    except BaseException:
        stop_proxy(proc, log)
        raise


def test_a_killed_proxys_restart_vouches_for_its_exit(controller, tmp_path):
    api, token = controller
    port = free_port()
    proc, log, (_i, old_hash, _lease, _fence, _a) = _first_run(api, token, tmp_path, port)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    stop_proxy(proc, log)
    killed = time.time()
    old_fence = members(tmp_path, port)[0][3]  # no renewal after the kill: the fence the dead run was granted

    proc, log = start_proxy(api, token, tmp_path, port, 1, "proxy2.log")
    try:
        wait_for(lambda: registered(tmp_path, port, 1, not_hashes={old_hash}), what="the restart registered")
        seen = time.time()
    finally:
        stop_proxy(proc, log)
    # the fence recorded for the killed run ends at the restart's registration, not at its own (about 15 min on)
    [recorded] = predecessor_fences(tmp_path, port)
    assert recorded is not None and killed <= recorded <= seen < old_fence
    assert "has exited; shown as our predecessor" in (tmp_path / "proxy2.log").read_text()


def test_a_second_process_while_the_first_lives_vouches_for_nothing(controller, tmp_path):
    api, token = controller
    port = free_port()
    first, first_log, (_i, old_hash, _lease, _fence, _a) = _first_run(api, token, tmp_path, port)
    try:
        first.send_signal(signal.SIGSTOP)  # alive, holding the cache's lock, silent (cut off, as far as anyone sees)
        time.sleep(1.0)  # a renewal it sent just before is answered
        old_fence = members(tmp_path, port)[0][3]
        second, second_log = start_proxy(api, token, tmp_path, port, 1, "proxy2.log")
        try:
            wait_for(lambda: registered(tmp_path, port, 1, not_hashes={old_hash}),
                     what="the second process registered once the first's lease ran out")
        finally:
            stop_proxy(second, second_log)
    finally:
        first.send_signal(signal.SIGKILL)
        stop_proxy(first, first_log)
    assert predecessor_fences(tmp_path, port) == [old_fence]  # the live first process's whole fence is waited for
    assert "is locked by another live process" in (tmp_path / "proxy2.log").read_text()
