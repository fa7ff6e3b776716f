"""protocol.build refuses a key no version of the message has (a typo used to vanish silently); keys of other
versions are dropped (tests/protocol/test_codec_and_framing.py: test_build_drops_fields_a_version_lacks)."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_schema, response_schema


def _produce_answer(partition: dict) -> dict:
    return {"responses": [{"name": "t", "partition_responses": [{"index": 0, **partition}]}]}


def test_a_top_level_name_no_version_has_is_refused():
    with pytest.raises(TypeError, match="throttle_time_msec"):
        build(response_schema(0, 9), {"responses": [], "throttle_time_msec": 0})


def test_a_nested_name_no_version_has_is_refused():
    with pytest.raises(TypeError, match="base_ofset"):
        build(response_schema(0, 9), _produce_answer({"error_code": ErrorCode.none, "base_ofset": 7}))


def test_a_misspelt_request_field_is_refused():
    with pytest.raises(TypeError, match="isolaton_level"):
        build(request_schema(2, 8), {"replica_id": -1, "isolaton_level": 0, "topics": []})


def test_missing_fields_still_get_their_zero_value():
    v9 = build(response_schema(0, 9), _produce_answer({"base_offset": 7}))
    part = v9.responses[0].partition_responses[0]
    assert part.error_code == ErrorCode.none and part.error_message is None and part.base_offset == 7


def test_entities_in_a_nullable_array_are_built_and_checked():
    # ConsumerGroupHeartbeat's topic_partitions is `tuple[TopicPartitions, ...] | None`
    import uuid

    from kio.schema.consumer_group_heartbeat.v0.request import ConsumerGroupHeartbeatRequest

    from fedkafka.protocol.build import build
    tid = uuid.uuid4()
    req = build(ConsumerGroupHeartbeatRequest, {"group_id": "g", "member_id": "m", "member_epoch": 0,
                                                "topic_partitions": [{"topic_id": tid, "partitions": [0, 1]}]})
    assert req.topic_partitions[0].topic_id == tid and list(req.topic_partitions[0].partitions) == [0, 1]
    with pytest.raises(TypeError, match="topic_partitions has no field 'nope'"):
        build(ConsumerGroupHeartbeatRequest, {"group_id": "g", "topic_partitions": [{"nope": 1}]})
