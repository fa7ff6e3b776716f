"""s36: when no listed controller answers a module's request as the active one, its error names each controller asked
and what it said, in the CLI's words (tests/controller/test_s36_cli_names_each_controller_unit.py; docs/DESIGN.md
§3.6). A controller that took the request and closed the connection (or timed out) before answering ended the
request with "GET /v1/status: Remote end closed connection without response": no controller named, the ones asked
before it dropped, and a read not asked of the next. Now a read goes on to the next controller, and a write is not
sent again but said to be maybe carried out. The token never shows. Stand-ins over real HTTP, no controller."""

from __future__ import annotations

import socket
import threading

import pytest
from ansible_harness import ApiError, FedkafkaApi
from ansible_harness import run_module as run
from test_modules_ha import ACTIVE, http_controller  # noqa: F401 (a fixture)

from fedkafka.kafka.cluster import free_port

TOKEN = "s36-modules-token-0123456789abcdef"
ELSEWHERE = "http://elsewhere:8780"  # an active controller the standby names, not listed


@pytest.fixture
def hanging_up():
    """Factory: a stand-in that reads a request and closes the connection without an answer; returns its URL. The
    requests it read: `hanging_up.seen[url]` (their first line)."""
    sockets: list[socket.socket] = []

    def start() -> str:
        server = socket.create_server(("127.0.0.1", 0))
        sockets.append(server)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        seen = start.seen[url] = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:  # closed: the test is over
                    return
                with conn:
                    seen.append(conn.recv(65536).split(b"\r\n", 1)[0].decode())

        threading.Thread(target=serve, daemon=True).start()
        return url

    start.seen = {}
    yield start
    for server in sockets:
        server.close()


def test_every_controller_asked_is_named_and_a_read_left_unanswered_goes_on(http_controller, hanging_up):  # noqa: F811
    standby = http_controller(503, {ACTIVE: ELSEWHERE}, {"detail": "standby"})
    hangs_up, dead = hanging_up(), f"http://127.0.0.1:{free_port()}"
    failed, result = run("fedkafka_info", {"controller_url": [standby, hangs_up, dead], "token": TOKEN,
                                           "gather": []})
    assert failed and result["msg"] == (
        f"GET /v1/status: no active controller answered ({standby} stands by (active: {ELSEWHERE}); {hangs_up} did "
        f"not answer (Remote end closed connection without response); {dead} unreachable ([Errno 111] Connection "
        "refused))"), result["msg"]
    assert TOKEN not in result["msg"] and hanging_up.seen[hangs_up] == ["GET /v1/status HTTP/1.1"]


def test_a_write_left_unanswered_is_not_sent_again_and_names_the_ones_asked_before_it(http_controller,  # noqa: F811
                                                                                      hanging_up):
    hangs_up = hanging_up()
    standby = http_controller(503, {ACTIVE: hangs_up}, {"detail": "standby"})
    with pytest.raises(ApiError) as failed:
        FedkafkaApi([standby, hangs_up], TOKEN, timeout=5).put_cluster("c9", "h:1", None)
    said = str(failed.value)
    assert said == (f"PUT /v1/clusters/c9: no answer from the controller at {hangs_up} (Remote end closed connection "
                    f"without response); it may have been carried out: check before repeating it (asked before it: "
                    f"{standby} stands by (active: {hangs_up}))"), said
    assert hanging_up.seen[hangs_up] == ["PUT /v1/clusters/c9 HTTP/1.1"] and TOKEN not in said
