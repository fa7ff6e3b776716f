"""The proxy and name service roles' security variables: listeners, TLS files, SASL, OAUTHBEARER, authorization.

Each case runs the real ansible-playbook on localhost over the roles' own files: the variables given are checked
against the role's argument spec (what Ansible does when the role starts), then the role's validate.yml and
security.yml run with the role's defaults, writing TLS files into a temporary directory and the command-line
arguments they give the service into a file. One more case renders the whole proxy role in check mode through
site.yml. No secret (the private key) may appear in Ansible's output."""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_harness import site_check

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
# A private key that appears nowhere else, so a search for it finds only leaks.
KEY = f"-----BEGIN PRIVATE KEY-----\n{secrets.token_hex(24)}\n-----END PRIVATE KEY-----\n"

RENDER = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {root}/roles/fedkafka_common/defaults/main.yml
    - {root}/roles/{role}/defaults/main.yml
  tasks:
    - name: Check the given variables against the role's argument spec
      ansible.builtin.validate_argument_spec:
        argument_spec: "{{{{ (lookup('ansible.builtin.file', '{root}/roles/{role}/meta/argument_specs.yml')
                             | from_yaml).argument_specs.main.options }}}}"
        provided_arguments: "{{{{ given }}}}"
    - name: The role's checks
      ansible.builtin.include_tasks: {root}/roles/{role}/tasks/validate.yml
    - name: The role's security settings
      ansible.builtin.include_tasks: {root}/roles/{role}/tasks/security.yml
    - name: Keep the arguments it gives the service
      ansible.builtin.copy:
        content: "{{{{ __{role}_security_args | to_json }}}}"
        dest: {out}
        mode: "0600"
