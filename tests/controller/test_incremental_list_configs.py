"""IncrementalAlterConfigs APPEND and SUBTRACT as the controller applies them, as Kafka's controller does
(ConfigurationControlManager.incrementalAlterConfigResource, getParts; KafkaConfigSchema.getDefault): LIST
configs only, from the topic's value or else Kafka's static topic default, elements compared as Kafka parses a
LIST (whitespace around each trimmed)."""

from __future__ import annotations

import pytest

from fedkafka.controller.errors import ControllerError
from fedkafka.controller.topic_admin import APPEND, SET, SUBTRACT, ConfigOp, _apply_ops


def _op(name: str, op: int, value: str) -> ConfigOp:
    return ConfigOp(name=name, op=op, value=value)


def test_subtract_from_a_config_never_set_starts_from_kafkas_default():
    assert _apply_ops({}, [_op("cleanup.policy", SUBTRACT, "compact")]) == {"cleanup.policy": "delete"}
    assert _apply_ops({}, [_op("cleanup.policy", SUBTRACT, "delete")]) == {"cleanup.policy": ""}


def test_a_value_set_is_the_start_not_the_default():
    assert _apply_ops({"cleanup.policy": "compact"}, [_op("cleanup.policy", APPEND, "compact")]) == {
        "cleanup.policy": "compact"}


def test_elements_are_trimmed_as_kafka_parses_a_list():
    assert _apply_ops({"cleanup.policy": "delete, compact"}, [_op("cleanup.policy", APPEND, " compact ,delete")]) == {
        "cleanup.policy": "delete,compact"}
    assert _apply_ops({"cleanup.policy": "delete , compact"}, [_op("cleanup.policy", SUBTRACT, " delete")]) == {
        "cleanup.policy": "compact"}


def test_throttled_replicas_lists_start_empty():
    ops = [_op("leader.replication.throttled.replicas", APPEND, "0:1,1:2"),
           _op("follower.replication.throttled.replicas", APPEND, "*")]
    assert _apply_ops({}, ops) == {"leader.replication.throttled.replicas": "0:1,1:2",
                                   "follower.replication.throttled.replicas": "*"}


@pytest.mark.parametrize(("op", "word"), [(APPEND, "APPEND"), (SUBTRACT, "SUBTRACT")])
def test_append_or_subtract_on_a_config_that_is_not_a_list_is_kafkas_invalid_config(op, word):
    for name in ("retention.ms", "no.such.config"):
        with pytest.raises(ControllerError) as refused:
            _apply_ops({"retention.ms": "5"}, [_op(name, op, "1000")])
        assert refused.value.kafka_error == "INVALID_CONFIG"
        assert str(refused.value) == f"Can't {word} to key {name} because its type is not LIST."


def test_a_null_value_is_an_invalid_request():
    with pytest.raises(ControllerError) as refused:
        _apply_ops({}, [ConfigOp(name="retention.ms", op=SET, value=None)])
    assert refused.value.kafka_error == "INVALID_REQUEST"


def test_the_route_refuses_append_to_a_non_list_config_and_changes_nothing(make_api):
    api = make_api()
    api.put("/v1/clusters/c1", json={"bootstrap": "h:1"})
    api.post("/v1/admin/topics", json={"name": "t", "partitions": 1, "config": {"retention.ms": "9"}})
    res = api.post("/v1/admin/topics/t/config", json={"ops": [{"name": "retention.ms", "op": APPEND, "value": "1"}]})
    assert res.status_code == 422 and res.json()["kafka_error"] == "INVALID_CONFIG", res.text
    assert api.get("/v1/topics/t").json()["config"] == {"retention.ms": "9"}
    appended = api.post("/v1/admin/topics/t/config",
                        json={"ops": [{"name": "cleanup.policy", "op": APPEND, "value": "compact"}]})
    assert appended.status_code == 200, appended.text
    assert api.get("/v1/topics/t").json()["config"] == {"retention.ms": "9", "cleanup.policy": "delete,compact"}
    assert api.kafka.configs[("c1", "t")]["cleanup.policy"] == "delete,compact"
