"""The logical -> physical producer id map drops a mapping whose sequence another proxy continued."""

from __future__ import annotations

from example_counts import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedkafka.protocol import sequences as seqs
from fedkafka.proxy.core.producer_ids import REFUSAL_MEMORY_S, REFUSED_BATCHES, ProducerIdTable


def table() -> ProducerIdTable:
    t = ProducerIdTable()
    t.store_physical(1000, 0, "c1", 7, 0)
    return t


def test_contiguous_sequences_and_retries_keep_the_physical_id():
    t = table()
    assert t.physical(1000, 0, "c1", "t", 0, 0, (0, 5)) == (7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (5, 9)) == (7, 0)  # pipelined next batch
    assert t.physical(1000, 0, "c1", "t", 0, 0, (0, 5)) == (7, 0)  # a retry: the broker dedups it
    assert t.physical(1000, 0, "c1", "t", 1, 0, (40, 41)) == (7, 0)  # first batch on another partition


def test_a_sequence_gap_means_another_proxy_wrote_it_so_a_fresh_id_is_needed():
    t = table()
    assert t.physical(1000, 0, "c1", "t", 0, 0, (0, 5)) == (7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (12, 15)) is None  # 5..11 went through another proxy
    t.store_physical(1000, 0, "c1", 8, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 0, (12, 15)) == (8, 0)


def test_a_new_segment_needs_a_fresh_id_and_sequences_are_optional():
    t = table()
    assert t.physical(1000, 0, "c1", "t", 0, 0) == (7, 0)
    assert t.physical(1000, 0, "c1", "t", 0, 100) is None


def test_a_refusal_makes_later_sequences_a_gap_until_it_is_written_or_forgotten():
    now = [0.0]
    t = ProducerIdTable(clock=lambda: now[0])
    key = (1000, 0, "t", 0)
    assert t.refused_before(key, 5) is None
    t.note_refused(key, 5)
    t.note_refused(key, 9)  # a later refusal keeps the lowest one
    assert t.refused_before(key, 5) is None  # the refused batch itself (its retry) goes through
    assert t.refused_before(key, 9) == 5
    assert t.refused_before((1000, 0, "t", 1), 9) is None  # per partition
    t.note_written(key, 2, 5)  # a batch below the refused one changes nothing
    assert t.refused_before(key, 9) == 5
    t.note_written(key, 5, 9)  # the oldest refused batch is written: 9 was refused too, resend it next
    assert t.refused_before(key, 9) is None and t.refused_before(key, 10) == 9
    t.note_written(key, 9, 11)
    assert t.refused_before(key, 20) is None
    t.note_refused(key, 12)
    now[0] += 31  # the client resent it elsewhere (the logical leader moved): forgotten
    assert t.refused_before(key, 20) is None


def test_refusing_later_batches_as_a_gap_does_not_keep_the_oldest_refusal_alive():
    """Seen in a scale-up: a proxy whose lease lapsed refused batch 0; the client wrote 0.. through the other
    proxy; when the logical leader came back, each later batch was refused as a gap, and each such refusal
    renewed the memory of batch 0, so the producer was stuck for good. Only a refusal of the oldest batch
    itself (its retry refused again) keeps it remembered."""
    now = [0.0]
    t = ProducerIdTable(clock=lambda: now[0])
    key = (1000, 0, "t", 0)
    t.note_refused(key, 0)
    for _ in range(4):  # the gap refusals of 137, every 10 s
        now[0] += 10
        if t.refused_before(key, 137) is None:
            break
        t.note_refused(key, 137)
    assert t.refused_before(key, 137) is None and now[0] <= 40
    t.note_refused(key, 137)
    now[0] += 20
    t.note_refused(key, 137)  # its own retry refused again: still remembered
    now[0] += 20
    assert t.refused_before(key, 140) == 137


def test_each_refused_batch_is_forgotten_on_its_own_time():
    """Run 13's order of events on the table alone: the oldest refusal runs out, the batch refused just before
    it still holds back the batch after it; the client's oldest batch (180) is never held back by itself."""
    now = [0.0]
    t = ProducerIdTable(clock=lambda: now[0])
    key = (1000, 0, "t", 0)
    t.note_refused(key, 0)
    now[0] = 29.9
    assert t.refused_before(key, 180) == 0
    t.note_refused(key, 180)
    assert t.refused_before(key, 183) == 0
    t.note_refused(key, 183)
    now[0] = 30.1  # 0 forgotten, 180 and 183 not
    assert t.refused_before(key, 183) == 180 and t.refused_before(key, 200) == 180
    assert t.refused_before(key, 180) is None
    t.note_written(key, 180, 183)
    assert t.refused_before(key, 183) is None and t.refused_before(key, 200) == 183
    now[0] = 60.0  # 183 refused 30.1 s ago: gone too
    assert t.refused_before(key, 200) is None and key not in t._refused


