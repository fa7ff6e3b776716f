"""Run 13 of test_database_unreachable_longer_than_a_lease_while_a_move_is_pending: an idempotent producer lost one
batch (docs/DESIGN.md §5.3 rule 2). The proxy remembered its own lease refusal of the producer's batch 0 (the client
then wrote 0.. through the other proxy). When the logical leader came back, the client's pipeline here was two
requests, batch 180 and batch 183, both refused as a gap behind 0 on every round. 30 s after batch 0's last refusal
its memory ran out between the two requests of one round: 180 had just been refused, 183 was forwarded on a fresh
physical id (which takes any first sequence) and written, and librdkafka acked 180..182 implicitly
(rd_kafka_dr_implicit_ack: a later sequence succeeded). The refusal of 180 a moment before was forgotten with 0's.

Then what the memory takes in: every per-partition error of a batch that wrote nothing (an unknown partition too),
never a request refused as a whole for the client's own error (another client could claim any producer's id)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from kio.schema.errors import ErrorCode

import fedkafka.proxy.core.producer_ids as producer_ids
from fedkafka.protocol.codec import encode_request
from fedkafka.proxy.core.producer_ids import REFUSAL_MEMORY_S, ProducerIdTable
from fedkafka.proxy.handlers.produce import read_request
from proxy.test_handlers import _through, by_partition, ctx, produce_kio, produce_req
from proxy.test_handlers import batch as one_record

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


def _table() -> ProducerIdTable:
    ids = ProducerIdTable()
    ids.add_block(1000, 10)
    return ids


def test_another_client_s_invalid_request_does_not_refuse_a_producer():
    """A client with WRITE on topic t sends acks=2 batches claiming the victim's logical id (1000, epoch 0: ids come
    from controller blocks in order) at sequences 0 and 2**30. Every later batch of the victim is 'after' one of
    them (window 2**19): remembered, each would be refused NOT_LEADER_OR_FOLLOWER as a gap; re-sent every < 30 s,
    for good."""
    c = ctx(producer_ids=_table())
    for seq in (0, 2**30):
        got, sent = _through(c, produce_req({0: one_record(1000, 0, seq)}, acks=2))
        assert by_partition(got)[0][0] == ErrorCode.invalid_required_acks and sent == []
    got, sent = _through(c, produce_req({0: one_record(1000, 0, 7)}))  # the victim's own, valid request
    assert by_partition(got)[0][0] == ErrorCode.none, \
        f"victim's batch at 7 answered {ErrorCode(by_partition(got)[0][0]).name}, sent {sent}"


def test_a_refused_batch_is_not_forgotten_because_other_clients_sent_invalid_requests(monkeypatch):
    """The table keeps 100,000 (producer, partition) keys (lowered here to 50 to run fast); a client sends as many
    acks=2 batches of made-up producer ids. Remembered, they evicted the producer's live refusal, and its next batch
    past the refused one went out on a fresh physical id (any first sequence accepted) and was written: librdkafka
    acks the refused batch implicitly."""
    monkeypatch.setattr(producer_ids, "MAX_REFUSED_KEYS", 50)
    c = ctx(producer_ids=_table())
    got, sent = _through(replace(c, lease_valid=False), produce_req({0: one_record(1000, 0, 0)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []  # batch 0 refused
    for fake in range(60):  # another client: one request each, nothing forwarded
        _through(c, produce_req({0: one_record(50_000 + fake, 0, 0)}, acks=2))
    got, sent = _through(c, produce_req({0: one_record(1000, 0, 1)}))  # the producer's batch after 0, 1 s later
    assert (by_partition(got)[0][0], sent) == (ErrorCode.not_leader_or_follower, []), \
        f"batch 1 answered {ErrorCode(by_partition(got)[0][0]).name} and sent to {sent} while 0 was never written"


def test_a_batch_answered_unknown_partition_holds_back_the_batch_after_it():
    """A partition added (expand) or a topic just created: the client learned it from a proxy whose view has it, its
    pipeline here is batch 0 then batch 1 (max.in.flight 5). Batch 0 is answered UNKNOWN_TOPIC_OR_PARTITION (this
    proxy's view lags, retriable: librdkafka keeps it queued) and was not remembered as refused; the view arrives;
    batch 1 went out on a fresh physical id and was written, and librdkafka acked batch 0 implicitly: lost."""
    ids = _table()
    new = ctx(producer_ids=ids)
    t = new.view.topics["t"]
    old = replace(new, view=replace(new.view, topics={"t": replace(t, partitions=t.partitions[:1])}))
    got, sent = _through(old, produce_req({1: one_record(1000, 0, 0)}))
    assert by_partition(got)[1][0] == ErrorCode.unknown_topic_or_partition and sent == []
    got, sent = _through(new, produce_req({1: one_record(1000, 0, 1)}))
    assert (by_partition(got)[1][0], sent) == (ErrorCode.not_leader_or_follower, []), \
        f"batch 1 answered {ErrorCode(by_partition(got)[1][0]).name} and sent to {sent} while 0 was never written"
    assert _through(new, produce_req({1: one_record(1000, 0, 0)}))[0].responses[0].partition_responses[0] \
        .error_code == ErrorCode.none  # the client's resend, oldest first, then the next
    assert by_partition(_through(new, produce_req({1: one_record(1000, 0, 1)}))[0])[1][0] == ErrorCode.none


def _flipped(records: bytes) -> bytes:
    out = bytearray(records)
    out[-1] ^= 0x01  # a record byte: the CRC no longer matches, the header still reads
    return bytes(out)


def _code(c, parts: dict[int, bytes], **kw) -> tuple[ErrorCode, list]:
    got, sent = _through(c, produce_req(parts, **kw))
    (index,) = parts
    return ErrorCode(by_partition(got)[index][0]), sent


def test_a_corrupt_batch_of_a_steady_producer_holds_back_the_batch_after_it_on_the_lane_too():
    """Batch 1 answered CORRUPT_MESSAGE (retriable) and not written: batch 2 would take a fresh physical id (its
    sequence jumps past what was forwarded) and be written. The Produce lane leaves the producer to `handle`
    (`steady`), which refuses 2 until 1 is written."""
    c = ctx(producer_ids=_table())
    assert _code(c, {0: one_record(1000, 0, 0)})[0] == ErrorCode.none
    key, seg = (1000, 0, "t", 0), ("c1", "phys", 0, 0)
    assert c.producer_ids.steady(key, seg, 1) is not None  # the lane's state before
    assert _code(c, {0: _flipped(one_record(1000, 0, 1))}) == (ErrorCode.corrupt_message, [])
    assert c.producer_ids.steady(key, seg, 2) is None
    assert _code(c, {0: one_record(1000, 0, 2)}) == (ErrorCode.not_leader_or_follower, [])
    assert _code(c, {0: one_record(1000, 0, 1)})[0] == ErrorCode.none
    assert _code(c, {0: one_record(1000, 0, 2)})[0] == ErrorCode.none


def _sequence_hit(records: bytes, bit: int) -> bytes:
    """A batch whose base sequence took a bit flip after its CRC was computed (in the client, or on a path without
    TLS whose TCP checksum missed it): the CRC no longer matches, the header claims another sequence."""
    out = bytearray(records)
    out[56] ^= 1 << bit  # baseSequence's low byte
    return bytes(out)


# the bit of batch 1's base sequence hit: it claims 9 (after 1: batch 2 passed as a jump and was written) or 0 (behind
# 1: 1's own resend was refused as a gap behind 0, which the client never resends, for 30 s)
@pytest.mark.parametrize("bit", [3, 0])
def test_a_corrupt_batch_whose_sequence_was_hit_holds_back_the_batch_after_it(bit):
    """As test_a_corrupt_batch_of_a_steady_producer_holds_back_the_batch_after_it_on_the_lane_too, but the damage hit
    batch 1's base sequence: it claims 9. The proxy refused it (CORRUPT_MESSAGE, retriable) and remembered 9 as
    refused, not 1. Batch 2 did not skip 9 (it is behind it), its sequence jumps past what was forwarded (1), so it
    went out on a fresh physical id, which takes any first sequence, and was written while 1 was not: Kafka itself
    answers 2 OUT_OF_ORDER_SEQUENCE_NUMBER there (its producer state expects 1), and the client resends both. Now a
    batch whose CRC does not vouch for its header is remembered at the end forwarded for its producer (1): 2 is
    refused as a gap, on the lane too (`steady`), and the client's resend of 1 and then 2 are written at once."""
    c = ctx(producer_ids=_table())
    assert _code(c, {0: one_record(1000, 0, 0)})[0] == ErrorCode.none
    assert _code(c, {0: _sequence_hit(one_record(1000, 0, 1), bit)}) == (ErrorCode.corrupt_message, [])
    assert c.producer_ids.steady((1000, 0, "t", 0), ("c1", "phys", 0, 0), 2) is None  # the lane leaves it
    code, sent = _code(c, {0: one_record(1000, 0, 2)})
    assert (code, sent) == (ErrorCode.not_leader_or_follower, []), \
        f"batch 2 answered {code.name} and sent to {sent} while 1 was never written"
    code, sent = _code(c, {0: one_record(1000, 0, 1)})  # the client's resend, oldest first
    assert code == ErrorCode.none, f"the resend of 1 answered {code.name}"
    assert _code(c, {0: one_record(1000, 0, 2)})[0] == ErrorCode.none
    assert not c.producer_ids._refused  # nothing held back after: the producer is the lane's again


def test_a_producer_s_first_corrupt_batch_whose_sequence_was_hit_holds_back_the_batch_after_it():
    """Nothing of producer 1000 went through this process yet (a new producer, or one back from another proxy): its
    batch 0 arrives with its base sequence hit (claims 8) and is refused CORRUPT_MESSAGE. Remembered at 8, batch 1 (not
    past 8) went out as a fresh physical id's first batch, which takes any first sequence, and was written while 0 was
    not. With no end forwarded to remember it at, it is remembered at no sequence: every batch of the producer the
    broker would not check is refused as a gap (here all: none has a confirmed physical id) until it runs out, 30 s
    after its refusal, as any refused batch; then the client's resends, 0 first, are written."""
    now = [0.0]
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(1000, 10)
    c = ctx(producer_ids=ids)
    assert _code(c, {0: _sequence_hit(one_record(1000, 0, 0), 3)}) == (ErrorCode.corrupt_message, [])
    code, sent = _code(c, {0: one_record(1000, 0, 1)})
    assert (code, sent) == (ErrorCode.not_leader_or_follower, []), \
        f"batch 1 answered {code.name} and sent to {sent} while 0 was never written"
    now[0] = REFUSAL_MEMORY_S - 1
    assert _code(c, {0: one_record(1000, 0, 0)}) == (ErrorCode.not_leader_or_follower, [])
    assert _code(c, {1: one_record(1000, 0, 0)})[0] == ErrorCode.none  # another partition of the producer goes on
    now[0] = REFUSAL_MEMORY_S + 1
    assert _code(c, {0: one_record(1000, 0, 1)}) == (ErrorCode.not_leader_or_follower, [])  # still behind 0's resend
    assert _code(c, {0: one_record(1000, 0, 0)})[0] == ErrorCode.none
    assert _code(c, {0: one_record(1000, 0, 1)})[0] == ErrorCode.none


def test_a_corrupt_batch_is_remembered_where_the_client_s_order_puts_it_not_where_its_header_says():
    """The table alone (`note_refused_unread`): at the end last forwarded for the key, on whatever segment."""
    ids = _table()
    key = (1000, 0, "t", 0)
    ids.note_forwarded(key, ("c1", "phys", 0, 0), 5000, 7)
    ids.note_refused_unread(key)
    assert ids.refused_before(key, 8) == 7 and ids.refused_before(key, 7) is None and not ids.unsequenced(key)
    other = (1001, 0, "t", 0)
    ids.note_refused_unread(other)
    assert ids.unsequenced(other) and ids.refused_before(other, 123) is None
    ids.note_written(other, 0, 5)  # a write proves nothing about a batch of unknown sequence: still held back
    assert ids.unsequenced(other) and list(ids._refused[other]) == [producer_ids.UNKNOWN_SEQUENCE]


def test_a_partition_named_twice_is_remembered_as_refused():
    c = ctx(producer_ids=_table())
    twice = produce_kio({0: one_record(1000, 0, 0)})
    twice = replace(twice, topic_data=twice.topic_data * 2)
    got, sent = _through(c, read_request(encode_request(twice, 1, "test")[4:]))
    assert [p.error_code for t in got.responses for p in t.partition_responses] == [ErrorCode.invalid_request] * 2
    assert sent == []
    assert _code(c, {0: one_record(1000, 0, 1)}) == (ErrorCode.not_leader_or_follower, [])


def test_an_unknown_partition_refusal_runs_out_as_any_other():
    """Not refused for good: 30 s after its last refusal the batch is forgotten (it went through another proxy)."""
    now = [0.0]
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(1000, 10)
    new = ctx(producer_ids=ids)
    t = new.view.topics["t"]
    old = replace(new, view=replace(new.view, topics={"t": replace(t, partitions=t.partitions[:1])}))
    assert _code(old, {1: one_record(1000, 0, 0)})[0] == ErrorCode.unknown_topic_or_partition
    now[0] = REFUSAL_MEMORY_S - 1
    assert _code(new, {1: one_record(1000, 0, 9)})[0] == ErrorCode.not_leader_or_follower
    now[0] = REFUSAL_MEMORY_S + 1
    assert _code(new, {1: one_record(1000, 0, 9)})[0] == ErrorCode.none


def _transactional(seq: int) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True, producer_id=1000,
                                  producer_epoch=0, base_sequence=seq, batch_size=1 << 20)
    b.append(0, timestamp=None, key=b"k", value=b"v", headers=[])
    return bytes(b.build())


