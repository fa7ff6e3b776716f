"""The kafka_broker role with kafka_broker_security_protocol=SASL_SSL, run by the real ansible-playbook on this
machine (a one-node cluster under the role's supervisord, free ports, its own state dir), then probed with
confluent-kafka: the federation's service principal logs in with SCRAM and produces and consumes; anonymous
clients, a SASL user without ACLs and a wrong password get Kafka's errors and nothing in; the KRaft controller
listener refuses them too; a second run and `--check --diff` change nothing; no password reaches `ps`, a
world-readable file or Ansible's output. Then scale_up.yml adds that cluster to a real controller: it waits for
every broker logged in as the broker principal (or, outside the inventory, with the controller's login), and a
broker host it cannot reach stops the run before the cluster is registered.

About 3-8 minutes on the shared 2-core machine (seven playbook runs, one broker): `make test-security`
(FEDKAFKA_SECURITY_E2E=1)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from ansible_harness import TOKEN, FedkafkaApi, running_controller
from broker_render import ROLE_PLAY
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from security.federation import ANONYMOUS_CLIENTS, assert_broker_refuses

from fedkafka.kafka.cluster import free_port, port_open
from fedkafka.kafka.dist import ensure_kafka

pytestmark = [pytest.mark.integration, pytest.mark.ansible, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("FEDKAFKA_SECURITY_E2E") != "1",
                                 reason="minutes: runs with FEDKAFKA_SECURITY_E2E=1 (make test-security)")]
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
# Passwords that appear nowhere else, so a search for them finds only leaks. The service's holds characters the
# storage tool's --add-scram value and Java argument files treat specially when unquoted.
SERVICE_USER, SERVICE_PASSWORD = "fedkafka", "Svc#;'(=)%!~|^`-" + secrets.token_hex(10)
BROKER_PASSWORD = "Broker-" + secrets.token_hex(12)
MALLORY_PASSWORD = "Mallory-" + secrets.token_hex(12)
SECRETS = (SERVICE_PASSWORD, BROKER_PASSWORD, MALLORY_PASSWORD)
ANSIBLE_ENV = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_LIBRARY": str(ROOT / "library"),
               "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"), "ANSIBLE_NOCOLOR": "1"}



class Broker:
    def __init__(self, root: Path):
        self.root = root
        self.state = root / "state"
        self.pki = root / "pki"
        self.port, self.controller_port = free_port(), free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.outputs: list[str] = []

    @property
    def data_dir(self) -> Path:
        return self.state / "kafka" / "sec1-1"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def host_vars(self) -> dict:
        """The broker host's variables (the inventory host `localhost`), its passwords among them."""
        return {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "fedkafka_install_source": "present", "fedkafka_venv": sys.prefix, "fedkafka_state_dir": str(self.state),
            "fedkafka_service_manager": "supervisord", "kafka_broker_cluster": "sec1",
            "kafka_broker_listen_host": "127.0.0.1", "kafka_broker_port": self.port,
            "kafka_broker_quorum_hosts": ["localhost"],
            "kafka_broker_controller_port": self.controller_port, "kafka_broker_heap": "384m",
            "kafka_broker_security_protocol": "SASL_SSL", "kafka_broker_pki_dir": str(self.pki),
            "kafka_broker_sasl_users": [{"name": SERVICE_USER, "password": SERVICE_PASSWORD}],
            "kafka_broker_principal_password": BROKER_PASSWORD}

    def play(self, *flags: str) -> str:
        """One run of the role; the whole output (also kept for the leak check). Secrets reach it in a 0600 file."""
        book = self.root / "broker.yml"
        book.write_text(ROLE_PLAY)
        extra = self.root / "vars.json"
        extra.touch(mode=0o600)
        extra.write_text(json.dumps(self.host_vars()))
        try:
            proc = subprocess.run([PLAYBOOK, str(book), "-v", "-e", f"@{extra}", *flags], cwd=ROOT, env=ANSIBLE_ENV,
                                  capture_output=True, text=True, timeout=900)
        finally:
            extra.unlink()
        out = proc.stdout + proc.stderr
        self.outputs.append(out)
        assert proc.returncode == 0, out[-5000:]
        return out

    def stop(self) -> None:
        conf = self.state / "supervisor" / "supervisord.conf"
        if conf.exists():
            subprocess.run([str(Path(sys.executable).with_name("supervisorctl")), "-c", str(conf), "shutdown"],
                           capture_output=True, timeout=120)
        for _ in range(240):  # supervisord stops its programs after it answered; the JVM writes until it exits
            if not port_open("127.0.0.1", self.port) and not self.jvm_running():
                return
            time.sleep(0.5)

    def jvm_running(self) -> bool:
        props = str(self.data_dir / "server.properties").encode()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if props in cmdline.read_bytes():
                    return True
            except OSError:  # the process ended meanwhile
                continue
        return False

    def conf(self, user: str = SERVICE_USER, password: str = SERVICE_PASSWORD, **extra) -> dict:
        return {"bootstrap.servers": f"127.0.0.1:{self.port}", "security.protocol": "SASL_SSL",
                "ssl.ca.location": str(self.ca), "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                "sasl.password": password, "log_level": 0, **extra}


def recap_changed(out: str) -> int:
    match = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out)
    assert match, out[-3000:]
    return int(match.group(1))


