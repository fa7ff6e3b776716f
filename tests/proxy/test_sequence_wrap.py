"""Producer sequences wrap: after 2**31 - 1 the next batch of a producer id and epoch on a partition starts at 0
(Kafka's DefaultRecordBatch.incrementSequence, librdkafka's rd_kafka_seq_wrap). A long-lived idempotent producer
reaches that: 2**31 records on one partition is about 36 minutes at a million records a second."""

from __future__ import annotations

from dataclasses import replace

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from kio.schema.errors import ErrorCode

from fedkafka.protocol.sequences import RETRY_WINDOW
from fedkafka.proxy.core.producer_ids import ProducerIdTable
from fedkafka.proxy.handlers import produce
from fedkafka.proxy.plan import Broker, Plan
from proxy.test_handlers import _moved_p0, _through, batch, by_partition, ctx, produce_req, view

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


# -- liveness across the wrap: the proxy's own checks go on working once a producer's sequences wrapped

def _records(producer_id: int, seq: int, count: int) -> bytes:
    """An idempotent batch of `count` records from `seq`: past INT32_MAX its last sequences wrap to 0.."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
                                  producer_epoch=0, base_sequence=seq, batch_size=1 << 20)
    for i in range(count):
        b.append(i, timestamp=None, key=b"k", value=b"v", headers=[])
    return bytes(b.build())


def test_the_forward_jump_check_still_fires_after_the_wrap():
    """(a) The highest end forwarded was kept as a plain number (2**31 after the wrap): every later first sequence
    was below it, so a jump (another proxy wrote 20..99) reused the physical id and met OUT_OF_ORDER for good."""
    t = ProducerIdTable()
    t.store_physical(1000, 0, "c1", 7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (INT32_MAX - 4, INT32_MAX + 1)) == (7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (0, 5)) == (7, 0)  # the batch after the wrap
    assert t.physical(1000, 0, "c1", "t", 0, 0, (INT32_MAX - 4, INT32_MAX + 1)) == (7, 0)  # a retry before it
    assert t.physical(1000, 0, "c1", "t", 0, 0, (5, 20)) == (7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (100, 105)) is None  # 20..99 went through another proxy


def test_a_batch_straddling_the_wrap_keeps_its_successor_contiguous():
    """A batch from INT32_MAX - 2 with five records ends at sequence 1: the next starts at 2, no jump."""
    t = ProducerIdTable()
    t.store_physical(1000, 0, "c1", 7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (INT32_MAX - 2, INT32_MAX + 3)) == (7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (2, 4)) == (7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (5, 6)) is None  # 4 never came here


def test_a_refusal_just_before_the_wrap_holds_back_the_batches_after_it():
    """(b) A batch at 5 after a refused batch at INT32_MAX - 9 skips it; compared as plain numbers it did not, was
    written, and librdkafka would count the refused batch as written."""
    now = [0.0]
    t = ProducerIdTable(clock=lambda: now[0])
    key = (1000, 0, "t", 0)
    t.note_refused(key, INT32_MAX - 9)
    assert t.refused_before(key, 5) == INT32_MAX - 9
    assert t.refused_before(key, INT32_MAX - 9) is None  # its own resend goes through
    assert t.refused_before(key, INT32_MAX - 20) is None  # so does an earlier batch's
    t.note_refused(key, 5)  # refused as a gap: the newest refused batch, the oldest still the one before the wrap
    t.note_refused(key, INT32_MAX - 20)  # an earlier batch refused too: now the oldest
    assert t.refused_before(key, INT32_MAX - 9) == INT32_MAX - 20
    t.note_written(key, INT32_MAX - 20, INT32_MAX - 9)
    assert t.refused_before(key, 5) == INT32_MAX - 9
    t.note_written(key, INT32_MAX - 9, INT32_MAX + 6)  # up to sequence 4: 5 was refused too, resend it next
    assert t.refused_before(key, 5) is None and t.refused_before(key, 6) == 5
    t.note_written(key, 5, 9)
    assert t.refused_before(key, 50) is None


def test_a_refusal_before_the_wrap_makes_a_batch_after_it_a_gap_on_the_new_segment():
    """(b) through the handler: batch INT32_MAX - 9 refused while p0 is frozen; the batch at 5 must not reach the
    new segment's fresh physical id (it takes any first sequence)."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, INT32_MAX - 10)}))
    got, sent = _through(replace(c, view=view(frozen_p=0)), produce_req({0: _records(1000, INT32_MAX - 9, 15)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []
    moved = replace(c, view=_moved_p0(c.view))
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 5)}), pid_answer=(777, 0),
                         sealed={555: INT32_MAX - 10})
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []  # nothing written
    got, sent = _through(moved, produce_req({0: _records(1000, INT32_MAX - 9, 15)}), pid_answer=(777, 0),
                         sealed={555: INT32_MAX - 10})
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 5)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]


