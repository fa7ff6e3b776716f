"""What one consume request may cost the proxy, counted (upstream calls, bytes, hashes, headers built), never timed:
ListOffsets and Fetch naming a partition more than once, offsets moved past an int64, walks that stop early."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import Physical, ctx, list_answers, list_request
from fedkafka.proxy.handlers import list_offsets

# -- ListOffsets: a partition named more than once -------------------------------------------------------------------


def test_list_offsets_answers_a_partition_named_more_than_once_invalid_request_and_asks_nothing_for_it():
    """As Kafka's broker (`ListOffsetsRequest.duplicatePartitions`): every entry of the duplicated partition gets
    INVALID_REQUEST. Asked, its n timestamps took n rounds, n upstream calls to one broker (20 000 for a 340 KB
    request)."""
    n = 50
    request = list_request((0, -1), *[(1, 1000 + i) for i in range(n)])
    plan = list_offsets.handle(ctx(), None, request)
    (call,) = plan.calls  # partition 0's latest: its active segment's partition, c3/t/1
    assert call.target.cluster == "c3"
    reply = plan.finish(list_answers(plan.calls, {("c3", 1, -1): (12, -1)}))
    (topic,) = reply.topics
    assert [p.partition_index for p in topic.partitions] == [0] + [1] * n  # one answer per entry, in order
    assert (topic.partitions[0].error_code, topic.partitions[0].offset) == (ErrorCode.none, 79)
    assert {(p.error_code, p.offset) for p in topic.partitions[1:]} == {(ErrorCode.invalid_request, -1)}


def test_list_offsets_refuses_a_partition_named_in_two_entries_of_its_topic():
    request = list_request((1, -1))
    request = request.__class__(replica_id=-1, isolation_level=0, topics=request.topics * 2)
    plan = list_offsets.handle(ctx(), None, request)
    assert not getattr(plan, "calls", None)
    assert [p.error_code for t in plan.topics for p in t.partitions] == [ErrorCode.invalid_request] * 2


class _CountedKey(tuple):
    """A physical partition key that counts its hashes: every dict or set look-up of it."""

    hashes = 0

    def __hash__(self) -> int:
        _CountedKey.hashes += 1
        return tuple.__hash__(self)


def test_asking_one_physical_partition_with_many_timestamps_looks_each_ask_up_a_bounded_number_of_times():
    """Each ask looked for its round in every round made before it: n^2 / 2 look-ups for n timestamps of one
    partition (20 000: 17.7 s). Now a few per ask; the rounds themselves (one call each) are unchanged."""
    n = 2000
    key = _CountedKey(("c1", "t", 0))
    _CountedKey.hashes = 0
    plan = list_offsets.ask_physical(ctx(Physical()), [(key, 1000 + i) for i in range(n)], 0, lambda physical: None)
    assert len(plan.calls) == n
    assert [p.timestamp for c in plan.calls for t in c.request.topics for p in t.partitions] == \
        [1000 + i for i in range(n)]
    assert _CountedKey.hashes <= 4 * n
