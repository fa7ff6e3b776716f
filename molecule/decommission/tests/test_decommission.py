"""After decommission.yml -e cluster=c1: c1 is removed, no active segment on it, records still flow."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "default" / "tests"))
from federation import active_clusters_of, api, round_trip


def test_c1_removed():
    states = {c["id"]: c["state"] for c in api("/v1/clusters")}
    assert states.get("c1", "removed") == "removed", states


def test_no_active_segment_on_c1():
    assert "c1" not in active_clusters_of("demo")


def test_records_round_trip_after_decommission():
    round_trip()
