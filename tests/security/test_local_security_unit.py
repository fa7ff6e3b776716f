"""The files `fedkafka local up --security sasl_ssl` writes: exact keys, modes, and no password where others read."""

from __future__ import annotations

import json
import stat

import pytest
from cryptography import x509

from fedkafka.kafka.cluster import LocalKafkaCluster, SaslSslListener
from fedkafka.local import LocalState, choose_security, down
from fedkafka.local_security import (
    DEMO_USER,
    SERVICE_USER,
    LocalSecurity,
    demo_acl_bindings,
    usage_hint,
    write_client_files,
    write_upstream_config,
)
from fedkafka.security import pki, scram
from fedkafka.security.upstream import load_upstream_config
from fedkafka.view.model import ScramCredential


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_client_files_hold_exactly_the_settings_a_client_needs(tmp_path):
    ca = tmp_path / "ca-src.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    files = write_client_files(tmp_path / "client", "127.0.0.1:9094", "demo", "Pw-123", ca)
    ca_copy = tmp_path / "client" / "ca.pem"
    assert files == {"client.properties": tmp_path / "client" / "client.properties",
                     "librdkafka.json": tmp_path / "client" / "librdkafka.json", "ca.pem": ca_copy}
    assert json.loads(files["librdkafka.json"].read_text()) == {
        "bootstrap.servers": "127.0.0.1:9094", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "demo", "sasl.password": "Pw-123", "ssl.ca.location": str(ca_copy)}
    props = dict(line.split("=", 1) for line in files["client.properties"].read_text().splitlines())
    assert props == {
        "bootstrap.servers": "127.0.0.1:9094", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required username="demo" '
                            'password="Pw-123";',
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca_copy)}
    assert ca_copy.read_text() == ca.read_text()
    assert mode(files["client.properties"]) == mode(files["librdkafka.json"]) == 0o600
    assert mode(ca_copy) == 0o644


