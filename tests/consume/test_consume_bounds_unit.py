"""What one consume request may cost the proxy, counted (upstream calls, bytes, hashes, headers built), never timed:
ListOffsets and Fetch naming a partition more than once, offsets moved past an int64, walks that stop early."""

from __future__ import annotations

import dataclasses
import logging
import struct
import uuid

import crc32c
import pytest
from kio.schema.errors import ErrorCode
from protocol.test_records_twins import using

from consume.test_handlers_unit import (
    FAILED,
    FAILED_VIEW,
    GAP,
    Physical,
    batch,
    ctx,
    fetch_answer,
    fetch_request,
    gap_ctx,
    list_answers,
    list_request,
    partitions,
    skipped_to,
)
from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_type
from fedkafka.proxy.handlers import fetch, list_offsets
from fedkafka.proxy.plan import Context
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment

# -- ListOffsets: a partition named more than once -------------------------------------------------------------------


def test_list_offsets_answers_a_partition_named_more_than_once_invalid_request_and_asks_nothing_for_it():
    """As Kafka's broker (`ListOffsetsRequest.duplicatePartitions`): every entry of the duplicated partition gets
    INVALID_REQUEST. Asked, its n timestamps took n rounds, n upstream calls to one broker (20 000 for a 340 KB
    request)."""
    n = 50
    request = list_request((0, -1), *[(1, 1000 + i) for i in range(n)])
    plan = list_offsets.handle(ctx(), None, request)
    (call,) = plan.calls  # partition 0's latest: its active segment's partition, c3/t/1
    assert call.target.cluster == "c3"
    reply = plan.finish(list_answers(plan.calls, {("c3", 1, -1): (12, -1)}))
    (topic,) = reply.topics
    assert [p.partition_index for p in topic.partitions] == [0] + [1] * n  # one answer per entry, in order
    assert (topic.partitions[0].error_code, topic.partitions[0].offset) == (ErrorCode.none, 79)
    assert {(p.error_code, p.offset) for p in topic.partitions[1:]} == {(ErrorCode.invalid_request, -1)}


def test_list_offsets_refuses_a_partition_named_in_two_entries_of_its_topic():
    request = list_request((1, -1))
    request = request.__class__(replica_id=-1, isolation_level=0, topics=request.topics * 2)
    plan = list_offsets.handle(ctx(), None, request)
    assert not getattr(plan, "calls", None)
    assert [p.error_code for t in plan.topics for p in t.partitions] == [ErrorCode.invalid_request] * 2


class _CountedKey(tuple):
    """A physical partition key that counts its hashes: every dict or set look-up of it."""

    hashes = 0

    def __hash__(self) -> int:
        _CountedKey.hashes += 1
        return tuple.__hash__(self)


def test_asking_one_physical_partition_with_many_timestamps_looks_each_ask_up_a_bounded_number_of_times():
    """Each ask looked for its round in every round made before it: n^2 / 2 look-ups for n timestamps of one
    partition (20 000: 17.7 s). Now a few per ask; the rounds themselves (one call each) are unchanged."""
    n = 2000
    key = _CountedKey(("c1", "t", 0))
    _CountedKey.hashes = 0
    plan = list_offsets.ask_physical(ctx(Physical()), [(key, 1000 + i) for i in range(n)], 0, lambda *answers: None)
    assert len(plan.calls) == n
    assert [p.timestamp for c in plan.calls for t in c.request.topics for p in t.partitions] == \
        [1000 + i for i in range(n)]
    assert _CountedKey.hashes <= 4 * n


# -- offsets moved past an int64 -------------------------------------------------------------------------------------

INT64_MAX = (1 << 63) - 1


def fetch_answer_near_int64(hw: int, aborted_first: int | None = None):
    """c3/t/1's answer (log/0's active segment, moved by +67) with a high watermark `hw`."""
    return build(response_type(1, 12), {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 1, "error_code": ErrorCode.none, "high_watermark": hw, "last_stable_offset": hw,
         "log_start_offset": 0, "preferred_read_replica": -1, "records": batch(3, 2),
         "aborted_transactions": None if aborted_first is None else [{"producer_id": 1, "first_offset": aborted_first}],
         }]}]})


