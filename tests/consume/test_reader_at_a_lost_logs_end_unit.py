"""A reader exactly at a sealed segment's lost log's end, below its seal (docs/DESIGN.md §9.3): Kafka answers a Fetch
at its log end empty, never OFFSET_OUT_OF_RANGE, so the proxy reads the log end (ListOffsets LATEST as the debugging
replica) to tell a log that ends there for good from a high watermark that lags after a restart."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import GAP, Physical, fetch_answer, fetch_request, list_answers, partitions, skipped_to
from consume.test_holes_in_the_logical_log_unit import MOVED_VIEW, Brokers, _consume, _fetch
from consume.test_s34_rvconsume2_review import CUT_VIEW, LaggingBrokers
from consume.test_s34_rvfetch_review import BACK_VIEW
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import Context, Plan


def test_a_reader_at_a_cut_first_segment_s_log_end_moves_to_its_seal():
    """MOVED (c3 0..9 sealed at 10, then c1 active from logical 10): an unclean election inside c3 cut its log at 5
    after the move. A group that committed 5 (or a reader that read 0..4) fetches at c3's log end: Kafka answers no
    records and no error, high watermark 5, and it used to sit there for good, c1's records never read (the operator
    had to reset the group). Expected: moved to the seal, it reads c1's 10..19, and from 0 it reads 0..4 first."""
    brokers = Brokers({"c3": (0, 5), "c1": (0, 10)})
    assert _consume(MOVED_VIEW, brokers, 5, fetches=3) == ([*range(10, 20)], [])
    assert _consume(MOVED_VIEW, brokers, 0, fetches=4) == ([*range(5), *range(10, 20)], [])


def test_a_reader_at_a_cut_later_segment_s_log_end_moves_to_its_seal():
    """CUT (c3 0..9, c1 logical 10..39 on physical 0..29 sealed at 30, c2 active from 40): c1's log cut at 20. A reader
    from 0 reads 0..9 and c1's 10..29, then sits at c1's log end (logical 30) on empty answers; expected: moved to
    c1's seal, it reads c2's 40..44."""
    brokers = Brokers({"c3": (0, 10), "c1": (0, 20), "c2": (0, 5)})
    assert _consume(CUT_VIEW, brokers, 0, fetches=6) == ([*range(30), *range(40, 45)], [])


def test_a_reader_at_a_sealed_segment_s_high_watermark_below_its_log_end_waits_for_its_records():
    """MOVED, c3 just restarted: its high watermark 5 lags its log end 10 (the records 5..9 are there, the followers
    catching up). The reader at 5 gets no records and no error (it is not moved past 5..9); once the high watermark is
    back it reads 5..9, then c1's."""
    lagging = LaggingBrokers({"c3": (0, 5), "c1": (0, 10)}, {"c3": 10})
    assert _consume(MOVED_VIEW, lagging, 5, fetches=3) == ([], [])
    lagging.logs["c3"] = (0, 10)
    assert _consume(MOVED_VIEW, lagging, 5, fetches=3) == ([*range(5, 20)], [])


def test_a_reader_at_a_cut_segment_s_end_with_nothing_before_it_is_reset_past_it():
    """MOVED, c3 cut at 5 and emptied (log start 5): nothing of the partition is left before the position. The reader
    at 5 is answered OFFSET_OUT_OF_RANGE, as below the logical log start, and resets to earliest, c1's 10 (earliest
    skips c3's emptied segment), where it reads c1's records."""
    assert _consume(MOVED_VIEW, Brokers({"c3": (5, 5), "c1": (0, 10)}), 5, fetches=3) == ([*range(10, 20)], [5])


def test_a_reader_at_a_known_tail_s_cut_end_moves_past_the_gap():
    """BACK (c1 0..29 sealed at 30, the gap whose tail the chain knows holds 30..39, c2, then c1 again from physical
    40): an unclean election inside c1 cut its log at 33. A reader at 33 (it read the cut tail to its end) gets an
    empty answer, high watermark 33; the log end is 33 too: the tail's 33..39 are gone, and with c1's records before
    the position it moves past the gap, as a reader past the cut end is. It used to wait there for good (a known tail
    whose high watermark lags after a restart is waited for: its log end is above,
    test_gap_tail_bounds_unit.py)."""
    back = Context(view=BACK_VIEW, me=BACK_VIEW.proxies[0], advertised={}, physical=Physical(), producer_ids=None)
    plan = fetch.handle(back, None, fetch_request(("log", 0, 33)))
    answer = plan.finish([fetch_answer("t", 0, b"", hw=33)])
    while isinstance(answer, Plan):
        answer = answer.finish(list_answers(answer.calls, {("c1", 0, -2): (0, -1), ("c1", 0, -1): (33, -1)}))
    p = partitions(answer)[("log", 0)]
    assert p.error_code == ErrorCode.none and skipped_to(p) == 30 + GAP


class LogEndUnread(Brokers):
    """Brokers that answer no log end (ListOffsets LATEST as the debugging replica, -2): an error for each."""

    def answer(self, call):
        if call.request.__api_key__ == 2 and call.request.replica_id == -2:
            return list_answers([call], {})[0]
        return super().answer(call)


def test_a_reader_at_a_sealed_logs_end_whose_log_end_is_not_read_is_asked_again():
    """MOVED, c3's log cut at 5; its log end not read (the debugging replica's ListOffsets answered an error). The
    reader at 5 (Kafka's answer empty, high watermark 5) can be told neither lost nor lagging: answered
    NOT_LEADER_OR_FOLLOWER, not moved and not reset, and it fetches again; once the log end is read it moves on."""
    brokers = LogEndUnread({"c3": (0, 5), "c1": (0, 10)})
    p = _fetch(MOVED_VIEW, brokers, 5)
    assert (p.error_code, p.records) == (ErrorCode.not_leader_or_follower, b"")
    assert _consume(MOVED_VIEW, Brokers(brokers.logs), 5, fetches=3) == ([*range(10, 20)], [])


def test_a_reader_past_a_sealed_logs_end_whose_log_end_is_not_read_is_asked_again():
    """The same on the OFFSET_OUT_OF_RANGE path: a reader at 7, past c3's cut log end 5 (Kafka answers
    OFFSET_OUT_OF_RANGE), its log start and high watermark read but not its log end: NOT_LEADER_OR_FOLLOWER, not
    moved to the seal and not answered OFFSET_OUT_OF_RANGE (a reset would re-read 0..4)."""
    brokers = LogEndUnread({"c3": (0, 5), "c1": (0, 10)})
    p = _fetch(MOVED_VIEW, brokers, 7)
    assert (p.error_code, p.records) == (ErrorCode.not_leader_or_follower, b"")
