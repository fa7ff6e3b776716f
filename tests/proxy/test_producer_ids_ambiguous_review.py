"""Review (rvpid) of the memory of batches not known written (DESIGN §5.3 rule 3: `note_ambiguous`,
`ambiguous_before`, `_resolve_ambiguous`). These tests FAIL ON PURPOSE on main: each proves a bug."""

from __future__ import annotations

from fedkafka.proxy.core import producer_ids as pids
from fedkafka.proxy.core.producer_ids import REFUSAL_MEMORY_S, ProducerIdTable


def test_the_memory_of_batches_not_known_written_empties_once_they_ran_out():
    """DESIGN §5.3 rule 3: "its one cost on the steady path is a test that the memory is empty, per batch written".
    One ambiguous answer of a producer that never writes that key again (librdkafka bumps its epoch after a timed-out
    batch, KIP-360: the key (id, epoch, topic, partition) is never seen again; or it just closed) stays in the memory
    for good: nothing but that key's own `note_written` or `ambiguous_before` ever drops it, expired or not. From then
    on every batch written by every other producer on the worker pays `_resolve_ambiguous` (a method call and a dict
    lookup hashing a 4-tuple with a str), not just the emptiness test, for the life of the process."""
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
    `note_ambiguous` keeps the memory with `_put`, which pops the least recently noted key past MAX_MAPPINGS whether
    its batches are live or not: MAX_MAPPINGS other keys noted within the same second (an ambiguous-answer storm on one
    worker; or a client with WRITE whose requests carry a 1 ms timeout: `_past_deadline`/`_not_to_send` answer them
    unsent, and `_lost`/`lane_noted` note every confirmed part ambiguous, no write needed after its keys wrote once)
    push the victim's live entry out, and 6 goes out on the fresh id: written, 5 acked implicitly, lost. The refusal
    memory in the same situation keeps the live key and overflows its bucket instead (never forgets early)."""
    now = [1000.0]
    t = ProducerIdTable(clock=lambda: now[0])
    victim = (1, 0, "t", 0)
    t.note_ambiguous(victim, 5)
    for i in range(pids.MAX_MAPPINGS):
        t.note_ambiguous((2, 0, f"t{i // 1000}", i % 1000), 0)
    now[0] += 1.0  # 1 s later, well within REFUSAL_MEMORY_S
    assert t.ambiguous_before(victim, 6) == 5, \
        "the victim's batch 5, not known written 1 s ago, no longer holds back 6 (pushed out by other keys)"
