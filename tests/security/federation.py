"""A secured federation as real processes: one Kafka cluster whose client listener requires SASL_SSL with
SCRAM-SHA-512, a controller, a proxy with four listeners (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) and a name
service with PLAINTEXT and SASL_SSL listeners. The controller and the proxy log in to the brokers as the service
user `fedkafka` with an --upstream-config file (mode 0600)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from fedkafka.kafka.cluster import SaslSslListener, free_port, start_clusters
from fedkafka.local_security import write_upstream_config

from .jwks import AUDIENCE, ISSUER, Issuer
from .pki import Pki, make_pki

ROOT = Path(__file__).resolve().parents[2]
# A password that appears nowhere else, so a search for it finds only leaks.
PASSWORD = "Alice-" + secrets.token_hex(12)
USER = "alice"
# Other users: admin (a super user), bob (may describe the topic and use bob-* groups, not read), mallory (nothing)
PASSWORDS = {USER: PASSWORD, "admin": "Admin-" + secrets.token_hex(12), "bob": "Bob-" + secrets.token_hex(12),
             "mallory": "Mallory-" + secrets.token_hex(12)}
MTLS_PRINCIPAL = "User:CN=client-app,O=fedkafka-test"
# The federation's own user on the brokers; its password is only in the brokers (as SCRAM hashes) and in the
# upstream config file.
UPSTREAM_USER = "fedkafka"
# the name service relays from this address with a PROXY v2 header, which the proxy trusts from it alone: the
# clients' direct connections (from 127.0.0.1) carry none (docs/DESIGN.md §3.4)
RELAY_SOURCE = "127.0.0.9"
UPSTREAM_PASSWORD = "Upstream-" + secrets.token_hex(12)


@dataclass
class SecuredFederation:
    tmp: Path
    pki: Pki
    token_file: Path
    upstream_config: Path
    controller_url: str
    proxy: dict[str, int]  # protocol -> port
    nameservice: dict[str, int]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    cluster: object = None
    issuer: Issuer | None = None

    def logs(self) -> dict[str, str]:
        return {name: (self.tmp / f"{name}.log").read_text(errors="replace") for name in self.procs}

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fedkafka.cli", *args, "--controller", self.controller_url,
                               "--token-file", str(self.token_file)], input=stdin, capture_output=True, text=True,
                              timeout=120, cwd=ROOT)

    def client_conf(self, via: str = "nameservice", protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512",
                    password: str | None = None, user: str = USER, **extra) -> dict:
        """librdkafka settings for `protocol` at the name service or the proxy."""
        ports = self.nameservice if via == "nameservice" else self.proxy
        conf = {"bootstrap.servers": f"127.0.0.1:{ports[protocol]}", "security.protocol": protocol}
        if protocol.startswith("SASL_"):
            conf |= {"sasl.mechanism": mechanism, "sasl.username": user,
                     "sasl.password": PASSWORDS[user] if password is None else password}
        if protocol.endswith("SSL"):
            conf["ssl.ca.location"] = str(self.pki.ca)
        return conf | extra

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.cluster is not None:
            self.cluster.stop(timeout=10)


def _wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()[-3000:]}")


def start_secured_federation(tmp: Path, topic: str, partitions: int = 3) -> SecuredFederation:
    pki = make_pki(tmp / "pki")
    token_file = tmp / "controller.token"
    token_file.write_text(secrets.token_hex(16))
    token_file.chmod(0o600)
    upstream = write_upstream_config(tmp / "upstream.json", pki.ca, UPSTREAM_USER, UPSTREAM_PASSWORD)
    cport, *ports = _distinct_free_ports(8)
    fed = SecuredFederation(tmp, pki, token_file, upstream, f"http://127.0.0.1:{cport}",
                            proxy=dict(zip(("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"), ports[:4], strict=True)),
                            nameservice=dict(zip(("PLAINTEXT", "SASL_SSL", "HTTP"), ports[4:], strict=True)),
                            issuer=Issuer(tmp / "jwks.json"))
    try:
        fed.cluster = start_clusters(["s1"], tmp / "kafka", sasl_ssl=SaslSslListener(
            pki.server_cert, pki.server_key, {UPSTREAM_USER: UPSTREAM_PASSWORD}))[0]
        _start(fed, "controller", ["controller", "--db", f"sqlite:///{tmp / 'controller.db'}", "--listen",
                                   f"127.0.0.1:{cport}", "--token-file", str(token_file), "--scan-interval", "2",
                                   "--upstream-config", str(upstream)], cport)
        for args in (("cluster", "add", "s1", "--bootstrap", fed.cluster.bootstrap),
                     ("topic", "create", topic, "--partitions", str(partitions))):
            res = fed.cli(*args)
            assert res.returncode == 0, res.stderr
        for user, password in PASSWORDS.items():
            res = fed.cli("user", "create", user, stdin=password + "\n")  # a password only ever on stdin
            assert res.returncode == 0, res.stderr
        for acl in ((USER, "--operation", "ALL", "--topic", topic), (USER, "--operation", "READ", "--group", "sec-",
                                                                     "--prefixed"),
                    ("bob", "--operation", "DESCRIBE", "--topic", topic),
                    ("bob", "--operation", "READ", "--group", "bob-", "--prefixed"),
                    ("ANONYMOUS", "--operation", "DESCRIBE", "--topic", topic),
                    (MTLS_PRINCIPAL[5:], "--operation", "WRITE", "--topic", topic)):
            res = fed.cli("acl", "add", "--principal", f"User:{acl[0]}", *acl[1:])
            assert res.returncode == 0, res.stderr
        tls = ["--ssl-cert", str(pki.server_cert), "--ssl-key", str(pki.server_key), "--ssl-ca", str(pki.ca)]
        p = fed.proxy
        _start(fed, "proxy", ["proxy", "--role", "both", "--listen", f"127.0.0.1:{p['PLAINTEXT']}",
                              "--listener", f"SSL://127.0.0.1:{p['SSL']}",
                              "--listener", f"SASL_PLAINTEXT://127.0.0.1:{p['SASL_PLAINTEXT']}",
                              "--listener", f"SASL_SSL://127.0.0.1:{p['SASL_SSL']}", *tls,
                              "--ssl-client-auth", "requested", "--authorization", "--super-user", "User:admin",
                              "--oauth-jwks-file", str(fed.issuer.jwks_file), "--oauth-issuer", ISSUER,
                              "--oauth-audience", AUDIENCE,
                              "--controller", fed.controller_url, "--token-file", str(token_file),
                              "--upstream-config", str(upstream), "--proxy-header-from", RELAY_SOURCE], p["SASL_SSL"])
        n = fed.nameservice
        _start(fed, "nameservice", ["nameservice", "--listen", f"127.0.0.1:{n['PLAINTEXT']}",
                                    "--listener", f"SASL_SSL://127.0.0.1:{n['SASL_SSL']}",
                                    "--http-listen", f"127.0.0.1:{n['HTTP']}", *tls,
                                    "--controller", fed.controller_url, "--token-file", str(token_file),
                                    "--send-proxy-header", "--relay-source", RELAY_SOURCE],
               n["SASL_SSL"])
        _wait_for_proxy_in_view(fed)
    except BaseException:
        fed.stop()
        raise
    return fed


# A client that does not log in: without TLS, and with TLS but no SASL.
ANONYMOUS_CLIENTS = ({"security.protocol": "PLAINTEXT"}, {"security.protocol": "SSL"})


def assert_broker_refuses(bootstrap: str, ca: Path, conf: dict) -> None:
    """A metadata request to the broker's client listener with `conf` gets no answer."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **conf}
                        | ({"ssl.ca.location": str(ca)} if conf["security.protocol"].endswith("SSL") else {}))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)


def _distinct_free_ports(n: int) -> list[int]:
    """n free ports, all different: one free_port() after another may hand out the same port twice (seen once: the
    proxy then refused to start, "each listener needs its own port")."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _start(fed: SecuredFederation, name: str, args: list[str], port: int) -> None:
    log = fed.tmp / f"{name}.log"
    env = {**os.environ, "FEDKAFKA_LOG_LEVEL": "INFO"}
    with open(log, "wb") as out:
        fed.procs[name] = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", *args], stdout=out,
                                           stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    _wait_port(port, fed.procs[name], log)


def _wait_for_proxy_in_view(fed: SecuredFederation) -> None:
    headers = {"Authorization": f"Bearer {fed.token_file.read_text().strip()}"}
    deadline = time.time() + 60
    while time.time() < deadline:
        view = httpx.get(f"{fed.controller_url}/v1/view", headers=headers).json()
        if view["proxies"] and view["topics"]:
            return
        time.sleep(0.2)
    raise AssertionError("the proxy never joined the view")