"""


def render(tmp_path: Path, role: str, given: dict) -> tuple[subprocess.CompletedProcess, list[str] | None]:
    out = tmp_path / "args.json"
    book = tmp_path / "render.yml"
    book.write_text(RENDER.format(root=ROOT, role=role, out=out))
    base = {"fedkafka_config_dir": str(tmp_path / "etc"), "fedkafka_controller_url": "http://127.0.0.1:1",
            "fedkafka_api_token": "0123456789abcdef"}
    extra = tmp_path / "vars.json"
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    checked = {k: v for k, v in {**base, **given}.items() if k in options}  # what the role's own check sees
    extra.write_text(json.dumps({**base, **given, "given": checked}))
    extra.chmod(0o600)
    proc = subprocess.run([PLAYBOOK, str(book), "-e", f"@{extra}", "-v", "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    extra.unlink()  # holds the key
    assert KEY.strip().splitlines()[1] not in proc.stdout + proc.stderr, "the private key leaked into the output"
    return proc, json.loads(out.read_text()) if out.exists() else None


def flat(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


def test_proxy_listeners_tls_sasl_oauth_and_authorization_become_its_arguments(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    proc, args = render(tmp_path, "fedkafka_proxy", {
        "fedkafka_proxy_view_file": "", "fedkafka_proxy_listen_host": "10.0.0.5",
        "fedkafka_proxy_listeners": [{"protocol": "SASL_SSL", "port": 9094, "host": "0.0.0.0"},
                                     {"protocol": "SSL", "port": 9093}],
        "fedkafka_proxy_ssl_cert_content": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        "fedkafka_proxy_ssl_key_content": KEY, "fedkafka_proxy_ssl_ca_content": "ca", "fedkafka_proxy_ssl_client_auth":
        "requested", "fedkafka_proxy_sasl_mechanisms": ["SCRAM-SHA-512", "OAUTHBEARER"],
        "fedkafka_proxy_oauth_jwks_file": str(jwks), "fedkafka_proxy_oauth_issuer": "https://idp",
        "fedkafka_proxy_connections_max_reauth_ms": 3600000, "fedkafka_proxy_failed_authentication_delay_ms": 250,
        "fedkafka_proxy_authorization": True, "fedkafka_proxy_super_users": ["User:admin", "User:ops"],
        "fedkafka_proxy_proxy_header_from": ["10.0.0.7", "10.1.0.0/24"]})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    etc = tmp_path / "etc" / "tls"
    assert args == ["--listener=SASL_SSL://0.0.0.0:9094", "--listener=SSL://10.0.0.5:9093",
                    "--ssl-cert", str(etc / "proxy.pem"), "--ssl-key", str(etc / "proxy.key"),
                    "--ssl-ca", str(etc / "proxy-ca.pem"), "--ssl-client-auth", "requested",
                    "--sasl-mechanisms", "SCRAM-SHA-512,OAUTHBEARER", "--oauth-jwks-file", str(jwks),
                    "--oauth-issuer", "https://idp", "--connections-max-reauth-ms", "3600000",
                    "--failed-authentication-delay-ms", "250", "--authorization",
                    "--super-user=User:admin", "--super-user=User:ops",
                    "--proxy-header-from", "10.0.0.7,10.1.0.0/24"]
    assert (etc / "proxy.key").read_text() == KEY
    assert stat.S_IMODE((etc / "proxy.key").stat().st_mode) == 0o600


def test_proxy_without_security_variables_adds_no_argument(tmp_path):
    proc, args = render(tmp_path, "fedkafka_proxy", {"fedkafka_proxy_view_file": ""})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert args == [] and not (tmp_path / "etc" / "tls").exists()


BAD_PROXY = [
    ({"fedkafka_proxy_listeners": [{"protocol": "SASL_TLS", "port": 9094}]},
     "value of protocol must be one of: SSL, SASL_PLAINTEXT, SASL_SSL, got: SASL_TLS"),
    ({"fedkafka_proxy_listeners": [{"protocol": "SASL_SSL"}]}, "missing required arguments: port"),
    ({"fedkafka_proxy_ssl_client_auth": "maybe"}, "fedkafka_proxy_ssl_client_auth must be one of"),
    ({"fedkafka_proxy_sasl_mechanisms": ["GSSAPI"]}, "fedkafka_proxy_sasl_mechanisms must be one or more of"),
    ({"fedkafka_proxy_listeners": [{"protocol": "SSL", "port": 9092}]}, "need ports of their own"),
    ({"fedkafka_proxy_listeners": [{"protocol": "SSL", "port": 9093}, {"protocol": "SSL", "port": 9094}]},
     "one protocol each"),
    ({"fedkafka_proxy_sasl_mechanisms": ["OAUTHBEARER"]}, "OAUTHBEARER in fedkafka_proxy_sasl_mechanisms needs"),
    ({"fedkafka_proxy_super_users": ["admin"]}, "fedkafka_proxy_super_users are Type:name principals"),
    ({"fedkafka_proxy_ssl_client_auth": "required"}, "needs fedkafka_proxy_ssl_ca"),
    # an SSL listener whose key file is not on the host, and no key given to write there
    ({"fedkafka_proxy_listeners": [{"protocol": "SASL_SSL", "port": 9094}]},
     "an SSL or SASL_SSL listener needs a certificate and its private key"),
]


@pytest.mark.parametrize(("given", "message"), BAD_PROXY, ids=[m[:40] for _, m in BAD_PROXY])
def test_bad_proxy_security_variables_are_refused_with_a_message(tmp_path, given, message):
    proc, args = render(tmp_path, "fedkafka_proxy", {"fedkafka_proxy_view_file": "", **given})
    assert proc.returncode != 0
    assert message in flat(proc), flat(proc)[-3000:]
    assert args is None


def test_a_missing_key_file_is_named(tmp_path):
    cert = tmp_path / "given.pem"
    cert.write_text("cert")
    proc, _ = render(tmp_path, "fedkafka_proxy", {
        "fedkafka_proxy_view_file": "", "fedkafka_proxy_listeners": [{"protocol": "SSL", "port": 9093}],
        "fedkafka_proxy_ssl_cert": str(cert), "fedkafka_proxy_ssl_key": str(tmp_path / "nowhere.key")})
    assert proc.returncode != 0
    assert f"{tmp_path / 'nowhere.key'} does not exist on the host" in flat(proc), flat(proc)[-3000:]


def test_name_service_listeners_and_tls_files(tmp_path):
    proc, args = render(tmp_path, "fedkafka_nameservice", {
        "fedkafka_nameservice_listeners": [{"protocol": "SASL_SSL", "port": 9094}],
        "fedkafka_nameservice_ssl_cert_content": "cert", "fedkafka_nameservice_ssl_key_content": KEY,
        "fedkafka_nameservice_ssl_ca": "/etc/pki/proxies-ca.pem", "fedkafka_nameservice_send_proxy_header": True,
        "fedkafka_nameservice_relay_source": "10.0.0.9"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    etc = tmp_path / "etc" / "tls"
    assert args == ["--listener=SASL_SSL://127.0.0.1:9094", "--ssl-cert", str(etc / "nameservice.pem"),
                    "--ssl-key", str(etc / "nameservice.key"), "--ssl-ca", "/etc/pki/proxies-ca.pem",
                    "--send-proxy-header", "--relay-source", "10.0.0.9"]
    assert stat.S_IMODE((etc / "nameservice.key").stat().st_mode) == 0o600
    bad, _ = render(tmp_path, "fedkafka_nameservice", {
        "fedkafka_nameservice_listeners": [{"protocol": "SASL_SSL", "port": 8781}]})
    assert bad.returncode != 0 and "need ports of their own" in flat(bad)
    bad, _ = render(tmp_path, "fedkafka_nameservice", {
        "fedkafka_nameservice_listeners": [{"protocol": "PLAINTEXT", "port": 9095}]})
    assert bad.returncode != 0 and "value of protocol must be one of" in flat(bad)


def test_the_proxy_role_runs_the_secured_proxy_in_check_mode_without_showing_the_key(tmp_path):
    """Through site.yml and the real role: the unit's command line carries the listener and files, not the key."""
    out = site_check(tmp_path, "localhost,proxy1", {
        "fedkafka_proxy_listeners": [{"protocol": "SASL_SSL", "port": 9394}],
        "fedkafka_proxy_ssl_cert_content": "cert", "fedkafka_proxy_ssl_key_content": KEY,
        "fedkafka_proxy_authorization": True, "fedkafka_proxy_super_users": ["User:admin"]})
    assert KEY.strip().splitlines()[1] not in out
    assert "--listener=SASL_SSL://" in out and ":9394" in out and "--authorization" in out, out[-4000:]
    assert "--super-user=User:admin" in out and "--ssl-key" in out
    # the certificate is new: the run checks the listener serves it (restarting a proxy too old to load it)
    assert "the run checks that 127.0.0.1:9394 serves the certificate written to" in " ".join(out.split()), out[-4000:]


