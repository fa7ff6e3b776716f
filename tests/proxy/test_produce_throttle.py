"""A broker's Produce throttle time (a quota: it also mutes the connection) reaches the client (KIP-219): the
client's answer carries the largest throttle_time_ms of its upstream answers, on the Produce lane and on the generic
path, in every version, under both twins of records.py. The broker stand-in and the proxy are test_produce_lane's."""

from __future__ import annotations

from datetime import timedelta

import pytest
from protocol.test_records_twins import using

from fedkafka.protocol import codec
from proxy.test_produce_lane import Broker, ask, batch, frame, proxy, run, view

VERSIONS = range(3, 13)


def client_throttle_ms(answer: bytes, version: int) -> int:
    """throttle_time_ms of the client's answer frame, as kio reads it."""
    _, body = codec.decode_response(codec.response_schema(0, version), answer[4:])
    return body.throttle_time // timedelta(milliseconds=1)


def throttled_answer(partitions: list[int], version: int, lane: bool, throttle) -> tuple[int, int]:
    """(the client's throttle_time_ms, requests the lane took) for a Produce of `partitions` of topic t, its broker
    answering `throttle(request)` as its throttle time."""
    async def scenario():
        broker = await Broker().start()
        broker.throttle = throttle
        d = await proxy(view(), broker, lane=lane)
        try:
            answer = await ask(d, frame({p: batch() for p in partitions}, version=version))
            assert answer is not None
            return client_throttle_ms(answer, version), d.lane.taken if lane else 0
        finally:
            broker.close()
    return run(scenario)


@pytest.mark.parametrize("implementation", ["python", "compiled"])
@pytest.mark.parametrize("version", VERSIONS)
def test_the_lane_passes_a_one_partition_answer_s_throttle_time_on(version, implementation):
    with using(implementation):  # type: ignore[arg-type]
        assert throttled_answer([0], version, True, lambda request: 1234) == (1234, 1)


@pytest.mark.parametrize("implementation", ["python", "compiled"])
@pytest.mark.parametrize("version", [3, 8, 9, 12])
def test_the_lane_passes_a_two_partition_answer_s_throttle_time_on(version, implementation):
    with using(implementation):  # type: ignore[arg-type]
        assert throttled_answer([0, 1], version, True, lambda request: 777) == (777, 1)


@pytest.mark.parametrize("implementation", ["python", "compiled"])
@pytest.mark.parametrize("version", VERSIONS)
def test_the_generic_path_answers_the_largest_throttle_time_of_its_brokers(version, implementation):
    """Partitions 0 (on c1) and 2 (on c2): two upstream calls, whichever comes first answered 300 ms, the other 900."""
    throttles = iter([300, 900])
    with using(implementation):  # type: ignore[arg-type]
        assert throttled_answer([0, 2], version, True, lambda request: next(throttles)) == (900, 0)


@pytest.mark.parametrize("version", [3, 8, 9, 12])
def test_the_generic_path_passes_one_broker_s_throttle_time_on(version):
    assert throttled_answer([0, 1], version, False, lambda request: 1500) == (1500, 0)


@pytest.mark.parametrize("version", [3, 12])
def test_an_unthrottled_answer_stays_unthrottled(version):
    assert throttled_answer([0], version, True, lambda request: 0) == (0, 1)
    assert throttled_answer([0, 2], version, True, lambda request: 0)[0] == 0
