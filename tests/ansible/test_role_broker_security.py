"""The kafka_broker role's security variables without starting Kafka: the PLAINTEXT server.properties is byte for byte
what the role rendered before SASL_SSL existed (golden files rendered by the old template), the SASL_SSL one names
secret files rather than holding secrets, bad variables are refused with a message, and `--check --diff` on a
fresh host predicts changes and writes nothing. The role run against a real broker is
test_broker_sasl_integration.py."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from broker_render import ROLE_PLAY, ROLE_VARS_PLAY, render_server_properties

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
DATA = Path(__file__).with_name("data")
SERVICE_PASSWORD = "Svc-" + secrets.token_hex(12)
BROKER_PASSWORD = "Broker-" + secrets.token_hex(12)
KEY = f"-----BEGIN PRIVATE KEY-----\n{secrets.token_hex(24)}\n-----END PRIVATE KEY-----\n"
SASL = {"kafka_broker_security_protocol": "SASL_SSL",
        "kafka_broker_sasl_users": [{"name": "fedkafka", "password": SERVICE_PASSWORD}],
        "kafka_broker_principal_password": BROKER_PASSWORD}


@pytest.mark.parametrize(("name", "given"), [
    ("single", {}),
    ("replicated", {"kafka_broker_quorum_hosts": ["localhost"] * 3,
                    "kafka_broker_config": {"log.retention.hours": "1"}}),
])
def test_the_plaintext_render_is_unchanged(tmp_path, name, given):
    proc, text = render_server_properties(tmp_path, given)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert text == (DATA / f"server.properties.plaintext-{name}").read_text()


def test_the_sasl_ssl_render_names_the_secret_files_not_the_secrets(tmp_path):
    proc, text = render_server_properties(tmp_path, {**SASL, "kafka_broker_super_users": ["User:ops"]})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert text is not None and SERVICE_PASSWORD not in text and BROKER_PASSWORD not in text
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    data = "/var/lib/fedkafka/kafka/c1-1"
    assert props["listeners"] == "SASL_SSL://10.0.0.5:9092,CONTROLLER://10.0.0.5:9093"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:fedkafka;User:kafka-broker;User:ops"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["ssl.keystore.key"] == f"${{dir:{data}/tls:broker.key}}"
    assert f'password="${{dir:{data}/secrets:broker-password}}"' in props[
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]


VALIDATE = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {root}/roles/fedkafka_common/defaults/main.yml
    - {root}/roles/kafka_broker/defaults/main.yml
  tasks:
    - name: Check the given variables against the role's argument spec
      ansible.builtin.validate_argument_spec:
        argument_spec: "{{{{ (lookup('ansible.builtin.file', '{root}/roles/kafka_broker/meta/argument_specs.yml')
                             | from_yaml).argument_specs.main.options }}}}"
        provided_arguments: "{{{{ given }}}}"
    - name: The role's checks
      ansible.builtin.include_tasks: {root}/roles/kafka_broker/tasks/validate.yml
"""


