"""`expand` (`WorkflowEngine._add_partitions`) reads Kafka for leftovers without the write lock and judges what it
read under the lock, against the claims read there (docs/DESIGN.md §4.13, "A new topic's physical topics"): a topic
changed meanwhile answers "changed during the expansion; run it again", never an order to delete the physical topic
holding its own records. Driven with the fake Kafka of tests/controller/conftest.py (no broker)."""

from __future__ import annotations

import pytest

from fedkafka.controller.errors import Conflict
from fedkafka.controller.moves import Mover
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.rebalance import Move


def _t_on_c1_with_c2_registered(make_api):
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 1, "placement": "balanced"}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()
    return api


def _meanwhile(engine: WorkflowEngine, change) -> None:
    """Run `change` after the expansion read the topic and its claims, before it reads Kafka for leftovers."""
    real_refuse_lost = engine._refuse_lost

    def then_change(pairs, clusters):
        real_refuse_lost(pairs, clusters)
        change()

    engine._refuse_lost = then_change  # type: ignore[method-assign]


def test_an_expansion_racing_a_move_of_the_topic_onto_its_cluster_is_not_told_to_delete_the_moved_records(make_api):
    """While an expansion of t onto c2 runs, a move sends t/0 to c2 (physical partition t/0 there, the one the
    expansion would take) and 7 records are written there. The partition count is unchanged, the claims are not:
    the expansion answers the concurrent-change conflict, adds nothing, and t/0 keeps its records on c2."""
    api = _t_on_c1_with_c2_registered(make_api)
    engine = WorkflowEngine(api.controller)

    def move_t0_to_c2():
        api.kafka.ensure_topic("c2", "c2:9092", "t", 1)  # the move's target first (`_ensure_targets`)
        mover = Mover(api.controller, ack_timeout=1)
        mover.run(mover.plan(None, [Move("t", 0, "c1", "c2", "t", 0)], {("c2", "t", 0): 0}))
        assert api.controller.view.topics["t"].partitions[0].active.cluster == "c2"
        api.kafka.ends[("c2", "t", 0)] = 7  # produced through the federation

    _meanwhile(engine, move_t0_to_c2)
    with pytest.raises(Conflict) as refused:
        engine._add_partitions("t", 1, 1, "c2")
    message = str(refused.value)
    assert "changed during the expansion" in message and "delete it" not in message, message
    assert len(api.controller.view.topics["t"].partitions) == 1
    assert api.kafka.ends[("c2", "t", 0)] == 7


def test_an_expansion_of_a_topic_deleted_meanwhile_answers_the_concurrent_change_conflict(make_api):
    """t is deleted while its expansion onto c2 runs: the expansion answers the concurrent-change conflict (it
    failed on the missing topic row before) and commits no partition of a topic that is gone."""
    api = _t_on_c1_with_c2_registered(make_api)
    engine = WorkflowEngine(api.controller)
    _meanwhile(engine, lambda: api.delete("/v1/topics/t").raise_for_status())
    with pytest.raises(Conflict, match="topic t changed during the expansion; run it again"):
        engine._add_partitions("t", 1, 1, "c2")
    assert "t" not in api.controller.view.topics
    assert api.get("/v1/topics/t").status_code == 404

