"""`fedkafka local up --controllers 2`: two controllers on a local PostgreSQL, one active; `local status --json`
lists both; the CLI follows the active one, also after it was killed."""

from __future__ import annotations

import glob
import json
import os
import signal
import time

import pytest

from fedkafka.kafka.cluster import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_local_up_with_two_controllers_on_postgresql(tmp_path, fedkafka_cli):
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    run_fedkafka = fedkafka_cli

    def _status(state_dir) -> dict:
        return json.loads(run_fedkafka(state_dir, "local", "status", "--json"))

    state_dir = tmp_path / "state"
    try:
        run_fedkafka(state_dir, "local", "up", "--clusters", "1", "--controllers", "2")
        status = _status(state_dir)
        ctls = status["controllers"]
        assert len(ctls) == 2 and all(c["running"] and c["url"].startswith("http://127.0.0.1:") for c in ctls)
        assert sorted(c["active"] for c in ctls) == [False, True], ctls
        assert status["postgres"]["running"]
        active = next(c for c in ctls if c["active"])
        assert json.loads(run_fedkafka(state_dir, "cluster", "list", "--json"))[0]["id"] == "c1"
        os.kill(active["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while not [c for c in _status(state_dir)["controllers"] if c["active"] and c["pid"] != active["pid"]]:
            assert time.monotonic() < deadline, "the standby did not take over"
            time.sleep(0.5)
        assert json.loads(run_fedkafka(state_dir, "cluster", "list", "--json"))[0]["id"] == "c1"  # follows it
    finally:
        status = _status(state_dir)
        run_fedkafka(state_dir, "local", "down", "--purge")
    assert not [c["pid"] for c in status["controllers"] if pid_alive(c["pid"])]
    assert not pid_alive(status["postgres"]["pid"])