def test_a_late_retry_of_a_batch_straddling_the_wrap_is_a_duplicate_of_the_sealed_segment():
    """(c) The batch INT32_MAX - 2.. (five records, sequences up to 1) reached c1, its answer was lost; p0 moved.
    The sealed segment holds up to sequence 1 (floor 2): the resend was refused as a gap ("skips 2") every time,
    and the client resends its oldest batch first: stuck for good. It is a duplicate, as is an earlier retry."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, INT32_MAX - 3)}))
    moved = replace(c, view=_moved_p0(c.view))
    for resend in (_records(1000, INT32_MAX - 2, 5), batch(1000, 0, INT32_MAX - 3)):
        got, sent = _through(moved, produce_req({0: resend}), pid_answer=(777, 0), sealed={555: 1})
        assert sent == [] and by_partition(got)[0][0] == ErrorCode.duplicate_sequence_number, \
            ErrorCode(by_partition(got)[0][0]).name
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 2)}), pid_answer=(777, 0), sealed={555: 1})
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]
    got, sent = _through(moved, produce_req({0: _records(1000, INT32_MAX - 2, 5)}))  # later still
    assert sent == [] and by_partition(got)[0][0] == ErrorCode.duplicate_sequence_number


def test_a_sealed_segment_ending_at_int32_max_still_answers_a_retry_before_it_as_a_duplicate():
    """The sealed segment holds up to INT32_MAX: the producer's next batch starts at 0 (the floor), and a resend of
    its batch before that is a duplicate (with no floor it was written a second time)."""
    c = ctx()
    _through(c, produce_req({0: _records(1000, INT32_MAX - 4, 5)}))
    moved = replace(c, view=_moved_p0(c.view))
    got, sent = _through(moved, produce_req({0: _records(1000, INT32_MAX - 4, 5)}), pid_answer=(777, 0),
                         sealed={555: INT32_MAX})
    assert sent == [] and by_partition(got)[0][0] == ErrorCode.duplicate_sequence_number
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 0)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]


# -- (d) a floor this proxy holds while the producer writes through another proxy

def _clocked_ctx(now: list[float]):
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(1000, 10)
    return ctx(producer_ids=ids)


def test_a_producer_back_from_another_proxy_past_the_wrap_is_not_answered_from_a_floor_near_it():
    """The floor is INT32_MAX - 99 (p0 sealed there); the logical leader moved to another proxy, which wrote the
    producer on past the wrap, and back. Compared as plain numbers, the batch at 1000 lay below the floor and was
    answered DUPLICATE_SEQUENCE_NUMBER: counted as written, never written."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, INT32_MAX - 100)}))
    moved = replace(c, view=_moved_p0(c.view))
    got, _ = _through(moved, produce_req({0: batch(1000, 0, INT32_MAX - 99)}), pid_answer=(777, 0),
                      sealed={555: INT32_MAX - 100})
    assert by_partition(got)[0][0] == ErrorCode.none
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 1000)}), pid_answer=(778, 0))
    assert sent == [(Broker("c2", 2), 0)], f"answered {ErrorCode(by_partition(got)[0][0]).name}, not written"
    assert by_partition(got)[0][0] == ErrorCode.none


