"""Background tasks of a proxy are supervised: a view stream that dies on an unexpected exception is restarted,
finishes the view it was taking (drain + ack), keeps following the controller, and shows in /healthz and
/metrics. Before, the stream task died for good while heartbeats kept the lease: the view went stale.

A real controller (subprocess, SQLite) and a real proxy (in-process, so the fault can be injected into the
code the stream runs on each view: a state listener)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from proxy.support import free_port

from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.view.model import ProxyRole
from observe.support import TOKEN


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def _new_view(url: str, name: str) -> int:
    """Another proxy registers: the controller publishes a new view."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        (await api.post("/v1/proxies", json={"instance_id": name, "host": "127.0.0.1", "port": free_port(),
                                             "role": "cproxy"})).raise_for_status()
        return (await api.get("/v1/view")).json()["version"]


async def _until(predicate, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _until_scraped(http: httpx.AsyncClient, url: str, lines: list[str], timeout: float = 60.0) -> str:
    """The text at `url` once it holds every line (the controller scans and hears acks in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        text = (await http.get(url)).text
        missing = [line for line in lines if line not in text]
        if not missing:
            return text
        assert loop.time() < deadline, f"{url} still lacks {missing}"
        await asyncio.sleep(0.5)


async def _proxy_with_a_faulty_listener(url: str, **config) -> tuple[ProxyServer, socket.socket, list[int]]:
    sock = _listening_socket()
    server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=sock.getsockname()[1],
                                     advertised_host="127.0.0.1", controller=url, token=TOKEN, **config))
    await server.start(sock)
    first = server.state.view.version
    failed: list[int] = []

    def fails_once(view) -> None:  # code the stream runs for every new view; it fails once, unexpectedly
        if view.version > first and not failed:
            failed.append(view.version)
            raise RuntimeError("injected fault while taking a view")

    server.state.listeners.append(fails_once)
    return server, sock, failed


@pytest.mark.integration  # a controller process
@pytest.mark.slow
def test_a_view_stream_that_dies_is_restarted_and_acks_the_view_it_was_taking(controller):
    async def scenario():
        server, sock, failed = await _proxy_with_a_faulty_listener(controller)
        try:
            broken = await _new_view(controller, "other-1")
            await _until(lambda: failed, "the fault")
            # the restarted stream finishes the view it died on: drained and acked, not left for a later one
            await _until(lambda: server.state.applied_version >= broken, f"view {broken} acked after the fault")
            later = await _new_view(controller, "other-2")
            await _until(lambda: server.state.applied_version >= later, f"view {later} applied after the fault")
        finally:
            await server.stop()
            sock.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_restarted_task_shows_in_healthz_and_metrics(controller, kafka_clusters):
    """Also the controller's own /metrics with a real cluster and this real proxy following its stream."""
    c1 = kafka_clusters[0]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpx.put(f"{controller}/v1/clusters/c1", json={"bootstrap": c1.bootstrap}, headers=auth,
              timeout=60).raise_for_status()

    async def scenario():
        server, sock, _ = await _proxy_with_a_faulty_listener(controller, admin_listen=("127.0.0.1", 0))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.admin.port}") as http:
                assert (await http.get("/readyz")).status_code == 200
                broken = await _new_view(controller, "other-1")
                await _until(lambda: server.state.applied_version >= broken, f"view {broken} acked")
                health = await http.get("/healthz")
                assert health.status_code == 200
                stream = health.json()["tasks"]["view-stream"]
                assert stream["running"] and stream["restarts"] == 1
                assert "injected fault" in stream["last_error"]
                metrics = (await http.get("/metrics")).text
                assert 'fedkafka_task_restarts_total{task="view-stream"} 1.0' in metrics
                assert 'fedkafka_task_restarts_total{task="heartbeat"} 0.0' in metrics
                assert 'fedkafka_task_running{task="metadata-refresh"} 1.0' in metrics
                assert f"fedkafka_proxy_applied_view_version {float(broken)}" in metrics
                assert "fedkafka_proxy_lease_valid 1.0" in metrics
                await _until(lambda: server.state.applied_version == server.state.view.version, "acked")
                version = server.state.applied_version
                ctl = await _until_scraped(http, f"{controller}/metrics", [
                    f'fedkafka_view_subscribers{{version="{version}"}} 1.0',
                    'fedkafka_cluster_reachable{cluster="c1"} 1.0', "fedkafka_controller_active 1.0",
                    f"fedkafka_view_version {float(version)}"])
                assert 'fedkafka_scan_seconds_count{cluster="c1"}' in ctl
        finally:
            await server.stop()
            sock.close()

    asyncio.run(scenario())
