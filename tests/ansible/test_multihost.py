"""The bundle on real hosts: 9 network namespaces with their own sshd (scripts/multihost.py), the playbooks over
SSH, clients in the root namespace, then nothing left behind.

The scenarios share one federation and run in file order: site.yml converges (and changes nothing the second
time), then scale_up.yml, decommission.yml, rolling_restart.yml and upgrade.yml each run under keyed load
(`fedkafka check` through the name service) and report 0 lost, 0 order violations. The hosts go down at the end
of the module, whatever failed.

Heavy (7 Kafka JVMs) and needs root: runs only with FEDKAFKA_MULTIHOST=1 (`make test-multihost`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HARNESS = [sys.executable, str(ROOT / "scripts" / "multihost.py")]
HOSTS_ROOT = Path(os.environ.get("FEDKAFKA_HOSTS_ROOT", "/tmp/fedkafka-hosts"))
INVENTORY = str(HOSTS_ROOT / "inventory.yml")
STATE = ROOT / ".fedkafka" / "multihost.json"
RECORDS = 300
CHECK_TOPIC = "fedkafka-check"

pytestmark = [
    pytest.mark.integration, pytest.mark.slow, pytest.mark.ansible, pytest.mark.multihost,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.environ.get("FEDKAFKA_MULTIHOST") != "1" or os.geteuid() != 0,
                       reason="needs root and FEDKAFKA_MULTIHOST=1 (make test-multihost)"),
]


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    return proc.stdout


def playbook(name: str, *args: str) -> dict[str, int]:
    """Runs playbooks/<name> on the hosts' inventory; returns changed= of each host of the recap."""
    out = run([str(BIN / "ansible-playbook"), "-i", INVENTORY, f"playbooks/{name}", *args])
    return recap(out)


def recap(out: str) -> dict[str, int]:
    return {host: int(changed) for host, changed in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", out, re.M)}


def changed_hosts(counts: dict[str, int]) -> dict[str, int]:
    return {h: c for h, c in counts.items() if c}


def leftovers() -> dict[str, str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return {
        "namespaces": " ".join(n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                         text=True).stdout.split() if n.startswith("fkmh-")),
        "sshd": " ".join(line for line in ps.splitlines() if "fedkafka-hosts" in line and "sshd" in line),
        "kafka": " ".join(line for line in ps.splitlines() if "kafka.Kafka" in line and "fedkafka-hosts" in line),
        "bridge": subprocess.run(["ip", "-br", "link", "show", "fkmh0"], capture_output=True, text=True).stdout,
    }


@pytest.fixture(scope="module")
def hosts():
    """The 9 hosts with site.yml converged once; down at the end of the module even when a scenario failed."""
    run([*HARNESS, "down"])
    try:
        run([*HARNESS, "up", "--hosts", "9"])
        run([sys.executable, "-c", "from fedkafka.kafka.dist import ensure_kafka; ensure_kafka()"])
        first = playbook("site.yml")
        yield first
    finally:
        subprocess.run([*HARNESS, "down"], cwd=ROOT, env=env(), capture_output=True, text=True)
        assert leftovers() == {"namespaces": "", "sshd": "", "kafka": "", "bridge": ""}
        assert not STATE.exists()


def controller(path: str):
    state = json.loads(STATE.read_text())
    token = Path(state["token_file"]).read_text().strip()
    req = urllib.request.Request(state["controller"] + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def active_clusters(topic: str) -> dict[str, int]:
    """How many of the topic's partitions write to each cluster."""
    counts: dict[str, int] = {}
    for chain in controller(f"/v1/topics/{topic}")["chains"]:
        last = chain["segments"][-1] if isinstance(chain, dict) else chain[-1]
        cluster = last["cluster"] if isinstance(last, dict) else last[0]
        counts[cluster] = counts.get(cluster, 0) + 1
    return counts


class Load:
    """`fedkafka check` through the name service while a playbook runs; SIGINT ends it (then it drains)."""

    def __init__(self):
        state = json.loads(STATE.read_text())
        self.proc = subprocess.Popen(
            [str(BIN / "fedkafka"), "check", "--bootstrap", state["bootstrap"], "--controller", state["controller"],
             "--token-file", state["token_file"], "--topic", CHECK_TOPIC, "--duration", "3600", "--rate", "50",
             "--json"], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(15)  # producing and consuming before the playbook starts
        assert self.proc.poll() is None, self.proc.communicate()

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=300)
        report = json.loads(out[out.index("{"):])
        assert report["acked"] > 0, err[-3000:]
        forget_checker_groups()
        return report


def forget_checker_groups() -> None:
    """Delete the finished checker's consumer group, through the proxies, as an operator deletes an abandoned
    group: `decommission.yml -e drain=true` waits for every group that reads a topic to commit past the seals,
    and a group nobody runs any more never does."""
    admin = AdminClient({"bootstrap.servers": json.loads(STATE.read_text())["bootstrap"],
                         "client.id": "consumer-multihost-admin"})
    groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=30).result(timeout=40).valid
              if g.group_id.startswith("checker-")]
    for future in admin.delete_consumer_groups(groups, request_timeout=30).values() if groups else ():
        future.result(timeout=40)