def test_what_the_client_itself_got_wrong_or_may_not_do_is_never_remembered():
    """Another client's requests claiming producer 1000's id: refused as a whole for its own error (acks=2, a
    transactional id), a transactional batch, or no WRITE on the topic, each also with a corrupt batch or an
    unknown partition. None of it is remembered: producer 1000's batch at 7 is written."""
    new = ctx(producer_ids=_table())
    t = new.view.topics["t"]
    old = replace(new, view=replace(new.view, topics={"t": replace(t, partitions=t.partitions[:1])}))
    denied = replace(new, authorizer=SimpleNamespace(allowed=lambda *_: False))
    for c, kw in ((new, {"acks": 2}), (old, {"acks": 2}), (new, {"txn": "x"}), (old, {"txn": "x"}), (denied, {})):
        for p, records in ((0, one_record(1000, 0, 0)), (0, _flipped(one_record(1000, 0, 2**30))),
                           (1, one_record(1000, 0, 3))):
            assert _code(c, {p: records}, **kw)[0] != ErrorCode.none
    assert _code(new, {0: _transactional(0)})[0] == ErrorCode.transactional_id_authorization_failed
    assert not new.producer_ids._refused
    for p in (0, 1):
        assert _code(new, {p: one_record(1000, 0, 7)})[0] == ErrorCode.none


