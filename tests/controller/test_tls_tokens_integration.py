"""A real `fedkafka controller` process serving its API over HTTPS with an operator, a service and a routing token:
the operator token may do everything, the service token what proxies do and nothing more (403), the routing token
what the name service does, no token 401,
plain HTTP on the TLS port gets nowhere, and the CLI reaches it through $FEDKAFKA_CA_FILE."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from security.pki import make_pki

from fedkafka.kafka.cluster import free_port
from fedkafka.nameservice.resolver import ControllerResolver, ResolverError
from fedkafka.proxy.view_source import ControllerViewSource

pytestmark = pytest.mark.integration  # a controller process

OPERATOR, SERVICE, ROUTING = "operator-tok", "service-tok", "routing-tok"
PROXY = {"instance_id": "i1", "host": "127.0.0.1", "port": 9092, "role": "both", "pool": "p1"}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedkafka.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.fixture
def tls_controller(tmp_path):
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "op").write_text(OPERATOR)
    (tmp_path / "svc").write_text(SERVICE)
    (tmp_path / "routing").write_text(ROUTING)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                             f"sqlite:///{tmp_path / 'c.db'}", "--listen", f"127.0.0.1:{port}",
                             "--token-file", str(tmp_path / "op"), "--service-token-file", str(tmp_path / "svc"),
                             "--routing-token-file", str(tmp_path / "routing"),
                             "--ssl-cert", str(pki.server_cert), "--ssl-key", str(pki.server_key),
                             "--metrics-token-required"], stderr=subprocess.PIPE, text=True)
    url = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=pki.ca), timeout=5) as https:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if https.get(url + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                    time.sleep(0.1)
            yield url, port, pki, https
    finally:
        proc.kill()
        proc.wait()


def test_tls_and_scoped_tokens(tls_controller):
    url, port, _pki, https = tls_controller
    as_operator = {"Authorization": f"Bearer {OPERATOR}"}
    as_service = {"Authorization": f"Bearer {SERVICE}"}
    cluster = {"bootstrap": f"127.0.0.1:{free_port()}"}
    refused = https.put(url + "/v1/clusters/c1", json=cluster, headers=as_service)
    assert refused.status_code == 403 and "service token may not PUT /v1/clusters/c1" in refused.json()["detail"]
    assert https.put(url + "/v1/clusters/c1", json=cluster, headers=as_operator).status_code == 200
    assert https.post(url + "/v1/proxies", json=PROXY, headers=as_service).status_code == 200
    view = https.get(url + "/v1/view", headers=as_service)
    assert view.status_code == 200 and [p["pool"] for p in view.json()["proxies"]] == ["p1"]
    assert https.get(url + "/v1/view").status_code == 401
    assert https.get(url + "/metrics").status_code == 401
    assert https.get(url + "/metrics", headers=as_service).status_code == 200
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port: no answer, only a closed connection
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_the_cli_trusts_the_controller_through_its_ca_file(tls_controller):
    url, _port, pki, _https = tls_controller
    env = {"FEDKAFKA_CONTROLLER_URL": url, "FEDKAFKA_TOKEN": OPERATOR}
    listed = _cli("cluster", "list", "--json", env={**env, "FEDKAFKA_CA_FILE": str(pki.ca)})
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stderr
    untrusted = _cli("cluster", "list", env={**env, "FEDKAFKA_CA_FILE": str(pki.other_ca)})
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    as_service = _cli("cluster", "list", env={**env, "FEDKAFKA_TOKEN": SERVICE, "FEDKAFKA_CA_FILE": str(pki.ca)})
    assert as_service.returncode == 1 and "HTTP 403" in as_service.stderr


def test_a_proxy_and_the_name_service_reach_it_with_the_service_token(tls_controller, monkeypatch):
    url, _port, pki, _https = tls_controller
    monkeypatch.setenv("FEDKAFKA_CA_FILE", str(pki.ca))

    async def calls() -> tuple[tuple[int, int], str]:
        source = ControllerViewSource(url, SERVICE, "i1", on_block=lambda start, size: None)
        resolver = ControllerResolver(url, SERVICE)
        try:
            return await source.fetch_block(), (await resolver.resolve("app")).pool
        finally:
            await source.client.aclose()
            await resolver.aclose()

    (_start, size), pool = asyncio.run(calls())
    assert size > 0 and pool
    monkeypatch.setenv("FEDKAFKA_CA_FILE", str(pki.other_ca))
    # the block request walks the listed controllers and names what each one's call met (docs/DESIGN.md §5.3)
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(calls())

    async def resolve() -> str:
        resolver = ControllerResolver(url, SERVICE)
        try:
            return (await resolver.resolve("app")).pool
        finally:
            await resolver.aclose()

    with pytest.raises(ResolverError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(resolve())


def test_the_name_service_reaches_it_with_the_routing_token_and_a_proxy_does_not(tls_controller, monkeypatch):
    url, _port, pki, _https = tls_controller
    monkeypatch.setenv("FEDKAFKA_CA_FILE", str(pki.ca))

    async def resolve() -> str:
        resolver = ControllerResolver(url, ROUTING)
        try:
            return (await resolver.resolve("app")).pool
        finally:
            await resolver.aclose()

    async def fetch_block() -> None:
        source = ControllerViewSource(url, ROUTING, "i1", on_block=lambda start, size: None)
        try:
            await source.fetch_block()
        finally:
            await source.client.aclose()

    assert asyncio.run(resolve())
    with pytest.raises(httpx.HTTPStatusError, match="403"):
        asyncio.run(fetch_block())


def test_bad_tls_or_token_arguments_exit_with_one_line(tmp_path):
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "op").write_text(OPERATOR)
    base = ["controller", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--listen", "127.0.0.1:0",
            "--token-file", str(tmp_path / "op")]
    cases = [(["--ssl-cert", str(pki.server_cert)], "go together"),
             (["--ssl-cert", str(pki.server_cert), "--ssl-key", str(pki.client_key)], "cannot load --ssl-cert"),
             (["--service-token-file", str(tmp_path / "op")], "same token as --token-file"),
             (["--service-token-file", str(tmp_path / "missing")], "cannot read --service-token-file"),
             (["--routing-token-file", str(tmp_path / "op")], "give name services a token of their own")]
    for extra, words in cases:
        res = _cli(*base, *extra, env={})
        assert res.returncode == 2 and words in res.stderr, (extra, res.stderr)
