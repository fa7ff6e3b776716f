"""Review rv27: `expand`'s leftover check (commit e4f6690, `leftovers.refuse_written`) is made without the write lock,
with the claims read before it. DESIGN §4.13 says the check runs "under the write lock, before anything is created
or committed"; `put_topic` does, `WorkflowEngine._add_partitions` does not. A CreatePartitions that grows the topic
onto the same cluster meanwhile (and is written to) makes the topic's own partition look like a deleted topic's
leftover: the expansion fails telling the operator to delete the physical topic that holds the topic's live
records, instead of the conflict it answered before ("changed during the expansion; run it again").
Driven with the fake Kafka of tests/controller/conftest.py (no broker)."""

from __future__ import annotations

import pytest

from fedkafka.controller.errors import Conflict
from fedkafka.controller.workflows import WorkflowEngine


def test_an_expansion_racing_a_growth_onto_its_cluster_is_not_told_to_delete_the_topics_own_records(make_api):
    """t (1 partition, balanced) lives on c1; c2 is registered. An expansion onto c2 reads t's claims on c2 (none),
    then, while it checks c2's Kafka, a client's CreatePartitions grows t to 2 partitions (partition 1 goes to c2)
    and 5 records are produced there. Expected: the expansion refuses with the concurrent-change conflict (as
    before the leftover check), never telling the operator to delete physical topic t on c2, which holds t's own
    acked records. Found: "already holds records that no partition of topic 't' accepted ... delete it"."""
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 1, "placement": "balanced"}).raise_for_status()
    api.put("/v1/clusters/c2", json={"bootstrap": "c2:9092"}).raise_for_status()
    engine = WorkflowEngine(api.controller)
    real_refuse_lost = engine._refuse_lost

    def growth_meanwhile(pairs, clusters):
        real_refuse_lost(pairs, clusters)
        api.post("/v1/admin/topics/t/partitions", json={"count": 2}).raise_for_status()
        grown = api.get("/v1/topics/t").json()["chains"][1]["segments"][0]
        assert grown["cluster"] == "c2"
        api.kafka.ends[("c2", "t", grown["partition"])] = 5  # produced through the federation

    engine._refuse_lost = growth_meanwhile
    with pytest.raises(Conflict) as refused:
        engine._add_partitions("t", 1, 1, "c2")
    message = str(refused.value)
    assert "already holds records" not in message and "delete it" not in message, message
    assert "changed during the expansion" in message, message
