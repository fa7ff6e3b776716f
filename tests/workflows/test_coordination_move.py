"""Moving the coordination cluster under load (docs/DESIGN.md §10): real clusters, controller, proxies, checker.
Every group's committed offsets before the move are at most its offsets after it; groups keep consuming (they
rejoin on the new coordinator); then the old coordination cluster is decommissioned like any other."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from fedkafka.checker import Checker, CheckerConfig
from fedkafka.controller.kafka_admin import KafkaAdmin, KafkaUnavailable
from fedkafka.view.model import shadow_topic

from .support import Federation, assert_as_promised, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# Nothing here silences a proxy, so nothing needs the 2 s fence of `support.Federation` (fence = lease): with it a
# heartbeat a second late under load put a proxy past its fence, and its consumers' OffsetFetch then waited for the
# renewal (docs/DESIGN.md §4.9 F2) or, before that, stalled their partitions. A fence of a minute keeps a late
# heartbeat a lease lapse (the proxy dropped from the view and listed again: a leadership move, §4.2), as in
# production, where the fence is minutes.
FENCE_MS = 60_000


@pytest.fixture
def federation(tmp_path):
    fed = Federation(tmp_path, fence_ms=FENCE_MS)
    yield fed
    fed.stop()


def committed(bootstrap: str, group: str, topic: str, partitions: int = 6) -> dict[int, int] | None:
    """The group's committed offsets, read on a physical cluster (the shadow topic), by logical partition; None when
    the coordinator did not answer (still loading, or slower than the timeout on a loaded machine)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = reader.committed([TopicPartition(shadow_topic(topic), p) for p in range(partitions)], timeout=20)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
    except KafkaException:
        return None
    finally:
        reader.close()


def committed_answer(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """`committed`, asked again until the coordinator answers: a read that failed is never taken for offsets
    missing, or lower (it was before: {} made the comparison after the move fail, or later[p] a KeyError)."""
    return wait_for(lambda: (lambda got: None if got is None else (got,))(committed(bootstrap, group, topic)), 120,
                    what=f"the committed offsets of {group} on {bootstrap}")[0]


def advanced_past(bootstrap: str, group: str, topic: str, floor: dict[int, int]) -> bool:
    """Whether the group committed past `floor` on every partition of it (a read that failed: not yet)."""
    got = committed(bootstrap, group, topic) or {}
    return all(got.get(p, -1) > off for p, off in floor.items())


@pytest.mark.timeout(900)
def test_coordination_move_under_load_loses_no_commit_then_the_old_cluster_leaves(kafka_clusters, federation,
                                                                                    unique_name):
    c1, c2, c3 = kafka_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap, "c3": c3.bootstrap}, unique_name, 6, coordination="c1")
    fed.start_proxies(2)
    checker = Checker(CheckerConfig(bootstrap=fed.bootstrap, topic=unique_name, producers=2, consumers=2, rate=100,
                                    idempotent=(True, False),
                                    extra_consumer_config={"auto.commit.interval.ms": 500})).start()
    try:
        before = wait_for(lambda: (lambda got: got if got is not None and len(got) == 6 else None)(
            committed(c1.bootstrap, checker.group, unique_name)), 120, what="the group committed every partition")
        checker.mark("coordination move")
        run = fed.workflow({"kind": "coordination_move", "cluster": "c3"}, timeout=180)
        assert run["state"] == "done", run["error"]
        assert run["groups"] >= 1 and run["from"] == "c1"
        after = committed_answer(c3.bootstrap, checker.group, unique_name)
        assert all(after.get(p, -1) >= off for p, off in before.items()), (before, after)  # no commit lost or back
        assert fed.api.get("/v1/view").json()["coordination_cluster"] == "c3"
        # the group keeps running: it rejoins on c3 and commits there, moving forward
        wait_for(lambda: advanced_past(c3.bootstrap, checker.group, unique_name, after), 120,
                 what="the group committing on the new coordinator")
        later = committed_answer(c3.bootstrap, checker.group, unique_name)
        assert all(later.get(p, -1) >= after[p] for p in after), (after, later)
        checker.mark("decommission c1")
        dec = fed.workflow({"kind": "decommission", "cluster": "c1", "drain": "groups"}, timeout=400)
        assert dec["state"] == "done", dec["error"]
        assert fed.api.get("/v1/clusters/c1").json()["state"] == "removed"
        time.sleep(3)
    finally:
        report = checker.stop(drain_timeout=120)
    assert_as_promised(report, fed)