@pytest.fixture(scope="module")
def broker():
    ensure_kafka()
    b = Broker(Path(tempfile.mkdtemp(prefix="fk-bsec-", dir="/tmp")))  # short: supervisord's socket lives there
    try:
        b.play()
        yield b
    finally:
        b.stop()
        shutil.rmtree(b.root, ignore_errors=True)
    assert not port_open("127.0.0.1", b.port)


def produce(conf: dict, topic: str, values: list[bytes]) -> tuple[list, list]:
    """(delivery errors, client errors)."""
    errors: list = []
    delivered: list = []
    producer = Producer({**conf, "message.timeout.ms": 8000, "error_cb": errors.append})
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: delivered.append(err))
    producer.flush(20)
    return delivered, errors


def consume_all(conf: dict, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                got.append(msg.value())
            elif len(got) >= expected and msg is None:
                break
    finally:
        consumer.close()
    return got


def create_topic(conf: dict, name: str) -> None:
    admin = AdminClient(conf)
    for fut in admin.create_topics([NewTopic(name, 1, 1)]).values():
        fut.result(30)


def test_the_service_principal_produces_and_consumes(broker):
    create_topic(broker.conf(), "svc")
    delivered, errors = produce(broker.conf(), "svc", [b"a", b"b", b"c"])
    assert delivered == [None, None, None], (delivered, errors)
    assert consume_all(broker.conf(), "svc", 3) == [b"a", b"b", b"c"]
    # SCRAM-SHA-256 too
    assert produce(broker.conf(**{"sasl.mechanism": "SCRAM-SHA-256"}), "svc", [b"d"])[0] == [None]


def test_anonymous_clients_get_no_data_in_and_see_an_error(broker):
    create_topic(broker.conf(), "anon")
    for conf in ANONYMOUS_CLIENTS:
        assert_broker_refuses(f"127.0.0.1:{broker.port}", broker.ca, conf)
        anonymous = {"bootstrap.servers": f"127.0.0.1:{broker.port}", "log_level": 0, **conf} | (
            {"ssl.ca.location": str(broker.ca)} if conf["security.protocol"] == "SSL" else {})
        delivered, errors = produce(anonymous, "anon", [b"sneaked"])
        assert delivered and delivered[0] is not None, conf
        assert errors, conf  # the client saw the broker refuse or drop it
    assert consume_all(broker.conf(), "anon", 0) == []


def test_the_controller_listener_refuses_anonymous_clients_and_the_service_principal(broker):
    bootstrap = f"127.0.0.1:{broker.controller_port}"
    for conf in (*ANONYMOUS_CLIENTS, {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                      "sasl.username": SERVICE_USER, "sasl.password": SERVICE_PASSWORD},
                 {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": SERVICE_USER,
                  "sasl.password": SERVICE_PASSWORD}):
        assert_broker_refuses(bootstrap, broker.ca, conf)


def test_a_sasl_user_without_acl_gets_topic_authorization_failed(broker):
    create_topic(broker.conf(), "guarded")
    admin = AdminClient(broker.conf())
    upsert = UserScramCredentialUpsertion("mallory", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                          MALLORY_PASSWORD.encode())
    for fut in admin.alter_user_scram_credentials([upsert]).values():
        fut.result(30)
    mallory = broker.conf("mallory", MALLORY_PASSWORD)
    delivered, errors = [], []
    for _ in range(10):  # the credential reaches the broker through the metadata log
        delivered, errors = produce(mallory, "guarded", [b"x"])
        if not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
            break
    assert [e.code() for e in delivered] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], (delivered, errors)
    assert consume_all(broker.conf(), "guarded", 0) == []


