"""A sealed segment's floor (docs/DESIGN.md §5.3 rule 4) when the producer wrote on there through another process
(a sibling `--workers` process, or another proxy while the logical leader moved away and back): the floor is read for
this process's own physical id only, so it lags behind the producer's next batch without anything missing."""

from __future__ import annotations

from dataclasses import replace

from kio.schema.errors import ErrorCode

from fedkafka.proxy.core.producer_ids import REFUSAL_MEMORY_S, ProducerIdTable
from fedkafka.proxy.plan import Broker
from proxy.test_handlers import _moved_p0, _through, batch, by_partition, ctx, produce_req


def produce(c, seq: int, **kw):
    got, sent = _through(c, produce_req({0: batch(1000, 0, seq)}), **kw)
    return ErrorCode(by_partition(got)[0][0]), sent


def test_a_producer_that_wrote_on_through_a_sibling_worker_before_a_seal_is_written_not_refused_for_good():
    """Worker A wrote seq 0 (physical 555), worker B seqs 1 and 2 (physical 666) on c1; p0 moved to c2 and the client's
    next batch, seq 3, comes to A. A's floor (555 on c1) is 1: seq 3 was refused as a gap on every resend, though
    everything A forwarded there landed and nothing is missing."""
    a, b = ctx(), ctx()  # two worker processes: one view, a table each
    assert produce(a, 0)[0] == ErrorCode.none
    assert produce(b, 1, pid_answer=(666, 0))[0] == ErrorCode.none
    assert produce(b, 2, pid_answer=(666, 0))[0] == ErrorCode.none
    a = replace(a, view=_moved_p0(a.view))
    assert produce(a, 3, pid_answer=(777, 0), sealed={555: 0, 666: 2}) == (ErrorCode.none, [(Broker("c2", 2), 0)])
    assert produce(a, 4) == (ErrorCode.none, [(Broker("c2", 2), 0)])


def test_a_batch_past_a_floor_behind_this_process_s_own_batches_is_a_gap_until_refusal_memory_runs_out():
    """A forwarded seq 1 to c1 but the sealed segment ends at seq 0 for its id: seq 1 may be pending in the client, so
    seq 2 is a gap (written, librdkafka would ack seq 1 implicitly). When seq 1 does not come here within
    REFUSAL_MEMORY_S, it went through another process, which wrote it: the gap verdict ends, or seq 2 was refused here
    for good (each refusal keeps the floor alive)."""
    now = [0.0]
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(1000, 10)
    c = ctx(producer_ids=ids)
    produce(c, 0)
    produce(c, 1)
    moved = replace(c, view=_moved_p0(c.view))
    for _ in range(3):
        assert produce(moved, 2, pid_answer=(777, 0), sealed={555: 0}) == (ErrorCode.not_leader_or_follower, [])
        now[0] += REFUSAL_MEMORY_S / 3
    now[0] += 1
    assert produce(moved, 2, pid_answer=(777, 0), sealed={555: 0}) == (ErrorCode.none, [(Broker("c2", 2), 0)])
    assert produce(moved, 0) == (ErrorCode.duplicate_sequence_number, [])  # the floor still answers a late resend


def test_the_batch_at_a_floor_behind_this_process_s_own_batches_is_written_and_ends_the_gap_check():
    c = ctx()
    produce(c, 0)
    produce(c, 1)
    moved = replace(c, view=_moved_p0(c.view))
    assert produce(moved, 2, pid_answer=(777, 0), sealed={555: 0}) == (ErrorCode.not_leader_or_follower, [])
    assert produce(moved, 1, pid_answer=(777, 0), sealed={555: 0}) == (ErrorCode.none, [(Broker("c2", 2), 0)])
    assert produce(moved, 2) == (ErrorCode.none, [(Broker("c2", 2), 0)])
