"""`fedkafka proxy` and `fedkafka nameservice` refuse inconsistent security flags with one clear message."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from fedkafka.security.listeners import parse_listener


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedkafka.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (["--listener", "TLS://127.0.0.1:39991"], "listener must be PROTOCOL://HOST:PORT"),
    (["--listener", "SASL_SSL://127.0.0.1:39991"], "needs --ssl-cert and --ssl-key"),
    (["--listener", "SSL://127.0.0.1:39991", "--ssl-cert", "/nonexistent", "--ssl-key", "/nonexistent"],
     "cannot read /nonexistent"),
    (["--listen", "127.0.0.1:39991", "--listener", "SASL_PLAINTEXT://127.0.0.1:39991"], "its own port"),
    (["--listener", "SASL_PLAINTEXT://127.0.0.1:39991", "--sasl-mechanisms", "GSSAPI"], "--sasl-mechanisms takes"),
    (["--listener", "SASL_PLAINTEXT://127.0.0.1:39991", "--sasl-mechanisms", "OAUTHBEARER"],
     "OAUTHBEARER needs --oauth-jwks-file"),
    (["--listen", "127.0.0.1:39991", "--ssl-client-auth", "always"], "--ssl-client-auth must be one of"),
    (["--listen", "127.0.0.1:39991", "--super-user", "admin"], "--super-user must be Type:name"),
    (["--role", "pproxy"], "give --listen HOST:PORT or at least one --listener"),
    (["--listen", "127.0.0.1:39991", "--connections-max-reauth-ms", "-1"], "--connections-max-reauth-ms must be"),
    (["--listen", "127.0.0.1:39991", "--failed-authentication-delay-ms", "-1"],
     "--failed-authentication-delay-ms must be"),
    (["--listen", "127.0.0.1:39991", "--proxy-header-from", "10.0.0.0/8,ns.example"],
     "--proxy-header-from: 'ns.example' is not an IP address or CIDR network"),
])
def test_bad_proxy_security_flags(tmp_path, refused_cli, args, message):
    view = tmp_path / "view.json"
    view.write_text('{"version": 1}')
    role = [] if "--role" in args else ["--role", "pproxy"]
    code, output = refused_cli("proxy", *role, "--view-file", str(view), *args)
    assert code == 2
    assert message in output


def test_a_bad_jwks_file_is_refused(tmp_path, refused_cli):
    view, jwks = tmp_path / "view.json", tmp_path / "jwks.json"
    view.write_text('{"version": 1}')
    jwks.write_text("{not json")
    code, output = refused_cli("proxy", "--role", "pproxy", "--view-file", str(view), "--listener",
                               "SASL_PLAINTEXT://127.0.0.1:39991", "--oauth-jwks-file", str(jwks))
    assert code == 2 and "--oauth-jwks-file" in output


def test_the_name_service_needs_a_certificate_for_a_tls_listener(tmp_path):
    token = tmp_path / "t"
    token.write_text("tok")
    proc = _run("nameservice", "--listener", "SASL_SSL://127.0.0.1:39992", "--http-listen", "127.0.0.1:39993",
                "--controller", "http://127.0.0.1:1", "--token-file", str(token))
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", proc.stderr + proc.stdout).split())  # typer draws a box around it
    assert proc.returncode != 0 and "needs --ssl-cert and --ssl-key" in flat


def test_listener_parsing():
    assert str(parse_listener("sasl_ssl://:9094")) == "SASL_SSL://0.0.0.0:9094"
    for bad in ("PLAINTEXT://host", "PLAINTEXT:/host:1", "PLAINTEXT://host:99999"):
        with pytest.raises(ValueError):
            parse_listener(bad)
