"""Run 13 of test_database_unreachable_longer_than_a_lease_while_a_move_is_pending: an idempotent producer lost one
batch (docs/DESIGN.md §5.3 rule 2). The proxy remembered its own lease refusal of the producer's batch 0 (the client
then wrote 0.. through the other proxy). When the logical leader came back, the client's pipeline here was two
requests, batch 180 and batch 183, both refused as a gap behind 0 on every round. 30 s after batch 0's last refusal
its memory ran out between the two requests of one round: 180 had just been refused, 183 was forwarded on a fresh
physical id (which takes any first sequence) and written, and librdkafka acked 180..182 implicitly
(rd_kafka_dr_implicit_ack: a later sequence succeeded). The refusal of 180 a moment before was forgotten with 0's."""

from __future__ import annotations

from dataclasses import replace

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from kio.schema.errors import ErrorCode

from fedkafka.proxy.core.producer_ids import REFUSAL_MEMORY_S, ProducerIdTable
from proxy.test_handlers import _through, by_partition, ctx, produce_req

SIZES = {0: 58, 180: 3, 183: 201}  # the batches of run 13 (first sequence: records)


def batch(seq: int) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=1000,
                                  producer_epoch=0, base_sequence=seq, batch_size=1 << 20)
    for i in range(SIZES[seq]):
        b.append(i, timestamp=None, key=b"k", value=b"v", headers=[])
    return bytes(b.build())


def produce(c, seq: int):
    got, sent = _through(c, produce_req({0: batch(seq)}), pid_answer=(2001, 0))
    return ErrorCode(by_partition(got)[0][0]), sent


def test_a_batch_refused_just_before_an_older_refusal_is_forgotten_still_holds_back_the_batch_after_it():
    now = [0.0]
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(1000, 10)
    c = ctx(producer_ids=ids)
    assert produce(replace(c, lease_valid=False), 0) == (ErrorCode.not_leader_or_follower, [])  # 11:29:01.217
    # 0..179 went through the other proxy; the leader is back here; each round: 180 then 183, both a gap behind 0
    for _ in range(5):
        now[0] += REFUSAL_MEMORY_S / 5 - 0.2
        assert produce(c, 180) == (ErrorCode.not_leader_or_follower, [])
        assert produce(c, 183) == (ErrorCode.not_leader_or_follower, [])
    now[0] = REFUSAL_MEMORY_S - 0.1
    assert produce(c, 180) == (ErrorCode.not_leader_or_follower, [])  # 11:29:31.076, still a gap behind 0
    now[0] = REFUSAL_MEMORY_S + 0.1  # 0's memory runs out between the two requests of this round
    code, sent = produce(c, 183)
    assert (code, sent) == (ErrorCode.not_leader_or_follower, []), \
        f"183 answered {code.name} and sent to {sent}: written while 180 (refused 0.2 s ago) was not"
    assert produce(c, 180)[0] == ErrorCode.none  # the client's resend, oldest first
    assert produce(c, 183)[0] == ErrorCode.none