@pytest.mark.parametrize(("role", "command"), [("fedkafka_proxy", "proxy"), ("fedkafka_nameservice", "nameservice")])
def test_every_flag_the_role_gives_is_one_the_service_takes(role, command):
    import re

    import typer

    from fedkafka.cli import app

    takes = {opt for param in typer.main.get_command(app).commands[command].params for opt in param.opts}
    gives = set(re.findall(r"'(--[a-z-]+)=?", (ROOT / "roles" / role / "tasks" / "security.yml").read_text()))
    assert gives and gives <= takes, gives - takes


@pytest.mark.parametrize("role", ["fedkafka_proxy", "fedkafka_nameservice"])
def test_the_documented_defaults_are_the_roles_defaults(role):
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    options = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())[
        "argument_specs"]["main"]["options"]
    security = [k for k in defaults if any(w in k for w in ("listeners", "ssl_", "sasl", "oauth", "authorization",
                                                            "super_users", "reauth", "proxy_header",
                                                            "relay_source"))]
    assert security
    for name in security:
        assert options[name].get("default") == defaults[name], name
        assert options[name]["description"], name
    secrets_ = [k for k in security if k.endswith("key_content")]
    assert secrets_ and all(options[k].get("no_log") for k in secrets_)


# -- the brokers' TLS and SASL settings (fedkafka_upstream_config) -----------------------------------------------
UPSTREAM_PASSWORD = "Upstream-" + secrets.token_hex(12)
UPSTREAM = {"security.protocol": "SASL_SSL", "ssl.ca.location": "/etc/fedkafka/tls/kafka-ca.pem",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "fedkafka", "sasl.password": UPSTREAM_PASSWORD}


def test_the_upstream_config_is_written_0600_and_only_its_path_reaches_the_command_line(tmp_path):
    book = tmp_path / "upstream.yml"
    out = tmp_path / "args.json"
    book.write_text(f"""
- hosts: localhost
  gather_facts: false
  vars_files:
    - {ROOT}/roles/fedkafka_common/defaults/main.yml
    - {ROOT}/roles/fedkafka_common/vars/main.yml
  tasks:
    - name: The common role's upstream tasks
      ansible.builtin.include_tasks: {ROOT}/roles/fedkafka_common/tasks/upstream.yml
    - name: Keep the arguments
      ansible.builtin.copy:
        content: "{{{{ __fedkafka_upstream_args | to_json }}}}"
        dest: {out}
        mode: "0600"
""")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"fedkafka_config_dir": str(tmp_path / "etc"), "fedkafka_upstream_config": UPSTREAM}))
    extra.chmod(0o600)
    (tmp_path / "etc").mkdir()
    proc = subprocess.run([PLAYBOOK, str(book), "-e", f"@{extra}", "-v", "-e", "ansible_connection=local",
                           "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert UPSTREAM_PASSWORD not in proc.stdout + proc.stderr
    written = tmp_path / "etc" / "upstream.json"
    assert json.loads(out.read_text()) == ["--upstream-config", str(written)]
    assert json.loads(written.read_text()) == UPSTREAM
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_site_yml_gives_proxy_and_controller_the_upstream_config_without_showing_the_password(tmp_path):
    out = site_check(tmp_path, "localhost,proxy1,controller", {"fedkafka_upstream_config": UPSTREAM})
    assert UPSTREAM_PASSWORD not in out
    assert out.count("--upstream-config") >= 2, out[-4000:]  # the controller's command and the proxy's