def test_a_wrong_password_gets_sasl_authentication_failed(broker):
    errors: list = []
    admin = AdminClient(broker.conf(password="Wrong-" + secrets.token_hex(8), error_cb=errors.append))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=8)
    admin.poll(2)  # serves the error callback
    assert any(e.code() == KafkaError._AUTHENTICATION and "Authentication failed" in e.str() for e in errors), errors


def test_a_second_run_and_check_diff_change_nothing(broker):
    assert recap_changed(broker.play()) == 0
    out = broker.play("--check", "--diff")
    assert recap_changed(out) == 0, out[-4000:]


def test_no_secret_in_ps_world_readable_files_or_ansible_output(broker):
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    assert "kafka.Kafka" in ps and str(broker.data_dir / "server.properties") in ps
    key = (broker.data_dir / "tls" / "broker.key").read_text().strip().splitlines()[1]
    leaks = [s for s in (*SECRETS, key) if s in ps]
    assert leaks == [], "a secret is on a process's command line"
    for out in broker.outputs:
        assert [s for s in (*SECRETS, key) if s in out] == [], "a secret is in Ansible's output"
    assert not (broker.data_dir / "secrets" / "format.args").exists()
    assert not (broker.data_dir / "format-args").exists() and (broker.data_dir / "sasl-formatted").exists()
    for path in (broker.data_dir / "tls" / "broker.key", broker.data_dir / "secrets" / "broker-password",
                 broker.pki / "ca.key"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    for directory in (broker.state, broker.pki):
        for path in directory.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            text = path.read_bytes()
            # the service's and mallory's passwords are nowhere on disk (the broker keeps SCRAM hashes)
            assert SERVICE_PASSWORD.encode() not in text and MALLORY_PASSWORD.encode() not in text, path
            if stat.S_IMODE(path.stat().st_mode) & 0o004:
                assert BROKER_PASSWORD.encode() not in text and key.encode() not in text, path
    written = [p for p in broker.state.rglob("*") if p.is_file() and BROKER_PASSWORD.encode() in p.read_bytes()]
    assert written == [broker.data_dir / "secrets" / "broker-password"]


# --- scale_up.yml onto this SASL_SSL cluster ------------------------------------------------------------------------

WAIT_TASK = "fedkafka_common : Wait until the cluster has every broker"  # roles/fedkafka_common, shared


def service_login(broker: Broker) -> dict:
    """The librdkafka settings the federation logs in to the brokers with (fedkafka_upstream_config)."""
    return {"security.protocol": "SASL_SSL", "ssl.ca.location": str(broker.ca), "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": SERVICE_USER, "sasl.password": SERVICE_PASSWORD}


@pytest.fixture
def controller(broker, tmp_path):
    """A real controller logging in to the brokers as the service principal; yields the modules' API arguments."""
    upstream = tmp_path / "upstream.json"
    upstream.touch(mode=0o600)
    upstream.write_text(json.dumps(service_login(broker)))
    yield from running_controller(tmp_path, "--upstream-config", str(upstream))


def scale_up(broker: Broker, api: dict, tmp_path: Path, sec1_hosts: dict, *args: str,
             upstream: dict | None = None) -> tuple[int, str]:
    """scale_up.yml on an inventory of this machine: sec1 (the broker, as kafka_spare) with `sec1_hosts`, c1 (never
    touched: site.yml's cluster) and a controller host whose fedkafka_upstream_config is `upstream` (default: the
    service's login); (exit code, whole output). The inventory holds the passwords: a 0600 file removed after the
    run."""
    inventory = tmp_path / "inventory.json"
    inventory.touch(mode=0o600)
    inventory.write_text(json.dumps({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "fedkafka_venv": sys.prefix, "fedkafka_api_token": TOKEN,
                 "fedkafka_controller_url": api["controller_url"], "fedkafka_coordination_cluster": "c1"},
        "children": {
            "kafka_brokers": {"children": {"kafka_c1": {"hosts": {"c1-untouched": {"kafka_broker_cluster": "c1"}}}}},
            "kafka_spare": {"children": {"kafka_sec1": {"vars": {"kafka_broker_cluster": "sec1"},
                                                        "hosts": sec1_hosts}}} if sec1_hosts else {},
            "fedkafka_controller": {"hosts": {"controller": {
                "fedkafka_upstream_config": service_login(broker) if upstream is None else upstream}}},
        }}}))
    try:
        proc = subprocess.run([PLAYBOOK, "-i", str(inventory), "playbooks/scale_up.yml", "-v", *args], cwd=ROOT,
                              env=ANSIBLE_ENV, capture_output=True, text=True, timeout=900)
    finally:
        inventory.unlink()
    out = proc.stdout + proc.stderr
    assert [s for s in SECRETS if s in out] == [], "a secret is in Ansible's output"
    return proc.returncode, out


