"""A real controller process over HTTP: no body is read before the token check, and bodies are capped.

Raw sockets where a client must be able to stop half-way (declare 5 GB and send nothing more); httpx for
what ordinary clients do. The old behaviour: FastAPI read (and waited for) the whole body before checking
the token, with no size limit.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from fedkafka.kafka.cluster import free_port

pytestmark = pytest.mark.integration  # a controller process

TOKEN = "tok"
CAP = 4096


@pytest.fixture
def controller_url(tmp_path):
    token = tmp_path / "t"
    token.write_text(TOKEN)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                             f"sqlite:///{tmp_path / 'c.db'}", "--listen", f"127.0.0.1:{port}", "--token-file",
                             str(token), "--max-body-bytes", str(CAP)], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        yield url, port
    finally:
        proc.kill()
        proc.wait()


def raw_request(port: int, head: str, body_parts: list[bytes] = ()) -> tuple[int, dict]:
    """Send a request head (and some body), then read the answer without sending the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in body_parts:
            s.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            chunk = s.recv(65536)  # socket.timeout here: the server is still waiting for the body
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}")


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_no_body_is_read_before_the_token_check(controller_url):
    url, port = controller_url
    status, body = raw_request(port, "PUT /v1/topics/t HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                     "Content-Length: 5000000000\n", [b"{" + b" " * 65536])
    assert status == 401 and "token" in body["detail"]
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200  # the loop was never held


def test_a_declared_or_streamed_body_over_the_cap_is_refused(controller_url):
    url, port = controller_url
    auth = f"Authorization: Bearer {TOKEN}\n"
    status, body = raw_request(port, f"PUT /v1/topics/t HTTP/1.1\nHost: x\n{auth}Content-Length: 5000000000\n")
    assert status == 413 and str(CAP) in body["detail"]
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"  # chunked: no Content-Length to refuse up front
    status, _ = raw_request(port, f"PUT /v1/topics/t HTTP/1.1\nHost: x\n{auth}Transfer-Encoding: chunked\n"
                                  "Content-Type: application/json\n", [chunk] * 8)
    assert status == 413
    headers = {"Authorization": f"Bearer {TOKEN}"}
    over = httpx.put(url + "/v1/topics/t", headers=headers, content=b" " * (CAP + 1), timeout=10)
    assert over.status_code == 413
    # under the cap everything works as before, including the 422 of a body that does not parse
    assert httpx.put(url + "/v1/clusters/c1", headers=headers, json={"bootstrap": "127.0.0.1:1"},
                     timeout=10).status_code == 200
    assert httpx.put(url + "/v1/topics/t", headers=headers, content=b"{", timeout=10).status_code == 422
    assert httpx.get(url + "/v1/clusters", timeout=10).status_code == 401
    assert httpx.get(url + "/metrics", timeout=10).status_code == 200
