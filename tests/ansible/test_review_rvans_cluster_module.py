"""Review rvans: fedkafka_cluster state=present ("registers the cluster ... and keeps it active", its DOCUMENTATION)
on a cluster the controller reports removed, against the in-memory controller of the module unit tests."""

from __future__ import annotations

from unittest import mock

from ansible_harness import FedkafkaApi
from ansible_harness import run_module as run
from fake_controller import FakeController

API = {"controller_url": "http://controller.invalid:8780", "token": "s3cret-token-value-123"}
REMOVED_C1 = {"id": "c1", "bootstrap": "h1:9092", "state": "removed", "reachable": True, "coordination": False}


def test_present_on_a_removed_cluster_is_not_a_quiet_ok():
    """The controller never reactivates a removed cluster; the module must say so instead of reporting the task ok
    (unchanged) while the cluster stays removed and takes no writes. It warns, changing nothing: site.yml run again
    after a decommission, the cluster still in the inventory, stays idempotent (molecule's decommission scenario)."""
    fake = FakeController(clusters=[REMOVED_C1])
    with mock.patch.object(FedkafkaApi, "request", side_effect=fake.request):
        failed, result = run("fedkafka_cluster", {**API, "id": "c1", "bootstrap": "h1:9092", "state": "present"})
    assert failed or result["cluster"].get("state") == "active" or any(
        "c1 was removed" in w for w in result.get("warnings", [])), result


def test_present_on_a_removed_cluster_warns_in_check_mode_and_real_mode_alike():
    for check_mode in (True, False):
        fake = FakeController(clusters=[REMOVED_C1])
        with mock.patch.object(FedkafkaApi, "request", side_effect=fake.request):
            failed, result = run("fedkafka_cluster", {**API, "id": "c1", "bootstrap": "h1:9092"}, check_mode=check_mode)
        assert not failed and not result.get("changed"), result
        (warning,) = result["warnings"]
        assert "c1 was removed" in warning and "take it out of the inventory" in warning, warning
        assert "register it under a new id" in warning and "leftover physical topics" in warning, warning
        assert fake.writes == [] and fake.clusters["c1"]["state"] == "removed", fake.writes


def test_other_states_of_a_removed_cluster_stay_ok():
    """absent: removed already, no change; read_only: decommission only goes forward, removed is past it."""
    for state in ("absent", "read_only"):
        fake = FakeController(clusters=[REMOVED_C1])
        with mock.patch.object(FedkafkaApi, "request", side_effect=fake.request):
            failed, result = run("fedkafka_cluster", {**API, "id": "c1", "state": state})
        assert not failed and not result["changed"] and fake.writes == [], result
