"""After scale_up.yml -e cluster=c3: c3 runs, is registered and active, takes a share of new writes."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "default" / "tests"))
from federation import PORT_BASE, active_clusters_of, api, round_trip


def test_c3_broker_accepts_connections():
    with socket.create_connection(("127.0.0.1", PORT_BASE + 31), timeout=2):
        pass


def test_c3_registered_and_active():
    clusters = {c["id"]: c for c in api("/v1/clusters")}
    assert clusters["c3"]["state"] == "active" and clusters["c3"]["reachable"]


def test_c3_holds_a_fair_share_of_active_segments():
    active = active_clusters_of("demo")
    assert active.count("c3") >= len(active) // 3, active


def test_records_round_trip_after_scale_up():
    round_trip()
