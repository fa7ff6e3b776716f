"""s36: when no listed controller answers a command as the active one, the CLI's error names each controller asked
and what it said (docs/DESIGN.md §3.6, docs/OPERATIONS.md "Several controllers"). Before, only the last one's answer
was shown ("HTTP 503: standby ..." or "controller at <last> unreachable"), and the operator could not tell why the
others did not take it. A round asks each listed controller once (`RoundWalk`): a standby naming one asked already
sent the round back to it, and a controller listed after it was never asked. The token never shows."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fedkafka.cli import app
from fedkafka.controller.client import AdminClient, AdminError
from fedkafka.controllers import ACTIVE_HEADER
from fedkafka.kafka.cluster import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ansible"))
from test_modules_ha import WaitClock, http_controller  # noqa: F401 (a fixture)

TOKEN = "s36-cli-token-0123456789abcdef"
ELSEWHERE = "http://elsewhere:8780"  # an active controller the standbys name, not listed


def _controllers(answers: dict[str, httpx.Response | Exception], asked: list[str]) -> httpx.MockTransport:
    """Controllers by host: each answers its response, or fails with its exception; `asked` records the hosts."""
    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        answer = answers[request.url.host]
        if isinstance(answer, Exception):
            raise type(answer)(str(answer), request=request)
        return answer
    return httpx.MockTransport(handler)


def _standby(active: str) -> httpx.Response:
    return httpx.Response(503, headers={ACTIVE_HEADER: active}, json={"detail": f"standby; the active one is {active}"})


def test_every_controller_asked_is_named_with_what_it_said():
    asked: list[str] = []
    transport = _controllers({"c1": _standby(ELSEWHERE), "c2": httpx.ReadTimeout("timed out"),
                              "c3": httpx.ConnectError("connection refused")}, asked)
    with AdminClient("http://c1,http://c2,http://c3", TOKEN, transport=transport) as api, \
            pytest.raises(AdminError) as failed:
        api.clusters()
    said = str(failed.value)
    assert said == ("GET /v1/clusters: no active controller answered (http://c1 stands by (active: "
                    f"{ELSEWHERE}); http://c2 did not answer (timed out); http://c3 unreachable (connection "
                    "refused))"), said
    assert failed.value.status == 503 and asked == ["c1", "c2", "c3"] and TOKEN not in said


def test_a_takeover_that_does_not_finish_names_each_controller_and_why(monkeypatch):
    """The takeover wait's error named each already; the unreachable one's reason was left out."""
    monkeypatch.setattr("fedkafka.controller.client.time", WaitClock())
    transport = _controllers({"c1": _standby("http://c1"), "c2": _standby("http://c1"),
                              "c3": httpx.ConnectError("connection refused")}, [])
    with AdminClient("http://c1,http://c2,http://c3", TOKEN, timeout=5, transport=transport) as api, \
            pytest.raises(AdminError) as failed:
        api.status()
    assert str(failed.value) == ("GET /v1/status: no controller took over within 5s (http://c1 is taking over; "
                                 "http://c2 stands by (active: http://c1); http://c3 unreachable (connection "
                                 "refused))"), str(failed.value)


def test_standbys_only_name_each_one_not_the_last_503():
    """Before: "GET /v1/topics: HTTP 503: standby; the active one is http://elsewhere:8780", the last one's."""
    asked: list[str] = []
    transport = _controllers({"c1": _standby(ELSEWHERE), "c2": _standby(ELSEWHERE)}, asked)
    with AdminClient("http://c1,http://c2", TOKEN, transport=transport) as api, pytest.raises(AdminError) as failed:
        api.topics()
    assert f"http://c1 stands by (active: {ELSEWHERE}); http://c2 stands by" in str(failed.value), str(failed.value)
    assert failed.value.status == 503 and asked == ["c1", "c2"]


def test_a_standby_naming_one_asked_already_does_not_hide_the_next_listed(monkeypatch):
    """c1 is down, c2's stale hint names it, c3 is active. Before: the round went back to c1 and never asked c3;
    c2 naming the dead one looked like a takeover under way, so the command waited (here, c2's hint never
    refreshed, until its timeout: it failed)."""
    monkeypatch.setattr("fedkafka.controller.client.time", WaitClock())
    asked: list[str] = []
    transport = _controllers({"c1": httpx.ConnectError("connection refused"), "c2": _standby("http://c1"),
                              "c3": httpx.Response(200, json=[{"id": "k1"}])}, asked)
    with AdminClient("http://c1,http://c2,http://c3", TOKEN, transport=transport) as api:
        assert api.clusters() == [{"id": "k1"}] and api.url == "http://c3"
    assert asked == ["c1", "c2", "c3"]


def test_a_write_left_unanswered_names_the_controllers_asked_before_it():
    asked: list[str] = []
    transport = _controllers({"c1": _standby("http://c2"), "c2": httpx.ReadTimeout("timed out")}, asked)
    with AdminClient("http://c1,http://c2", TOKEN, transport=transport) as api, pytest.raises(AdminError) as failed:
        api.put_cluster("k1", "h:1")
    said = str(failed.value)
    assert "no answer from the controller at http://c2 (timed out); it may have been carried out" in said, said
    assert "(asked before it: http://c1 stands by (active: http://c2))" in said and asked == ["c1", "c2"], said


def test_the_command_prints_each_controller_and_what_it_said(http_controller, tmp_path):  # noqa: F811
    """`fedkafka cluster list` over real HTTP stand-ins: one line naming them all, the token nowhere."""
    standby = http_controller(503, {ACTIVE_HEADER: ELSEWHERE}, {"detail": "standby"})
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "token").write_text(TOKEN)
    result = CliRunner().invoke(app, ["cluster", "list", "--controller", f"{standby},{dead}",
                                      "--token-file", str(tmp_path / "token")])
    assert result.exit_code == 1, result.output
    assert f"no active controller answered ({standby} stands by (active: {ELSEWHERE}); {dead} unreachable (" \
        in result.output, result.output
    assert TOKEN not in result.output and len(result.output.strip().splitlines()) == 1, result.output