@pytest.mark.parametrize("hw, aborted_first", [(INT64_MAX - 10, None), (20, INT64_MAX)])
def test_a_fetch_answer_moved_past_an_int64_answers_its_partition_an_error_in_one_line(hw, aborted_first, caplog):
    """The logical high watermark (or an aborted transaction's first offset) past 2^63 - 1 made the client's answer
    fail to encode: struct.error, logged with its traceback by the connection on every request, which closed."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 75), ("log", 1, 0)))
    answers = {"c3": fetch_answer_near_int64(hw, aborted_first), "c1": fetch_answer("t", 1, batch(0, 3), hw=3)}
    with caplog.at_level(logging.INFO):
        reply = plan.finish([answers[c.target.cluster] for c in plan.calls])
        frame = reply.response_frame(7)  # raised struct.error
    assert frame
    out = partitions(reply)
    assert (out[("log", 0)].error_code, out[("log", 0)].records) == (ErrorCode.unknown_server_error, b"")
    assert out[("log", 1)].error_code == ErrorCode.none and out[("log", 1)].records  # the others as usual
    (warning,) = [r for r in caplog.records if r.name.startswith("fedkafka")]
    assert warning.levelno == logging.WARNING and not warning.exc_info
    assert "c3's broker 7" in warning.getMessage() and "does not fit in logical offsets" in warning.getMessage()


def test_a_fetch_answer_up_to_int64_max_is_answered():
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 75)))
    reply = plan.finish([fetch_answer_near_int64(INT64_MAX - 67)])
    assert partitions(reply)[("log", 0)].high_watermark == INT64_MAX and reply.response_frame(7)


@pytest.mark.parametrize("timestamp, values", [
    (-1, {("c3", 1, -1): (INT64_MAX - 10, -1)}),
    (-3, {("c1", 0, -3): (-1, -1), ("c2", 0, -3): (-1, -1), ("c3", 1, -3): (INT64_MAX - 10, 99)})])
def test_a_list_offsets_answer_moved_past_an_int64_answers_its_partition_an_error_in_one_line(timestamp, values,
                                                                                             caplog):
    plan = list_offsets.handle(ctx(), None, list_request((0, timestamp), (1, -1)))
    values = {**values, ("c1", 1, -1): (12, -1)}
    with caplog.at_level(logging.INFO):
        reply = plan.finish(list_answers(plan.calls, values))
        assert codec.encode_response_chunks(reply, 7)  # raised struct.error
    p0, p1 = reply.topics[0].partitions
    assert (p0.error_code, p0.offset) == (ErrorCode.unknown_server_error, -1)
    assert (p1.error_code, p1.offset) == (ErrorCode.none, 12)
    (warning,) = [r for r in caplog.records if r.name.startswith("fedkafka")]
    assert warning.levelno == logging.WARNING and not warning.exc_info and "c3's broker 7" in warning.getMessage()


# -- Fetch: gap skips within max_bytes, a partition named more than once ----------------------------------------------

def answer_bytes(reply) -> int:
    parts = reply.response_frame(1)
    return len(parts) if isinstance(parts, bytes) else sum(memoryview(p).nbytes for p in parts)


def test_a_fetch_naming_a_gap_partition_many_times_answers_it_once_with_one_skip():
    """As Kafka's broker reads a Fetch (its partitions a LinkedHashMap): one answer per partition, at its first entry.
    Each entry was answered with the whole gap skip (~31 KB for a 2^40 gap), past max_bytes: 33 000 entries (a
    1.29 MB request) with max_bytes 1024 gave a 1.03 GB answer."""
    one = fetch.handle(gap_ctx(Physical(down={"c1"})), None, fetch_request(("log", 0, 35), max_bytes=1024))
    skip = len(one.responses[0].partitions[0].records)
    assert skip > 30_000  # 512 empty batches: the first answer with records always fits, as in Kafka
    reply = fetch.handle(gap_ctx(Physical(down={"c1"})), None, fetch_request(*[("log", 0, 35)] * 200, max_bytes=1024))
    (topic,) = reply.responses
    (p,) = topic.partitions
    assert (topic.topic, p.partition_index, len(p.records), skipped_to(p)) == ("log", 0, skip, 30 + GAP)
    assert answer_bytes(reply) < skip + 200


def test_a_fetch_naming_a_partition_twice_asks_it_once_at_its_last_entry_s_offset():
    """Kafka keeps the last entry's request for a partition named twice, answered where its first entry was."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 1, 0), ("log", 0, 75), ("log", 1, 5)))
    by_cluster = {c.target.cluster: c.request.topics for c in plan.calls}
    assert [(t.topic, [(p.partition, p.fetch_offset) for p in t.partitions]) for t in by_cluster["c1"]] == \
        [("t", [(1, 5)])]  # once, at the last entry's offset
    out = plan.finish([fetch_answer("t", 1, batch(5, 3), hw=8) for _ in plan.calls])
    assert [(t.topic, [p.partition_index for p in t.partitions]) for t in out.responses] == [("log", [1, 0])]


TWO_GAPS_VIEW = dataclasses.replace(FAILED_VIEW, topics={"log": LogicalTopic("log", uuid.uuid4().hex, (
    FAILED, PartitionChain(segments=(Segment("c1", "t", 1, 0, 30, 0), Segment("c2", "t", 1, 4, None, 30 + GAP)),
                           leader_epoch=1)))})


