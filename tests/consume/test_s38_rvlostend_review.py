"""Review of 8fc13530 (a reader exactly at a sealed segment's lost log end): its findings, strict xfails until fixed
(s38-fixlostend; the docstring finding's test, which only pinned wording, deleted once the docstrings were fixed)."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import fetch_request
from consume.test_holes_in_the_logical_log_unit import MOVED_VIEW, _context, _fetch
from consume.test_s34_rvconsume2_review import CUT_VIEW, LaggingBrokers
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import Plan


def test_a_reader_waiting_at_a_lagging_sealed_high_watermark_still_sees_the_seal_as_high_watermark():
    """MOVED (c3 0..9 sealed at 10), c3 just restarted: high watermark 5, log end 10. The reader at 5 waits (no
    records, no error) and sees high watermark 10 (5 records still to come), as it did before the commit."""
    lagging = LaggingBrokers({"c3": (0, 5), "c1": (0, 10)}, {"c3": 10})
    p = _fetch(MOVED_VIEW, lagging, 5)
    assert (p.error_code, p.records) == (ErrorCode.none, b"")
    assert p.high_watermark == 10


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