def test_a_floor_unused_for_five_minutes_is_forgotten():
    """The producer left for another proxy after its first batch on the new segment and came back a lap of the
    sequence space later, just below the floor: answered DUPLICATE_SEQUENCE_NUMBER, never written. A resend from
    before the seal comes within the clients' delivery timeout, and every few seconds until it is answered (here,
    or refused for another reason), so a floor unused for five minutes is dropped."""
    now = [0.0]
    c = _clocked_ctx(now)
    _through(c, produce_req({0: batch(1000, 0, 999_999)}))
    moved = replace(c, view=_moved_p0(c.view))
    _through(moved, produce_req({0: batch(1000, 0, 1_000_000)}), pid_answer=(777, 0), sealed={555: 999_999})
    now[0] += 250
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 999_999)}))  # a late resend: still a duplicate
    assert sent == [] and by_partition(got)[0][0] == ErrorCode.duplicate_sequence_number
    now[0] += 250
    frozen = replace(c, view=view(frozen_p=0))  # not the moved view, but the same key: refused, still here
    got, sent = _through(frozen, produce_req({0: batch(1000, 0, 999_999)}))
    assert sent == [] and by_partition(got)[0][0] == ErrorCode.not_leader_or_follower
    now[0] += 250
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 999_999)}))
    assert sent == [] and by_partition(got)[0][0] == ErrorCode.duplicate_sequence_number
    now[0] += 301  # five minutes since that resend: the producer is back (at 999,990 a lap later)
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 999_990)}))
    assert sent == [(Broker("c2", 2), 0)], f"answered {ErrorCode(by_partition(got)[0][0]).name}, not written"


def test_a_producer_going_on_past_its_floor_here_drops_it_before_coming_round_to_it():
    """The producer writes on through this proxy after the seal: once it is further past the floor than a resend
    can be behind, the floor is dropped. It was kept until a batch reaching INT32_MAX came through here, so a
    producer that came round to just below it otherwise (a lap later) was answered from it, never written."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, 999_999)}))
    moved = replace(c, view=_moved_p0(c.view))
    _through(moved, produce_req({0: batch(1000, 0, 1_000_000)}), pid_answer=(777, 0), sealed={555: 999_999})
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 1_000_001 + RETRY_WINDOW)}), pid_answer=(778, 0))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 999_990)}), pid_answer=(779, 0))
    assert sent == [(Broker("c2", 2), 0)], f"answered {ErrorCode(by_partition(got)[0][0]).name}, not written"


def test_sequence_comparisons_across_the_wrap_and_at_the_window_s_edge():
    from fedkafka.protocol import sequences as seqs
    assert seqs.behind(INT32_MAX, 0) and seqs.after(0, INT32_MAX)  # 0 follows INT32_MAX
    assert seqs.wrapped(INT32_MAX + 3) == 2 and seqs.within(1, INT32_MAX - 2, INT32_MAX + 3)
    assert not seqs.within(2, INT32_MAX - 2, INT32_MAX + 3) and not seqs.within(INT32_MAX - 3, INT32_MAX - 2, 2**31)
    assert seqs.behind(5 - RETRY_WINDOW, 5) and not seqs.behind(4 - RETRY_WINDOW, 5)
    assert seqs.after(4 - RETRY_WINDOW, 5)  # further back than any resend: a batch sent later, a lap on
    assert not seqs.after(7, 7) and not seqs.behind(7, 7 + 2**31)  # the same sequence
    assert seqs.after(1_000_000, 0) and seqs.after(2**31 - 2, 1_000_001)  # plain numbers far apart: as before
