"""The `fedkafka controller` process and the admin CLI without Kafka: arguments, discovery, stream, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from fedkafka.controller.client import AdminError, locate
from fedkafka.kafka.cluster import free_port


def run_cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedkafka.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, cwd=cwd)


def _controller_args(tmp_path, args: list[str]) -> list[str]:
    token = tmp_path / "t"
    token.write_text("tok")
    base = {"--db": f"sqlite:///{tmp_path / 'c.db'}", "--listen": "127.0.0.1:0", "--token-file": str(token)}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    return ["controller", *[x for kv in base.items() for x in kv]]


@pytest.mark.parametrize(("args", "words"), [
    (["--listen", "nowhere"], "--listen must be HOST:PORT"),
    (["--token-file", "/nonexistent/token"], "cannot read --token-file"),
    (["--auto-failover-after", "-1"], "--auto-failover-after must be >= 0"),
])
def test_bad_arguments_exit_non_zero_with_one_line(tmp_path, refused_cli, args, words):
    """In this process (`refused_cli`): refused before the controller would serve."""
    code, output = refused_cli(*_controller_args(tmp_path, args))
    assert code == 2
    assert words in output and len(output.strip().splitlines()) == 1


def test_a_database_it_cannot_open_exits_non_zero_with_one_line(tmp_path):
    """As a real process: found on the way to serving (the port already bound, logging configured)."""
    res = run_cli(*_controller_args(tmp_path, ["--db", "mysql+nodriver://x/y"]))
    assert res.returncode == 2
    assert "cannot open database" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_locate_prefers_options_then_env_then_the_local_state_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDKAFKA_CONTROLLER_URL", raising=False)
    monkeypatch.delenv("FEDKAFKA_TOKEN", raising=False)
    with pytest.raises(AdminError, match="fedkafka local up"):
        locate(state_root=tmp_path)
    token = tmp_path / "controller.token"
    token.write_text("from-file\n")
    (tmp_path / "state.json").write_text(json.dumps({"services": {"controller": {
        "url": "http://127.0.0.1:1", "token_file": str(token)}}}))
    assert locate(state_root=tmp_path) == ("http://127.0.0.1:1", "from-file")
    monkeypatch.setenv("FEDKAFKA_CONTROLLER_URL", "http://env:2")
    monkeypatch.setenv("FEDKAFKA_TOKEN", "env-token")
    assert locate(state_root=tmp_path) == ("http://env:2", "env-token")
    assert locate("http://opt:3", token, state_root=tmp_path) == ("http://opt:3", "from-file")


@pytest.mark.integration  # a controller process
def test_controller_process_streams_views_and_stops_cleanly_on_sigterm(tmp_path):
    token = tmp_path / "t"
    token.write_text("tok")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                             f"sqlite:///{tmp_path / 'c.db'}", "--listen", f"127.0.0.1:{port}", "--token-file",
                             str(token)], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    env = {"FEDKAFKA_CONTROLLER_URL": url, "FEDKAFKA_TOKEN": "tok"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        headers = {"Authorization": "Bearer tok"}
        with httpx.stream("GET", url + "/v1/view/stream", headers=headers, timeout=10) as resp:
            lines = resp.iter_lines()
            first = json.loads(next(lines))
            res = run_cli("client-rule", "set", "r1", "--match", "prefix", "--pattern", "app-", "--pool", "p1",
                          env=env)
            assert res.returncode == 0, res.stderr
            assert run_cli("client-rule", "list", "--json", env=env).stdout.count('"pool": "p1"') == 1
            assert run_cli("client-rule", "set", "r0", "--match", "prefix", "--pattern", "app-", "--pool", "p2",
                           env=env).returncode == 1  # the pattern has rule r1 (409)
            assert run_cli("client-rule", "delete", "r1", env=env).returncode == 0
            gone = run_cli("client-rule", "delete", "r1", env=env)
            assert gone.returncode == 1 and "unknown client rule" in gone.stderr
            bad = run_cli("cluster", "set-state", "nope", "removed", env=env)
            assert bad.returncode == 1 and "unknown cluster" in bad.stderr
            # registering a proxy changes the view: the stream sends the next one by itself
            httpx.post(url + "/v1/proxies", headers=headers, json={"instance_id": "i", "host": "h", "port": 1,
                                                                   "role": "both", "pool": "p1"}).raise_for_status()
            second = json.loads(next(line for line in lines if line))  # a slow machine may see a keepalive first
        assert second["version"] == first["version"] + 1 and second["proxies"][0]["pool"] == "p1"
        assert json.loads(run_cli("status", "--json", env=env).stdout)["proxies"][0]["instance_id"] == "i"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