def test_a_live_refusal_a_full_memory_cannot_keep_still_holds_back_the_batch_after_it(monkeypatch, caplog):
    """The memory keeps MAX_REFUSED_KEYS producer partitions (lowered here to 50). A client with WRITE fills it within
    a second with made-up producer ids in an unknown partition (corrupt batches of ids it was never given are held
    against its own connection, test_foreign_producer_ids.py); producer 1000's live refusal of
    batch 0 comes next and is not kept. Until it would have run out (its bucket overflowing, logged), every batch of
    1000 the broker would not check itself is refused: batch 1 (a fresh physical id would take it) and the resends,
    remembered once there is room. A producer the broker checks (1001, confirmed on p1) goes on, and one the memory
    holds (1002, refused before the fill) is written when it resends. Once there is room, 1000's key is remembered
    again, but not exactly (0 is missing): its bucket still holds back 1. Then 1 waits for 0."""
    monkeypatch.setattr(producer_ids, "MAX_REFUSED_KEYS", 50)
    now = [0.0]
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(1000, 10)
    c = ctx(producer_ids=ids)
    lapsed = replace(c, lease_valid=False)
    assert _code(c, {1: one_record(1001, 0, 0)})[0] == ErrorCode.none
    assert _code(lapsed, {0: one_record(1002, 0, 0)}) == (ErrorCode.not_leader_or_follower, [])
    for fake in range(49):  # corrupt batches of ids the connection does not vouch for no longer reach the table
        assert _code(c, {5: one_record(50_000 + fake, 0, 0)})[0] == ErrorCode.unknown_topic_or_partition
    assert _code(lapsed, {0: one_record(1000, 0, 0)}) == (ErrorCode.not_leader_or_follower, [])
    key = (1000, 0, "t", 0)
    assert key not in ids._refused and len(ids._refused) == 50 and ids.overflowing(key)
    assert "not kept in the refusal memory" in caplog.text
    now[0] = 1.0
    for seq in (1, 0):  # the client's pipeline, refused while its bucket overflows
        assert _code(c, {0: one_record(1000, 0, seq)}) == (ErrorCode.not_leader_or_follower, [])
    assert _code(c, {1: one_record(1001, 0, 1)})[0] == ErrorCode.none
    assert _code(c, {0: one_record(1002, 0, 0)})[0] == ErrorCode.none
    now[0] = 2.0
    for seq in (2, 1, 0):  # room again: remembered, but 0 is not; 1 is refused though only 2 is remembered before it
        assert _code(c, {0: one_record(1000, 0, seq)}) == (ErrorCode.not_leader_or_follower, [])
    assert key in ids._refused
    now[0] = REFUSAL_MEMORY_S + 1.5  # the refusal not kept (renewed at 1 s) ran out
    assert not ids.overflowing(key)
    assert _code(c, {0: one_record(1000, 0, 1)}) == (ErrorCode.not_leader_or_follower, [])
    for seq in (0, 1, 2):
        assert _code(c, {0: one_record(1000, 0, seq)})[0] == ErrorCode.none