def assert_nothing_lost(report: dict) -> None:
    summary = {k: report[k] for k in ("acked", "consumed", "lost", "order_violations", "produce_errors",
                                      "error_kinds", "client_failures")}
    print("checker:", json.dumps(summary))  # the run's figures (`make test-multihost` shows them: -rP)
    assert (report["lost"], report["order_violations"], report["client_failures"]) == (0, 0, []), summary


def round_trip(bootstrap: str) -> set[str]:
    """Produces RECORDS keyed records and consumes them back, both through the name service."""
    keys = {f"k{i}" for i in range(RECORDS)}
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": "producer-multihost", "acks": "all"})
    for key in sorted(keys):
        producer.produce("demo", key=key, value=key.encode())
    assert producer.flush(60) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "client.id": "consumer-multihost",
                         "group.id": f"multihost-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe(["demo"])
    seen: set[str] = set()
    deadline = time.monotonic() + 90
    while not keys <= seen and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            seen.add(msg.key().decode())
    consumer.close()
    return seen & keys


def test_site_converges_over_ssh_and_a_second_run_changes_nothing(hosts):
    assert len(hosts) == 13, hosts  # localhost + 6 brokers + controller + name service + 4 proxies
    assert changed_hosts(playbook("site.yml")) == {}
    run([*HARNESS, "describe"])
    state = json.loads(STATE.read_text())
    assert state["inventory"] == INVENTORY
    assert len(round_trip(state["bootstrap"])) == RECORDS


def test_scale_up_onto_c3_on_its_own_host_under_load(hosts):
    load = Load()
    try:
        first = playbook("scale_up.yml", "-e", "cluster=c3")
        assert first.get("c3-broker1", 0) > 0 and first.get("controller", 0) > 0, first
        assert active_clusters(CHECK_TOPIC).get("c3", 0) > 0
        assert changed_hosts(playbook("scale_up.yml", "-e", "cluster=c3")) == {}
    finally:
        report = load.stop()
    assert_nothing_lost(report)


def test_decommission_c1_under_load(hosts):
    load = Load()
    try:
        args = ("-e", "cluster=c1", "-e", "drain=true", "-e", "stop_brokers=true")
        first = playbook("decommission.yml", *args)
        assert first.get("controller", 0) > 0 and first.get("c1-broker1", 0) > 0, first
        assert next(c for c in controller("/v1/clusters") if c["id"] == "c1")["state"] == "removed"
        assert "c1" not in active_clusters(CHECK_TOPIC)
        assert not [name for name in programs() if name.startswith("c1-")]  # its brokers stopped
        assert changed_hosts(playbook("decommission.yml", *args)) == {}
    finally:
        report = load.stop()
    assert_nothing_lost(report)


def programs() -> dict[str, tuple[str, int]]:
    """'<inventory host>/<program>' -> (state, pid) of every supervisord program on every host."""
    found = {}
    for conf in sorted(HOSTS_ROOT.glob("host*/*/supervisor/supervisord.conf")):
        out = subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), "status"], capture_output=True,
                             text=True).stdout
        for name, state, pid in re.findall(r"^(\S+)\s+(RUNNING|STARTING|STOPPED|STOPPING|BACKOFF|EXITED|FATAL)"
                                           r"\s+(?:pid (\d+))?", out, re.M):
            found[f"{conf.parents[1].name}/{name}"] = (state, int(pid or 0))
    return found


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_rolling_restart_one_host_at_a_time_under_load_and_check_mode_predicts_it(hosts):
    before = programs()
    predicted = playbook("rolling_restart.yml", "--check", "--diff")
    assert programs() == before  # check mode restarted nothing
    load = Load()
    try:
        done = playbook("rolling_restart.yml")
    finally:
        report = load.stop()
    assert done == predicted
    after = programs()
    restarted = {name for name in before if before[name][1] != after[name][1]}
    running = {name for name, (state, _) in before.items() if state == "RUNNING"}
    assert restarted == {n for n in running if "/kafka-" in n or n.endswith("/proxy")}, (before, after)
    assert all(after[n][0] == "RUNNING" for n in running)
    assert_nothing_lost(report)


def test_upgrade_rolls_a_new_release_host_by_host_under_load(hosts):
    release = HOSTS_ROOT / "venvs" / "release-2"
    run([*HARNESS, "venv", str(release)])
    before = programs()
    predicted = run([str(BIN / "ansible-playbook"), "-i", INVENTORY, "playbooks/upgrade.yml", "-e",
                     f"fedkafka_venv={release}", "--check", "--diff"])
    assert programs() == before
    assert f"{release}/bin/fedkafka" in predicted  # the diff of each program's new command line
    load = Load()
    try:
        done = playbook("upgrade.yml", "-e", f"fedkafka_venv={release}")
    finally:
        report = load.stop()
    assert done == recap(predicted)
    after = programs()
    for name, (state, pid) in after.items():
        if name.endswith(("/controller", "/nameservice", "/proxy")):
            assert state == "RUNNING" and str(release) in command_line(pid), name
        else:  # brokers: their command line does not name the fedkafka release
            assert pid == before[name][1], name
    assert_nothing_lost(report)
