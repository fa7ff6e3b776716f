"""Table-driven unit tests of the fedkafka modules against an in-memory admin API (no controller needed).

Each case: the controller's state before, the module's args, check mode or not, and what must come out:
failed or not, changed, the actions reported, the writes sent to the controller, and substrings of msg.
"""

from __future__ import annotations

import copy
import json
from unittest import mock

import pytest
from ansible_harness import ApiError, FedkafkaApi
from ansible_harness import run_module as run
from fake_controller import FakeController

API = {"controller_url": "http://controller.invalid:8780", "token": "s3cret-token-value-123"}
C1 = {"id": "c1", "bootstrap": "h1:9092", "state": "active", "reachable": True, "coordination": True}
C2 = {**C1, "id": "c2", "bootstrap": "h2:9092", "coordination": False}
C3 = {**C1, "id": "c3", "bootstrap": "h3:9092", "coordination": False}


def chained(name, clusters):
    """A topic whose partition i has its active segment on clusters[i]."""
    return {"name": name, "partitions": len(clusters),
            "chains": [{"partition": i, "segments": [{"cluster": c, "topic": name, "partition": i, "phys_start": 0,
                                                      "phys_end": None, "logical_base": 0}]}
                       for i, c in enumerate(clusters)]}


THREE = {"clusters": [C1, C2, C3], "topics": [chained("t", ["c1", "c1", "c2", "c2", "c1", "c2"])]}
DEAD_C2 = {"clusters": [C1, {**C2, "reachable": False}, C3], "topics": [chained("t", ["c1", "c2", "c2", "c3"])]}
DRY = "/v1/workflows?dry_run=true"
ORDERS = {"name": "orders", "partitions": 4, "placement": "blocks", "config": {"retention.ms": "1000"}}
BILLING = {"name": "billing", "match": "prefix", "pattern": "billing-", "pool": "billing"}
RULE_ARGS = {"name": "billing", "match": "prefix", "pattern": "billing-", "pool": "billing"}
DRAINING_C1 = {"id": 4, "kind": "decommission", "cluster": "c1", "state": "running", "step": "drain"}

PP1 = {"node_id": 1, "instance_id": "h:9001", "host": "h", "port": 9001, "role": "pproxy", "pool": "produce",
       "applied_version": 1, "draining": False}
PP2 = {**PP1, "node_id": 2, "instance_id": "h:9002", "port": 9002}
CP3 = {**PP1, "node_id": 3, "instance_id": "h:9003", "port": 9003, "role": "cproxy", "pool": "consume"}
DRAIN_2 = [("POST", "/v1/proxies/2/drain")]