def test_keys_whose_refusals_ran_out_leave_the_full_memory_first_and_nothing_overflows(monkeypatch):
    monkeypatch.setattr(producer_ids, "MAX_REFUSED_KEYS", 50)
    now = [0.0]
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(1000, 10)
    c = ctx(producer_ids=ids)
    for fake in range(49):
        _code(c, {5: one_record(50_000 + fake, 0, 0)})
    now[0] = REFUSAL_MEMORY_S + 1
    assert _code(replace(c, lease_valid=False), {0: one_record(1000, 0, 0)}) == (ErrorCode.not_leader_or_follower, [])
    for fake in range(49):
        _code(c, {5: one_record(70_000 + fake, 0, 0)})
    assert len(ids._refused) == 50 and (1000, 0, "t", 0) in ids._refused
    assert not ids.overflowing((1000, 0, "t", 0)) and set(ids._overflow_until) == {-float("inf")}
    assert _code(c, {0: one_record(1000, 0, 1)}) == (ErrorCode.not_leader_or_follower, [])  # a gap behind 0


def test_a_topic_name_no_topic_can_have_is_not_remembered():
    """Each key holds its topic name: an unknown topic's name no logical topic can have (the controller's TOPIC_NAME:
    at most 231 of Kafka's characters) would let a client hold more than the memory's bound (§5.3: 249 emoji are
    ~1 KB of UTF-8, 2.3 KB a key; 32 KiB with a longer one); no producer writes to it, so nothing is remembered for it.
    """
    c = ctx(producer_ids=_table())
    for name in ("n" * 231, "n" * 232, "\U0001F600" * 10, "é", "n\n", "n n"):
        assert _code(c, {0: one_record(1000, 0, 0)}, topic=name)[0] == ErrorCode.unknown_topic_or_partition
    assert list(c.producer_ids._refused) == [(1000, 0, "n" * 231, 0)]


