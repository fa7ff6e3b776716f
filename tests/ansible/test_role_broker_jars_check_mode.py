"""`--check` of the kafka_broker role predicts the Kafka jars' download: on a host whose jar cache
(kafka_broker_cache_dir) lacks the distribution, the run fetches it from Maven Central (the resolve task reports
changed), so `--check --diff` must report that task changed, fetch nothing, and show the service definition with
the classpath the run will use; with the distribution cached, neither reports a change. The whole role runs in
check mode on localhost (supervisord), as test_role_broker_security.py does; no Kafka starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from broker_render import ROLE_PLAY

from fedkafka.kafka.dist import cache_root, cached_libs

pytestmark = pytest.mark.ansible
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
RESOLVE = "Resolve the Kafka jars and the cluster id"
VERSION = "4.4.0"


def _check_role(tmp_path: Path, cache_dir: Path) -> str:
    book = tmp_path / "broker.yml"
    book.write_text(ROLE_PLAY)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "fedkafka_install_source": "present", "fedkafka_venv": sys.prefix,
        "fedkafka_state_dir": str(tmp_path / "state"), "fedkafka_service_manager": "supervisord",
        "kafka_broker_cluster": "jars", "kafka_broker_quorum_hosts": ["localhost"], "kafka_broker_version": VERSION,
        "kafka_broker_cache_dir": str(cache_dir)}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_LIBRARY": str(ROOT / "library"),
           "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"), "ANSIBLE_NOCOLOR": "1"}
    env.pop("KAFKA_HOME", None)
    proc = subprocess.run([PLAYBOOK, str(book), "--check", "--diff", "-e", f"@{extra}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _resolve_result(out: str) -> str:
    match = re.search(rf"TASK \[kafka_broker : {re.escape(RESOLVE)}\][^\n]*\n(\w+): ", out)
    assert match, out[-3000:]
    return match.group(1)


def _libs_in(cache_dir: Path) -> Path:
    """Where the role's resolver puts the jars of VERSION under cache_dir (FEDKAFKA_CACHE_DIR)."""
    before = os.environ.get("FEDKAFKA_CACHE_DIR")
    os.environ["FEDKAFKA_CACHE_DIR"] = str(cache_dir)
    try:
        return cached_libs(VERSION)
    finally:
        if before is None:
            del os.environ["FEDKAFKA_CACHE_DIR"]
        else:
            os.environ["FEDKAFKA_CACHE_DIR"] = before


def test_check_mode_reports_the_download_of_missing_jars_and_fetches_nothing(tmp_path):
    cache_dir = tmp_path / "empty-cache"
    cache_dir.mkdir()
    out = _check_role(tmp_path, cache_dir)
    assert _resolve_result(out) == "changed", "--check did not predict the jars' download: " + _resolve_result(out)
    assert list(cache_dir.iterdir()) == []  # nothing fetched
    # the service definition --diff shows is the one the run writes: the jars where the run puts them
    assert f"-cp '{_libs_in(cache_dir)}/*'" in out, [line for line in out.splitlines() if "command=" in line]


def test_check_mode_reports_no_download_when_the_jars_are_cached(tmp_path):
    if not (cached_libs(VERSION) / ".complete").exists():
        pytest.skip(f"no complete Kafka {VERSION} jar cache under {cache_root()}")
    out = _check_role(tmp_path, cache_root())
    assert _resolve_result(out) == "ok", out[-3000:]