def test_gap_skips_take_their_bytes_from_max_bytes_as_records_do():
    """Only the first answer with records goes past max_bytes (Kafka's rule, so a large batch makes progress); the
    second partition's skip used to be added whatever max_bytes said."""
    two = Context(view=TWO_GAPS_VIEW, me=TWO_GAPS_VIEW.proxies[0], advertised={}, physical=Physical(down={"c1"}),
                  producer_ids=None)
    small = fetch.handle(two, None, fetch_request(("log", 0, 35), ("log", 1, 35), max_bytes=1024))
    (p0, p1) = small.responses[0].partitions
    assert skipped_to(p0) == 30 + GAP and p1.records == b"" and p1.error_code == ErrorCode.none
    large = fetch.handle(two, None, fetch_request(("log", 0, 35), ("log", 1, 35), max_bytes=1 << 20))
    assert [skipped_to(p) for p in large.responses[0].partitions] == [30 + GAP] * 2


def test_a_gap_skip_after_an_upstream_answer_fits_in_what_the_answer_left():
    """The budget runs over the answers in the request's order, upstream answers and gap skips alike."""
    two = Context(view=TWO_GAPS_VIEW, me=TWO_GAPS_VIEW.proxies[0], advertised={}, physical=Physical(down={"c1"}),
                  producer_ids=None)
    plan = fetch.handle(two, None, fetch_request(("log", 1, 60 + GAP), ("log", 0, 35), max_bytes=1024))
    (call,) = plan.calls  # log/1 past the gap: c2's t/1
    assert call.target.cluster == "c2"
    out = partitions(plan.finish([fetch_answer("t", 1, batch(34, 3), hw=40)]))
    assert out[("log", 1)].records and out[("log", 0)].records == b""


# -- walks that stop early: the compiled twin builds the headers looked at, not every one ------------------------------

class CountingTwin:
    """The compiled twin, counting the batch headers its walk built."""

    def __init__(self, module):
        self.module, self.built = module, 0

    def __getattr__(self, name):
        return getattr(self.module, name)

    def batch_headers(self, buf, allow_partial_tail):
        headers, error = self.module.batch_headers(buf, allow_partial_tail)
        self.built += len(headers)
        return headers, error


@pytest.fixture
def counting_twin(monkeypatch):
    if not rec.compiled_available():
        pytest.skip("fedkafka_speedups is not built (rust/fedkafka_speedups needs cargo)")
    with using("compiled"):
        twin = CountingTwin(rec._compiled)
        monkeypatch.setattr(rec, "_compiled", twin)
        yield twin


SMALL_BATCHES = 20_000  # 69 bytes each: 1.4 MB
LOOKED_AT = 1000  # headers a walk that stops at the first batches may build: its first slices (16 KiB, 32 KiB)


def small_batches(first: int, count: int = SMALL_BATCHES) -> bytes:
    one = bytearray(batch(0, 1))
    out = bytearray()
    for i in range(count):
        struct.pack_into(">q", one, 0, first + i)
        out += one
    return bytes(out)


def test_a_compacted_hole_looks_at_the_first_batch_only(counting_twin):
    """`_compacted_to_seal` looks at the broker's first batch: the compiled walk built every header first (900 000
    small batches: 5.9 s, 209 MB)."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 10)))  # c1/t/0, sealed at 30
    p = partitions(plan.finish([fetch_answer("t", 0, small_batches(30), hw=30 + SMALL_BATCHES)]))[("log", 0)]
    assert skipped_to(p) == 30  # every batch is past the seal: the reader moves to it
    assert counting_twin.built <= LOOKED_AT


def test_a_tail_that_ended_looks_at_the_first_batch_only(counting_twin):
    """`_tail_ended`: the first batch at or past the gap's end ends the tail."""
    plan = fetch.handle(gap_ctx(Physical()), None, fetch_request(("log", 0, 35)))  # c1 back: its tail is read
    p = partitions(plan.finish([fetch_answer("t", 0, small_batches(30 + GAP), hw=30 + GAP + SMALL_BATCHES)]))
    assert skipped_to(p[("log", 0)]) == 30 + GAP
    assert counting_twin.built <= LOOKED_AT


def test_a_moved_segment_s_batches_are_listed_up_to_its_seal(counting_twin):
    """`fit_to_segment_parts` stops at the seal; the compiled walk listed every batch after it too. Its first slice
    is 256 KiB (its batches are mostly 32 KiB or more): up to 3 800 small batches listed, of 100 000."""
    body = struct.pack(">hiqqqhii", 0, 0, 0, 0, -1, -1, -1, 1) + b"r" * 40_000
    large = struct.pack(">qiibI", 40, 9 + len(body), 0, 2, crc32c.crc32c(body)) + body
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 65)))  # c2/t/0 [5, 45), logical 30: physical 40
    out = partitions(plan.finish([fetch_answer("t", 0, large + small_batches(45, 100_000), hw=100_045)]))
    assert len(out[("log", 0)].records) == len(large)
    assert counting_twin.built <= 1 + 256 * 1024 // len(batch(0, 1))
