"""Reviewer s38-rvfetchstall: findings on s38-fetchstall (an OffsetFetch answered COORDINATOR_LOAD_IN_PROGRESS
instead of NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE, `groups._retried_here`). Pure handler code, no brokers."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_type
from fedkafka.proxy.handlers import groups

PARTITIONS = 1000


def _answer_without_errors():
    """An OffsetFetch v8 answer as a coordinator gives it for one group of one topic of PARTITIONS partitions."""
    return build(response_type(9, 8), {"groups": [{"group_id": "g", "error_code": ErrorCode.none, "topics": [
        {"name": "log", "partitions": [
            {"partition_index": p, "committed_offset": 5, "committed_leader_epoch": -1, "metadata": None,
             "error_code": ErrorCode.none} for p in range(PARTITIONS)]}]}]})


def test_an_offset_fetch_answer_without_a_coordinator_error_is_not_walked_partition_by_partition(monkeypatch):
    visited = []
    walk = groups._without_lookup_again

    def counted(entity):
        visited.append(type(entity).__name__)
        return walk(entity)

    monkeypatch.setattr(groups, "_without_lookup_again", counted)
    answer = _answer_without_errors()
    assert groups._retried_here(answer) is answer  # unchanged, not copied (as now)
    assert len(visited) < PARTITIONS, f"{len(visited)} entities visited for an answer without a coordinator error"
