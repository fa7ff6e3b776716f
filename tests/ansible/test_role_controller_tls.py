"""The controller's API over HTTPS through the bundle: the controller role gives the service its certificate and
key (written from vault text, the key 0600 and never shown) and --metrics-token-required; every fedkafka service
trusts the CA through $FEDKAFKA_CA_FILE and the modules through ca_path, against a real HTTPS controller.

`make test` checks the controller's own program (site.yml --check on the controller, ~20 s); the proxy's and the
name service's too (about a minute more) run in `make test-ansible-heavy` (FEDKAFKA_ANSIBLE_HEAVY=1)."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_harness import TOKEN, run_module, site_check
from security.pki import make_pki

from fedkafka.kafka.cluster import free_port

API_TOKEN = "api-" + secrets.token_hex(12)
KEY_MARK = secrets.token_hex(24)  # appears nowhere else: a search for it finds only leaks
KEY = f"-----BEGIN PRIVATE KEY-----\n{KEY_MARK}\n-----END PRIVATE KEY-----\n"
CERT = f"-----BEGIN CERTIFICATE-----\n{secrets.token_hex(24)}\n-----END CERTIFICATE-----\n"


def _tls_vars(tmp_path: Path, url: str = "https://127.0.0.1:39001") -> dict:
    return {"fedkafka_api_token": API_TOKEN, "fedkafka_controller_url": url, "fedkafka_controller_tls": True,
            "fedkafka_controller_ssl_cert_content": CERT, "fedkafka_controller_ssl_key_content": KEY,
            "fedkafka_controller_metrics_token_required": True,
            "fedkafka_controller_ca_file": str(tmp_path / "etc" / "tls" / "controller-ca.pem"),
            "fedkafka_controller_ca_content": CERT}


def _https_programs(tmp_path: Path, limit: str) -> list[str]:
    """site.yml --check --diff of `limit` with the controller over HTTPS: the rendered programs that trust its CA
    (by file, and by checksum so that a new CA restarts each)."""
    out = site_check(tmp_path, limit, _tls_vars(tmp_path))
    assert KEY_MARK not in out and API_TOKEN not in out
    flat, etc = " ".join(out.split()), tmp_path / "etc"
    assert f"--ssl-cert {etc}/tls/controller.pem --ssl-key {etc}/tls/controller.key --metrics-token-required" in flat
    ca_env = f'FEDKAFKA_CA_FILE="{etc}/tls/controller-ca.pem"'
    ca_sum = f'FEDKAFKA_CA_SHA1="{hashlib.sha1(CERT.encode()).hexdigest()}"'
    return [chunk for chunk in out.split("command=") if ca_env in chunk and ca_sum in chunk]


@pytest.mark.ansible
def test_site_yml_serves_the_controller_over_https_with_its_key_and_trusts_its_ca(tmp_path):
    programs = _https_programs(tmp_path, "localhost,controller")
    assert len(programs) == 1 and " controller --db-file " in " ".join(programs[0].split()), programs


@pytest.mark.ansible
@pytest.mark.skipif(os.environ.get("FEDKAFKA_ANSIBLE_HEAVY") != "1",
                    reason="heavy: runs with FEDKAFKA_ANSIBLE_HEAVY=1 (make test-ansible-heavy)")
def test_site_yml_serves_the_controller_over_https_and_every_service_trusts_its_ca(tmp_path):
    programs = _https_programs(tmp_path, "localhost,controller,proxy1,nameservice")
    assert len(programs) == 3, programs  # the controller, the proxy and the name service programs


@pytest.mark.ansible
@pytest.mark.parametrize("given", [{"fedkafka_controller_url": "http://127.0.0.1:39001"},
                                   {"fedkafka_controller_advertise_url": "http://10.0.0.5:39001"},
                                   {"fedkafka_controller_tls": "false"}],  # a string from -e: still false
                         ids=["http-url", "http-advertised", "tls-false-string"])
def test_https_and_http_urls_must_agree_with_fedkafka_controller_tls(tmp_path, given):
    out = site_check(tmp_path, "localhost,controller", {**_tls_vars(tmp_path), **given}, succeeds=False)
    assert "every controller URL is https://, without it http://" in " ".join(out.split()) and KEY_MARK not in out


@pytest.fixture
def https_controller(tmp_path):
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                             f"sqlite:///{tmp_path / 'c.db'}", "--listen", f"127.0.0.1:{port}", "--token-file",
                             str(tmp_path / "token"), "--ssl-cert", str(pki.server_cert), "--ssl-key",
                             str(pki.server_key)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    args = {"controller_url": f"https://127.0.0.1:{port}", "token": TOKEN, "ca_path": str(pki.ca)}
    try:
        deadline = time.monotonic() + 60
        while run_module("fedkafka_info", {**args, "gather": []})[0]:
            assert proc.poll() is None and time.monotonic() < deadline, "the HTTPS controller did not answer"
            time.sleep(0.2)
        yield args, pki
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration  # a controller process
def test_modules_reach_an_https_controller_only_through_its_ca(https_controller):
    args, pki = https_controller
    failed, result = run_module("fedkafka_info", {**args, "gather": ["clusters"]})
    assert not failed and result["clusters"] == [], result
    for ca in (None, str(pki.other_ca)):  # the system's CAs, another CA: the certificate is refused
        failed, result = run_module("fedkafka_info", {**args, "ca_path": ca, "gather": ["clusters"]})
        assert failed and "CERTIFICATE_VERIFY_FAILED" in result["msg"], result