def validate(tmp_path: Path, given: dict) -> subprocess.CompletedProcess:
    book = tmp_path / "validate.yml"
    book.write_text(VALIDATE.format(root=ROOT))
    extra = tmp_path / "vars.json"
    extra.touch(mode=0o600)
    given = {"kafka_broker_cluster": "c1", "kafka_broker_quorum_hosts": ["localhost"], **given}
    extra.write_text(json.dumps({**given, "given": given}))
    proc = subprocess.run([PLAYBOOK, str(book), "-v", "-e", f"@{extra}", "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    extra.unlink()
    return proc


@pytest.mark.parametrize(("marks", "refused"), [
    ([], False),
    (["logs/meta.properties", "sasl-formatted"], False),
    (["logs/meta.properties"], True),
])
def test_sasl_ssl_is_refused_on_storage_formatted_without_the_scram_credentials(tmp_path, marks, refused):
    """A PLAINTEXT host switched to SASL_SSL: its storage is formatted (so never again), without the SCRAM
    credentials format_sasl.yml adds and marks; the role stops before rendering SASL_SSL."""
    data = tmp_path / "data"
    for mark in marks:
        (data / mark).parent.mkdir(parents=True, exist_ok=True)
        (data / mark).write_text("")
    proc = validate(tmp_path, {**SASL, "kafka_broker_ssl_cert_content": "c", "kafka_broker_ssl_key_content": "k",
                               "kafka_broker_ssl_ca_content": "ca", "kafka_broker_data_dir": str(data)})
    out = " ".join((proc.stdout + proc.stderr).split())
    assert (proc.returncode != 0) == refused, out[-3000:]
    assert ("was formatted without SASL_SSL" in out) == refused
    assert SERVICE_PASSWORD not in out and BROKER_PASSWORD not in out


def test_good_sasl_ssl_variables_pass(tmp_path):
    proc = validate(tmp_path, {**SASL, "kafka_broker_ssl_cert": "/etc/kafka/b.pem", "kafka_broker_ssl_key": "/k",
                               "kafka_broker_ssl_ca_content": "ca"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert SERVICE_PASSWORD not in proc.stdout and BROKER_PASSWORD not in proc.stdout


BAD = [
    ({"kafka_broker_security_protocol": "SSL"}, "value of kafka_broker_security_protocol must be one of"),
    ({**SASL, "kafka_broker_sasl_users": []}, "needs kafka_broker_sasl_users"),
    ({**SASL, "kafka_broker_principal_password": "short"}, "kafka_broker_principal_password (16+ characters)"),
    ({**SASL, "kafka_broker_sasl_users": [{"name": "fedkafka", "password": "has,comma-" + SERVICE_PASSWORD}]},
     "needs kafka_broker_sasl_users"),
    ({**SASL, "kafka_broker_sasl_users": [{"name": "kafka-broker", "password": SERVICE_PASSWORD}]},
     "other than kafka_broker_principal"),
    ({**SASL, "kafka_broker_sasl_users": [{"name": "fedkafka"}]}, "missing required arguments: password"),
    ({**SASL, "kafka_broker_super_users": ["ops"]}, "Type:name principals"),
    ({**SASL, "kafka_broker_sasl_users": [{"name": "fedkafka", "password": SERVICE_PASSWORD + "\n"}]},
     "nor a vault value's trailing newline"),
    ({**SASL, "kafka_broker_principal_password": BROKER_PASSWORD + "\n"}, "nor a vault value's trailing newline"),
    ({**SASL, "kafka_broker_sasl_users": [{"name": "fedkafka\n", "password": SERVICE_PASSWORD}]},
     "distinct names of letters, digits"),
    ({**SASL, "kafka_broker_super_users": ["User:ops\n"]}, "Type:name principals"),
    ({"kafka_broker_cluster": "c1\n"}, "kafka_broker_cluster is required"),
    ({**SASL, "kafka_broker_ssl_cert": "/etc/kafka/b.pem"}, "give the certificate, its key and the CA all three"),
    ({**SASL, "kafka_broker_ssl_cert": "/b.pem", "kafka_broker_ssl_cert_content": "x", "kafka_broker_ssl_key": "/k",
      "kafka_broker_ssl_ca": "/ca"}, "not both"),
]


@pytest.mark.parametrize(("given", "message"), BAD, ids=[m[:40] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_security_variables_are_refused_with_a_message(tmp_path, given, message):
    proc = validate(tmp_path, given)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert message in out, out[-3000:]
    assert SERVICE_PASSWORD not in out and BROKER_PASSWORD not in out




GIVEN_TLS = {"kafka_broker_ssl_cert_content": "cert", "kafka_broker_ssl_key_content": KEY,
             "kafka_broker_ssl_ca_content": "ca"}


@pytest.mark.parametrize(("tls", "tasks"), [
    (GIVEN_TLS, ["Install the broker's private key"]),
    ({}, ["Make the brokers' CA", "Sign this broker's certificate with the CA"]),
], ids=["given", "generated"])
def test_check_diff_on_a_fresh_host_predicts_changes_and_writes_nothing(tmp_path, tls, tasks):
    """The whole role in check mode, given its certificate as PEM text or making it: it reports the files and the
    format it would make, shows no secret, and leaves no TLS file, password or PKI behind (with generated
    certificates it failed: the openssl tasks entered the PKI dir check mode had not made)."""
    book = tmp_path / "broker.yml"
    book.write_text(ROLE_PLAY)
    extra = tmp_path / "vars.json"
    extra.touch(mode=0o600)
    state = tmp_path / "state"
    extra.write_text(json.dumps({
        **SASL, "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "fedkafka_install_source": "present", "fedkafka_venv": sys.prefix, "fedkafka_state_dir": str(state),
        "fedkafka_service_manager": "supervisord", "kafka_broker_cluster": "chk",
        "kafka_broker_quorum_hosts": ["localhost"], "kafka_broker_pki_dir": str(tmp_path / "pki"), **tls}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_LIBRARY": str(ROOT / "library"),
           "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([PLAYBOOK, str(book), "-v", "--check", "--diff", "-e", f"@{extra}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    extra.unlink()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert int(re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out).group(1)) > 0
    for leak in (SERVICE_PASSWORD, BROKER_PASSWORD, KEY.splitlines()[1]):
        assert leak not in out
    assert "SASL_SSL://127.0.0.1:9092" in out  # the server.properties diff
    for task in (*tasks, "Write the broker principal's password",
                 "Write the storage tool's arguments (they hold the passwords)", "Format the KRaft storage"):
        assert re.search(rf"TASK \[kafka_broker : {re.escape(task)}\][^\n]*\nchanged: ", out), task
    assert not state.exists() and not (tmp_path / "pki").exists()


CLIENT_CONFIG = """
- hosts: localhost
  gather_facts: false
  vars_files: [{root}/playbooks/vars/federation.yml]
  tasks:
    - name: Keep the settings the playbooks reach this broker's cluster with
      ansible.builtin.copy:
        content: "{{{{ fedkafka_broker_client_config | to_json }}}}"
        dest: {out}
        mode: "0600"
      no_log: true
"""


@pytest.mark.parametrize(("given", "expected"), [
    ({}, {}),
    ({**SASL, "fedkafka_state_dir": "/srv/fk", "kafka_broker_cluster": "c2", "kafka_broker_node_id": 3},
     {"security.protocol": "SASL_SSL", "ssl.ca.location": "/srv/fk/kafka/c2-3/tls/ca.pem",
      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "kafka-broker", "sasl.password": BROKER_PASSWORD}),
    ({**SASL, "kafka_broker_data_dir": "/data/kafka", "kafka_broker_principal": "b"},
     {"security.protocol": "SASL_SSL", "ssl.ca.location": "/data/kafka/tls/ca.pem",
      "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "b", "sasl.password": BROKER_PASSWORD}),
])
def test_the_playbooks_log_in_to_sasl_ssl_brokers_as_the_broker_principal(tmp_path, given, expected):
    """rolling_restart.yml, upgrade.yml and status.yml ask the brokers for Metadata with these settings."""
    out = tmp_path / "config.json"
    book = tmp_path / "config.yml"
    book.write_text(CLIENT_CONFIG.format(root=ROOT, out=out))
    extra = tmp_path / "vars.json"
    extra.touch(mode=0o600)
    extra.write_text(json.dumps(given))
    proc = subprocess.run([PLAYBOOK, str(book), "-e", f"@{extra}", "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert json.loads(out.read_text()) == expected


SECURITY = ROLE_VARS_PLAY + """    - name: The role's TLS files and password
      ansible.builtin.include_tasks: {root}/roles/kafka_broker/tasks/security.yml
"""


def run_security(tmp_path: Path, given: dict, *flags: str) -> tuple[int, str]:
    """security.yml alone (the TLS files and the password, no Kafka) into tmp_path/data: (exit code, output)."""
    book = tmp_path / "security.yml"
    book.write_text(SECURITY.format(root=ROOT))
    extra = tmp_path / "vars.json"
    extra.touch(mode=0o600)
    extra.write_text(json.dumps({**SASL, "kafka_broker_cluster": "c1", "kafka_broker_data_dir": str(tmp_path / "data"),
                                 "kafka_broker_pki_dir": str(tmp_path / "pki"), **given}))
    proc = subprocess.run([PLAYBOOK, str(book), "-v", *flags, "-e", f"@{extra}", "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    extra.unlink()
    out = proc.stdout + proc.stderr
    for leak in (BROKER_PASSWORD, KEY.splitlines()[1]):
        assert leak not in out
    return proc.returncode, out


def install_security_files(tmp_path: Path, given: dict) -> str:
    """run_security, which must succeed; its output."""
    code, out = run_security(tmp_path, given)
    assert code == 0, out[-4000:]
    return out


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_tls_files_given_as_paths_or_pem_text_are_installed_with_their_modes(tmp_path):
    given = tmp_path / "given"
    given.mkdir()
    (given / "b.pem").write_text("cert\n")
    (given / "b.key").write_text(KEY)
    (given / "ca.pem").write_text("ca\n")
    install_security_files(tmp_path, {"kafka_broker_ssl_cert": str(given / "b.pem"),
                                      "kafka_broker_ssl_key": str(given / "b.key"),
                                      "kafka_broker_ssl_ca_content": "ca-text\n"})
    tls, secrets_dir = tmp_path / "data" / "tls", tmp_path / "data" / "secrets"
    assert (tls / "broker.pem").read_text() == "cert\n" and (tls / "broker.key").read_text() == KEY
    assert (tls / "ca.pem").read_text() == "ca-text\n"
    assert (secrets_dir / "broker-password").read_text() == BROKER_PASSWORD  # no newline: the whole file is it
    assert (mode(tls), mode(secrets_dir), mode(tls / "broker.key"), mode(secrets_dir / "broker-password"),
            mode(tls / "broker.pem")) == (0o700, 0o700, 0o600, 0o600, 0o640)
    assert not (tmp_path / "pki").exists()


def test_without_certificates_the_role_makes_a_ca_and_a_host_certificate_once(tmp_path):
    first = install_security_files(tmp_path, {"kafka_broker_listen_host": "127.0.0.1",
                                              "kafka_broker_advertised_host": "broker1.example"})
    tls, pki = tmp_path / "data" / "tls", tmp_path / "pki"
    assert "changed: [localhost]" in first
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tls / "ca.pem"), str(tls / "broker.pem")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(tls / "broker.pem"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:broker1.example" in text and "DNS:localhost" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert mode(pki) == 0o700 and mode(tls / "broker.key") == 0o600
    before = {p.name: p.read_bytes() for p in pki.iterdir()}
    second = install_security_files(tmp_path, {"kafka_broker_listen_host": "127.0.0.1",
                                               "kafka_broker_advertised_host": "broker1.example"})
    assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0", second), second[-3000:]
    assert {p.name: p.read_bytes() for p in pki.iterdir()} == before


def test_check_mode_without_certificates_on_a_fresh_controller_predicts_the_pki_and_writes_nothing(tmp_path):
    """`--check --diff` on a first run that would make the CA: the openssl tasks report their change, nothing is
    written (it failed with "Unable to change directory before execution" when the tasks ran in the PKI dir)."""
    code, out = run_security(tmp_path, {}, "--check", "--diff")
    assert code == 0, out[-4000:]
    for task in ("Make the brokers' CA", "Make this broker's key and certificate request",
                 "Sign this broker's certificate with the CA"):
        assert re.search(rf"TASK \[{re.escape(task)}\][^\n]*\nchanged: ", out), task
    assert not (tmp_path / "pki").exists() and not (tmp_path / "data").exists()


def test_a_lost_ca_is_not_remade_for_brokers_that_trust_the_old_one(tmp_path):
    """The PKI dir is gone (a fresh checkout, a purge) while the broker holds the role's CA: the role fails with a
    message and makes nothing, unless kafka_broker_pki_renew asks for a new CA."""
    install_security_files(tmp_path, {})
    installed_ca = (tmp_path / "data" / "tls" / "ca.pem").read_bytes()
    lost = {"kafka_broker_pki_dir": str(tmp_path / "pki-after-loss")}
    code, out = run_security(tmp_path, lost)
    assert code != 0
    assert "ca.pem is missing, but localhost already holds a CA" in " ".join(out.split()), out[-3000:]
    assert not (tmp_path / "pki-after-loss").exists()
    assert (tmp_path / "data" / "tls" / "ca.pem").read_bytes() == installed_ca
    install_security_files(tmp_path, {**lost, "kafka_broker_pki_renew": True})
    assert (tmp_path / "pki-after-loss" / "ca.pem").exists()
    assert (tmp_path / "data" / "tls" / "ca.pem").read_bytes() != installed_ca


FORMAT = ROLE_VARS_PLAY + """    - name: The role's SASL format
      ansible.builtin.include_tasks: {root}/roles/kafka_broker/tasks/format_sasl.yml
"""


def test_argument_files_an_interrupted_format_left_are_removed_on_formatted_storage(tmp_path):
    """A run killed between the format and the removal of its argument file (which holds the passwords) left it:
    the next run, which finds the storage formatted and formats nothing, removes it."""
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "meta.properties").write_text("cluster.id=x\n")
    (data / "sasl-formatted").write_text("")
    leftovers = [data / "secrets" / "format.args", data / "format-args" / "format.args"]
    for leftover in leftovers:
        leftover.parent.mkdir(mode=0o700)
        leftover.write_text(f'"--add-scram"\n"SCRAM-SHA-512=[name=fedkafka,password=\\"{SERVICE_PASSWORD}\\"]"\n')
    book = tmp_path / "format.yml"
    book.write_text(FORMAT.format(root=ROOT))
    extra = tmp_path / "vars.json"
    extra.touch(mode=0o600)
    extra.write_text(json.dumps({**SASL, "kafka_broker_cluster": "c1", "kafka_broker_data_dir": str(data)}))
    proc = subprocess.run([PLAYBOOK, str(book), "-v", "-e", f"@{extra}", "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert SERVICE_PASSWORD not in out
    assert "TASK [Format the KRaft storage]" in out and not re.search(r"TASK \[Format the KRaft storage\][^\n]*\n"
                                                                       r"(changed|ok): ", out)
    assert [p for p in leftovers if p.exists()] == [] and not (data / "format-args").exists()
    assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=1\b", out), out[-2000:]
