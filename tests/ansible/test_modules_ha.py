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
    """A stand-in controller over real HTTP: `answers` are (status, headers, body), one per request in turn, the last
    one to every request after; `seen` records each request's method and path."""

    answers: list[tuple[int, dict, dict]] = [(200, {}, {})]
    seen: list[tuple[str, str]]

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path))
        status, headers, body = self.answers[min(len(self.seen), len(self.answers)) - 1]
        raw = json.dumps(body).encode()
        self.send_response(status)
        own_url = f"http://127.0.0.1:{self.server.server_address[1]}"  # "{self}" in a header: it names itself
        headers = {name: value.replace("{self}", own_url) for name, value in headers.items()}
        for name, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(raw))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_PUT = do_POST = do_DELETE = _answer  # http.server calls them by these names

    def log_message(self, *_args):
        pass


@pytest.fixture
def http_controller():
    """Factory: a stand-in answering (status, headers, body), then each of `then` in turn; returns its URL. The
    requests it was sent: `http_controller.seen[url]`. Stopped after the test."""
    servers = []

    def start(status: int, headers: dict, body: dict, then: tuple = ()) -> str:
        seen: list[tuple[str, str]] = []
        handler = type("Handler", (_Answering,), {"answers": [(status, headers, body), *then], "seen": seen})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        start.seen[url] = seen
        return url

    start.seen = {}
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


# -- a failover in progress: every controller answers 503, the modules wait for the takeover and ask again ------
fedkafka_api = sys.modules[FedkafkaApi.__module__]  # module_utils/fedkafka_api.py, as the harness loaded it
ACTIVE = "x-fedkafka-active"
TAKING_OVER = (503, {ACTIVE: "{self}"}, {"detail": "controller is taking over"})


class WaitClock:
    """The clock the modules' client waits for a takeover by: a pause moves it on at once, so no test waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def wait_clock(monkeypatch) -> WaitClock:
    clock = WaitClock()
    monkeypatch.setattr(fedkafka_api, "time", clock)
    return clock


def test_a_task_issued_while_a_controller_takes_over_waits_for_it(http_controller, wait_clock):
    """Right after the active controller died: the standby does not know the active one yet, the other holds the
    leader row and answers 503 naming itself until it serves the database's view. Before: the task failed at once
    ("no active controller answered"), though the takeover takes seconds and both said so."""
    standby = http_controller(503, {ACTIVE: ""}, {"detail": "standby; the active one is not known yet"})
    taking = http_controller(*TAKING_OVER, then=[TAKING_OVER, (200, {}, {"view_version": 7, "proxies": []})])
    failed, result = run("fedkafka_info", {"controller_url": [standby, taking], "token": TOKEN, "gather": []})
    assert not failed and result["controller"] == taking and result["view_version"] == 7, result
    assert http_controller.seen[taking] == [("GET", "/v1/status")] * 3 and len(wait_clock.pauses) == 2


def test_a_write_refused_by_the_takeover_gate_is_sent_again_once_it_is_done(http_controller, wait_clock):
    """A 503 from the gate (or NotLeader) commits nothing, so the write goes again to the controller taking over."""
    taking = http_controller(*TAKING_OVER, then=[(200, {}, {"cluster": {"id": "c9"}, "changed": True})])
    standby = http_controller(503, {ACTIVE: taking}, {"detail": "standby"})
    api = FedkafkaApi([standby, taking], TOKEN, timeout=5)
    assert api.put_cluster("c9", "h:1", None) == {"cluster": {"id": "c9"}, "changed": True}
    assert http_controller.seen[taking] == [("PUT", "/v1/clusters/c9")] * 2 and api.base == taking


def test_a_standby_naming_the_dead_active_controller_is_asked_again_until_it_took_over(http_controller, wait_clock):
    """The active controller is gone, its leader row not expired yet: the standby names it (unreachable) until it
    takes over itself, within a lease."""
    dead = f"http://127.0.0.1:{free_port()}"
    standby = http_controller(503, {ACTIVE: dead}, {"detail": "standby"},
                              then=[(503, {ACTIVE: dead}, {}), TAKING_OVER, (200, {}, {"view_version": 3})])
    api = FedkafkaApi([dead, standby], TOKEN, timeout=5)
    assert api.status() == {"view_version": 3} and api.base == standby
    assert len(http_controller.seen[standby]) == 4


def test_a_takeover_that_does_not_finish_fails_the_task_after_request_timeout(http_controller, wait_clock):
    taking = http_controller(*TAKING_OVER)
    failed, result = run("fedkafka_info", {"controller_url": taking, "token": TOKEN, "request_timeout": 20})
    assert failed and f"{taking} is taking over" in result["msg"], result
    assert "within request_timeout (20s) of waiting for a takeover" in result["msg"], result
    assert len(http_controller.seen[taking]) > 2 and sum(wait_clock.pauses) <= 20


def test_no_failover_in_sight_fails_at_once(http_controller, wait_clock):
    """Unreachable controllers only, or a standby naming a controller not listed: nothing says a takeover is under
    way, so the task fails after one try of each, as before."""
    dead = f"http://127.0.0.1:{free_port()}"
    standby = http_controller(503, {ACTIVE: "http://elsewhere:8780"}, {"detail": "standby"})
    for urls in ([dead], [standby, dead]):
        with pytest.raises(fedkafka_api.ApiError, match="no active controller answered"):
            FedkafkaApi(urls, TOKEN, timeout=5).status()
    assert http_controller.seen[standby] == [("GET", "/v1/status")] and wait_clock.pauses == []


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