CASES = [
    ("fedkafka_proxy", "drain", {"proxies": [PP1, PP2]}, {"instance_id": "h:9002"}, False,
     {"changed": True, "writes": DRAIN_2, "facts": {"node_id": 2, "draining": True, "view_version": 2}}),
    ("fedkafka_proxy", "drain in check mode predicts and writes nothing", {"proxies": [PP1, PP2]},
     {"instance_id": "h:9002"}, True, {"changed": True, "writes": [], "facts": {"draining": True}}),
    ("fedkafka_proxy", "already drained: no change", {"proxies": [PP1, {**PP2, "draining": True}]},
     {"node_id": 2}, False, {"changed": False, "writes": []}),
    ("fedkafka_proxy", "undrain", {"proxies": [PP1, {**PP2, "draining": True}]},
     {"instance_id": "h:9002", "state": "active"}, False,
     {"changed": True, "writes": [("POST", "/v1/proxies/2/undrain")], "facts": {"draining": False}}),
    ("fedkafka_proxy", "the last pproxy of its pool is refused, check mode too", {"proxies": [PP1, CP3]},
     {"instance_id": "h:9001"}, True, {"failed": True, "msg": "last live pproxy of pool 'produce'", "writes": []}),
    ("fedkafka_proxy", "another pool's proxy does not count", {"proxies": [PP1, CP3]},
     {"instance_id": "h:9001"}, False, {"failed": True, "msg": "last live pproxy of pool 'produce'", "writes": []}),
    ("fedkafka_proxy", "the last one, skipped: no change", {"proxies": [PP1, {**PP2, "draining": True}]},
     {"instance_id": "h:9001", "last_in_pool": "skip"}, False, {"changed": False, "writes": []}),
    ("fedkafka_proxy", "refused by the controller after the prediction (another drain won), skipped",
     {"proxies": [PP1, PP2], "drain_refusals": [2]}, {"instance_id": "h:9002", "last_in_pool": "skip"}, False,
     {"changed": False, "writes": DRAIN_2, "msg": "last live pproxy"}),
    ("fedkafka_proxy", "refused by the controller after the prediction, not skipped: failed",
     {"proxies": [PP1, PP2], "drain_refusals": [2]}, {"instance_id": "h:9002"}, False,
     {"failed": True, "writes": DRAIN_2, "msg": "last live pproxy"}),
    ("fedkafka_proxy", "a proxy that is not live", {"proxies": [PP1]}, {"instance_id": "h:9"}, False,
     {"failed": True, "msg": "no live proxy h:9", "writes": []}),
    # module, id, controller state, args, check mode, expect
    ("fedkafka_cluster", "register new", {}, {"id": "c3", "bootstrap": "h3:9092"}, False,
     {"changed": True, "writes": [("PUT", "/v1/clusters/c3")], "actions": ["register c3 at h3:9092"]}),
    ("fedkafka_cluster", "register new, check mode predicts and writes nothing", {},
     {"id": "c3", "bootstrap": "h3:9092"}, True,
     {"changed": True, "writes": [], "actions": ["register c3 at h3:9092"]}),
    ("fedkafka_cluster", "already registered: no change", {"clusters": [C1]}, {"id": "c1", "bootstrap": "h1:9092"},
     False, {"changed": False, "writes": []}),
    ("fedkafka_cluster", "bootstrap moved: update", {"clusters": [C1]}, {"id": "c1", "bootstrap": "h9:9092"}, False,
     {"changed": True, "writes": [("PUT", "/v1/clusters/c1")]}),
    ("fedkafka_cluster", "unknown cluster without bootstrap: clear error", {}, {"id": "c3"}, False,
     {"failed": True, "msg": "bootstrap is required", "writes": []}),
    ("fedkafka_cluster", "read_only", {"clusters": [C1]}, {"id": "c1", "state": "read_only"}, False,
     {"changed": True, "writes": [("POST", "/v1/clusters/c1/state")]}),
    ("fedkafka_cluster", "read_only twice: no change", {"clusters": [{**C1, "state": "read_only"}]},
     {"id": "c1", "state": "read_only"}, False, {"changed": False, "writes": []}),
    ("fedkafka_cluster", "read_only does not undo draining", {"clusters": [{**C1, "state": "draining"}]},
     {"id": "c1", "state": "read_only"}, False, {"changed": False, "writes": []}),
    ("fedkafka_cluster", "absent runs the decommission workflow", {"clusters": [C1]},
     {"id": "c1", "state": "absent", "drain": True}, False,
     {"changed": True, "writes": [("POST", "/v1/workflows")]}),
    ("fedkafka_cluster", "absent in check mode lists the planned moves and starts nothing",
     {"clusters": [C1, C2], "topics": [chained("t", ["c1", "c2", "c2"])]}, {"id": "c2", "state": "absent"}, True,
     {"changed": True, "writes": [("POST", "/v1/workflows?dry_run=true")],
      "facts": {"moves": ["t/1: c2 -> c1", "t/2: c2 -> c1"]}}),
    ("fedkafka_cluster", "absent without workflow API walks the states", {"clusters": [C1], "workflows": False},
     {"id": "c1", "state": "absent"}, False,
     {"changed": True, "writes": [("POST", "/v1/workflows"), ("POST", "/v1/clusters/c1/state"),
                                  ("POST", "/v1/clusters/c1/state"), ("POST", "/v1/clusters/c1/state")]}),
    ("fedkafka_cluster", "absent while the decommission runs: waits for it, starts none, no change",
     {"clusters": [{**C1, "state": "draining"}], "runs": [DRAINING_C1]}, {"id": "c1", "state": "absent"}, False,
     {"changed": False, "writes": [],
      "actions": ["wait for the running decommission of c1 (workflow 4, phase drain)"]}),
    ("fedkafka_cluster", "absent while the decommission runs, check mode: the same prediction",
     {"clusters": [{**C1, "state": "draining"}], "runs": [DRAINING_C1]}, {"id": "c1", "state": "absent"}, True,
     {"changed": False, "writes": []}),
    ("fedkafka_cluster", "absent when read_only by hand (no run): the workflow starts",
     {"clusters": [{**C1, "state": "read_only"}], "runs": [{**DRAINING_C1, "state": "done"}]},
     {"id": "c1", "state": "absent"}, False, {"changed": True, "writes": [("POST", "/v1/workflows")]}),
    ("fedkafka_cluster", "absent when unknown: no change", {}, {"id": "c9", "state": "absent"}, False,
     {"changed": False, "writes": []}),
    ("fedkafka_cluster", "absent when removed: no change", {"clusters": [{**C1, "state": "removed"}]},
     {"id": "c1", "state": "absent"}, False, {"changed": False, "writes": []}),
    ("fedkafka_cluster", "bad state value is refused", {}, {"id": "c1", "state": "gone"}, False,
     {"failed": True, "msg": "state", "writes": []}),
    ("fedkafka_topic", "create", {}, {"name": "orders", "partitions": 4}, False,
     {"changed": True, "writes": [("PUT", "/v1/topics/orders")]}),
    ("fedkafka_topic", "create, check mode", {}, {"name": "orders", "partitions": 4}, True,
     {"changed": True, "writes": [], "actions": ["create orders with 4 partitions (placement blocks)"]}),
    ("fedkafka_topic", "same topic: no change", {"topics": [ORDERS]},
     {"name": "orders", "partitions": 4, "config": {"retention.ms": 1000}}, False, {"changed": False, "writes": []}),
    ("fedkafka_topic", "shrink refused with a clear message", {"topics": [ORDERS]},
     {"name": "orders", "partitions": 2}, False,
     {"failed": True, "msg": "refusing to shrink topic orders from 4 to 2", "writes": []}),
    ("fedkafka_topic", "shrink refused in check mode too", {"topics": [ORDERS]},
     {"name": "orders", "partitions": 2}, True, {"failed": True, "msg": "refusing to shrink", "writes": []}),
    ("fedkafka_topic", "grow", {"topics": [ORDERS]}, {"name": "orders", "partitions": 8}, False,
     {"changed": True, "writes": [("PUT", "/v1/topics/orders")], "actions": ["grow orders from 4 to 8 partitions"]}),
    ("fedkafka_topic", "config change keeps other keys", {"topics": [ORDERS]},
     {"name": "orders", "partitions": 4, "config": {"cleanup.policy": "compact"}}, False,
     {"changed": True, "writes": [("PUT", "/v1/topics/orders")],
      "body": {"partitions": 4, "placement": "blocks",
               "config": {"retention.ms": "1000", "cleanup.policy": "compact"}}}),
    ("fedkafka_topic", "partitions missing: clear error", {}, {"name": "orders"}, False,
     {"failed": True, "msg": "partitions", "writes": []}),
    ("fedkafka_topic", "zero partitions refused", {}, {"name": "orders", "partitions": 0}, False,
     {"failed": True, "msg": "partitions must be >= 1", "writes": []}),
    ("fedkafka_topic", "delete", {"topics": [ORDERS]}, {"name": "orders", "state": "absent"}, False,
     {"changed": True, "writes": [("DELETE", "/v1/topics/orders")]}),
    ("fedkafka_topic", "delete missing: no change", {}, {"name": "orders", "state": "absent"}, False,
     {"changed": False, "writes": []}),
    ("fedkafka_scale_up", "rebalance moves a fair share", THREE, {"cluster": "c3"}, False,
     {"changed": True, "writes": [("POST", "/v1/workflows")], "facts": {"partitions_moved": 2}}),
    ("fedkafka_scale_up", "check mode asks the controller for the plan", THREE,
     {"cluster": "c3"}, True, {"changed": True, "writes": [("POST", "/v1/workflows?dry_run=true")],
                               "facts": {"partitions_moved": 2, "moves": ["t/0: c1 -> c3", "t/1: c1 -> c3"]}}),
    ("fedkafka_scale_up", "check mode never posts to a controller without dry runs",
     {**THREE, "dry_run": False}, {"cluster": "c3"}, True,
     {"changed": True, "writes": [], "facts": {"partitions_moved": 2, "moves": []}}),
    ("fedkafka_scale_up", "second run moves nothing", {"clusters": [C1, C2, C3],
                                                     "topics": [chained("t", ["c3", "c1", "c2", "c2", "c3", "c1"])]},
     {"cluster": "c3"}, False, {"changed": False, "writes": [("POST", "/v1/workflows")],
                                "facts": {"partitions_moved": 0}}),
    ("fedkafka_scale_up", "registering the cluster is a change, nothing moved (a record without `changed`)",
     {"clusters": [C1]}, {"cluster": "c3", "bootstrap": "h3:9092"}, False,
     {"changed": True, "writes": [("POST", "/v1/workflows")], "facts": {"partitions_moved": 0}}),
    ("fedkafka_scale_up", "check mode predicts the registration", {"clusters": [C1]},
     {"cluster": "c3", "bootstrap": "h3:9092"}, True,
     {"changed": True, "writes": [("POST", DRY)], "facts": {"partitions_moved": 0}}),
    ("fedkafka_scale_up", "check mode without dry runs predicts the registration",
     {"clusters": [C1], "dry_run": False}, {"cluster": "c3", "bootstrap": "h3:9092"}, True,
     {"changed": True, "writes": [], "facts": {"partitions_moved": 0}}),
    ("fedkafka_scale_up", "unregistered cluster: clear error", {"clusters": [C1]}, {"cluster": "c3"}, False,
     {"failed": True, "msg": "c3 is not registered", "writes": []}),
    ("fedkafka_scale_up", "rebalance reports the moves it made", THREE, {"cluster": "c3"}, False,
     {"changed": True, "writes": [("POST", "/v1/workflows")],
      "facts": {"partitions_moved": 2, "moves": ["t/0: c1 -> c3", "t/1: c1 -> c3"]}}),
    ("fedkafka_scale_up", "read_only cluster refused", {"clusters": [C1, {**C3, "state": "read_only"}]},
     {"cluster": "c3"}, False, {"failed": True, "msg": "not active", "writes": []}),
    ("fedkafka_failover", "the dead cluster's partitions move; the run lists them", DEAD_C2,
     {"cluster": "c2"}, False, {"changed": True, "writes": [("POST", DRY), ("POST", "/v1/workflows")],
                                "facts": {"moves": ["t/1: c2 -> c1", "t/2: c2 -> c1"],
                                          "states": ["active -> read_only"]}}),
    ("fedkafka_failover", "check mode: the controller's plan, nothing started", DEAD_C2, {"cluster": "c2"}, True,
     {"changed": True, "writes": [("POST", DRY)], "facts": {"moves": ["t/1: c2 -> c1", "t/2: c2 -> c1"]}}),
    ("fedkafka_failover", "failed over already: nothing started, no change",
     {"clusters": [C1, {**C2, "state": "read_only", "reachable": False}, C3], "topics": [chained("t", ["c1"])]},
     {"cluster": "c2"}, False, {"changed": False, "writes": [("POST", DRY)], "facts": {"moves": []}}),
    ("fedkafka_failover", "read_only by a decommission, then dead: marked given up",
     {"clusters": [C1, {**C2, "state": "read_only", "reachable": False, "given_up": False}, C3],
      "topics": [chained("t", ["c1"])]},
     {"cluster": "c2"}, False, {"changed": True, "writes": [("POST", DRY), ("POST", "/v1/workflows")],
                                "facts": {"moves": [], "states": ["given up"],
                                          "diff": {"before": {"state": "read_only", "given_up": False, "moves": []},
                                                   "after": {"state": "read_only", "given_up": True, "moves": []},
                                                   "before_header": "cluster c2", "after_header": "cluster c2"}}}),
    ("fedkafka_failover", "read_only by a decommission and answering: left as it is, no change",
     {"clusters": [C1, {**C2, "state": "draining", "given_up": False}, C3], "topics": [chained("t", ["c1"])]},
     {"cluster": "c2"}, False, {"changed": False, "writes": [("POST", DRY)],
                                "facts": {"states": [], "diff": {
                                    "before": {"state": "draining", "given_up": False, "moves": []},
                                    "after": {"state": "draining", "given_up": False, "moves": []},
                                    "before_header": "cluster c2", "after_header": "cluster c2"}}}),
    ("fedkafka_failover", "failed over and back: still no change",
     {"clusters": [C1, {**C2, "state": "read_only"}, C3], "topics": [chained("t", ["c1"])]},
     {"cluster": "c2"}, False, {"changed": False, "writes": [("POST", DRY)]}),
    ("fedkafka_failover", "a reachable cluster is refused (decommission it)", THREE, {"cluster": "c2"}, False,
     {"failed": True, "msg": "decommission", "writes": [("POST", DRY)]}),
    ("fedkafka_failover", "the coordination cluster is refused", DEAD_C2, {"cluster": "c1"}, True,
     {"failed": True, "msg": "coordination", "writes": [("POST", DRY)]}),
    ("fedkafka_failover", "unknown cluster: clear error, nothing asked", DEAD_C2, {"cluster": "c9"}, False,
     {"failed": True, "msg": "unknown cluster 'c9'", "writes": []}),
    ("fedkafka_coordination", "move the groups to c3", THREE, {"to": "c3"}, False,
     {"changed": True, "writes": [("POST", DRY), ("POST", "/v1/workflows")],
      "facts": {"coordination": "c3", "previous": "c1", "groups": 2}}),
    ("fedkafka_coordination", "check mode: the plan, nothing started", THREE, {"to": "c3"}, True,
     {"changed": True, "writes": [("POST", DRY)], "facts": {"coordination": "c3", "previous": "c1"}}),
    ("fedkafka_coordination", "c1 holds them already: no change", THREE, {"to": "c1"}, False,
     {"changed": False, "writes": [("POST", DRY)]}),
    ("fedkafka_coordination", "unknown cluster: clear error", THREE, {"to": "c9"}, False,
     {"failed": True, "msg": "unknown cluster 'c9'", "writes": []}),
    ("fedkafka_client_rule", "new rule", {}, RULE_ARGS, False,
     {"changed": True, "writes": [("PUT", "/v1/client-rules/billing")],
      "body": {"match": "prefix", "pattern": "billing-", "pool": "billing"},
      "actions": ["set rule billing: prefix billing- -> pool billing (new)"]}),
    ("fedkafka_client_rule", "new rule, check mode predicts and writes nothing", {}, RULE_ARGS, True,
     {"changed": True, "writes": [], "actions": ["set rule billing: prefix billing- -> pool billing (new)"]}),
    ("fedkafka_client_rule", "same rule: no change", {"rules": [BILLING]}, RULE_ARGS, False,
     {"changed": False, "writes": [], "facts": {"rule": BILLING, "previous": BILLING}}),
    ("fedkafka_client_rule", "same rule, check mode: no change", {"rules": [BILLING]}, RULE_ARGS, True,
     {"changed": False, "writes": []}),
    ("fedkafka_client_rule", "another pool: the rule is replaced", {"rules": [{**BILLING, "pool": "default"}]},
     RULE_ARGS, False,
     {"changed": True, "writes": [("PUT", "/v1/client-rules/billing")], "facts": {"rule": BILLING},
      "actions": ["set rule billing: prefix billing- -> pool billing (was: prefix billing- -> pool default)"]}),
    ("fedkafka_client_rule", "another pool, check mode predicts it", {"rules": [{**BILLING, "pool": "default"}]},
     RULE_ARGS, True,
     {"changed": True, "writes": [], "facts": {"previous": {**BILLING, "pool": "default"}}}),
    ("fedkafka_client_rule", "other rules are left alone", {"rules": [{**BILLING, "name": "other"}]},
     {**RULE_ARGS, "match": "exact"}, False,
     {"changed": True, "writes": [("PUT", "/v1/client-rules/billing")], "facts": {"previous": {}}}),
    ("fedkafka_client_rule", "another name holds the pattern: refused naming it",
     {"rules": [{**BILLING, "name": "old"}]}, RULE_ARGS, False,
     {"failed": True, "msg": "client rule 'old' already has match prefix pattern 'billing-'", "writes": []}),
    ("fedkafka_client_rule", "another name holds the pattern, check mode: refused too",
     {"rules": [{**BILLING, "name": "old", "pool": "default"}]}, RULE_ARGS, True,
     {"failed": True, "msg": "fedkafka client-rule delete old", "writes": []}),
    ("fedkafka_client_rule", "an empty pool is refused before any call", {}, {**RULE_ARGS, "pool": ""}, False,
     {"failed": True, "msg": "pool must not be empty", "writes": []}),
    ("fedkafka_client_rule", "a bad match is refused", {}, {**RULE_ARGS, "match": "regex"}, False,
     {"failed": True, "msg": "match", "writes": []}),
    ("fedkafka_info", "facts", {"clusters": [C1], "topics": [ORDERS],
                                "proxies": [{"node_id": 1, "applied_version": 3}], "view_version": 3}, {}, False,
     {"changed": False, "writes": [], "facts": {"view_version": 3, "clusters": [C1], "topics": [ORDERS]}}),
    ("fedkafka_info", "wait for proxies that never come: clear timeout", {"proxies": []},
     {"wait": True, "min_proxies": 2, "timeout": 1}, False,
     {"failed": True, "msg": "0 of 2 proxies registered", "writes": []}),
    ("fedkafka_info", "wait for a lagging proxy: clear timeout",
     {"proxies": [{"node_id": 7, "applied_version": 2}], "view_version": 3},
     {"wait": True, "min_proxies": 1, "timeout": 1}, False,
     {"failed": True, "msg": "proxies [7] have not applied view 3", "writes": []}),
]


