"""`fedkafka local up --security sasl_ssl`: the material of a secured local federation, and its client files.

Under `<state dir>/security/` (0700): a local CA and a server certificate for 127.0.0.1/localhost (keys 0600),
`secrets.json` (0600: the service principal's and the demo user's passwords, generated once) and
`upstream.json` (0600: how the controller and the proxies log in to the brokers, `--upstream-config`). Under
`<state dir>/client/`: `client.properties` (Java), `librdkafka.json` (confluent-kafka) — both 0600, they hold the
demo user's password — and `ca.pem`.

Passwords travel in files only, never on a command line: the brokers get the service user's SCRAM credentials
over their authenticated internal listener, the controller gets the demo user's as SCRAM hashes over its API.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedkafka.kafka.cluster import SaslSslListener
from fedkafka.security import pki as _pki

PLAINTEXT = "plaintext"
SASL_SSL = "sasl_ssl"
MODES = (PLAINTEXT, SASL_SSL)
SERVICE_USER = "fedkafka"  # the federation's principal on the brokers, their only super user
DEMO_USER = "demo"
MECHANISM = "SCRAM-SHA-512"
CERT_DAYS = 825  # a local federation lives for weeks; nothing renews these
CERT_MARGIN_DAYS = 7  # `local up` refuses certificates that expire sooner: brokers would stop serving mid-week
# What the demo user may do through the proxies: everything on every topic and group, and describe the cluster
# (admin tools ask it first). Idempotent producers need no more: a WRITE right on a topic is enough.
DEMO_ACLS = (("TOPIC", "*", "ALL"), ("GROUP", "*", "ALL"), ("CLUSTER", "kafka-cluster", "DESCRIBE"))


def write_secret_file(path: Path, text: str) -> Path:
    """Create `path` 0600 before a byte is written (a rewrite keeps 0600 even if someone widened it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class LocalSecurity:
    """The secured federation's files under one state dir (created by `ensure`)."""

    root: Path

    @property
    def dir(self) -> Path:
        return self.root / "security"

    @property
    def client_dir(self) -> Path:
        return self.root / "client"

    @property
    def pki(self) -> _pki.Pki:
        d = self.dir / "pki"
        return _pki.Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")

    @property
    def secrets_path(self) -> Path:
        return self.dir / "secrets.json"

    @property
    def upstream_config(self) -> Path:
        return self.dir / "upstream.json"

    def ensure(self) -> LocalSecurity:
        """Make the CA, certificates and passwords once; later calls reuse them (a restart keeps its clients)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        new = not self.pki.server_key.exists()
        if new:
            _pki.make_pki(self.dir / "pki", org="fedkafka-local", days=CERT_DAYS)
        self.check_certificates()
        # Passwords only with new certificates: made again for a running federation, the demo user's would not
        # match the hashes the controller keeps (secrets() then says how to start over).
        if new and not self.secrets_path.exists():
            write_secret_file(self.secrets_path, json.dumps({
                "service_user": SERVICE_USER, "service_password": secrets.token_urlsafe(24),
                "demo_user": DEMO_USER, "demo_password": secrets.token_urlsafe(18)}))
        secret = self.secrets()
        write_upstream_config(self.upstream_config, self.pki.ca, secret["service_user"], secret["service_password"])
        return self

    def check_certificates(self, margin_days: int = CERT_MARGIN_DAYS) -> None:
        """Refuse a server certificate that expired or expires within `margin_days`: nothing renews it (the CA's
        key is not kept), and brokers and proxies with an expired one refuse every client."""
        expires = _pki.expiry(self.pki.server_cert)
        if expires - datetime.datetime.now(datetime.UTC) < datetime.timedelta(days=margin_days):
            raise RuntimeError(f"the local certificate {self.pki.server_cert} expires {expires:%Y-%m-%d %H:%M} UTC; "
                               "`fedkafka local down --purge` then `fedkafka local up --security sasl_ssl` to make "
                               "new ones (and new client files)")

    def secrets(self) -> dict[str, str]:
        """The passwords; only starting brokers and writing client or upstream files needs them."""
        if not self.secrets_path.exists():
            raise RuntimeError(f"{self.secrets_path} is missing: the brokers' and the demo user's passwords are "
                               "gone; `fedkafka local down --purge` then `fedkafka local up --security sasl_ssl` "
                               "to start over")
        return json.loads(self.secrets_path.read_text())

    def broker_listener(self) -> SaslSslListener:
        """The brokers' SASL_SSL client listener, hardened: only the service user may do anything on them."""
        secret = self.secrets()
        return SaslSslListener(self.pki.server_cert, self.pki.server_key,
                               {secret["service_user"]: secret["service_password"]},
                               service_user=secret["service_user"], ca=self.pki.ca)

    def tls_args(self) -> list[str]:
        """The proxies' and the name service's TLS flags (paths only)."""
        return ["--ssl-cert", str(self.pki.server_cert), "--ssl-key", str(self.pki.server_key),
                "--ssl-ca", str(self.pki.ca)]

    def demo_credentials(self) -> list[dict[str, Any]]:
        """The demo user's SCRAM credentials for `PUT /v1/users/{name}` (hashes only, no password)."""
        from fedkafka.security import scram

        password = self.secrets()["demo_password"]
        return [{k: v for k, v in scram.make_credential(DEMO_USER, m, password).to_dict().items() if k != "user"}
                for m in scram.MECHANISMS]

    def write_client_files(self, bootstrap: str) -> dict[str, Path]:
        secret = self.secrets()
        return write_client_files(self.client_dir, bootstrap, secret["demo_user"], secret["demo_password"],
                                  self.pki.ca)

    def client_config(self) -> dict[str, str]:
        """What `local demo` gives confluent-kafka: the librdkafka.json written at `up`."""
        return json.loads((self.client_dir / "librdkafka.json").read_text())

    def upstream_client_config(self) -> dict[str, str]:
        """librdkafka settings of a client of the brokers themselves (the service user: `local demo` reads the
        physical topics' offsets with it)."""
        doc = json.loads(self.upstream_config.read_text())
        return {k: v for k, v in doc.items() if k != "clusters"}


def demo_acl_bindings(user: str = DEMO_USER) -> list[dict[str, str]]:
    return [{"resource_type": rtype, "name": name, "pattern_type": "LITERAL", "principal": f"User:{user}",
             "host": "*", "operation": op, "permission": "ALLOW"} for rtype, name, op in DEMO_ACLS]


def write_upstream_config(path: Path, ca: Path, user: str, password: str) -> Path:
    """The proxies' and the controller's settings for SASL_SSL brokers (`--upstream-config`), 0600."""
    return write_secret_file(path, json.dumps({"security.protocol": "SASL_SSL", "ssl.ca.location": str(ca),
                                               "sasl.mechanism": MECHANISM, "sasl.username": user,
                                               "sasl.password": password}))


def librdkafka_settings(bootstrap: str, user: str, password: str, ca: Path) -> dict[str, str]:
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM,
            "sasl.username": user, "sasl.password": password, "ssl.ca.location": str(ca)}


