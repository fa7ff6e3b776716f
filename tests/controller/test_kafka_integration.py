"""The controller as a real process against real Kafka clusters: physical topics, dead clusters, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from fedkafka.kafka.cluster import free_port

pytestmark = pytest.mark.integration

TOKEN = "integration-token"


class ControllerProcess:
    def __init__(self, tmp: Path, db: str, scan_interval: float = 1.0):
        self.tmp, self.db, self.scan_interval = tmp, db, scan_interval
        self.token_file = tmp / "token"
        self.token_file.write_text(TOKEN)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ControllerProcess:
        self.log = open(self.tmp / f"controller-{time.time_ns()}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db", self.db,
                                      "--listen", f"127.0.0.1:{self.port}", "--token-file", str(self.token_file),
                                      "--scan-interval", str(self.scan_interval)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        # Active, not only up: a controller restarted on another port stands by until the leader row its dead
        # predecessor left runs out (--leader-lease-ms, 10 s; docs/DESIGN.md §3.6), answering 503 meanwhile.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / self.log.name).read_text()
            try:
                if httpx.get(self.url + "/v1/view", headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("controller did not become active")

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "FEDKAFKA_CONTROLLER_URL": self.url, "FEDKAFKA_TOKEN": TOKEN}
        return subprocess.run([sys.executable, "-m", "fedkafka.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.log.close()
        return self.proc.returncode if self.proc else 0


@pytest.fixture
def controller(tmp_path):
    started: list[ControllerProcess] = []

    def _start(db: str | None = None, **kw) -> ControllerProcess:
        c = ControllerProcess(tmp_path, db or f"sqlite:///{tmp_path / 'c.db'}", **kw).start()
        started.append(c)
        return c

    yield _start
    for c in started:
        c.stop(signal.SIGKILL)


def physical_topics(bootstrap: str) -> dict[str, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items()}


def test_topic_create_through_the_cli_makes_real_physical_and_shadow_topics(kafka_clusters, controller, unique_name):
    c1, c2, _ = kafka_clusters
    ctl = controller()
    for c in (c1, c2):
        res = ctl.cli("cluster", "add", c.name, "--bootstrap", c.bootstrap)
        assert res.returncode == 0, res.stderr
    v_before = json.loads(ctl.cli("view", "show", "--json").stdout)["version"]
    res = ctl.cli("topic", "create", unique_name, "--partitions", "8", "--config", "retention.ms=3600000")
    assert res.returncode == 0, res.stderr
    assert physical_topics(c1.bootstrap)[unique_name] == 4
    assert physical_topics(c2.bootstrap)[unique_name] == 4
    assert physical_topics(c1.bootstrap)[f"__fedkafka-shadow-{unique_name}"] == 8
    topic = json.loads(ctl.cli("topic", "describe", unique_name, "--json").stdout)
    assert [(c["segments"][0]["cluster"], c["segments"][0]["partition"]) for c in topic["chains"]] == \
        [("c1", i) for i in range(4)] + [("c2", i) for i in range(4)]
    # the view served holds the topic, numbered past the one before. Not `v_before + 1`: one lease after it took the
    # leader row a controller owes one view of the same content (`_owe_predecessors_version`, docs/DESIGN.md §5.1),
    # due here around the create. One view per create: test_api.py::test_article_layout_creates_physical_and_shadow_...
    after = json.loads(ctl.cli("view", "show", "--json").stdout)
    assert after["version"] > v_before and unique_name in {t["name"] for t in after["topics"]}
    # the scan reads log offsets: 5 records written to c2's physical partition 1 = logical partition 5
    producer = Producer({"bootstrap.servers": c2.bootstrap})
    for i in range(5):
        producer.produce(unique_name, value=b"x%d" % i, partition=1)
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 15
    while True:
        seg = json.loads(ctl.cli("topic", "describe", unique_name, "--json").stdout)["chains"][5]["segments"][0]
        if seg.get("physical_log_end") == 5:
            break
        assert time.monotonic() < deadline, seg
        time.sleep(0.5)
    assert seg["logical_end"] == 5 and seg["physical_log_start"] == 0
    # a config Kafka refuses: a clear message, no topic in the federation
    res = ctl.cli("topic", "create", unique_name + "-bad", "-p", "2", "--config", "no.such.setting=1")
    assert res.returncode == 1 and "no.such.setting" in res.stderr
    assert unique_name + "-bad" not in {t["name"] for t in json.loads(ctl.cli("topic", "list", "--json").stdout)}
    status = json.loads(ctl.cli("status", "--json").stdout)
    assert status["topics"] >= 1 and status["coordination_cluster"] == "c1"
    assert ctl.stop() == 0  # SIGTERM: clean exit


def until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_a_physical_topic_deleted_with_its_records_is_not_created_again(kafka_clusters, controller, unique_name):
    """Real brokers: c2's physical topic took records (the scan read its end), then is deleted behind the federation's
    back (as a lost disk leaves it): the scans leave it missing and report it; c1's, never written, is created again
    (docs/DESIGN.md §9.3)."""
    c1, c2, _ = kafka_clusters
    ctl = controller()
    for c in (c1, c2):
        assert ctl.cli("cluster", "add", c.name, "--bootstrap", c.bootstrap).returncode == 0
    assert ctl.cli("topic", "create", unique_name, "--partitions", "4").returncode == 0
    producer = Producer({"bootstrap.servers": c2.bootstrap})
    for i in range(3):
        producer.produce(unique_name, value=b"x%d" % i, partition=0)
    assert producer.flush(10) == 0

    def end_read() -> bool:
        chains = json.loads(ctl.cli("topic", "describe", unique_name, "--json").stdout)["chains"]
        return chains[2]["segments"][0].get("physical_log_end") == 3
    until(end_read, "the scan did not read c2's log end")
    for c in (c1, c2):
        admin = AdminClient({"bootstrap.servers": c.bootstrap})  # kept: the future needs its handle
        admin.delete_topics([unique_name])[unique_name].result(30)
    until(lambda: physical_topics(c1.bootstrap).get(unique_name) == 2, "c1's empty topic not created again", 60)
    with ctl.api() as api:
        until(lambda: api.get("/v1/status").json()["lost_topics"].get("c2") == [unique_name], "c2's not reported")
        assert 'fedkafka_physical_topics_lost{cluster="c2"} 1.0' in api.get("/metrics").text
    time.sleep(3)  # three more scans
    assert unique_name not in physical_topics(c2.bootstrap)
    log = (ctl.tmp / ctl.log.name).read_text()
    assert f"cluster c2 lost physical topic {unique_name}, which held data: NOT re-created" in log


def test_a_dead_cluster_is_marked_unreachable_within_seconds(make_clusters, kafka_clusters, controller):
    (dead,) = make_clusters("d1")
    ctl = controller(scan_interval=1.0)
    with ctl.api() as api:
        api.put("/v1/clusters/c1", json={"bootstrap": kafka_clusters[0].bootstrap}).raise_for_status()
        api.put("/v1/clusters/d1", json={"bootstrap": dead.bootstrap}).raise_for_status()
        assert {c["id"]: c["reachable"] for c in api.get("/v1/view").json()["clusters"]} == {"c1": True, "d1": True}
        dead.kill()
        killed = time.monotonic()
        while True:
            reach = {c["id"]: c["reachable"] for c in api.get("/v1/view").json()["clusters"]}
            if not reach["d1"]:
                break
            assert time.monotonic() - killed < 10, "dead cluster still reachable in the view after 10 s"
            time.sleep(0.2)
        print(f"dead cluster marked unreachable after {time.monotonic() - killed:.1f} s")
        assert reach["c1"] is True
        assert api.get("/v1/status").json()["unreachable"] == ["d1"]
        time.sleep(3)  # several more scans of a dead cluster: the controller keeps serving
        assert ctl.proc.poll() is None and api.get("/v1/status").status_code == 200
        res = api.put("/v1/clusters/d2", json={"bootstrap": dead.bootstrap})  # registering a dead one is allowed
        assert res.status_code == 200 and res.json()["cluster"]["reachable"] is False


def test_kill_9_mid_operation_loses_nothing(kafka_clusters, controller, tmp_path, unique_name):
    c1, c2, c3 = kafka_clusters
    db = f"sqlite:///{tmp_path / 'crash.db'}"
    ctl = controller(db=db)
    with ctl.api() as api:
        for c in (c1, c2, c3):
            api.put(f"/v1/clusters/{c.name}", json={"bootstrap": c.bootstrap}).raise_for_status()
    acked: list[str] = []
    versions: list[int] = []
    stop = threading.Event()

    def create_topics():
        with ctl.api() as api:
            for i in range(200):
                if stop.is_set():
                    return
                name = f"{unique_name}-{i}"
                try:
                    res = api.put(f"/v1/topics/{name}", json={"partitions": 3, "placement": "balanced"})
                except httpx.HTTPError:
                    return  # the controller died under us
                if res.status_code == 200:
                    acked.append(name)
                    versions.append(api.get("/v1/view").json()["version"])

    worker = threading.Thread(target=create_topics)
    worker.start()
    while len(acked) < 4:
        time.sleep(0.05)
    ctl.stop(signal.SIGKILL)
    stop.set()
    worker.join(30)
    again = controller(db=db)
    with again.api() as api:
        view = api.get("/v1/view").json()
        assert view["version"] >= max(versions)
        topics = {t["name"]: t for t in view["topics"]}
        for name in acked:
            assert name in topics, f"acknowledged topic {name} lost by kill -9"
        for t in topics.values():
            chains = t["partitions"]
            assert len(chains) == 3 and all(len(c["segments"]) == 1 and c["segments"][0][4] is None for c in chains)
        # the scan re-creates any physical topic the crash left out
        deadline = time.monotonic() + 20
        missing = None
        while time.monotonic() < deadline:
            have = {c.name: physical_topics(c.bootstrap) for c in (c1, c2, c3)}
            missing = [(seg[0], seg[1]) for t in topics.values() for ch in t["partitions"] for seg in ch["segments"]
                       if seg[1] not in have[seg[0]]]
            missing += [n for n in topics if f"__fedkafka-shadow-{n}" not in have["c1"]]
            if not missing:
                break
            time.sleep(0.5)
        assert not missing
        print(f"{len(acked)} topics acked before kill -9; {len(topics)} present after restart, view {view['version']}")
