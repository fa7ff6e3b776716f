"""The proxy's saved view (fedkafka/proxy/view_cache.py): atomic files, and a proxy restarted while no controller
runs serving produce and consume from it (docs/DESIGN.md §4.7, §4.9)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.service import Controller, Settings
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

from .support import ROOT, free_port, read_partition

TOKEN = "cache-token"


def test_saved_view_round_trips_with_its_version_node_and_deadline(tmp_path):
    cache = ViewCache(tmp_path / "p.view.json", "127.0.0.1:9092")
    assert cache.load() is None
    cache.save_view(View(version=7, federation_id="f"), node_id=3)
    saved = cache.load()
    assert (saved.view.version, saved.view.federation_id, saved.node_id, saved.produce_until) == (7, "f", 3, 0.0)
    assert cache.lock_for_life()  # a deadline is used only by a holder of the lock it was saved under (§4.9 F4)
    try:
        cache.save_fence(1234.5)
        assert cache.load().produce_until == 1234.5
    finally:
        os.close(cache._lock_fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temp files left
        "p.view.json", "p.view.json.fence", "p.view.json.lock"]


def test_a_saved_view_of_another_instance_or_a_damaged_file_is_not_used(tmp_path):
    path = tmp_path / "p.view.json"
    ViewCache(path, "host-a:1").save_view(View(version=2), node_id=1)
    ViewCache(path, "host-a:1").save_fence(time.time() + 60)
    other = ViewCache(path, "host-b:1")
    assert other.load() is None  # a proxy that moved port or host is another instance: its node id is not ours
    body = json.loads(path.read_text())
    body["version"] = 3  # does not match the view inside
    path.write_text(json.dumps(body))
    assert ViewCache(path, "host-a:1").load() is None
    path.write_text(path.read_text()[:40])  # torn (what a non-atomic write could leave)
    assert ViewCache(path, "host-a:1").load() is None


def test_a_fence_of_another_instance_counts_as_none(tmp_path):
    path = tmp_path / "p.view.json"
    ViewCache(path, "a:1").save_view(View(version=2), node_id=1)
    for instance in ("b:1", "a:1"):  # each holds the lock in turn: only the instance differs
        cache = ViewCache(path, instance)
        assert cache.lock_for_life()
        if instance == "b:1":
            cache.save_fence(time.time() + 60)
        else:
            assert cache.load().produce_until == 0.0
        os.close(cache._lock_fd)


class FullDisk(ViewCache):
    """A cache whose view writes fail while `full` (ENOSPC), as on a full disk; the fence file still writes."""

    full = False

    def save_view(self, view: View, node_id: int, controllers: Sequence[str] = ()) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().save_view(view, node_id, controllers)


def test_a_view_the_proxy_could_not_save_is_not_acked_nor_its_deadline_moved(tmp_path):
    """docs/DESIGN.md §4.9 F5: the saved view covers every acked one. A view whose save failed is not acked (a
    move would seal on it while a restart of this proxy serves the older saved view, its partition unfrozen on
    the old cluster, until the saved deadline) and the saved deadline stays beside the view it went with. Once
    a save succeeds, the next heartbeat acks it. The old code acked the unsaved view and moved the deadline on."""
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'ctl.db'}"), kafka=KafkaAdmin(2.0))
    app = create_app(ctl, TOKEN, background=False)
    cache = FullDisk(tmp_path / "p.view.json", "127.0.0.1:9092")

    def acked() -> int:
        return next(p["applied_version"] for p in ctl.status()["proxies"] if p["instance_id"] == "127.0.0.1:9092")

    async def drained(_version: int) -> None:
        pass

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        source = ControllerViewSource("http://controller", TOKEN, "127.0.0.1:9092", lambda s, n: None, cache=cache)
        source.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=10)
        state = ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))
        await source.start(state)
        await source._heartbeat_once(state)
        first, deadline = state.view.version, cache.load().produce_until
        assert acked() == first and cache.load().view.version == first
        cache.full = True
        await source.client.post("http://controller/v1/proxies", headers={"Authorization": f"Bearer {TOKEN}"}, json={
            "instance_id": "other:1", "host": "other", "port": 1, "role": "pproxy", "pool": "default"})
        time.sleep(0.01)  # a later deadline, were it written
        await source._take_view(state, ctl.view, drained)  # applied and drained, its save fails
        assert state.view.version > first
        await source._heartbeat_once(state)
        assert acked() == first, "acked a view a restart would not serve"
        assert (cache.load().view.version, cache.load().produce_until) == (first, deadline)
        cache.full = False
        await source._heartbeat_once(state)  # the save succeeds now: acked
        assert acked() == state.view.version == cache.load().view.version
        assert cache.load().produce_until > deadline
        await source.client.aclose()

    try:
        asyncio.run(run())
    finally:
        ctl.stop()


# -- real processes ------------------------------------------------------------------------------------
class Services:
    """A controller (SQLite) and one proxy (role both, with a view cache) as subprocesses on fixed ports, so
    either can be stopped and started again under the same identity."""

    def __init__(self, tmp: Path, controller_args: list[str]):
        self.tmp = tmp
        (tmp / "token").write_text(TOKEN + "\n")
        self.ctl_port, self.proxy_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.ctl_port}"
        self.controller_args = controller_args
        self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        self.log = open(tmp / "services.log", "ab")  # noqa: SIM115
        self.controller: subprocess.Popen | None = None
        self.proxy: subprocess.Popen | None = None
        self.cache = tmp / "proxy" / "view.json"

    def start_controller(self) -> None:
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "fedkafka.cli", "controller", "--db", f"sqlite:///{self.tmp / 'ctl.db'}",
             "--listen", f"127.0.0.1:{self.ctl_port}", "--token-file", str(self.tmp / "token"),
             "--scan-interval", "1", *self.controller_args], stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: self.api.get("/v1/status").status_code == 200, what="controller up")

    def start_proxy(self) -> None:
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen",
             f"127.0.0.1:{self.proxy_port}", "--controller", self.url, "--token-file", str(self.tmp / "token"),
             "--view-cache", str(self.cache)], stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    @staticmethod
    def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def close(self) -> None:
        self.stop(self.proxy)
        self.stop(self.controller)
        self.api.close()
        self.log.close()

    def output(self) -> str:
        return (self.tmp / "services.log").read_text(errors="replace")


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if value := predicate():
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> list[tuple]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 30_000})
    reports: list[tuple] = []
    for i, value in enumerate(values):
        producer.produce(topic, value=value, partition=i % partitions,
                         on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset())))
    assert producer.flush(60) == 0
    return reports


def listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_proxy_restarted_while_no_controller_runs_serves_its_saved_view(kafka_clusters, unique_name, tmp_path):
    c1 = kafka_clusters[0]
    svc = Services(tmp_path, ["--lease-ms", "2000"])  # restarted after its lease, within its fence
    try:
        svc.start_controller()
        svc.api.put("/v1/clusters/c1", json={"bootstrap": c1.bootstrap, "coordination": True}).raise_for_status()
        svc.api.put(f"/v1/topics/{unique_name}", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
        svc.start_proxy()
        wait_for(lambda: any(p["port"] == svc.proxy_port for p in svc.api.get("/v1/view").json()["proxies"]),
                 what="proxy registered")
        bootstrap = f"127.0.0.1:{svc.proxy_port}"
        before = produce(bootstrap, unique_name, [b"before-%d" % i for i in range(10)], 2)
        assert all(err is None for err, _, _ in before), before
        current = svc.api.get("/v1/view").json()["version"]
        wait_for(lambda: json.loads(svc.cache.read_text())["version"] == current, 10, what="the view saved")
        saved_version = current

        svc.stop(svc.controller, signal.SIGKILL)  # no controller from here on
        svc.stop(svc.proxy)
        assert not listening(svc.proxy_port)
        started = time.monotonic()
        svc.start_proxy()
        wait_for(lambda: listening(svc.proxy_port), 30, what="the restarted proxy listening")
        print(f"proxy listening {time.monotonic() - started:.1f} s after its restart, without a controller")
        assert f"serving saved view {saved_version}" in svc.output()

        after = produce(bootstrap, unique_name, [b"after-%d" % i for i in range(10)], 2)
        assert all(err is None for err, _, _ in after), after
        values = {v for p in range(2) for _, _, v in read_partition(bootstrap, unique_name, p)}
        assert values == {b"before-%d" % i for i in range(10)} | {b"after-%d" % i for i in range(10)}

        svc.start_controller()  # it comes back: the proxy registers and follows it again
        wait_for(lambda: any(p["port"] == svc.proxy_port for p in svc.api.get("/v1/view").json()["proxies"]),
                 what="proxy registered again")
    finally:
        svc.close()
    assert svc.proxy.returncode == 0, svc.output()[-3000:]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_proxy_without_a_saved_view_waits_for_a_controller(tmp_path):
    svc = Services(tmp_path, [])
    try:
        svc.start_proxy()  # no controller, no cache: nothing to serve
        time.sleep(3)
        assert svc.proxy.poll() is None and not listening(svc.proxy_port)
        assert not os.path.exists(svc.cache)
    finally:
        svc.close()
