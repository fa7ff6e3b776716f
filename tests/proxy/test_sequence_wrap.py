"""Producer sequences wrap: after 2**31 - 1 the next batch of a producer id and epoch on a partition starts at 0
(Kafka's DefaultRecordBatch.incrementSequence, librdkafka's rd_kafka_seq_wrap). A long-lived idempotent producer
reaches that: 2**31 records on one partition is about 36 minutes at a million records a second."""

from __future__ import annotations

from dataclasses import replace

from kio.schema.errors import ErrorCode

from fedkafka.proxy.handlers import produce
from fedkafka.proxy.plan import Broker, Plan
from proxy.test_handlers import _moved_p0, _through, batch, by_partition, ctx, produce_req

INT32_MAX = 2**31 - 1


def test_a_batch_whose_sequence_wrapped_after_a_move_is_written_not_answered_as_a_duplicate():
    """p0 moved while producer 1000 was at sequence 1,000,000 (the sealed segment's floor). It goes on writing
    on the new segment until its sequence wraps to 0: that batch was never written anywhere, yet compared with
    the floor (1 <= 1,000,000) it was answered DUPLICATE_SEQUENCE_NUMBER, which the client counts as written."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, 999_999)}))  # the producer's last batch on c1
    moved = replace(c, view=_moved_p0(c.view))
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 1_000_000)}), pid_answer=(777, 0),
                         sealed={555: 999_999})
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]
    got, sent = _through(moved, produce_req({0: batch(1000, 0, INT32_MAX)}), pid_answer=(778, 0))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 0)}))  # the sequence after INT32_MAX
    assert sent == [(Broker("c2", 2), 0)], f"answered {ErrorCode(by_partition(got)[0][0]).name}, not written"
    assert by_partition(got)[0][0] == ErrorCode.none


def test_the_batch_after_a_sealed_segment_s_last_sequence_int32_max_is_written():
    """The sealed segment's broker says producer 555 wrote up to INT32_MAX: the producer's next batch starts at 0.
    Compared with a floor of 2**31 it was answered DUPLICATE_SEQUENCE_NUMBER and never written."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, INT32_MAX)}))
    moved = replace(c, view=_moved_p0(c.view))
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 0)}), pid_answer=(777, 0), sealed={555: INT32_MAX})
    assert sent == [(Broker("c2", 2), 0)], f"answered {ErrorCode(by_partition(got)[0][0]).name}, not written"
    assert by_partition(got)[0][0] == ErrorCode.none


def test_a_wrapped_batch_pipelined_behind_the_one_reaching_int32_max_is_written():
    """A producer pipelines (up to 5 requests in flight): its batch starting at 0 is routed while the one ending at
    INT32_MAX is still on its way to the broker. The floor was dropped only when that answer came in, so the
    batch at 0 was compared with it (1 <= 1,000,000), answered DUPLICATE_SEQUENCE_NUMBER and never written."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, 999_999)}))
    moved = replace(c, view=_moved_p0(c.view))
    _through(moved, produce_req({0: batch(1000, 0, 1_000_000)}), pid_answer=(777, 0), sealed={555: 999_999})
    got, _ = _through(moved, produce_req({0: batch(1000, 0, INT32_MAX - 1)}), pid_answer=(778, 0))
    assert by_partition(got)[0][0] == ErrorCode.none
    reaching = produce.handle(moved, None, produce_req({0: batch(1000, 0, INT32_MAX)}))
    assert isinstance(reaching, Plan) and not reaching.barrier  # forwarded, its answer not in yet
    wrapped = produce.handle(moved, None, produce_req({0: batch(1000, 0, 0)}))
    assert isinstance(wrapped, Plan), f"answered {ErrorCode(by_partition(wrapped)[0][0]).name}, not written"
    assert [call.target for call in wrapped.calls] == [Broker("c2", 2)]