def test_past_the_cap_a_producer_is_held_back_a_minute_at_most_not_for_good():
    """16 batches refused here within seconds, all written through another proxy (leadership flapping), then the
    client's oldest batch refused as a gap every 2 s: the memory stays full while it is, the client's batch is
    folded into the newest of the others and renews it; once the others ran out it is written."""
    now = [0.0]
    t = ProducerIdTable(clock=lambda: now[0])
    key = (1000, 0, "t", 0)
    for i in range(REFUSED_BATCHES):
        t.note_refused(key, 10 * i)
        now[0] += 0.1
    while t.refused_before(key, 500) is not None:
        assert now[0] < 2 * REFUSAL_MEMORY_S + 5, "held back for good"
        assert len(t._refused[key]) <= REFUSED_BATCHES
        t.note_refused(key, 500)
        now[0] += 2


def _refusals():
    base = st.sampled_from([0, seqs.LAST_SEQUENCE - 40])  # and round the wrap
    step = st.tuples(st.sampled_from([0.0, 0.1, 1.0, 5.0, 12.0, 29.95]), st.integers(0, 30).map(lambda i: 3 * i),
                     st.sampled_from(["refused", "refused", "refused", "written"]))
    return st.tuples(base, st.lists(step, min_size=1, max_size=80))


# 17 batches refused within 1.6 s, the 16 older ones forgotten first: only the newest holds back the batch after it
_PAST_THE_CAP = (0, [(0.1, 3 * i, "refused") for i in range(REFUSED_BATCHES + 1)] + [(29.95, 0, "written")])


@settings(max_examples=examples(300), deadline=None)
@given(_refusals())
@example(_PAST_THE_CAP)
@example((seqs.LAST_SEQUENCE - 40, _PAST_THE_CAP[1]))
def test_the_capped_memory_refuses_whatever_remembering_every_refusal_would(scenario):
    """Against a memory of every refusal on its own time (no cap), fed the same refusals and writes: the table
    never lets through a batch that one refuses, and never holds more than REFUSED_BATCHES for a key."""
    base, steps = scenario
    now = [0.0]
    t = ProducerIdTable(clock=lambda: now[0])
    key = (1000, 0, "t", 0)
    every: dict[int, float] = {}
    for wait, offset, what in steps:
        now[0] += wait
        every = {s: when for s, when in every.items() if now[0] - when <= REFUSAL_MEMORY_S}
        seq = seqs.wrapped(base + offset)
        for probe in range(0, 100, 3):
            probe_seq = seqs.wrapped(base + probe)
            if any(seqs.after(probe_seq, s) for s in every):
                assert t.refused_before(key, probe_seq) is not None, (probe, sorted(every.items()))
        if what == "refused":
            t.note_refused(key, seq)
            every[seq] = now[0]
        else:
            t.note_written(key, seq, seq + 3)
            every = {s: when for s, when in every.items() if not seqs.within(s, seq, seq + 3)}
        assert len(t._refused.get(key, ())) <= REFUSED_BATCHES


def test_a_batch_not_known_written_holds_back_the_batches_past_it_until_written_or_30_s_after_its_answer():
    """DESIGN §5.3 rule 3: an ambiguous answer on a confirmed pair (`note_ambiguous`). The produce handler refuses a
    batch past it only when the broker would not check it (`broker_checked` None); here, the memory itself."""
    now = [1000.0]
    t = ProducerIdTable(clock=lambda: now[0])
    key = (1, 0, "t", 0)
    t.note_ambiguous(key, 5)
    assert t.ambiguous_before(key, 6) == 5 and t.ambiguous_before(key, 5) is None and t.ambiguous_before(key, 4) is None
    t.note_written(key, 5, 6)  # 5 resent and written
    assert t.ambiguous_before(key, 6) is None and not t._ambiguous
    t.note_ambiguous(key, 7)
    t.note_ambiguous(key, 9)
    t.note_written(key, 8, 9)  # a batch after 7 written (the broker checked it on the same id): 7 was written
    assert t.ambiguous_before(key, 10) == 9
    now[0] += REFUSAL_MEMORY_S + 1  # 9 went through another proxy: forgotten
    assert t.ambiguous_before(key, 10) is None and not t._ambiguous
    t.note_ambiguous(key, 2**31 - 2)  # across the wrap
    assert t.ambiguous_before(key, 3) == 2**31 - 2
    t.note_written(key, 2**31 - 2, 1)
    assert t.ambiguous_before(key, 3) is None
