"""A cluster `fedkafka local add-cluster` started comes back with the rest after `down` then `up`: the
federation's view still names it, and clients of its partitions would otherwise find no broker at all."""

from __future__ import annotations

import pytest

from launcher.test_replicated_clusters import run_local, status

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_down_then_resume_and_up_bring_back_an_added_cluster_on_its_port(tmp_path):
    state_dir = tmp_path / "state"
    run_local(state_dir, "up", "--clusters", "1", "--clusters-only")
    try:
        run_local(state_dir, "add-cluster")
        before = {c["id"]: c for c in status(state_dir)["clusters"]}
        assert set(before) == {"c1", "c2"} and all(c["running"] for c in before.values())

        run_local(state_dir, "down")
        assert not any(c["running"] for c in status(state_dir)["clusters"])

        resumed = run_local(state_dir, "resume").stdout  # what `make up` runs before site.yml
        assert '"id": "c1"' in resumed and '"id": "c2"' in resumed
        after = {c["id"]: c for c in status(state_dir)["clusters"]}
        assert all(c["running"] for c in after.values())
        assert {k: c["bootstrap"] for k, c in after.items()} == {k: c["bootstrap"] for k, c in before.items()}

        run_local(state_dir, "down")
        run_local(state_dir, "up", "--clusters", "1", "--clusters-only")  # `local up` resumes c2 too
        assert all(c["running"] for c in status(state_dir)["clusters"])
        assert '"resumed": []' in run_local(state_dir, "resume").stdout  # nothing left to start
    finally:
        run_local(state_dir, "down", "--purge")
