"""A proxy stopped cleanly (SIGTERM) deregisters each of its members: real processes, no Kafka (a federation
without clusters). Its restart registers at once, while the previous run's lease would still be live, instead of
being refused (409, docs/DESIGN.md §5.2) until it runs out; its rows are counted by a move only for the grace
after it (fence ended at the deregistration) and its saved produce deadline is 0 (docs/DESIGN.md §4.9
"deregistered"). With --workers 2 each worker deregisters itself (§4.10)."""

from __future__ import annotations

import json
import time

import pytest

from proxy.controller_process import controller_process, members, registered, start_proxy, stop_proxy, wait_for
from proxy.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # a controller process and proxy processes

LEASE_MS = 120_000  # a restart refused until the previous run's lease ran out would wait minutes


@pytest.fixture
def controller(tmp_path):
    yield from controller_process(tmp_path, LEASE_MS)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sigtermed_proxy_deregisters_and_its_restart_registers_at_once(controller, tmp_path, workers):
    api, token = controller
    port = free_port()
    proc, log = start_proxy(api, token, tmp_path, port, workers, "proxy1.log")
    try:
        before = wait_for(lambda: registered(tmp_path, port, workers), what="the first run registered")
    except BaseException:
        stop_proxy(proc, log)
        raise
    stop_proxy(proc, log)
    assert proc.returncode == 0
    old_hashes = {h for _i, h, _l, _f, _a in before}
    stopped = time.time()
    after_stop = members(tmp_path, port)
    # each member's lease and fence ended at its deregistration, both then: a move counts it only for the grace
    # after it (moves.await_version; a write it gave up on at the stop may land that long, §4.1), not a grace less
    assert [(i, lease <= stopped, fence == lease) for i, _h, lease, fence, _a in after_stop] == \
        [(i, True, True) for i, *_ in before]
    caches = [tmp_path / "view.json"] + [tmp_path / f"view.json.w{i}" for i in range(1, workers)]
    assert [json.loads(c.with_name(c.name + ".fence").read_text())["produce_until"] for c in caches] == \
        [0.0] * workers  # a restart without a controller produces nothing on the old deadline

    proc, log = start_proxy(api, token, tmp_path, port, workers, "proxy2.log")
    try:
        again = wait_for(lambda: registered(tmp_path, port, workers, not_hashes=old_hashes),
                         what="the restart registered")
    finally:
        stop_proxy(proc, log)
    assert [i for i, *_ in again] == [i for i, *_ in before]  # the same members, new secrets
    # not refused (409, the previous run's live lease) until that lease ran out, minutes later
    assert "refused" not in (tmp_path / "proxy2.log").read_text()
    assert (tmp_path / "proxy1.log").read_text().count("deregistered member") == workers
