"""The controller's /metrics: moves and workflows by state and how long they took, the view's size and its
stream subscribers, proxies behind the view, cluster scans. In-process controller on the config database (a
recording stand-in for Kafka); a real controller with real proxies and clusters is in tests/observe."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedkafka.controller.models import WorkflowRow
from fedkafka.controller.moves import Mover
from fedkafka.view.rebalance import Move


def scrape(api) -> dict[tuple[str, frozenset], float]:
    text = api.get("/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(m, name: str, **labels) -> float | None:
    return m.get((name, frozenset(labels.items())))


@pytest.fixture
def api(make_api, recording_kafka_class):
    class LogEnds(recording_kafka_class):
        def log_offsets(self, cluster, bootstrap, partitions):
            return {(t, p): (0, 0) for t, p in partitions}

    api = make_api(kafka=LogEnds())
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    return api


def test_moves_by_state_and_time_in_each_state(api):
    ctl = api.controller
    mover = Mover(ctl, ack_timeout=1)
    done = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    mover.run(done)
    stuck = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    mover._freeze(stuck)  # frozen, waiting for acks: what a stuck move looks like
    time.sleep(0.05)
    m = scrape(api)
    assert value(m, "fedkafka_moves", state="done") == 1
    assert value(m, "fedkafka_moves", state="frozen") == 1
    assert value(m, "fedkafka_move_oldest_unfinished_seconds") >= 0.05
    for state in ("planned", "frozen", "sealed"):  # the finished move left each of them once
        assert value(m, "fedkafka_move_state_seconds_count", state=state) == (2 if state == "planned" else 1)
    mover.run(stuck)
    m = scrape(api)
    assert value(m, "fedkafka_move_oldest_unfinished_seconds") == 0
    assert value(m, "fedkafka_moves", state="done") == 2


def test_workflows_by_kind_and_state_and_their_durations(api):
    ctl = api.controller
    now = time.time()
    with ctl.session() as s:
        s.add_all([WorkflowRow(kind="scale_up", cluster="c2", state="done", created_at=now - 90, updated_at=now),
                   WorkflowRow(kind="decommission", cluster="c1", state="running", created_at=now - 30,
                               updated_at=now)])
        s.commit()
    m = scrape(api)
    assert value(m, "fedkafka_workflows", kind="scale_up", state="done") == 1
    assert value(m, "fedkafka_workflows", kind="decommission", state="running") == 1
    assert value(m, "fedkafka_workflow_duration_seconds_count", kind="scale_up") == 1
    assert value(m, "fedkafka_workflow_duration_seconds_bucket", kind="scale_up", le="60.0") == 0
    assert value(m, "fedkafka_workflow_duration_seconds_bucket", kind="scale_up", le="120.0") == 1
    assert 29 <= value(m, "fedkafka_workflow_oldest_running_seconds") < 3600


def test_view_size_proxies_behind_and_subscribers(api):
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    m = scrape(api)
    assert value(m, "fedkafka_view_bytes") == len(ctl.publisher.body)
    assert value(m, "fedkafka_view_entries", kind="partitions") == 2
    assert value(m, "fedkafka_view_entries", kind="proxies") == 1
    assert value(m, "fedkafka_proxies_behind_view") == 1  # registered, never acked
    assert value(m, "fedkafka_controller_active") == 1
    assert value(m, "fedkafka_controller_db_ok") == 1
    api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": ctl.view.version}
             ).raise_for_status()
    m = scrape(api)
    assert value(m, "fedkafka_proxies_behind_view") == 0
    assert value(m, "fedkafka_proxies_min_applied_version") == ctl.view.version
    ctl.publisher.follow(None, 3)
    ctl.publisher.follow(None, 3)
    ctl.publisher.follow(3, 4)
    assert value(scrape(api), "fedkafka_view_subscribers", version="3") == 1
    ctl.publisher.follow(3, None)
    ctl.publisher.follow(4, None)
    assert not [k for k in scrape(api) if k[0] == "fedkafka_view_subscribers"]


def test_scans_record_reachability_and_when(api):
    api.controller.scan_once()
    m = scrape(api)
    for cid in ("c1", "c2"):
        assert value(m, "fedkafka_cluster_reachable", cluster=cid) == 1
        assert value(m, "fedkafka_scan_seconds_count", cluster=cid) == 1
        assert time.time() - value(m, "fedkafka_cluster_last_scan_timestamp_seconds", cluster=cid) < 3600


def test_controller_active_is_one_only_while_this_controller_holds_the_leader_row(api):
    from fedkafka.controller.leadership import Leadership

    ctl = api.controller
    assert value(scrape(api), "fedkafka_controller_active") == 1  # one controller, no leadership: active
    ctl.leadership = Leadership(ctl.session, "http://a:1", 5.0)
    assert value(scrape(api), "fedkafka_controller_active") == 0  # a standby until it takes the row
    assert ctl.leadership.try_acquire()
    ctl.leadership.active = True  # what Leadership.run does once it holds the row
    assert value(scrape(api), "fedkafka_controller_active") == 1