@pytest.mark.parametrize(("module", "case", "state", "args", "check", "expect"), CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_module(module, case, state, args, check, expect):
    fake = FakeController(**state)
    with mock.patch.object(FedkafkaApi, "request", side_effect=fake.request), \
            mock.patch("time.sleep"):
        failed, result = run(module, {**API, **args}, check_mode=check)
    assert failed == expect.get("failed", False), result
    assert [(m, p) for m, p, _ in fake.writes] == expect["writes"]
    if "changed" in expect:
        assert result["changed"] == expect["changed"], result
    if "actions" in expect:
        assert result["actions"] == expect["actions"]
    if "msg" in expect:
        assert expect["msg"] in result["msg"]
    if "body" in expect:
        assert fake.writes[-1][2] == expect["body"]
    for key, value in expect.get("facts", {}).items():
        assert result[key] == value
    # No secret in any result, diff or message.
    assert API["token"] not in json.dumps(result, default=str)


def test_diff_shows_before_and_after_without_the_token():
    fake = FakeController(clusters=[C1])
    with mock.patch.object(FedkafkaApi, "request", side_effect=fake.request):
        _, result = run("fedkafka_cluster", {**API, "id": "c1", "bootstrap": "h9:9092"}, check_mode=True)
    assert result["diff"]["before"]["bootstrap"] == "h1:9092"
    assert result["diff"]["after"]["bootstrap"] == "h9:9092"
    assert fake.writes == []


def test_api_error_reaches_the_user():
    def unreachable(*_a, **_k):
        raise ApiError("GET /v1/clusters: controller at http://controller.invalid:8780 unreachable: refused")

    with mock.patch.object(FedkafkaApi, "request", side_effect=unreachable):
        failed, result = run("fedkafka_cluster", {**API, "id": "c1", "bootstrap": "h:1"})
    assert failed and "unreachable" in result["msg"]


def test_kafka_broker_info_unreachable_cluster_fails_fast():
    # Nothing listens on port 1: a real confluent-kafka attempt that must fail with a clear message.
    failed, result = run("kafka_broker_info", {"bootstrap": "127.0.0.1:1", "timeout": 1})
    assert failed and "127.0.0.1:1 is not ready" in result["msg"]
    assert result["ready"] is False


def metadata(*node_ids: int, under_replicated: int = 0) -> dict:
    """What kafka_broker_info's read_metadata returns for a cluster listing these brokers."""
    return {"cluster_id": "k", "controller_id": node_ids[0] if node_ids else -1, "topic_count": 1,
            "brokers": [{"id": n, "host": "h", "port": 9000 + n} for n in node_ids],
            "under_replicated": under_replicated}


@pytest.mark.parametrize(("answers", "args", "msg"), [
    # a stale registration of removed node 4 makes the count while node 3 is missing
    ([metadata(1, 2, 4)], {"min_brokers": 3, "node_ids": [1, 2, 3]},
     "3 broker(s) in Metadata, 3 wanted; node id(s) 3 missing (listed: 1, 2, 4)"),
    ([metadata()], {"node_ids": [2, 1]}, "0 broker(s) in Metadata, 1 wanted; node id(s) 1, 2 missing (listed: none)"),
    ([metadata(1, 2, 3, under_replicated=2)], {"min_brokers": 3, "node_ids": [1, 2, 3], "replicated": True},
     "2 partition(s) under-replicated"),
    ([metadata(1, 2, 4), metadata(1, 2, 3, 4)], {"min_brokers": 3, "node_ids": [1, 2, 3], "wait": True}, None),
    ([metadata(1, 2, 4)], {"min_brokers": 3}, None),  # no node ids given: the count alone
])
def test_kafka_broker_info_waits_for_every_node_id_named(answers, args, msg):
    import kafka_broker_info
    with mock.patch.object(kafka_broker_info, "read_metadata", side_effect=answers) as read, \
            mock.patch("time.sleep"):
        failed, result = run("kafka_broker_info", {"bootstrap": "h:9001", "timeout": 30, **args})
    assert failed == (msg is not None), result
    if msg is None:
        assert result["ready"] and [b["id"] for b in result["brokers"]] == [b["id"] for b in answers[-1]["brokers"]]
    else:
        assert result["msg"] == f"Kafka cluster at h:9001 is not ready: {msg}" and result["ready"] is False
    assert read.call_count == len(answers)


@pytest.mark.parametrize(("check", "failed"), [(True, False), (False, True)])
def test_unreachable_controller_predicts_in_check_mode_only(check, failed):
    def unreachable(*_a, **_k):
        raise ApiError("GET /v1/clusters: controller at http://controller.invalid:8780 unreachable: refused")

    with mock.patch.object(FedkafkaApi, "request", side_effect=unreachable):
        got_failed, result = run("fedkafka_cluster", {**API, "id": "c1", "bootstrap": "h:1"}, check_mode=check)
    assert got_failed == failed
    if check:
        assert result["changed"] and result["actions"] == ["register c1 at h:1"]


DECOMMISSIONED_DEAD_C2 = {"clusters": [C1, {**C2, "state": "draining", "reachable": False, "given_up": False}, C3],
                          "topics": [chained("t", ["c1"])]}


@pytest.mark.parametrize("module, args, state", [("fedkafka_failover", {"cluster": "c2"}, DEAD_C2),
                                                 ("fedkafka_failover", {"cluster": "c2"}, DECOMMISSIONED_DEAD_C2),
                                                 ("fedkafka_coordination", {"to": "c3"}, DEAD_C2)])
def test_check_mode_predicts_exactly_what_the_run_reports(module, args, state):
    """--check --diff of failover.yml and coordination_move.yml: the same diff (and moves) as the run; a failover
    that only marks a dead draining cluster given up shows the mark in both."""
    results = []
    for check in (True, False):
        fake = FakeController(**copy.deepcopy(state))
        with mock.patch.object(FedkafkaApi, "request", side_effect=fake.request), mock.patch("time.sleep"):
            failed, result = run(module, {**API, **args}, check_mode=check)
        assert not failed, result
        results.append(result)
    predicted, done = results
    assert (predicted["changed"], predicted["diff"]) == (done["changed"], done["diff"])
    assert predicted.get("moves") == done.get("moves")


@pytest.mark.parametrize("rules", [[], [{**BILLING, "pool": "default"}], [BILLING]],
                         ids=["no rule", "another pool", "the same rule"])
def test_client_rule_check_mode_predicts_what_the_run_reports(rules):
    """site.yml --check --diff of "Set the client.id rules": the same changed and diff as the run."""
    results = []
    for check in (True, False):
        fake = FakeController(rules=rules)
        with mock.patch.object(FedkafkaApi, "request", side_effect=fake.request):
            failed, result = run("fedkafka_client_rule", {**API, **RULE_ARGS}, check_mode=check)
        assert not failed, result
        results.append(result)
    predicted, done = results
    assert (predicted["changed"], predicted["diff"], predicted["actions"]) == (
        done["changed"], done["diff"], done["actions"])
    assert done["diff"]["after"] == BILLING
