"""docs/OPERATIONS.md ("Refusals are logged once per request and reason") says a produce past its deadline is one
line naming the reason, the cluster and client.id. The Produce lane's line (`ProduceLane._not_sent`) named
client=None although the request carries its client.id; it now names it (at no cost to a request sent in time)."""

from __future__ import annotations

import logging

from proxy.test_produce_lane import Broker, a_second_between_looks, batch, frame, proxy, run, view


def test_a_lane_produce_past_its_deadline_logs_its_client_id(monkeypatch, caplog):
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        loop, real = a_second_between_looks(monkeypatch)
        with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
            await (await d.start(frame({0: batch()}, timeout_ms=100), 0, None))  # client.id "app"
        monkeypatch.setattr(loop, "time", real)
        assert broker.frames == [] and d.lane.taken == 1
    run(scenario)
    (line,) = [r for r in caplog.records if r.name == "fedkafka.refusals"]
    assert line.refusal["reason"] == "deadline" and line.refusal["topic"] == "c1"  # type: ignore[attr-defined]
    assert line.refusal["client_id"] == "app"  # type: ignore[attr-defined]  # was None


def test_a_generic_path_produce_past_its_deadline_logs_the_lane_s_fields(monkeypatch, caplog):
    """The same Produce without the lane (the generic path's `_send`, `_NotSent`): its line named client=None; it
    now carries what the lane's does (reason, cluster, partition -1, client.id, detail)."""
    lines = {}
    for lane in (True, False):
        async def scenario(lane=lane):
            broker = await Broker().start()
            d = await proxy(view(), broker, lane=lane)
            loop, real = a_second_between_looks(monkeypatch)
            with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
                await (await d.start(frame({0: batch()}, timeout_ms=100), 0, None))  # client.id "app"
            monkeypatch.setattr(loop, "time", real)
            assert broker.frames == [] and d.observer.refusals == {"deadline": 1}
        run(scenario)
        (line,) = [r for r in caplog.records if r.name == "fedkafka.refusals"]
        caplog.clear()
        lines[lane] = line.refusal  # type: ignore[attr-defined]
    assert lines[False]["client_id"] == "app", lines[False]  # was None
    assert lines[False] == lines[True]
