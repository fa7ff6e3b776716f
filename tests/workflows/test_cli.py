"""`fedkafka scale-up` / `fedkafka decommission` against a real controller and real clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .support import ROOT, Federation

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # real workflow runs, end to end


def cli(fed: Federation, *args: str) -> subprocess.CompletedProcess:
    # A state dir of its own: the checkout's .fedkafka (a `make up` federation) must not leak in.
    env = {**os.environ, "FEDKAFKA_STATE_DIR": str(fed.tmp / "cli-state")}
    return subprocess.run([sys.executable, "-m", "fedkafka.cli", *args, "--controller", fed.url, "--token-file",
                           str(fed.token_file)], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)


@pytest.mark.timeout(300)
def test_scale_up_and_decommission_commands(kafka_clusters, tmp_path, unique_name):
    c1, c2, c3 = kafka_clusters
    fed = Federation(tmp_path)
    try:
        fed.start_controller()
        fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 6, coordination="c2")
        bad = cli(fed, "scale-up", "--cluster", "c9")
        assert bad.returncode == 1 and "unknown cluster 'c9'" in bad.stderr, bad
        assert len(bad.stderr.strip().splitlines()) == 1
        bad = cli(fed, "decommission", "--cluster", "c2")
        assert bad.returncode == 1 and "coordination cluster" in bad.stderr, bad

        up = cli(fed, "scale-up", "--cluster", "c3", "--bootstrap", c3.bootstrap, "--wait", "--json")
        assert up.returncode == 0, up.stderr
        run = json.loads(up.stdout)  # stdout is the record alone; the progress bars went to stderr
        assert run["state"] == "done" and run["moved"] == 2
        assert [p["name"] for p in run["phases"]] == ["register", "plan", "freeze", "acks", "seal", "publish"]
        assert all(p["started_at"] <= p["finished_at"] for p in run["phases"])
        assert "publish" in up.stderr

        again = cli(fed, "scale-up", "--cluster", "c3", "--wait")
        assert again.returncode == 0 and "0 partitions moved (nothing changed)" in again.stdout, again

        down = cli(fed, "decommission", "--cluster", "c1", "--drain", "groups", "--wait")
        assert down.returncode == 0, down.stderr
        assert "decommission c1" in down.stdout and "done" in down.stdout, down.stdout
        assert "removed" in down.stdout + down.stderr  # the last phase's progress bar
        states = {c["id"]: c["state"] for c in fed.api.get("/v1/clusters").json()}
        assert states["c1"] == "removed"
    finally:
        fed.stop()