def task_result(out: str, task: str) -> str:
    """The first line naming a host after `TASK [task]` (e.g. "ok: [localhost]"); '' when the task did not run."""
    match = re.search(rf"^TASK \[{re.escape(task)}\].*?^((?:ok|changed|skipping|fatal): \[[^\]]+\])", out, re.M | re.S)
    return match.group(1) if match else ""


def registered(api: dict) -> dict[str, str]:
    clusters = FedkafkaApi(api["controller_url"], api["token"]).request("GET", "/v1/clusters")
    return {c["id"]: c["bootstrap"] for c in clusters}


def test_scale_up_waits_for_the_sasl_ssl_cluster_as_the_broker_principal_then_registers_it(broker, controller,
                                                                                            tmp_path):
    """The wait used to ask the secured listener with no login and gave up after 120 s: no registration."""
    code, out = scale_up(broker, controller, tmp_path, {"localhost": broker.host_vars()}, "-e", "cluster=sec1")
    assert code == 0, out[-5000:]
    assert task_result(out, WAIT_TASK) == "ok: [localhost]", out[-5000:]
    assert task_result(out, "Wait until the new cluster answers") == "skipping: [controller]"
    assert recap_changed(out) == 0  # the role found the broker as the fixture left it: no restart
    assert registered(controller) == {"sec1": f"127.0.0.1:{broker.port}"}


def test_scale_up_does_not_register_a_cluster_whose_other_broker_is_down(broker, controller, tmp_path):
    """sec1 listed with a second broker host that cannot be reached: the play goes on without that host, and the
    wait, which wants both brokers in Metadata, stops the run before the cluster is registered."""
    down = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": free_port(),
            "kafka_broker_node_id": 2, "kafka_broker_port": free_port()}
    hosts = {"localhost": {**broker.host_vars(), "kafka_broker_wait_timeout": 10}, "sec1-down": down}
    code, out = scale_up(broker, controller, tmp_path, hosts, "-e", "cluster=sec1")
    assert code != 0
    assert re.search(r"^sec1-down\s*:.*unreachable=1", out, re.M), out[-5000:]
    assert task_result(out, WAIT_TASK) == "fatal: [localhost]", out[-5000:]
    assert "1 broker(s) in Metadata, 2 wanted" in out
    assert task_result(out, "Check that every broker of the new cluster answered") == "fatal: [controller]"
    assert task_result(out, "Register the cluster") == ""
    assert registered(controller) == {}


def test_scale_up_of_a_cluster_outside_the_inventory_waits_with_the_controllers_login(broker, controller, tmp_path):
    """-e bootstrap= for a cluster the inventory has no group for: the controller host asks it with
    fedkafka_upstream_config (it used to ask with no login, and gave up after 120 s)."""
    bootstrap = f"127.0.0.1:{broker.port}"
    code, out = scale_up(broker, controller, tmp_path, {}, "-e", "cluster=ext", "-e", f"bootstrap={bootstrap}")
    assert code == 0, out[-5000:]
    assert task_result(out, "Wait until the new cluster answers") == "ok: [controller]", out[-5000:]
    assert registered(controller) == {"ext": bootstrap}


def test_scale_up_of_a_cluster_outside_the_inventory_logs_in_with_its_own_upstream_override(broker, controller,
                                                                                         tmp_path):
    """fedkafka_upstream_config with PLAINTEXT at the top and the SASL_SSL login under `clusters`, for this cluster
    only (as OPERATIONS.md documents it): the wait logs in with the override. It used to hand `clusters` itself to
    librdkafka ("No such configuration property") and gave up after 120 s."""
    bootstrap = f"127.0.0.1:{broker.port}"
    upstream = {"security.protocol": "PLAINTEXT", "clusters": {"ext": service_login(broker)}}
    code, out = scale_up(broker, controller, tmp_path, {}, "-e", "cluster=ext", "-e", f"bootstrap={bootstrap}",
                         upstream=upstream)
    assert code == 0, out[-5000:]
    assert task_result(out, "Wait until the new cluster answers") == "ok: [controller]", out[-5000:]
    assert registered(controller) == {"ext": bootstrap}
