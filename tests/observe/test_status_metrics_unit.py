"""`fedkafka status` reads the controller's /metrics as it reads /v1/status: with the operator token (a controller run
with --metrics-token-required answers /metrics only to a token) and through $FEDKAFKA_CA_FILE (an HTTPS controller
with a private CA); a refusal is said, not summarised. A stand-in controller on loopback answers as the real one's
guard does (controller.guard; its scopes are tested in tests/controller/test_token_scopes.py)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from security.pki import make_pki
from typer.testing import CliRunner

from fedkafka.cli import app
from fedkafka.controllers import CA_FILE_ENV
from observe.support import TOKEN

STATUS = {"view_version": 3, "clusters": 1, "topics": 0, "proxies": [], "coordination_cluster": "c1"}
METRICS = "fedkafka_controller_active 0.0\nfedkafka_controller_db_ok 1.0\n"  # a standby: the summary says so
NOT_ACTIVE = "the controller is not active (no view changes, workflows or moves until one is)"


REFUSALS = {401: "missing or wrong bearer token", 403: "the routing token may not GET /metrics"}


def _handler(refusal: int | None) -> type[BaseHTTPRequestHandler]:
    class Controller(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if self.path == "/v1/status" and bearer == TOKEN:
                self._answer(200, "application/json", json.dumps(STATUS))
            elif self.path == "/metrics" and bearer == TOKEN and refusal is None:
                self._answer(200, "text/plain; version=0.0.4", METRICS)
            else:  # --metrics-token-required: /metrics as /v1/ (401 without a token, 403 out of its scope)
                code = refusal or 401
                self._answer(code, "application/json", json.dumps({"detail": REFUSALS[code]}))

        def _answer(self, code: int, content_type: str, body: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args) -> None:
            pass

    return Controller


@contextmanager
def stand_in_controller(refusal: int | None = None, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """`refusal`: what /metrics answers the operator token (None: the metrics)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(refusal))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def status_cli(tmp_path, monkeypatch):
    """`status_cli(url)`: `fedkafka status --json` in this process with the operator token; (exit code, output)."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("FEDKAFKA_TOKEN", raising=False)

    def invoke(url: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["status", "--json", "--controller", url, "--token-file", str(token_file)])
        assert not isinstance(result.exception, AssertionError | TypeError | AttributeError), result.output
        return result.exit_code, result.output

    return invoke


def test_status_sends_the_token_to_a_controller_whose_metrics_require_one(status_cli):
    with stand_in_controller() as url:
        code, output = status_cli(url)
    assert code == 0, output
    assert json.loads(output)["health"]["issues"] == [NOT_ACTIVE]


def test_status_reads_the_metrics_of_an_https_controller_through_the_ca_file(status_cli, tmp_path, monkeypatch):
    pki = make_pki(tmp_path / "pki")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    monkeypatch.setenv(CA_FILE_ENV, str(pki.ca))
    with stand_in_controller(tls=tls) as url:
        code, output = status_cli(url)
    assert code == 0, output
    assert json.loads(output)["health"]["issues"] == [NOT_ACTIVE]


@pytest.mark.parametrize("refusal", [401, 403])
def test_a_refused_metrics_read_is_said_in_one_line_not_summarised(status_cli, refusal):
    with stand_in_controller(refusal) as url:
        code, output = status_cli(url)
    assert code == 1
    assert output.startswith("fedkafka: the controller refused its /metrics to this token")
    assert f"HTTP {refusal}: {REFUSALS[refusal]}" in output
    assert len(output.strip().splitlines()) == 1 and TOKEN not in output
