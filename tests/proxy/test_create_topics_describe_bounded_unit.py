"""The physical describe after a creation (fix of review rvp): the CreateTopics v5+ answer of a created topic waits for
its cluster's Metadata and DescribeConfigs at most min(5 s, a quarter of the client's timeout), never below 0.5 s; a
call that runs out fails without marking the cluster unreachable (the wait is the client's), and the answer is the
creation's success with what the proxy knows (the configs set, replication factor -1)."""

from __future__ import annotations

import datetime

import pytest
from kio.schema.errors import ErrorCode
from kio.static.primitive import i32Timedelta

from fedkafka.proxy.handlers import topic_admin
from fedkafka.proxy.plan import Plan, UpstreamError
from proxy.test_admin_handlers import created, req
from proxy.test_create_topics_answer_unit import Live, _created_view
from proxy.test_handlers import ctx


def _request(timeout_s: float):
    return req(19, 7, {"topics": [{"name": "a", "num_partitions": 3, "replication_factor": -1, "assignments": [],
                                   "configs": [{"name": "retention.ms", "value": "1000"}]}],
                       "timeout": i32Timedelta.parse(datetime.timedelta(seconds=timeout_s)), "validate_only": False})


def _describe_plan(timeout_s: float) -> Plan:
    plan = topic_admin.handle(ctx(live=Live(_created_view())), None, _request(timeout_s)).finish(
        [created("a", 3, {"retention.ms": "1000"})])
    assert isinstance(plan, Plan)
    return plan


@pytest.mark.parametrize(("client_timeout_s", "describe_timeout_s"), [(30, 5.0), (60, 5.0), (8, 2.0), (1, 0.5)])
def test_the_describe_waits_the_lesser_of_five_seconds_and_a_quarter_of_the_clients_timeout(
        client_timeout_s, describe_timeout_s):
    calls = _describe_plan(client_timeout_s).calls
    assert len(calls) == 2
    assert [(c.timeout_s, c.client_timeout) for c in calls] == [(describe_timeout_s, True)] * 2


def test_a_describe_that_times_out_answers_the_creation_with_what_the_proxy_knows():
    answer = _describe_plan(30).finish([UpstreamError("c1", "request timed out")] * 2)
    topic = answer.topics[0]
    assert (topic.error_code, topic.num_partitions, topic.replication_factor) == (ErrorCode.none, 3, -1)
    assert [(c.name, c.value) for c in topic.configs] == [("retention.ms", "1000")]