# (honest producers, one partition each, with a cap of 50 keys; overflow buckets): 1 bucket, as when far more keys than
# buckets were not kept; 250 producers, more left out than the memory holds
@pytest.mark.parametrize(("producers", "buckets"), [(60, producer_ids.OVERFLOW_BUCKETS), (60, 1), (250, 1)])
def test_honest_producers_refused_past_the_key_cap_are_all_written_once_their_refusals_run_out(monkeypatch, producers,
                                                                                               buckets):
    """More producer partitions than MAX_REFUSED_KEYS (lowered to 50) are refused within 30 s for an honest reason (a
    lapsed lease; a frozen partition during a move or failover alike): a live refusal has to be dropped. Each needs a
    fresh physical id (no batch of it written yet), which the memory refuses while a dropped refusal could still
    matter. They resend every 2 s. The memory overflowed for good (reviewer's rev7): each resend re-entered the memory
    and pushed out another live key, renewing the overflow; nothing was written. Now all are written: the keys the
    memory keeps are exact, written when resent, and leave; the rest follow once their refusals run out, as many at a
    time as the memory holds. Also when every key shares the one overflowing bucket: a key taken in is held back only
    as long as its bucket overflowed then, not by the refusals left out later."""
    monkeypatch.setattr(producer_ids, "MAX_REFUSED_KEYS", 50)
    monkeypatch.setattr(producer_ids, "OVERFLOW_BUCKETS", buckets)
    now = [0.0]
    ids = ProducerIdTable(clock=lambda: now[0])
    ids.add_block(1000, 10)
    c = ctx(producer_ids=ids)
    past_the_cap = range(2000, 2000 + producers)
    for p in past_the_cap:  # the proxy's lease lapsed for a moment: every producer's batch 0 refused
        assert _code(replace(c, lease_valid=False), {0: one_record(p, 0, 0)})[0] == ErrorCode.not_leader_or_follower
    written = set()
    while now[0] < 20 * REFUSAL_MEMORY_S and written != set(past_the_cap):
        now[0] += 2.0  # the clients resend batch 0 every 2 s (retry.backoff, metadata refresh)
        for p in past_the_cap:
            if p not in written and _code(c, {0: one_record(p, 0, 0)})[0] == ErrorCode.none:
                written.add(p)
    assert written == set(past_the_cap), f"{producers - len(written)} never written in {now[0]:.0f} s"
