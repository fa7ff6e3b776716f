"""Reviewer rv1 (failing tests) on d69c623: DescribeGroups and ConsumerGroupDescribe answer every naming of a group
(`plan.per_naming`), the one built entry repeated. The coordinator's work is bounded, the answer is not: a request
of --max-request-elements namings of one group (~3 bytes a name) is answered with that many copies of the group,
each encoded in full, past the answer budget a DescribeGroups answer is held to (docs/DESIGN.md §4.8: "All the
groups of one DescribeGroups answer together are held to ten times the limit"; OPERATIONS.md --max-request-elements).
At the default limit, 100,000 namings of a one-member group of 200 partitions are a 171 MB answer (2.5 s of the
worker's loop to encode, all of it held in memory at once); a group of 4 x the limit's elements (~8 MB) named
100,000 times is ~800 GB. Before d69c623 the proxy answered the group once."""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode

from consume.test_consumer_groups_unit import Header, consumer_group_describe_answer, coordinator_found
from consume.test_consumer_groups_unit import ctx as kip848_ctx
from consume.test_handlers_unit import coordinators_of, ctx, describe_groups, described_group, shadow_subscription_of
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import consumer_groups, groups
from fedkafka.proxy.handlers.groups import ANSWER_BUDGET_FACTOR

LIMIT = 1000  # --max-request-elements, small for a unit test: the answer budget is ANSWER_BUDGET_FACTOR x this
NAMINGS = 200  # one group named this many times: 200 names in one request, well within LIMIT


def test_a_group_named_many_times_is_not_answered_past_the_describe_groups_answer_budget():
    """A group of 4 members of 999 topic names each (3,996 elements, within its own budget of 4 x LIMIT): asked
    about once and renamed once, but each of its NAMINGS entries carries its members in full: 799,200 elements
    in the answer against a budget of 10,000 (the same group named by NAMINGS distinct names is cut at the budget:
    the third group and those after it are answered COORDINATOR_LOAD_IN_PROGRESS)."""
    small = dataclasses.replace(ctx(), max_request_elements=LIMIT)
    member = (shadow_subscription_of(999), b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff")
    forward = groups.handle(small, None, describe_groups(*["g"] * NAMINGS)).finish([coordinators_of("g")])
    (call,) = forward.calls
    assert list(call.request.groups) == ["g"]  # the coordinator is asked once: that part holds
    answer = forward.finish([build(response_type(15, 6), {"throttle_time": 0, "groups": [
        described_group("g", *[member] * 4)]})])
    described = [g for g in answer.groups if g.error_code == ErrorCode.none]
    elements = len(answer.groups) + sum(m.member_metadata.count(b"\x00\x01a") for g in described for m in g.members)
    assert elements <= ANSWER_BUDGET_FACTOR * LIMIT, (
        f"{len(described)} entries of the group described in full: {elements} elements in one answer")


def test_a_consumer_group_named_many_times_is_not_answered_past_the_answer_budget():
    """ConsumerGroupDescribe: a group of 100 members, each assigned one partition, named NAMINGS times: the answer
    holds NAMINGS x 100 members (20,000), past ten times the limit; before d69c623 it held the coordinator's 100."""
    c = dataclasses.replace(kip848_ctx(), max_request_elements=LIMIT)
    request = build(request_type(69, 1), {"group_ids": ["g"] * NAMINGS, "include_authorized_operations": False})
    forward = coordinator_found(consumer_groups.handle(c, Header(), request))
    (call,) = forward.calls
    assert call.request.group_ids == ("g",)  # asked once
    answer = forward.finish([consumer_group_describe_answer(100)])
    elements = len(answer.groups) + sum(len(g.members) for g in answer.groups)
    assert elements <= ANSWER_BUDGET_FACTOR * LIMIT, f"{elements} groups and members in one answer"

