"""Session 37 review of s37-producecut (the connection's hand-off to the lane, `Dispatcher.start_now` as the lane's
own `ProduceLane.start`).

The connection reads `start_now` once and calls it for every frame it reads; on that path the lane's own api-key
check, then its readers' (`records`' Python reader and the compiled step), keep a client's non-Produce request from
the lane. No test failed with the first check removed (the ApiVersions frame of test_connection_callbacks_unit does
not decode as a Produce request): a request of another api key whose body is a Produce request the lane would take
is left, with and without the compiled step."""

from __future__ import annotations

import struct

import pytest
from protocol.test_records_twins import using

from fedkafka.protocol import records as rec
from fedkafka.proxy.core.observe import NULL_OBSERVER
from proxy.test_produce_lane import Broker, batch, frame, proxy, run, view


@pytest.mark.parametrize("step", ["python", "compiled"])
@pytest.mark.parametrize("api_key", [1, 3, 18])  # Fetch, Metadata, ApiVersions
def test_a_request_of_another_api_key_with_a_produce_body_is_left_by_the_connection_s_start_now(api_key, step):
    if step == "compiled" and rec._lane_read is None:
        pytest.skip("the compiled twin is not built")

    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        if step == "compiled":
            d.observer = NULL_OBSERVER  # the compiled step reads a request whole only without a metrics observer
        start_now = d.start_now  # as `ClientConnection` reads it, once
        produce = frame({0: batch()}, correlation_id=5)
        forged = struct.pack(">h", api_key) + produce[2:]
        try:
            assert start_now(forged, 0) is None
            assert d.lane.taken == 0 and broker.frames == []
            assert start_now(produce, 0) is not None and d.lane.taken == 1  # not vacuous: the body is the lane's
        finally:
            d.pool.close()
            broker.close()
    with using(step):
        run(scenario)