def test_a_rewritten_client_file_is_0600_again_even_if_someone_widened_it(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    files = write_client_files(tmp_path / "client", "127.0.0.1:1", "demo", "Pw-1", ca)
    files["librdkafka.json"].chmod(0o644)
    files = write_client_files(tmp_path / "client", "127.0.0.1:2", "demo", "Pw-2", ca)
    assert mode(files["librdkafka.json"]) == 0o600
    assert json.loads(files["librdkafka.json"].read_text())["bootstrap.servers"] == "127.0.0.1:2"


def test_the_upstream_config_is_0600_and_what_the_services_accept(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    path = write_upstream_config(tmp_path / "upstream.json", ca, "fedkafka", "Svc-pw")
    assert mode(path) == 0o600
    assert json.loads(path.read_text()) == {"security.protocol": "SASL_SSL", "ssl.ca.location": str(ca),
                                            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "fedkafka",
                                            "sasl.password": "Svc-pw"}
    load_upstream_config(path)  # the controller's and the proxies' own check: no error


def test_ensure_makes_certificates_and_passwords_once_and_keys_are_0600(tmp_path):
    sec = LocalSecurity(tmp_path).ensure()
    first = sec.secrets()
    assert set(first) == {"service_user", "service_password", "demo_user", "demo_password"}
    assert first["service_user"] == SERVICE_USER and first["demo_user"] == DEMO_USER
    assert first["service_password"] != first["demo_password"] and len(first["demo_password"]) >= 20
    assert mode(sec.dir) == 0o700 and mode(sec.secrets_path) == mode(sec.upstream_config) == 0o600
    assert mode(sec.pki.server_key) == mode(sec.pki.client_key) == 0o600
    cert = x509.load_pem_x509_certificate(sec.pki.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    key_before = sec.pki.server_key.read_bytes()
    assert LocalSecurity(tmp_path).ensure().secrets() == first  # a restart keeps passwords and certificates
    assert sec.pki.server_key.read_bytes() == key_before
    assert not list(sec.dir.rglob("ca.key")) and not list(sec.dir.rglob("*ca*.key"))  # the CA key is not kept


def test_the_demo_user_gets_scram_hashes_and_acls_on_every_topic_and_group(tmp_path):
    sec = LocalSecurity(tmp_path).ensure()
    creds = sec.demo_credentials()
    password = sec.secrets()["demo_password"]
    assert {c["mechanism"] for c in creds} == set(scram.MECHANISMS)
    assert password not in json.dumps(creds)
    for c in creds:
        stored = ScramCredential.from_dict({**c, "user": DEMO_USER})
        assert scram.password_matches(stored, password) and not scram.password_matches(stored, password + "x")
    assert {(b["resource_type"], b["name"], b["pattern_type"], b["operation"], b["permission"], b["principal"])
            for b in demo_acl_bindings()} == {
        ("TOPIC", "*", "LITERAL", "ALL", "ALLOW", "User:demo"), ("GROUP", "*", "LITERAL", "ALL", "ALLOW", "User:demo"),
        ("CLUSTER", "kafka-cluster", "LITERAL", "DESCRIBE", "ALLOW", "User:demo")}


def test_hardened_brokers_authorize_only_the_service_user_and_keep_its_password_in_the_0600_file(tmp_path):
    sec = LocalSecurity(tmp_path).ensure()
    password = sec.secrets()["service_password"]
    cluster = LocalKafkaCluster("c1", tmp_path / "kafka" / "c1", port=1234, controller_port=1235,
                                sasl_ssl=sec.broker_listener())
    cluster.brokers[0].internal_port = 1236
    cfg = cluster.config()
    # every listener that carries the service user's password runs TLS: it never crosses loopback in clear
    assert cfg["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:SASL_SSL"
    assert cfg["ssl.truststore.type"] == "PEM" and cfg["ssl.truststore.certificates"] == sec.pki.ca.read_text().strip()
    assert cfg["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert cfg["super.users"] == "User:fedkafka" and "allow.everyone.if.no.acl.found" not in cfg
    assert cfg["sasl.mechanism.inter.broker.protocol"] == cfg["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert cluster.internal_client_config() == {"security.protocol": "SASL_SSL", "ssl.ca.location": str(sec.pki.ca),
                                                "sasl.mechanism": "PLAIN", "sasl.username": "fedkafka",
                                                "sasl.password": password}
    props = cluster.brokers[0]._write_files()
    assert password in props.read_text() and mode(props) == 0o600


def test_an_existing_world_readable_server_properties_is_tightened_before_the_key_goes_in(tmp_path):
    sec = LocalSecurity(tmp_path).ensure()
    cluster = LocalKafkaCluster("c1", tmp_path / "kafka" / "c1", port=1234, controller_port=1235,
                                sasl_ssl=sec.broker_listener())
    cluster.brokers[0].internal_port = 1236
    props = tmp_path / "kafka" / "c1" / "server.properties"
    props.parent.mkdir(parents=True)
    props.write_text("node.id=1\n")
    props.chmod(0o644)
    cluster.brokers[0]._write_files()
    assert mode(props) == 0o600 and sec.secrets()["service_password"] in props.read_text()


def test_a_hardened_listener_needs_the_ca_of_its_internal_tls(tmp_path):
    with pytest.raises(ValueError, match="needs the CA"):
        SaslSslListener(tmp_path / "c.pem", tmp_path / "k.pem", {"fedkafka": "pw"}, service_user="fedkafka")


def test_status_and_down_need_no_secret_and_up_says_what_is_missing(tmp_path):
    """A secured state whose secrets.json is gone can still be listed and stopped (down --purge too)."""
    state = LocalState.load(tmp_path)
    choose_security(state, "sasl_ssl")
    state.clusters.append(LocalKafkaCluster("c1", tmp_path / "kafka" / "c1", port=1, controller_port=2))
    state.save()
    (tmp_path / "security" / "secrets.json").unlink()
    again = LocalState.load(tmp_path)
    assert again.status()["clusters"][0]["running"] is False
    with pytest.raises(RuntimeError, match=r"secrets\.json is missing.*local down --purge"):
        again.local_security.broker_listener()
    with pytest.raises(RuntimeError, match=r"secrets\.json is missing"):  # `up`: no new passwords the controller
        choose_security(again, None)                                   # and the brokers' metadata do not know
    down(again)
    down(LocalState.load(tmp_path), purge=True)
    assert not (tmp_path / "state.json").exists()


def test_up_refuses_a_server_certificate_about_to_expire(tmp_path):
    sec = LocalSecurity(tmp_path).ensure()
    pki.make_pki(sec.dir / "pki", org="fedkafka-local", days=3)  # as if made 822 days ago
    with pytest.raises(RuntimeError, match=r"expires .* UTC; `fedkafka local down --purge` then"):
        sec.ensure()
    sec.check_certificates(margin_days=1)  # still valid for 3 days


def test_up_leaves_an_existing_demo_user_and_its_acls_alone(tmp_path):
    """A second `local up` neither resets a password the user changed nor re-adds ACLs they deleted, and does not
    bump the view's version (a real controller app, in process, on SQLite)."""
    from fastapi.testclient import TestClient

    from fedkafka.controller.app import create_app
    from fedkafka.controller.kafka_admin import KafkaAdmin
    from fedkafka.controller.service import Controller, Settings
    from fedkafka.local import _ensure_demo_user

    state = LocalState.load(tmp_path)
    choose_security(state, "sasl_ssl")
    ctl = Controller(Settings(db_url=f"sqlite:///{tmp_path / 'ctl.db'}"), kafka=KafkaAdmin())
    with TestClient(create_app(ctl, "tok", background=False), headers={"Authorization": "Bearer tok"}) as api:
        _ensure_demo_user(state, api)
        assert len(api.get("/v1/acls", params={"principal": "User:demo"}).json()) == 3
        changed = [{k: v for k, v in scram.make_credential(DEMO_USER, m, "changed-pw").to_dict().items() if k != "user"}
                   for m in scram.MECHANISMS]
        api.put(f"/v1/users/{DEMO_USER}", json={"credentials": changed}).raise_for_status()
        api.post("/v1/acls/delete", json={"principal": "User:demo", "resource_type": "GROUP"}).raise_for_status()
        version = api.get("/v1/view").json()["version"]
        _ensure_demo_user(state, api)
        assert api.get("/v1/view").json()["version"] == version
        assert {b["resource_type"] for b in api.get("/v1/acls", params={"principal": "User:demo"}).json()} == \
            {"TOPIC", "CLUSTER"}
        stored = [c for c in ctl.view.credentials if c.user == DEMO_USER]
        assert stored and all(scram.password_matches(c, "changed-pw") for c in stored)


def test_the_security_mode_is_kept_in_the_state_and_cannot_change_under_a_running_federation(tmp_path):
    state = LocalState.load(tmp_path)
    assert choose_security(state, None) == "plaintext"
    assert choose_security(state, "sasl_ssl") == "sasl_ssl"
    state.clusters.append(LocalKafkaCluster("c1", tmp_path / "kafka" / "c1", port=1, controller_port=2,
                                            sasl_ssl=state.local_security.broker_listener()))
    state.save()
    again = LocalState.load(tmp_path)
    assert again.security == "sasl_ssl" and again.local_security.broker_listener().service_user == SERVICE_USER
    assert again.cluster("c1").sasl_ssl is None  # given when its brokers start: status and down need no secret
    assert json.loads((tmp_path / "state.json").read_text())["security"] == "sasl_ssl"
    assert choose_security(again, None) == "sasl_ssl"  # `local up` without --security keeps it
    with pytest.raises(RuntimeError, match="--security sasl_ssl; `fedkafka local down --purge` first"):
        choose_security(again, "plaintext")
    for path in tmp_path.rglob("*"):  # state.json and friends: no password where others may read
        if path.is_file() and mode(path) & 0o044:
            text = path.read_text(errors="replace")
            assert all(pw not in text for pw in (again.local_security.secrets()[k]
                                                 for k in ("service_password", "demo_password"))), path


def test_the_hint_shows_the_java_and_python_lines(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    files = write_client_files(tmp_path / ".fedkafka" / "client", "127.0.0.1:9094", "demo", "Pw-1", ca)
    hint = usage_hint(files, cwd=tmp_path)
    assert "fedkafka topic create demo" in hint  # the lines below need the topic
    assert ("kafka-console-producer --bootstrap-server 127.0.0.1:9094 --topic demo "
            "--producer.config .fedkafka/client/client.properties") in hint
    assert 'confluent_kafka.Producer(json.load(open(".fedkafka/client/librdkafka.json")))' in hint
    assert "Pw-1" not in hint


def test_local_up_refuses_an_unknown_security_mode_and_a_change_of_mode(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fedkafka.cli import app

    monkeypatch.setenv("FEDKAFKA_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["local", "up", "--security", "tls"])
    assert result.exit_code == 2 and "'tls' is not one of" in result.output
    state = LocalState.load(tmp_path)
    choose_security(state, "sasl_ssl")
    state.clusters.append(LocalKafkaCluster("c1", tmp_path / "kafka" / "c1", port=1, controller_port=2))
    state.save()
    result = CliRunner().invoke(app, ["local", "up", "--clusters-only", "--security", "plaintext"])
    assert result.exit_code == 1 and "`fedkafka local down --purge` first" in " ".join(result.output.split())
