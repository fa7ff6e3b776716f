"""A Produce request that names a partition more than once: refused for that partition, nothing sent for it.

Before the fix, two batches of one idempotent producer for one partition, the second's sequence past the
first's end, made the handler ask InitProducerId for a new physical id round after round, without end."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import i32Timedelta

from fedkafka.protocol.codec import encode_request
from fedkafka.proxy.handlers import produce
from fedkafka.proxy.plan import Plan
from proxy.test_handlers import batch, ctx, upstream_ok

ROUNDS_ALLOWED = 50  # far more than any legitimate produce takes; the old code never ended


def _request(*topics: tuple[str, tuple[tuple[int, bytes], ...]]):
    req = ProduceRequest(transactional_id=None, acks=-1, timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
                         topic_data=tuple(TopicProduceData(name=name, partition_data=tuple(
                             PartitionProduceData(index=p, records=r) for p, r in parts)) for name, parts in topics))
    return produce.read_request(encode_request(req, 1, "test")[4:])


def _drive(c, request):
    """Run the handler as the core would, each InitProducerId answered with a fresh id and each Produce with
    success; returns (answer, barrier rounds, names of the upstream requests)."""
    reply = produce.handle(c, None, request)
    rounds, sent = 0, []
    while isinstance(reply, Plan) and rounds < ROUNDS_ALLOWED:
        rounds += reply.barrier
        sent += [type(call.request).__name__ for call in reply.calls]
        if sent and sent[-1] == "UpstreamProduce":
            reply = reply.finish(upstream_ok(reply, {("c1", "phys", p): 7 for p in range(2)}))
        else:
            reply = reply.finish([SimpleNamespace(error_code=ErrorCode.none, producer_id=70000 + rounds,
                                                  producer_epoch=0) for _ in reply.calls])
    return reply, rounds, sent


def _codes(answer) -> list[tuple[str, int, int]]:
    return [(t.name, p.index, p.error_code) for t in answer.responses for p in t.partition_responses]


def test_an_idempotent_producer_naming_a_partition_twice_gets_invalid_request_and_no_init_producer_id():
    c = ctx()
    request = _request(("t", ((0, batch(5000, 0, 0)), (0, batch(5000, 0, 10)), (1, batch()))))
    answer, rounds, sent = _drive(c, request)
    assert not isinstance(answer, Plan), f"still a Plan after {rounds} barrier rounds: {sent[-3:]}"
    assert sent == ["UpstreamProduce"]  # partition 1 alone; no InitProducerId at all
    assert _codes(answer) == [("t", 0, ErrorCode.invalid_request), ("t", 0, ErrorCode.invalid_request),
                              ("t", 1, ErrorCode.none)]
    assert c.producer_ids.physical(5000, 0, "c1", "phys", 0, 0) is None  # no physical id was asked for


def test_a_partition_named_in_two_entries_of_its_topic_is_refused_too():
    request = _request(("t", ((1, batch()),)), ("t", ((1, batch()), (0, batch()))))
    answer, rounds, sent = _drive(ctx(), request)
    assert rounds == 0 and sent == ["UpstreamProduce"]  # partition 0 alone
    assert _codes(answer) == [("t", 1, ErrorCode.invalid_request), ("t", 1, ErrorCode.invalid_request),
                              ("t", 0, ErrorCode.none)]


def test_a_request_with_every_partition_duplicated_sends_nothing():
    answer, rounds, sent = _drive(ctx(), _request(("t", ((0, batch()), (0, batch())))))
    assert (rounds, sent) == (0, [])
    assert _codes(answer) == [("t", 0, ErrorCode.invalid_request)] * 2
