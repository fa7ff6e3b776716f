"""Review rvans: fedkafka_scale_up onto a cluster it registers itself (option bootstrap) when no partition moves."""

from __future__ import annotations

import pytest
from ansible_harness import run_module as run
from ansible_harness import running_controller

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_controller(tmp_path):
    yield from running_controller(tmp_path)


def test_scale_up_that_registers_the_cluster_reports_the_change_check_mode_predicted(fresh_controller,
                                                                                    kafka_clusters):
    """No topic yet: the scale-up onto c2 only registers it (bootstrap given). --check says changed; the run
    registers c2 (the controller's state changed) and must say changed too."""
    api = fresh_controller
    c1, c2 = kafka_clusters[0], kafka_clusters[1]
    assert not run("fedkafka_cluster", {**api, "id": "c1", "bootstrap": c1.bootstrap, "coordination": True})[0]
    args = {**api, "cluster": "c2", "bootstrap": c2.bootstrap, "timeout": 120}
    failed, predicted = run("fedkafka_scale_up", args, check_mode=True)
    assert not failed and predicted["changed"], predicted
    failed, done = run("fedkafka_scale_up", args)
    assert not failed, done
    _, info = run("fedkafka_info", {**api, "gather": ["clusters"]})
    assert "c2" in [c["id"] for c in info["clusters"]]  # the run did register it
    assert done["changed"] == predicted["changed"], done