def java_properties(bootstrap: str, user: str, password: str, ca: Path) -> str:
    # Java reads a PEM CA as a truststore of type PEM; the JAAS line quotes the password (ours has no quote).
    jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'
    lines = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM,
             "sasl.jaas.config": jaas, "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca)}
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def write_client_files(directory: Path, bootstrap: str, user: str, password: str, ca: Path) -> dict[str, Path]:
    """`client.properties`, `librdkafka.json` (0600: they hold the password) and `ca.pem` (a copy of the CA,
    which the two name by absolute path) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_copy = directory / "ca.pem"
    ca_copy.write_bytes(ca.read_bytes())
    ca_copy.chmod(0o644)
    props = write_secret_file(directory / "client.properties", java_properties(bootstrap, user, password, ca_copy))
    rdkafka = write_secret_file(directory / "librdkafka.json",
                                json.dumps(librdkafka_settings(bootstrap, user, password, ca_copy), indent=2) + "\n")
    return {"client.properties": props, "librdkafka.json": rdkafka, "ca.pem": ca_copy}


def usage_hint(files: dict[str, Path], cwd: Path | None = None) -> str:
    """How to use the client files (paths relative to `cwd` when under it)."""
    cwd = cwd or Path.cwd()

    def shown(path: Path) -> str:
        return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)

    props, rdkafka = shown(files["client.properties"]), shown(files["librdkafka.json"])
    bootstrap = json.loads(files["librdkafka.json"].read_text())["bootstrap.servers"]
    return "\n".join([
        f"client settings for user {DEMO_USER} (SASL_SSL, {MECHANISM}) in {shown(files['ca.pem'].parent)}/:",
        "  fedkafka topic create demo --partitions 4",
        f"  kafka-console-producer --bootstrap-server {bootstrap} --topic demo --producer.config {props}",
        f"  kafka-console-consumer --bootstrap-server {bootstrap} --topic demo --group demo-group "
        f"--from-beginning --consumer.config {props}",
        f'  python -c \'import json, confluent_kafka; p = confluent_kafka.Producer(json.load(open("{rdkafka}"))); '
        'p.produce("demo", b"hello"); p.flush()\'',
    ])
