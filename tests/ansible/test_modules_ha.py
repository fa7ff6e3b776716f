"""The modules with several controllers (docs/DESIGN.md §3.6): `controller_url` lists them and a request follows
the active one (a standby's 503 names it; one that does not answer is skipped), and a bad list is refused.

The first tests need no controller; the last ones run two real `fedkafka controller` processes on one PostgreSQL
database, the first URL given to the module being the standby's."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from ansible_harness import FedkafkaApi
from ansible_harness import run_module as run

from fedkafka.kafka.cluster import free_port

TOKEN = "ha-integration-token-0123456789"


@pytest.mark.parametrize(("urls", "message"), [
    ("", "controller_url names no controller"),
    (" , ", "controller_url names no controller"),
    ("controller:8780", "'controller:8780' is not a controller's base URL"),
    ("http://a:8780,ftp://b:8780", "'ftp://b:8780' is not a controller's base URL"),
    (["http://a:8780", "http://a:8780/"], "lists a controller twice"),
])
def test_a_bad_controller_list_is_refused_with_a_clear_message(urls, message):
    failed, result = run("fedkafka_info", {"controller_url": urls, "token": TOKEN})
    assert failed and message in result["msg"], result


@pytest.mark.parametrize("urls", ["http://a:1,http://b:2/", ["http://a:1", "http://b:2"], ["http://a:1,http://b:2"]])
def test_a_list_or_a_comma_separated_string_gives_the_same_controllers(urls):
    assert FedkafkaApi(urls, TOKEN).urls == ["http://a:1", "http://b:2"]


def test_no_controller_answering_names_each_one_tried():
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    failed, result = run("fedkafka_info", {"controller_url": dead, "token": TOKEN, "request_timeout": 5})
    assert failed and "no active controller answered" in result["msg"], result
    assert all(f"{url} unreachable" in result["msg"] for url in dead), result


class _Answering(http.server.BaseHTTPRequestHandler):
    """A stand-in controller over real HTTP: `answer` is (status, headers, body) for every GET."""

    answer: tuple[int, dict, dict] = (200, {}, {})

    def do_GET(self):  # http.server calls it by this name
        status, headers, body = self.answer
        raw = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(raw))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *_args):
        pass


@pytest.fixture
def http_controller():
    """Factory: a stand-in answering (status, headers, body); returns its URL. Stopped after the test."""
    servers = []

    def start(status: int, headers: dict, body: dict) -> str:
        handler = type("Handler", (_Answering,), {"answer": (status, headers, body)})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_standby_naming_a_dead_controller_does_not_hide_the_others(http_controller):
    """Each URL is tried once per request: the active one the standby names is dead (its leader row not expired
    yet), so the request goes on to the URLs not tried, instead of going round to the standby again."""
    dead = f"http://127.0.0.1:{free_port()}"
    standby = http_controller(503, {"x-fedkafka-active": dead}, {"detail": "standby"})
    active = http_controller(200, {}, {"view_version": 7, "proxies": []})
    api = FedkafkaApi([standby, active, dead], TOKEN, timeout=5)
    assert api.status()["view_version"] == 7 and api.base == active


def test_a_503_without_the_header_is_the_active_controller_s_error(http_controller):
    """An active controller answers 503 when a cluster it needs does not (Unavailable): no other URL is asked."""
    busy = http_controller(503, {}, {"detail": "cannot reach a Kafka cluster at h:1"})
    other = http_controller(200, {}, {"view_version": 1})
    failed, result = run("fedkafka_info", {"controller_url": [busy, other], "token": TOKEN, "gather": []})
    assert failed and "HTTP 503: cannot reach a Kafka cluster at h:1" in result["msg"], result


# -- two real controllers on one PostgreSQL database ----------------------------------------------------------
@pytest.fixture
def two_controllers(postgres_server, tmp_path):
    """Controller 0 active, controller 1 a standby naming it; yields their URLs."""
    import psycopg

    name = f"t_{int(time.time() * 1000)}_{free_port()}"
    with psycopg.connect(postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    procs = []
    # --leader-lease-ms: no test here waits out a lease (none fails over), so one no stall of a loaded machine
    # outlasts. With 3 s, a standby took over while the active one's renewal thread was starved (load 13): the
    # test then met the roles swapped, one controller re-executing as a standby.
    try:
        for i, port in enumerate(ports):
            log = open(tmp_path / f"controller-{i}.log", "wb")  # noqa: SIM115  (closed with the process)
            procs.append(subprocess.Popen(
                [str(Path(sys.executable).with_name("fedkafka")), "controller", "--db", f"{postgres_server}/{name}",
                 "--listen", f"127.0.0.1:{port}", "--advertise-url", urls[i], "--token-file", str(token_file),
                 "--scan-interval", "1", "--leader-lease-ms", "120000"], stdout=subprocess.DEVNULL, stderr=log))
            want = {"active": True} if i == 0 else {"active": False, "active_url": urls[0]}
            wait_for_health(urls[i], want, procs[i], tmp_path / f"controller-{i}.log")
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for_health(url: str, want: dict, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                last = json.loads(resp.read())
            if all(last.get(k) == v for k, v in want.items()):
                return
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"controller {url} not {want} (last /healthz {last}):\n{log.read_text()[-2000:]}")


@pytest.mark.integration
def test_modules_given_the_standby_first_talk_to_the_active_controller(two_controllers):
    active, standby = two_controllers
    dead = f"http://127.0.0.1:{free_port()}"
    api = {"controller_url": [dead, standby, active], "token": TOKEN}
    failed, info = run("fedkafka_info", {**api, "gather": ["clusters"]})
    assert not failed and info["controller"] == active, info
    # A write follows too (a registration; nothing listens at the bootstrap, which only makes it unreachable).
    cluster = {**api, "id": "c9", "bootstrap": "127.0.0.1:1"}
    failed, result = run("fedkafka_cluster", cluster)
    assert not failed and result["changed"], result
    failed, result = run("fedkafka_cluster", {**cluster, "controller_url": f"{standby},{active}"})
    assert not failed and not result["changed"], result
    _, info = run("fedkafka_info", {**api, "controller_url": [active]})
    assert [c["id"] for c in info["clusters"]] == ["c9"]


@pytest.mark.integration
def test_a_standby_alone_is_a_clear_error(two_controllers):
    _, standby = two_controllers
    failed, result = run("fedkafka_info", {"controller_url": standby, "token": TOKEN})
    assert failed and "no active controller answered" in result["msg"] and f"{standby} stands by" in result["msg"]
