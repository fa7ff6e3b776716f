"""Review of 8fc13530 (a reader exactly at a sealed segment's lost log end): findings as strict xfails."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import fetch_request
from consume.test_holes_in_the_logical_log_unit import MOVED_VIEW, _context, _fetch
from consume.test_s34_rvconsume2_review import CUT_VIEW, LaggingBrokers
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import Plan


@pytest.mark.xfail(strict=True, reason="a reader waiting at a sealed segment's lagging high watermark is answered "
                   "_error(NONE): high watermark, last stable offset and log start -1 (lag unknown); before 8fc13530 "
                   "the same empty answer carried the segment's logical high watermark (its seal)")
def test_a_reader_waiting_at_a_lagging_sealed_high_watermark_still_sees_the_seal_as_high_watermark():
    """MOVED (c3 0..9 sealed at 10), c3 just restarted: high watermark 5, log end 10. The reader at 5 waits (no
    records, no error) and sees high watermark 10 (5 records still to come), as it did before the commit."""
    lagging = LaggingBrokers({"c3": (0, 5), "c1": (0, 10)}, {"c3": 10})
    p = _fetch(MOVED_VIEW, lagging, 5)
    assert (p.error_code, p.records) == (ErrorCode.none, b"")
    assert p.high_watermark == 10


@pytest.mark.xfail(strict=True, reason="the bounds round that tells a lost log end from a lagging high watermark "
                   "asks every earlier segment's cluster too (EARLIEST, LOG_END), needed only when the log end is "
                   "at or below the position: a reader waiting at a lagging watermark pays them on every Fetch")
def test_a_reader_waiting_at_a_lagging_sealed_high_watermark_asks_no_other_cluster():
    """CUT (c3 0..9, c1 logical 10..39 sealed at physical 30, c2 active), c1 restarted: high watermark 20, log end
    30. The reader at logical 30 (c1's physical 20) waits; the rounds of its Fetch ask c1 only, not c3."""
    lagging = LaggingBrokers({"c3": (0, 10), "c1": (0, 20), "c2": (0, 5)}, {"c1": 30})
    answer = fetch.handle(_context(CUT_VIEW), None, fetch_request(("log", 0, 30)))
    asked: list[str] = []
    first = True
    while isinstance(answer, Plan):
        if not first:
            asked += [c.target.cluster for c in answer.calls]
        first = False
        answer = answer.finish([lagging.answer(c) for c in answer.calls])
    assert asked and set(asked) == {"c1"}, asked


@pytest.mark.xfail(strict=True, reason="docstrings made untrue: _translate, _settle_out_of_range, _after_out_of_range "
                   "(and handle's comment) still say the routes settled by the bounds round are OFFSET_OUT_OF_RANGE "
                   "answers only; an empty answer at a sealed log's end takes it too")
def test_the_bounds_round_docstrings_name_the_empty_answer_at_a_sealed_log_s_end():
    for f in (fetch._translate, fetch._settle_out_of_range, fetch._after_out_of_range):
        assert "_empty_at_a_sealed_logs_end" in (f.__doc__ or ""), f.__name__