def _committed_on(bootstrap: str, group: str, offsets: list[tuple[str, int, int]]) -> bool:
    """An admin commit of `offsets` for `group` (what an earlier attempt of a move wrote); False while a partition is
    refused (a topic created a moment ago has no leader yet) or the coordinator is not ready."""
    try:
        return not KafkaAdmin(timeout=10).commit_offsets("any", bootstrap, group,
                                                         [(t, p, o, None, None) for t, p, o in offsets])
    except KafkaUnavailable:
        return False


def _offsets_on(bootstrap: str, groups: list[str]) -> dict[str, dict[tuple[str, int], int]]:
    read = KafkaAdmin(timeout=10).committed_offsets("any", bootstrap, groups)
    return {group: {(t, p): o for t, p, o, _e, _m in parts} for group, parts in read.items()}


def test_a_coordination_move_deletes_on_the_target_what_the_old_cluster_no_longer_holds(kafka_clusters, federation,
                                                                                         unique_name):
    """c2 holds offsets an earlier attempt of the move c1 -> c2 wrote, deleted on c1 since: group `gone` (DeleteGroups)
    and `kept`'s partition 1 (OffsetDelete); `gone` also commits a topic of c2's own, not the federation's. After the
    move: `kept` at c1's offsets only, `gone` without offsets of the shadow topic, its offset of c2's own topic still
    there (real OffsetDelete, docs/DESIGN.md §10.1)."""
    c1, c2, _ = kafka_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 2, coordination="c1")
    shadow, own = shadow_topic(unique_name), f"{unique_name}-own"
    admin = KafkaAdmin(timeout=10)
    admin.ensure_topic("c2", c2.bootstrap, shadow, 2)  # as the earlier attempt's step 1 left it
    admin.ensure_topic("c2", c2.bootstrap, own, 1)
    kept, gone = f"{unique_name}-kept", f"{unique_name}-gone"
    for bootstrap, group, offsets in [(c1.bootstrap, kept, [(shadow, 0, 3)]),
                                      (c2.bootstrap, kept, [(shadow, 0, 2), (shadow, 1, 4)]),
                                      (c2.bootstrap, gone, [(shadow, 0, 7), (own, 0, 9)])]:
        wait_for(lambda b=bootstrap, g=group, o=offsets: _committed_on(b, g, o), 60,
                 what=f"{group}'s offsets on {bootstrap}")
    run = fed.workflow({"kind": "coordination_move", "cluster": "c2"}, timeout=180)
    assert run["state"] == "done", run["error"]
    assert fed.api.get("/v1/view").json()["coordination_cluster"] == "c2"
    assert _offsets_on(c2.bootstrap, [kept, gone]) == {kept: {(shadow, 0): 3}, gone: {(own, 0): 9}}


def test_bad_coordination_moves_are_refused(kafka_clusters, federation, unique_name):
    c1, c2, _ = kafka_clusters
    fed = federation
    fed.start_controller()
    fed.setup({"c1": c1.bootstrap, "c2": c2.bootstrap}, unique_name, 2, coordination="c1")
    cases = [({"kind": "coordination_move", "cluster": "c9"}, 404, "unknown cluster 'c9'"),
             ({"kind": "coordination_move", "cluster": "c2", "unclean": True}, 409, "answers"),
             ({"kind": "decommission", "cluster": "c1"}, 409, "coordination move --to")]
    for body, status, words in cases:
        resp = fed.api.post("/v1/workflows", json=body)
        assert resp.status_code == status and words in resp.json()["detail"], (body, resp.text)
    same = fed.workflow({"kind": "coordination_move", "cluster": "c1"})
    assert same["state"] == "done" and not same["changed"]
