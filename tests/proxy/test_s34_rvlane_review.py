"""Review of s34-lane (the Produce lane's compiled request and answer steps, rust/fedkafka_speedups/src/lane.rs):
defects it found, kept as regression tests once fixed. The Python lane is the reference: the compiled step must take
exactly what it takes, or leave the request.

The stand-in broker, view and dispatcher are test_produce_lane.py's."""

from __future__ import annotations

import pytest
from protocol.test_records_twins import using

from fedkafka.protocol import records as rec
from fedkafka.proxy.core.dispatch import ProtocolViolation
from proxy.test_produce_lane import Broker, answers_of, ask, batch, frame, proxy, run, view

pytestmark = pytest.mark.skipif(
    not rec.compiled_available() or rec._load_compiled().REVISION < rec._LANE_READ_REVISION,  # type: ignore[union-attr]
    reason="the compiled twin of revision 7 (read_lane_request) is not built")


async def _limit_raised_after_the_routes_are_cached() -> tuple:
    """A dispatcher whose element limit is 2 while the lane caches the routes of p0 and p1 (a request of one
    partition each: two elements), then raised to 1000; then one request of both partitions (three elements).
    Its outcome: answered (the answers, the broker's frame count) or the connection closed (the message)."""
    broker = await Broker().start()
    d = await proxy(view(), broker)
    try:
        d.max_request_elements = 2
        for p in (0, 1):
            assert answers_of(await ask(d, frame({p: batch()})))[p][0] == 0
        d.max_request_elements = 1000
        try:
            answer = await ask(d, frame({0: batch(), 1: batch()}))
        except ProtocolViolation as e:
            return "closed", str(e).split(",")[0], len(broker.frames)
        return "answered", answers_of(answer or b""), len(broker.frames)
    finally:
        broker.close()


def test_the_compiled_step_holds_a_request_to_the_element_limit_the_lane_s_reader_holds_it_to():
    with using("python"):
        python = run(_limit_raised_after_the_routes_are_cached)
    with using("compiled"):
        compiled = run(_limit_raised_after_the_routes_are_cached)
    assert python[0] == "closed"  # the reference: the lane's reader (limit 2) refuses the frame, as the generic path
    assert compiled == python
