"""`fedkafka proxy` refuses bad arguments with a one-line reason and a non-zero exit, before serving anything
(in this process through `refused_cli`; one case as a real process)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _proxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedkafka.cli", "proxy", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", "2", "--listen", "127.0.0.1:0"], "--workers > 1 needs a fixed port"),
    (["--workers", "2", "--admin-listen", "127.0.0.1:0"], "--admin-listen with --workers > 1 needs a fixed port"),
    (["--admin-listen", "nowhere"], "--admin-listen must be HOST:PORT"),
])
def test_bad_worker_counts(tmp_path, refused_cli, args, message):
    view = tmp_path / "view.json"
    view.write_text('{"version": 1}')
    base = ["--role", "pproxy", "--view-file", str(view)]
    if "--listen" not in args:
        base += ["--listen", "127.0.0.1:39998"]
    code, output = refused_cli("proxy", *base, *args)
    assert code == 2
    assert message in output


@pytest.mark.parametrize(("args", "message"), [
    (["--max-frame-bytes", "100"], "--max-frame-bytes must be at least 1024"),
    (["--max-pre-auth-frame-bytes", "100"], "--max-pre-auth-frame-bytes must be at least 1024"),
    (["--max-request-elements", "999"], "--max-request-elements must be at least 1000"),
    (["--max-inflight-bytes", "1048576"], "--max-inflight-bytes must be at least --max-frame-bytes"),
    (["--max-connections-per-ip", "0"], "--max-connections-per-ip must be at least 1"),
    (["--idle-timeout", "0"], "--idle-timeout must be positive"),
])
def test_inconsistent_limits_are_refused(tmp_path, refused_cli, args, message):
    view = tmp_path / "view.json"
    view.write_text('{"version": 1}')
    code, output = refused_cli("proxy", "--role", "pproxy", "--view-file", str(view), "--listen", "127.0.0.1:39998",
                               *args)
    assert code == 2
    assert message in output


def test_the_ansible_roles_default_to_the_services_own_limits():
    import yaml

    from fedkafka.proxy.core.limits import Limits

    root = __import__("pathlib").Path(__file__).resolve().parents[2] / "roles"
    proxy = yaml.safe_load((root / "fedkafka_proxy/defaults/main.yml").read_text())
    specs = yaml.safe_load((root / "fedkafka_proxy/meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    for field in Limits.__dataclass_fields__:
        var = f"fedkafka_proxy_{field.removesuffix('_s')}"
        assert proxy[var] == getattr(Limits(), field), var
        assert options[var]["default"] == proxy[var], var


def test_a_view_cache_without_a_controller_is_refused(tmp_path):
    """As a real process: the exit status and the one line on stderr."""
    view = tmp_path / "view.json"
    view.write_text('{"version": 1}')
    proc = _proxy("--role", "pproxy", "--listen", "127.0.0.1:39997", "--view-file", str(view),
                  "--view-cache", str(tmp_path / "cache.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fedkafka: --view-cache needs --controller (a --view-file is its own cache)"
