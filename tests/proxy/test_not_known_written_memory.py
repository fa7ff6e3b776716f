"""The memory of batches not known written (DESIGN §5.3 rule 3: `note_ambiguous`, `ambiguous_before`,
`_resolve_ambiguous`): it empties once its batches ran out, so the steady path pays only a test that it is empty; and
a live batch in it is never pushed out by other producers' keys, so a batch past it on a fresh physical id is still
refused (not written, which would let librdkafka ack the timed-out batch implicitly)."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode
from protocol.test_produce_frames import kio_request

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core import producer_ids as pids
from fedkafka.proxy.core.producer_ids import REFUSAL_MEMORY_S, ProducerIdTable
from proxy.test_produce_lane import batch, run
from proxy.test_produce_lane_review import _send_one, _steady_producer, moved_p1


def test_the_memory_of_batches_not_known_written_empties_once_they_ran_out():
    """DESIGN §5.3 rule 3: "its one cost on the steady path is a test that the memory is empty, per batch written".
    A producer that got one ambiguous answer may never write that key again (librdkafka and the Java client bump the
    epoch after a timed-out batch, KIP-360: the key (id, epoch, topic, partition) is never seen again; or the producer
    just closed). Its entry must still leave once it ran out, without that key's own `note_written` or
    `ambiguous_before`: it used to stay for good, and every batch written by every other producer on the worker then
    paid `_resolve_ambiguous` (note_written 148 -> 244 ns in one alternating micro-run) for the life of the process.
    Checked: an hour later, 1000 steady writes of another producer find the memory empty and never call it."""
    now = [1000.0]
    t = ProducerIdTable(clock=lambda: now[0])
    gone = (1, 0, "t", 0)
    t.note_ambiguous(gone, 5)  # batch 5 timed out; the producer bumps its epoch and goes on as (1, 1, "t", 0)
    now[0] += REFUSAL_MEMORY_S + 3600  # an hour later: batch 5's memory ran out long ago
    calls = [0]
    resolve = t._resolve_ambiguous

    def counted(key, end):
        calls[0] += 1
        resolve(key, end)
    t._resolve_ambiguous = counted  # type: ignore[method-assign]
    steady = (2, 0, "t", 1)
    for seq in range(1000):  # another producer's steady batches (the lane's `note_written`)
        t.note_written(steady, seq, seq + 1)
    assert not t._ambiguous and calls[0] == 0, \
        f"an entry that ran out an hour ago is still held ({len(t._ambiguous)} key(s)); the steady path paid " \
        f"_resolve_ambiguous on {calls[0]} of 1000 writes"


def test_a_live_batch_not_known_written_is_not_pushed_out_by_other_producers_keys():
    """DESIGN §5.3 rule 3, the loss it covers: a victim's batch 5 on a confirmed pair answered REQUEST_TIMED_OUT, not
    written; its batch 6 on a fresh physical id (another partition's move) must be refused until 5 is written.
    MAX_MAPPINGS other keys noted within the same second (an ambiguous-answer storm on one worker; or a client with
    WRITE whose requests carry a 1 ms timeout: the lane's `_send`/`_not_to_send` answer them unsent, and
    `_lost`/`lane_noted` note every confirmed part ambiguous) fill the memory. The victim's live entry used to be
    popped (`_put`), and 6 went out on the fresh id: written, 5 acked implicitly, lost. Checked: 6 is still held back
    (the victim's batch goes to the refusal memory) 1 s later and 29 s after 5's answer, and not past 30 s after it:
    it is remembered with the time of its own answer, not that of the push-out."""
    now = [1000.0]
    t = ProducerIdTable(clock=lambda: now[0])
    victim = (1, 0, "t", 0)
    t.note_ambiguous(victim, 5)
    now[0] += 1.0  # the others come 1 s later, well within REFUSAL_MEMORY_S
    for i in range(pids.MAX_MAPPINGS):
        t.note_ambiguous((2, 0, f"t{i // 1000}", i % 1000), 0)
    assert _held_back_by(t, victim, 6) == 5, \
        "the victim's batch 5, not known written 1 s ago, no longer holds back 6 (pushed out by other keys)"
    assert _held_back_by(t, victim, 5) is None, "the resend of 5 itself is held back"
    now[0] += REFUSAL_MEMORY_S - 2  # 29 s after 5's answer
    assert _held_back_by(t, victim, 6) == 5
    now[0] += 2  # 31 s after 5's answer, 30 s after the push-out
    assert _held_back_by(t, victim, 6) is None, "5 remembered past 30 s after its own answer (renewed when pushed out)"


def test_a_pushed_out_batch_holds_back_nothing_once_it_is_written(monkeypatch):
    """A pushed-out key's batches, in the refusal memory now with a refused batch of its own (3, then the timed-out
    5 and 7), hold back the batches past them until the client's resends are written, in order, and then nothing:
    pushing out refuses more (also a batch the broker would check), never for good. The key is off the lane
    (`steady`) only until then."""
    monkeypatch.setattr(pids, "MAX_MAPPINGS", 3)
    now = [1000.0]
    t = ProducerIdTable(clock=lambda: now[0])
    victim = (1, 0, "t", 0)
    t.note_refused(victim, 3)
    t.note_ambiguous(victim, 5)
    t.note_ambiguous(victim, 7)
    for i in range(3):
        t.note_ambiguous((2, 0, "a", i), 0)
    assert [_held_back_by(t, victim, s) for s in (3, 4, 6, 8)] == [None, 3, 3, 3]
    t.note_written(victim, 3, 5)
    assert [_held_back_by(t, victim, s) for s in (5, 6, 8)] == [None, 5, 5]
    t.note_written(victim, 5, 7)
    assert [_held_back_by(t, victim, s) for s in (7, 8)] == [None, 7]
    t.note_written(victim, 7, 9)
    assert _held_back_by(t, victim, 9) is None and victim not in t._refused


def test_a_live_batch_pushed_out_into_a_full_refusal_memory_overflows_its_bucket(monkeypatch):
    """The same push-out when the refusal memory is full of live refusals (its own cap, MAX_REFUSED_KEYS, lowered to
    3 as MAX_MAPPINGS): the victim's batch is not kept there, its bucket overflows until 30 s after 5's answer, so a
    batch of it the broker would not check (`broker_checked` None: no physical id mapped here) is refused as a gap
    (`overflowing`), as the produce handler does; once that time passed, nothing holds it back."""
    monkeypatch.setattr(pids, "MAX_MAPPINGS", 3)
    monkeypatch.setattr(pids, "MAX_REFUSED_KEYS", 3)
    now = [1000.0]
    t = ProducerIdTable(clock=lambda: now[0])
    victim = (1, 0, "t", 0)
    t.note_ambiguous(victim, 5)
    now[0] += 1.0
    for i in range(3):
        t.note_refused((3, 0, "r", i), 0)  # the refusal memory full of live keys
    for i in range(3):
        t.note_ambiguous((2, 0, "a", i), 0)
    assert _held_back_by(t, victim, 6) is None and t.overflowing(victim), \
        "the victim's batch 5, pushed out of a full memory 1 s after its answer: not held, no overflow"
    assert t.broker_checked(victim, ("c", "t", 0, 0), 6) is None  # so the handler refuses 6 as a gap
    now[0] += REFUSAL_MEMORY_S - 2  # 29 s after 5's answer
    assert t.overflowing(victim)
    now[0] += 2  # 31 s after 5's answer
    assert not t.overflowing(victim), "the bucket overflows past 30 s after 5's own answer"


def _held_back_by(t: ProducerIdTable, key, first_seq: int) -> int | None:
    """The batch that holds back a batch of `key` from `first_seq` the broker would not check, as the produce handler
    asks (`_producer_refusal`): a refused batch, or one not known written."""
    skipped = t.refused_before(key, first_seq)
    return skipped if skipped is not None else t.ambiguous_before(key, first_seq)


@pytest.mark.parametrize("lane", [True, False])
def test_a_timed_out_batch_pushed_out_of_the_memory_by_other_producers_is_not_acked_implicitly(lane, monkeypatch):
    """The same push-out end to end, through the Produce lane and the generic path (the cap lowered to 3 so that a few
    keys fill it; at the real cap it takes 100,000 keys noted within 30 s on one worker: e.g. a stalled broker leading
    the partitions of 20,000 producers, 5 each, whose partitions the operator then moves away: their floors
    unreadable, rule 3 is all that is left). The rule 3 case of `test_a_batch_that_timed_out_is_not_acked_implicitly_
    when_another_partition_s_move_renews_the_physical_id`: PID's batch 5 on confirmed p0 answered REQUEST_TIMED_OUT,
    not written. Then another producer's batches on t/0 and t/1, and at another epoch on t/0, are answered
    REQUEST_TIMED_OUT too (3 keys noted after PID's fill the memory). p1 moves away and back: PID's fresh physical id.
    Checked: p0's batch 6 on it is not answered written while 5 never was (it used to be: 5 acked implicitly, lost)."""
    monkeypatch.setattr(pids, "MAX_MAPPINGS", 3)

    async def scenario():
        codes: dict = {}
        broker, d = await _steady_producer(codes, lane, moved_partition=1)
        try:
            codes[0] = ErrorCode.request_timed_out
            assert await _send_one(d, 0, 5) == ErrorCode.request_timed_out  # not written
            codes.clear()
            for epoch, p in ((0, 0), (0, 1), (1, 0)):  # another producer: 0 written (its pair confirmed), 1 timed out
                assert await _send(d, OTHER, epoch, p, 0) == 0
                codes[p] = ErrorCode.request_timed_out
                assert await _send(d, OTHER, epoch, p, 1) == ErrorCode.request_timed_out
                codes.clear()
            d.state.view = moved_p1(d.state.view)
            assert await _send_one(d, 1, 9) == 0  # p1's first batch on its new segment: a fresh physical id
            code = await _send_one(d, 0, 6)  # p0's next batch, sent before the client's resend of 5
            assert code != 0 or 5 in broker.written[0], \
                "batch 6 of p0 answered written while 5 never was: librdkafka acks 5 implicitly, 5 is lost"
        finally:
            broker.close()
    run(scenario)


OTHER = 2001


async def _send(d, pid: int, epoch: int, p: int, seq: int) -> int:
    """One batch of producer `pid` at `epoch` and `seq` to t/`p`: the partition's error code."""
    request = codec.encode_request(kio_request(9, None, -1, 5000, [("t", [(p, batch(1, pid, epoch, seq))])]), 11,
                                   "app")[4:]
    answer = rec.read_produce_response(bytes(await (await d.start(request, 0, None)))[4:], 9)
    return answer[0][1][0].error_code
