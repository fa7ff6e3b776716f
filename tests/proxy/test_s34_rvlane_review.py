"""Review of s34-lane (the Produce lane's compiled request and answer steps, rust/fedkafka_speedups/src/lane.rs):
defects it found, kept as regression tests once fixed. The Python lane is the reference: the compiled step must take
exactly what it takes, or leave the request.

The stand-in broker, view and dispatcher are test_produce_lane.py's."""

from __future__ import annotations

import dataclasses

import pytest
from protocol.test_produce_frames import kio_request
from protocol.test_records_twins import using

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core.dispatch import ProtocolViolation
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment
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


def _wide_view(topics: int, partitions: int):
    """`view()` with topics w0..w{topics-1} of `partitions` each, their segments on c1 spread over three physical
    topics in turn (w0 on phys0, w1 on phys1, w2 on phys2, w3 on phys0 ...): the broker's request groups them."""
    v = view()
    wide = {f"w{i}": LogicalTopic(f"w{i}", f"{i + 2:032x}", tuple(
        PartitionChain(segments=(Segment("c1", f"phys{i % 3}", i * partitions + p, 0, None, 0),), leader_epoch=3)
        for p in range(partitions))) for i in range(topics)}
    return dataclasses.replace(v, topics={**v.topics, **wide})


def _wide_request(topics: int, partitions: int, twice_named: bool = False) -> bytes:
    entries = [(f"w{i}", [(p, batch()) for p in range(partitions)]) for i in range(topics)]
    if twice_named:  # the first partition named again at the very end: far from its first entry
        entries.append(("w0", [(0, batch())]))
    return codec.encode_request(kio_request(9, None, -1, 5000, entries), 5, "app")[4:]


async def _wide(v, request: bytes) -> tuple:
    """`request` sent twice (the first caches its routes): the broker's frames, the answers, and per request
    whether the lane took it and whether the compiled step read it."""
    broker = await Broker().start()
    d = await proxy(v, broker)
    try:
        answers, counts = [], []
        for _ in range(2):
            before = (d.lane.taken, d.lane.compiled)
            answer = await (await d.start(request, 0, None))
            answers.append(answer if isinstance(answer, (bytes, type(None))) else bytes(answer))
            counts.append((d.lane.taken - before[0], d.lane.compiled - before[1]))
        return broker.frames, answers, counts
    finally:
        broker.close()


@pytest.mark.parametrize(("topics", "partitions"), [(3000, 1), (3, 1000)])
def test_a_request_of_thousands_of_partitions_reaches_the_broker_as_the_python_lane_writes_it(topics, partitions):
    """The compiled step's duplicate check and grouping by physical topic (a set and an index since the review: all
    pairs and a linear search were quadratic, seconds of held GIL for 16k topics) keep the Python lane's output:
    the broker's request byte for byte, its topics in the order they first come."""
    v, request = _wide_view(topics, partitions), _wide_request(topics, partitions)
    with using("python"):
        python = run(lambda: _wide(v, request))
    with using("compiled"):
        compiled = run(lambda: _wide(v, request))
    assert [read for _, read in compiled[2]] == [0, 1] and [taken for taken, _ in python[2]] == [1, 1]
    assert compiled[:2] == python[:2] and len(python[0]) == 2
    upstream = rec.read_produce_request(compiled[0][1])
    assert [t.name for t in upstream.topic_data] == ["phys0", "phys1", "phys2"]
    assert sum(len(t.partition_data) for t in upstream.topic_data) == topics * partitions


def test_a_partition_named_twice_far_apart_in_a_wide_request_is_left_to_the_python_lane():
    v, request = _wide_view(3, 1000), _wide_request(3, 1000, twice_named=True)
    with using("python"):
        python = run(lambda: _wide(v, request))
    with using("compiled"):
        compiled = run(lambda: _wide(v, request))
    assert [read for _, read in compiled[2]] == [0, 0]  # the step leaves it; the handler refuses the twice named
    assert compiled[:2] == python[:2]
