"""The shipped proxy: registered with a real controller, view by long-poll, heartbeats and a lease.
A proxy that cannot renew within its fence (here as short as the lease) stops taking produce requests
(docs/DESIGN.md §4.9) and resumes after."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest
from confluent_kafka import Producer
from kio.schema.errors import ErrorCode

from .support import ROOT, free_port, read_partition
from .test_fault import one_batch, raw_produce_errors

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(300)
def test_registered_proxy_produces_and_is_fenced_by_its_lease(kafka_clusters, unique_name, tmp_path):
    c1 = kafka_clusters[0]
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    ctl_port, proxy_port = free_port(), free_port()
    url = f"http://127.0.0.1:{ctl_port}"
    logs = open(tmp_path / "services.log", "wb")  # noqa: SIM115
    ctl = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                            f"sqlite:///{tmp_path / 'ctl.db'}", "--listen", f"127.0.0.1:{ctl_port}", "--token-file",
                            str(token), "--lease-ms", "1500", "--fence-ms", "1500", "--scan-interval", "0.5"],
                           stdout=logs, stderr=subprocess.STDOUT, cwd=ROOT)
    proxy = None
    try:
        api = httpx.Client(base_url=url, headers={"Authorization": "Bearer secret-token"}, timeout=30)
        wait_for(lambda: _ok(api, "/v1/status"), what="controller")
        api.put("/v1/clusters/c1", json={"bootstrap": c1.bootstrap}).raise_for_status()
        api.put(f"/v1/topics/{unique_name}", json={"partitions": 4, "placement": "blocks", "config": {}}
                ).raise_for_status()
        proxy = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "pproxy", "--listen",
                                  f"127.0.0.1:{proxy_port}", "--controller", url, "--token-file", str(token)],
                                 stdout=logs, stderr=subprocess.STDOUT, cwd=ROOT)
        view = wait_for(lambda: _view_with_proxy(api, proxy_port), what="proxy registered in the view")
        segs = {p: part["segments"][-1] for p, part in enumerate(view["topics"][0]["partitions"])}

        producer = Producer({"bootstrap.servers": f"127.0.0.1:{proxy_port}", "acks": "all",
                             "enable.idempotence": True})
        reports = []
        for i in range(40):
            producer.produce(unique_name, value=b"r%d" % i, partition=i % 4,
                             on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset())))
        assert producer.flush(60) == 0
        assert all(err is None for err, _, _ in reports), reports
        for seg in segs.values():
            cluster, topic, partition = seg[0], seg[1], seg[2]
            assert cluster == "c1"
            assert len(read_partition(c1.bootstrap, topic, partition)) == 10

        ctl.send_signal(signal.SIGSTOP)  # controller silent: heartbeats fail, the fence (1.5 s) runs out
        try:
            time.sleep(3.0)
            errors = raw_produce_errors(proxy_port, unique_name, [0], one_batch())
            assert errors[0] == ErrorCode.not_leader_or_follower
        finally:
            ctl.send_signal(signal.SIGCONT)
        wait_for(lambda: raw_produce_errors(proxy_port, unique_name, [0], one_batch())[0] == ErrorCode.none,
                 what="produce accepted after the lease is renewed")
    finally:
        for proc in (proxy, ctl):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        logs.close()
    assert proxy.returncode == 0  # clean SIGTERM shutdown


def _ok(api: httpx.Client, path: str) -> bool:
    try:
        return api.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def _view_with_proxy(api: httpx.Client, port: int):
    view = api.get("/v1/view").json()
    if any(p["port"] == port for p in view.get("proxies", [])) and view.get("topics"):
        return view
    return None
