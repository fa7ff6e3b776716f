"""The logical -> physical producer id map drops a mapping whose sequence another proxy continued."""

from __future__ import annotations

from fedkafka.proxy.core.producer_ids import ProducerIdTable


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
