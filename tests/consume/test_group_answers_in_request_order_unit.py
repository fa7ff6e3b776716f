"""Multi-group answers whose groups have different coordinators on the coordination cluster, answered in the
request's order. Kafka's KafkaApis answers OffsetFetch v8+ group by group in request order (one future per group
entry, joined in order); DescribeGroups and DeleteGroups come back from Kafka 4.0's group coordinator grouped by
__consumer_offsets partition, so any order is Kafka's there, and request order is the order clients of the classic
coordinator saw. The proxy answered the groups of each coordinator together, in the order the coordinators were
found: [g, h, k] with g and k on one coordinator came back [g, k, h]."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import ctx
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import Plan

OFFSET_FETCH, DESCRIBE, DELETE = 9, 15, 42
COORDINATORS = {"g": 4, "h": 5, "k": 4}  # g and k share a coordinator, h has its own


def _answered(request, answer_of) -> list[str]:
    """The group ids of the client's answer, each coordinator answering its share via `answer_of(ids)`."""
    found = build(response_type(10, 4), {"coordinators": [
        {"key": g, "node_id": n, "host": "b", "port": 1, "error_code": ErrorCode.none}
        for g, n in COORDINATORS.items()]})
    forward = groups.handle(ctx(), None, request).finish([found])
    assert isinstance(forward, Plan) and len(forward.calls) == 2  # one call per coordinator
    replies = [answer_of(list(groups.group_ids(call.request))) for call in forward.calls]
    answer = forward.finish(replies)
    listed = answer.results if request.__api_key__ == DELETE else answer.groups
    return [g.group_id for g in listed]


def test_offset_fetch_of_several_groups_is_answered_in_request_order_as_kafka():
    request = build(request_type(OFFSET_FETCH, 8), {"groups": [
        {"group_id": g, "topics": None} for g in COORDINATORS], "require_stable": False})
    answer = _answered(request, lambda ids: build(response_type(OFFSET_FETCH, 8), {"groups": [
        {"group_id": g, "topics": [], "error_code": ErrorCode.none} for g in ids]}))
    assert answer == ["g", "h", "k"]


def test_describe_and_delete_groups_are_answered_in_request_order():
    describe = build(request_type(DESCRIBE, 5), {"groups": list(COORDINATORS), "include_authorized_operations": False})
    assert _answered(describe, lambda ids: build(response_type(DESCRIBE, 5), {"groups": [
        {"group_id": g, "error_code": ErrorCode.none, "group_state": "Empty", "protocol_type": "consumer",
         "members": []} for g in ids]})) == ["g", "h", "k"]
    delete = build(request_type(DELETE, 2), {"groups_names": list(COORDINATORS)})
    assert _answered(delete, lambda ids: build(response_type(DELETE, 2), {"results": [
        {"group_id": g, "error_code": ErrorCode.none} for g in ids]})) == ["g", "h", "k"]
