"""Validate-only CreateTopics and CreatePartitions answer what the change itself would answer over a leftover
physical topic (docs/DESIGN.md §4.13, "A new topic's physical topics"): a physical topic of the name on a cluster the
new partitions would go to, holding records no logical partition accepted, refuses the change, TOPIC_ALREADY_EXISTS
for a new topic and POLICY_VIOLATION for a growth, and so it refuses its validation, as Kafka's validate-only answers
the error the request would get. Nothing is created or committed either way. Driven with the fake Kafka of
tests/controller/conftest.py (no broker)."""

from __future__ import annotations

from controller.test_create_over_leftover_topic import _refused_over_leftover, _t_on_c1_and_a_leftover_t_on_c2


def _answer(response) -> tuple[int, str | None]:
    return response.status_code, response.json().get("kafka_error")


def test_validate_only_create_over_a_leftover_physical_topic_answers_what_the_create_answers(make_api):
    """Physical topic t on c2 holds records in partition 1. CreateTopics t with 2 partitions (one on c2) is
    refused with TOPIC_ALREADY_EXISTS, and so is its validate-only request (it answered success); with 1 partition
    (on c1 only) both succeed. The validation creates nothing."""
    api = make_api()
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.kafka.created[("c2", "t")] = 2
    api.kafka.ends[("c2", "t", 1)] = 4
    validating = api.post("/v1/admin/topics", json={"name": "t", "partitions": 2, "validate_only": True})
    _refused_over_leftover(validating, "c2", "t", "TOPIC_ALREADY_EXISTS")
    assert ("c1", "t") not in api.kafka.created and api.get("/v1/topics/t").status_code == 404
    assert _answer(api.post("/v1/admin/topics", json={"name": "t", "partitions": 2})) == _answer(validating)
    validating = api.post("/v1/admin/topics", json={"name": "t", "partitions": 1, "validate_only": True})
    assert validating.status_code == 200 and ("c1", "t") not in api.kafka.created
    assert _answer(api.post("/v1/admin/topics", json={"name": "t", "partitions": 1})) == _answer(validating)


def test_validate_only_create_partitions_onto_a_leftover_physical_topic_answers_what_the_growth_answers(make_api):
    """t lives on c1; c2 holds a physical topic t with 9 records. Validate-only CreatePartitions to 2 (the new
    partition on c2) is refused with POLICY_VIOLATION, as the growth is (it answered success); once the operator
    deleted the leftover, it succeeds and creates nothing."""
    api = _t_on_c1_and_a_leftover_t_on_c2(make_api, "balanced")
    validating = api.post("/v1/admin/topics/t/partitions", json={"count": 2, "validate_only": True})
    _refused_over_leftover(validating, "c2", "t", "POLICY_VIOLATION")
    assert _answer(api.post("/v1/admin/topics/t/partitions", json={"count": 2})) == _answer(validating)
    assert api.get("/v1/topics/t").json()["partitions"] == 1
    api.kafka.delete_topic("c2", "c2:9092", "t")  # the operator deletes the leftover
    validating = api.post("/v1/admin/topics/t/partitions", json={"count": 2, "validate_only": True})
    assert validating.status_code == 200, validating.text
    assert ("c2", "t") not in api.kafka.created and api.get("/v1/topics/t").json()["partitions"] == 1
