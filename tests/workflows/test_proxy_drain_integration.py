"""A proxy drained, restarted and given its leadership back under keyed load (docs/DESIGN.md §4.11), what
rolling_restart.yml does to each proxy: two proxies over two single-node clusters, real clients (the checker)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from fedkafka.checker import Checker, CheckerConfig
from fedkafka.kafka.cluster import free_port

from .support import ROOT, Federation, assert_as_promised, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _metric(admin: int, name: str, label: str) -> int:
    text = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    return sum(int(float(n)) for n in re.findall(rf'^{name}{{[^}}]*{label}[^}}]*}} (\S+)$', text, re.M))


def _produced_upstream(admin: int) -> int:
    """Record bytes the proxy sent to the physical clusters: what it forwarded of its clients' produce."""
    return _metric(admin, "fedkafka_proxy_cluster_bytes_total", 'direction="out"')


def _ready(admin: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _all_applied(fed: Federation, version: int, nodes: int) -> bool:
    proxies = fed.api.get("/v1/status").json()["proxies"]
    return len(proxies) == nodes and all(p["applied_version"] >= version for p in proxies)


def _start_proxy(fed: Federation, port: int, admin: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fedkafka.cli", "proxy", "--role", "both", "--listen", f"127.0.0.1:{port}",
         "--controller", fed.url, "--token-file", str(fed.token_file), "--admin-listen", f"127.0.0.1:{admin}"],
        stdout=fed._log, stderr=subprocess.STDOUT, cwd=ROOT)


@pytest.mark.timeout(400)
def test_a_drained_proxy_gets_no_produce_and_its_restart_loses_nothing(kafka_clusters, tmp_path, unique_name):
    """Drain B: once every proxy applied the view without it, B forwards no produce at all (its clients were
    refused with NOT_LEADER_OR_FOLLOWER and went to A), while A takes the whole load. Then B is stopped and
    started again (still drained: the drain outlives a restart) and given its leadership back. Nothing acked is
    lost, per-key order holds, and no idempotent producer writes a duplicate: B had nothing in flight when it
    stopped, unlike a proxy that dies under load (docs/DESIGN.md §5.3)."""
    c1, c2, _ = kafka_clusters
    # the service defaults' lease (10 s) and a long fence: a lease lost on a loaded machine moves leadership on its
    # own, disorderly (duplicates, docs/DESIGN.md §5.3), and would hide what the drain does
    fed = Federation(tmp_path, lease_ms=10_000, fence_ms=600_000)
    admin_a, admin_b = free_port(), free_port()
    try:
        fed.start_controller()
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 8, coordination="c1")
        fed.start_proxies(1, extra=("--admin-listen", f"127.0.0.1:{admin_a}"))
        fed.start_proxies(1, extra=("--admin-listen", f"127.0.0.1:{admin_b}"))
        (_, port_a), (proc_b, port_b) = fed.proxies
        node_b = next(p["node_id"] for p in fed.api.get("/v1/status").json()["proxies"] if p["port"] == port_b)
        wait_for(lambda: _ready(admin_a) and _ready(admin_b), 120, what="both proxies ready")
        checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=unique_name, producers=6, consumers=2,
                                        rate=40, idempotent=(True, False))).start()
        # B leads partitions and takes writes before the drain (its clients start within a minute on a busy machine)
        wait_for(lambda: _produced_upstream(admin_b) > 0 and _produced_upstream(admin_a) > 0, 90,
                 what="writes through both proxies")
        time.sleep(3)

        checker.mark("drain B")
        drained = fed.api.post(f"/v1/proxies/{node_b}/drain")
        assert drained.status_code == 200, drained.text
        version = drained.json()["view_version"]
        wait_for(lambda: _all_applied(fed, version, 2), 60, interval=0.05, what="both proxies applied the drain")
        b_at_drain, a_at_drain = _produced_upstream(admin_b), _produced_upstream(admin_a)
        view = fed.api.get("/v1/view").json()
        assert [p["port"] for p in view["proxies"]] == [port_a] and view["draining"] == [node_b]
        time.sleep(8)
        b_after, a_after = _produced_upstream(admin_b), _produced_upstream(admin_a)
        refused = _metric(admin_b, "fedkafka_proxy_refusals_total", 'reason="draining"')
        print(f"B forwarded {b_after - b_at_drain} bytes after the drain applied ({refused} parts refused); "
              f"A {a_after - a_at_drain}")
        assert b_after == b_at_drain  # no produce reached a cluster through B once it applied the drained view
        assert a_after > a_at_drain  # the load went on, through A

        checker.mark("restart B")
        proc_b.send_signal(signal.SIGTERM)
        proc_b.wait(30)
        proc_b = _start_proxy(fed, port_b, admin_b)
        fed.proxies[1] = (proc_b, port_b)
        # ready once it registered again and holds the view (the old process is gone: this is the new one)
        wait_for(lambda: _ready(admin_b), 180, what="B registered again and serving")
        now = fed.api.get("/v1/status").json()["view_version"]
        wait_for(lambda: _all_applied(fed, now, 2), 60, what="both proxies on the current view")
        assert _produced_upstream(admin_b) == 0  # the new process, drained from its start, forwarded nothing
        status = {p["node_id"]: p for p in fed.api.get("/v1/status").json()["proxies"]}
        assert status[node_b]["draining"] is True  # the restart did not end the drain

        checker.mark("undrain B")
        back = fed.api.post(f"/v1/proxies/{node_b}/undrain").json()
        wait_for(lambda: _all_applied(fed, back["view_version"], 2), 60, what="both proxies applied the undrain")
        assert sorted(p["port"] for p in fed.api.get("/v1/view").json()["proxies"]) == sorted([port_a, port_b])
        time.sleep(4)
        report = checker.stop(drain_timeout=90)
        assert_as_promised(report, fed)
        # a drain moves leadership, but as a handover: nothing written twice (docs/DESIGN.md §4.11)
        assert report["duplicates_idempotent"] == 0, report["duplicates_idempotent"]
    finally:
        fed.stop()
