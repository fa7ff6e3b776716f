"""Fix of rv1 (tests/consume/test_rv1_review_describe_unit.py): the repeats of a group named several times in a
DescribeGroups or ConsumerGroupDescribe are charged to the answer's budget (ANSWER_BUDGET_FACTOR x
--max-request-elements); the namings past it are answered COORDINATOR_LOAD_IN_PROGRESS in their places, an entry
per naming still (docs/DESIGN.md §4.8)."""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode

from consume.test_consumer_groups_unit import Header, consumer_group_describe_answer, coordinator_found
from consume.test_consumer_groups_unit import ctx as kip848_ctx
from consume.test_handlers_unit import coordinators_of, ctx, describe_groups, described_group, shadow_subscription_of
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import consumer_groups, groups

LIMIT = 1000
LOAD = ErrorCode.coordinator_load_in_progress


def test_describe_groups_repeats_past_the_budget_are_answered_retriably_in_their_places():
    """"g" (4 members x 999 names: 4,001 elements with its entry and members) named 5 times among "h" (one small
    member) named twice: the first naming of each is described, the repeats charged in answer order against what
    10 x LIMIT leaves once each group is described (10,000 - 3,996 - 999 renamed = 5,005): g's first repeat fits,
    its second does not, and every repeat after the crossing, h's too (1,001, which would fit), is answered
    COORDINATOR_LOAD_IN_PROGRESS, as the groups after the one crossing the budget are."""
    small = dataclasses.replace(ctx(), max_request_elements=LIMIT)
    empty = b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"
    forward = groups.handle(small, None, describe_groups("g", "h", "g", "g", "h", "g", "g"))
    (call,) = forward.finish([coordinators_of("g", "h")]).calls
    assert list(call.request.groups) == ["g", "h"]
    answer = forward.finish([coordinators_of("g", "h")]).finish([build(response_type(15, 6), {
        "throttle_time": 0, "groups": [described_group("g", *[(shadow_subscription_of(999), empty)] * 4),
                                       described_group("h", (shadow_subscription_of(999), empty))]})])
    assert [(g.group_id, g.error_code) for g in answer.groups] == [
        ("g", ErrorCode.none), ("g", ErrorCode.none), ("g", LOAD), ("g", LOAD), ("g", LOAD), ("h", ErrorCode.none),
        ("h", LOAD)]
    assert answer.groups[0] is answer.groups[1] and len(answer.groups[0].members) == 4
    assert "--max-request-elements" in answer.groups[2].error_message and answer.groups[2].members == ()


def test_describe_groups_repeats_within_the_budget_are_all_answered():
    """At the default limit the same answer repeats every naming, as Kafka answers."""
    forward = groups.handle(ctx(), None, describe_groups(*["g"] * 50))
    answer = forward.finish([coordinators_of("g")]).finish([build(response_type(15, 6), {
        "throttle_time": 0, "groups": [described_group("g", (shadow_subscription_of(999), b""))]})])
    assert [(g.group_id, g.error_code) for g in answer.groups] == [("g", ErrorCode.none)] * 50


def test_consumer_group_describe_repeats_past_the_budget_are_answered_retriably():
    """A group of 100 members (601 elements: each member, its subscribed name, its two assignments' topic and
    partition) named 20 times at LIMIT: 10,000 - 601 leave room for 15 repeats; the other 4 namings are answered
    COORDINATOR_LOAD_IN_PROGRESS with a message."""
    c = dataclasses.replace(kip848_ctx(), max_request_elements=LIMIT)
    request = build(request_type(69, 1), {"group_ids": ["g"] * 20, "include_authorized_operations": False})
    forward = coordinator_found(consumer_groups.handle(c, Header(), request))
    answer = forward.finish([consumer_group_describe_answer(100)])
    assert [(g.group_id, g.error_code) for g in answer.groups] == [("g", ErrorCode.none)] * 16 + [("g", LOAD)] * 4
    assert all(len(g.members) == 100 for g in answer.groups[:16]) and answer.groups[16].members == ()
    assert "--max-request-elements" in answer.groups[16].error_message
