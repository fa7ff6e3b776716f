"""Review of s35-perf (the plain Produce lane's per-request Python cut, twin revision 8's lazy `LaneRequest`).

No finding of the review failed on the branch; these tests pin what the branch's own tests leave unexercised: a
lazy request (a dispatcher without a metrics observer, `NULL_OBSERVER`, and the twin of revision 8) answered other
than by a `Written` (a write below its segment, a call timed out, a request past its client's deadline), whose topics
are then read from the frame, answered byte for byte and logged as the generic path answers and logs it; and the
same lane on a twin of revision 7 (no `lazy`), which main's venv has. The stand-ins are test_produce_lane.py's."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from protocol.test_records_twins import using

from fedkafka.protocol import records as rec
from fedkafka.proxy.core import dispatch, produce_lane
from fedkafka.proxy.core.observe import NULL_OBSERVER
from fedkafka.proxy.handlers import produce as produce_handler
from proxy.test_produce_lane import Broker, a_second_between_looks, ask, batch, frame, proxy, run, scripted, view

lazy_twin = pytest.mark.skipif(rec._lazy_lane is None, reason="the compiled twin of revision 8 is not built")

BELOW = {("phys", 0): rec.ProducePartitionAnswer(0, 0, 3, -1, 0)}  # p2 written at physical 3, below its segment's 10
SILENT = None  # the broker never answers
OK = {("phys", 0): rec.ProducePartitionAnswer(0, 0, 7)}


async def answered(lane: bool, request: bytes, answers, monkeypatch, past_deadline: bool = False):
    """The client's answer to `request` sent twice (the first, answered, fills the route cache the compiled step reads;
    the second answered by `answers`) through a dispatcher without a metrics observer, the refusal lines the second
    logged, the lane's counts (taken, read by the compiled step), what the compiled step gave, the writes in
    flight left."""
    broker = await Broker().start()  # the first request answered: its call leaves the pooled connection open
    d = await proxy(view(), broker, lane=lane)
    d.observer = NULL_OBSERVER
    requests: list = []
    step = rec.read_lane_request

    def recorded(*args):
        read = step(*args)
        requests.append(read)
        return read
    monkeypatch.setattr(rec, "read_lane_request", recorded)
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    refusals = logging.getLogger("fedkafka.refusals")
    refusals.addHandler(handler)
    level = refusals.level
    refusals.setLevel(logging.INFO)
    try:
        await ask(d, request)
        lines.clear()
        broker.answers = (lambda r: None) if answers is SILENT else scripted(answers)
        if past_deadline:
            loop, real = a_second_between_looks(monkeypatch)
            pending = await d.start(request, 0, None)
            monkeypatch.setattr(loop, "time", real)
        else:
            pending = await d.start(request, 0, None)
        got: Any = await pending
        taken = (d.lane.taken, d.lane.compiled) if lane else None
        assert d.writes_in_flight is not None
        return bytes(got), lines, taken, [type(r[0]).__name__ for r in requests if r is not None], \
            dict(d.writes_in_flight)
    finally:
        refusals.removeHandler(handler)
        refusals.setLevel(level)
        broker.close()


@lazy_twin
@pytest.mark.parametrize("event", ["below_segment", "timed_out", "past_deadline"])
def test_a_lazy_request_answered_other_than_written_is_answered_and_logged_as_the_generic_path_does(event,
                                                                                                   monkeypatch):
    for module in (produce_lane, dispatch):
        monkeypatch.setattr(module, "REQUEST_TIMEOUT_S", 0.05 if event == "timed_out" else 30)
    request = frame({2: batch(2)} if event == "below_segment" else {0: batch(2)}, version=9,
                    timeout_ms=100 if event == "past_deadline" else 5000)
    answers = BELOW if event == "below_segment" else SILENT if event == "timed_out" else OK
    with using("compiled"):
        lane = run(lambda: answered(True, request, answers, monkeypatch, event == "past_deadline"))
        generic = run(lambda: answered(False, request, answers, monkeypatch, event == "past_deadline"))
    assert lane[2] == (2, 1)  # both taken by the lane, the second read by the compiled step
    assert lane[3][-1] == "LaneRequest"  # lazy: its topics read from the frame for this answer
    assert lane[:2] == generic[:2]  # the same answer bytes, the same refusal lines
    assert lane[4] == generic[4] == {4: 0}  # nothing left counted
    if event == "below_segment":
        assert len(lane[1]) == 1 and produce_handler.BELOW_SEGMENT in lane[1][0] and "client='app'" in lane[1][0]


@pytest.mark.skipif(rec._lane_read is None, reason="the compiled twin of revision 7 is not built")
def test_the_lane_on_a_twin_of_revision_7_makes_the_whole_request(monkeypatch):
    """main's venv has revision 7: `lazy` is then not passed to the twin, and the request is a ProduceRequestFrame."""
    monkeypatch.setattr(rec, "_lazy_lane", None)
    with using("compiled"):
        monkeypatch.setattr(rec, "_lazy_lane", None)  # `use` sets it again
        lane = run(lambda: answered(True, frame({2: batch(2)}), BELOW, monkeypatch))
    assert lane[2] == (2, 1) and lane[3][-1] == "ProduceRequestFrame"
    assert produce_handler.BELOW_SEGMENT in lane[1][0]
