"""One physical partition belongs to at most one logical partition, forever (docs/DESIGN.md §4.13): a move's target is
claimed when the move is planned, a dropped segment's partition stays claimed, and two runs planning from one view
cannot both take one partition. No cluster: log ends come from a stand-in; real brokers are in tests/workflows."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from fedkafka.controller.claims import ClaimTaken
from fedkafka.controller.models import SegmentRow
from fedkafka.controller.moves import Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.rebalance import rebalance


@pytest.fixture
def kafka(recording_kafka_class):
    class LogEnds(recording_kafka_class):
        def __init__(self):
            super().__init__()
            self.ends: dict[tuple[str, str, int], int] = {}

        def log_offsets(self, cluster, bootstrap, partitions):
            if cluster in self.down:
                raise OSError(f"{cluster} is down")
            return {(t, p): (0, self.ends.get((cluster, t, p), 0)) for t, p in partitions}

    return LogEnds()


def register(api, *clusters: str) -> None:
    for cid in clusters:
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()


def physical(chain) -> set[tuple[str, str, int]]:
    return {(s.cluster, s.topic, s.partition) for s in chain.segments}


def disjoint(chains) -> bool:
    """No physical partition in two chains."""
    owned = [physical(c) for c in chains]
    return sum(len(o) for o in owned) == len(set().union(*owned))


def grow(api, name: str, count: int) -> None:
    res = api.post(f"/v1/admin/topics/{name}/partitions", json={"count": count})
    assert res.status_code == 200, res.text


def test_a_topic_grown_while_a_move_waits_for_acks_does_not_get_the_moves_target(make_api, kafka):
    api = make_api(kafka=kafka)
    ctl = api.controller
    register(api, "c1")
    api.put("/v1/topics/t", json={"partitions": 3, "placement": "balanced"}).raise_for_status()  # p0..p2 on c1
    register(api, "c2")
    plans = rebalance(WorkflowEngine(ctl)._chains(), ["c1", "c2"], "c2")
    assert [(m.partition, m.to_cluster, m.to_partition) for m in plans] == [(2, "c2", 0)]
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, plans)  # the move is under way: c2/t/0 is only in its row until it publishes
    grow(api, "t", 4)  # CreatePartitions meanwhile: p3 is placed on c2
    p3 = ctl.view.chain("t", 3).active
    assert (p3.cluster, p3.partition) == ("c2", 1)
    assert mover.run(ids) == {"done": 1}
    chains = ctl.view.topics["t"].partitions
    assert physical(chains[2]) == {("c1", "t", 2), ("c2", "t", 0)}
    assert disjoint(chains)


def test_a_drained_physical_partition_is_never_given_to_a_new_partition(make_api, kafka):
    api = make_api(kafka=kafka)
    ctl = api.controller
    register(api, "c1")
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "balanced"}).raise_for_status()  # c1/t/0, c1/t/1
    register(api, "c2")
    kafka.ends.update({("c1", "t", 1): 100})  # p1's records 0..99 on c1/t/1
    mover = Mover(ctl, ack_timeout=1)
    plans = WorkflowEngine(ctl)._rebalance_plan("c2")
    assert [(m.partition, m.from_cluster, m.to_cluster) for m in plans] == [(1, "c1", "c2")]
    assert mover.run(mover.plan(None, plans)) == {"done": 1}
    with ctl.topology_change() as s:  # a drain (`--drain groups`) drops the head segment; c1/t/1 keeps its records
        s.execute(delete(SegmentRow).where(SegmentRow.topic == "t", SegmentRow.partition == 1, SegmentRow.seq == 0))
        s.commit()
    ctl.compose()
    assert physical(ctl.view.chain("t", 1)) == {("c2", "t", 0)}
    grow(api, "t", 4)  # balanced: p2 on c1, p3 on c2
    p2, p3 = ctl.view.chain("t", 2).active, ctl.view.chain("t", 3).active
    assert (p2.cluster, p2.partition) == ("c1", 2)  # not c1/t/1: an identity segment there would serve p1's records
    assert (p3.cluster, p3.partition) == ("c2", 1)
    assert kafka.created[("c1", "t")] == 3


def test_an_expand_skips_a_drained_physical_partition(make_api, kafka):
    _, ctl = _p1_drained_off_c2(make_api, kafka)
    engine = WorkflowEngine(ctl)
    engine._add_partitions("t", 2, 1, "c2")
    p2 = ctl.view.chain("t", 2).active
    assert (p2.cluster, p2.partition) == ("c2", 1)


def test_two_failovers_planning_from_one_view_never_share_a_target(make_api, kafka):
    api = make_api(kafka=kafka)
    ctl = api.controller
    register(api, "A", "D", "C", "E")
    api.put("/v1/topics/t", json={"partitions": 4, "placement": "balanced"}).raise_for_status()  # p0 A, p1 D, ...
    kafka.down |= {"A", "D"}
    ctl.scan_once()
    engine = WorkflowEngine(ctl)
    a, d = engine._failover_plan("A"), engine._failover_plan("D")  # both runs plan before either records
    assert (a[0].to_cluster, a[0].to_partition) == (d[0].to_cluster, d[0].to_partition) == ("C", 1)
    assert Mover(ctl).plan(1, a)
    with pytest.raises(ClaimTaken):
        Mover(ctl).plan(2, d)
    assert engine._plan_moves(2, d) is None and Mover(ctl).unfinished(2) == []  # nothing recorded: plan again
    d = engine._failover_plan("D")
    assert (d[0].to_cluster, d[0].to_partition) != ("C", 1)
    assert engine._plan_moves(2, d)
    mover = Mover(ctl, ack_timeout=1)
    assert mover.run(mover.unfinished()) == {"done": 2}
    chains = ctl.view.topics["t"].partitions
    assert physical(chains[0]) == {("A", "t", 0), ("C", "t", 1)}
    assert physical(chains[1]) == {("D", "t", 0), (d[0].to_cluster, "t", d[0].to_partition)}
    assert disjoint(chains)


def test_a_partition_returns_to_the_target_its_rolled_back_move_claimed(make_api, kafka):
    api = make_api(kafka=kafka)
    ctl = api.controller
    register(api, "c1")
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "balanced"}).raise_for_status()
    register(api, "c2")
    engine = WorkflowEngine(ctl)
    first = engine._rebalance_plan("c2")
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, first)
    mover.settle(ids, "test: rolled back")
    assert mover.counts(ids) == {"rolled_back": 1}
    assert engine._rebalance_plan("c2") == first  # its own claim: no partition left empty behind


def test_deleting_a_topic_deletes_the_physical_topic_a_drain_left_behind(make_api, kafka):
    api, _ = _p1_drained_off_c2(make_api, kafka)
    assert api.delete("/v1/admin/topics/t").status_code == 200
    assert ("c2", "t") not in kafka.created  # a topic created again as t must not find p1's records on c2/t/0
    assert ("c1", "t") not in kafka.created


def _p1_drained_off_c2(make_api, kafka):
    """Topic t on c1/t/0 and c2/t/0, p1 evacuated from c2 to c1/t/1, then its c2 segment dropped as a drain does
    (c2/t/0 keeps p1's old records, no segment names it): (api, controller)."""
    api = make_api(kafka=kafka)
    ctl = api.controller
    register(api, "c1", "c2")
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()  # c1/t/0, c2/t/0
    mover = Mover(ctl, ack_timeout=1)
    assert mover.run(mover.plan(None, WorkflowEngine(ctl)._evacuate_plan("c2"))) == {"done": 1}  # p1 -> c1/t/1
    with ctl.topology_change() as s:
        s.execute(delete(SegmentRow).where(SegmentRow.topic == "t", SegmentRow.partition == 1, SegmentRow.seq == 0))
        s.commit()
    ctl.compose()
    return api, ctl
