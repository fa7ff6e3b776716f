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


def _controller_args(tmp_path, args: list[str], db: bool = True) -> list[str]:
    token = tmp_path / "t"
    token.write_text("tok")
    base = {"--db": f"sqlite:///{tmp_path / 'c.db'}"} if db else {}
    base.update({"--listen": "127.0.0.1:0", "--token-file": str(token)})
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


@pytest.mark.parametrize(("args", "words"), [
    (["--db-file", "/nonexistent/db-url"], "cannot read --db-file"),
    (["--db-file", "{empty}"], "is empty"),
    (["--db", "sqlite:///y.db", "--db-file", "{url}"], "give --db or --db-file, not both"),
    (["--env-file", "/nonexistent/env"], "cannot read --env-file"),
    (["--env-file", "{bad_env}"], "line 2: expected KEY=VALUE"),
])
def test_bad_database_and_environment_files_exit_non_zero_with_one_line(tmp_path, refused_cli, args, words):
    files = {"empty": "\n", "url": "sqlite:///x.db\n", "bad_env": "# comment\nnot a pair s3cret\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    args = [a.format(**{n: str(tmp_path / n) for n in files}) for a in args]
    code, output = refused_cli(*_controller_args(tmp_path, args, db="--db" in args))
    assert code == 2
    assert words in output and len(output.strip().splitlines()) == 1
    assert "s3cret" not in output  # a bad line of --env-file is named by its number, never shown


def test_database_url_and_environment_come_from_their_files(tmp_path, monkeypatch):
    """--db-file and --env-file (what the fedkafka_controller role passes): the URL with its password and
    PGPASSWORD reach the controller without being on its command line."""
    from typer.testing import CliRunner

    from fedkafka.cli import app

    url = f"sqlite:///{tmp_path / 'from-file.db'}"
    (tmp_path / "db-url").write_text(url + "\n")
    (tmp_path / "env").write_text("# the controller's secrets\n\nPGPASSWORD=pa=ss word\nFEDKAFKA_X=1\n")
    monkeypatch.setenv("PGPASSWORD", "before")  # restored after the test
    monkeypatch.setenv("FEDKAFKA_X", "before")
    seen = {}

    def serve(settings, *_args):
        seen.update(db_url=settings.db_url, pgpassword=os.environ["PGPASSWORD"], x=os.environ["FEDKAFKA_X"])

    monkeypatch.setattr("fedkafka.cli.admin._serve", serve)
    args = _controller_args(tmp_path, ["--db-file", str(tmp_path / "db-url"), "--env-file", str(tmp_path / "env")],
                            db=False)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen == {"db_url": url, "pgpassword": "pa=ss word", "x": "1"}


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
    # --lease-ms: the proxy this test registers never heartbeats; with the 10 s default it (and so `status`'s
    # proxy) could leave the view while a loaded machine runs the CLI commands below
    proc = subprocess.Popen([sys.executable, "-m", "fedkafka.cli", "controller", "--db",
                             f"sqlite:///{tmp_path / 'c.db'}", "--listen", f"127.0.0.1:{port}", "--token-file",
                             str(token), "--lease-ms", "600000"], stderr=subprocess.PIPE, text=True)
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
        # keepalive_ms well under the read timeout: a wait for the next view never times out on a quiet stream
        with httpx.stream("GET", url + "/v1/view/stream?keepalive_ms=1000", headers=headers, timeout=10) as resp:
            views = (json.loads(line) for line in resp.iter_lines() if line)
            first = next(views)
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
            # one lease after its start the controller also numbers a view of the same content (docs/DESIGN.md
            # §5.1): on a slow machine it may come before the proxy's. Every view sent is newer than the last.
            sent = [first]
            while not sent[-1]["proxies"]:
                sent.append(next(views))
        assert [v["version"] for v in sent] == list(range(first["version"], first["version"] + len(sent)))
        assert [p["pool"] for p in sent[-1]["proxies"]] == ["p1"] and not first["proxies"]
        assert json.loads(run_cli("status", "--json", env=env).stdout)["proxies"][0]["instance_id"] == "i"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
