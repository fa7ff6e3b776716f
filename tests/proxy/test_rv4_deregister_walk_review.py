"""Reviewer rv4 on s33-ctl (a stopping proxy's deregistration walks the controller list, `_deregister_walk`).
Each test names the defect it shows; each fails on s33-ctl (no fix on this branch)."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import httpx

from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.view.model import ProxyRole

SECRET = "s" * 43
LIVE_DEADLINE = 4_000_000_000.0


def _stop_with(tmp_path, controllers: str, handle) -> float:
    """Stop a registered proxy (member 7, a live deadline saved) listing `controllers`, whose calls `handle`
    answers (or raises from): the deadline left on disk after the stop."""
    server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=9092, advertised_host="127.0.0.1",
                                     controller=controllers, token="t", view_cache=tmp_path / "view.json"))
    source = server.source
    assert source.cache is not None and source.cache.lock_for_life()
    source.cache.save_fence(LIVE_DEADLINE)
    source.client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    source.member_id, source.member_secret = 7, SECRET

    async def run() -> None:
        await server.stop()

    asyncio.run(run())
    assert source.cache._lock_fd is not None
    os.close(source.cache._lock_fd)
    source.cache._lock_fd = None
    return json.loads(source.cache.fence_path.read_text())["produce_until"]


def test_rv4_a_failed_walk_logs_the_controller_it_reached_last(tmp_path, caplog):
    """Defect [log] (commit 8147e10 "a failed call's log line names the controller it reached last"): the warning
    names `controllers.current`, which `RoundWalk.failed` has already moved on from the last controller asked,
    wrapping round to the first listed. Two controllers both refusing the connection: the walk asks a, then b,
    and the line says `at http://a failed (ConnectError)` (b's error, a's URL). An operator reading it looks at
    the wrong controller."""
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        raise httpx.ConnectError(f"{request.url.host} refused", request=request)

    caplog.set_level(logging.INFO, logger="fedkafka.proxy.view_source")
    saved = _stop_with(tmp_path, "http://a,http://b", handle)
    assert asked == ["a", "b"]
    assert saved == LIVE_DEADLINE  # never sent anywhere: put back (as designed)
    failed = [r.getMessage() for r in caplog.records if "failed (ConnectError)" in r.getMessage()]
    assert len(failed) == 1, failed
    assert "at http://b failed" in failed[0], failed[0]
