"""A proxy whose fence ran out registers again (docs/DESIGN.md §4.9, F3): its new produce deadline counts only once
nothing routed under a view older than the current one is out, whether the registration's view was newer than the
one it held or not (the reviewer's case, the equal view, is tests/proxy/test_review_rvview_reregister.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools

import httpx
from kio.schema.errors import ErrorCode

from fedkafka.proxy.core.server import InflightProduce
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

from .test_drain import SilentBroker, _error, _frame, _proxy
from .test_review_rvview_reregister import fake_controller

FENCE = {"lease_ms": 10_000, "fence_ms": 900_000}


def fenced_proxy(version: int, applied: int) -> ProxyState:
    state = ProxyState(view=View(version=version), me=ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY),
                       applied_version=applied)
    state.lease_deadline = 0.0  # the fence ran out
    return state


def source_for(current: View, drain) -> ControllerViewSource:
    source = ControllerViewSource("http://controller", "t", "p7:9092", lambda *_: None)
    source.client = httpx.AsyncClient(transport=fake_controller(current))
    source.member_id = 7
    source._drain = drain  # what tasks() hands it
    return source


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def test_registering_again_onto_a_newer_view_produces_only_once_the_writes_under_the_older_are_answered():
    """The proxy holds view 7 (acked); the controller is at view 8, which may have frozen (and, while this proxy
    was fenced, sealed) a partition a write routed under 7 and still out goes to."""
    async def run() -> None:
        state = fenced_proxy(7, applied=7)
        inflight = InflightProduce()
        inflight.by_version[7] += 1  # routed under view 7, unanswered
        source = source_for(View(version=8), inflight.drain_before)
        heartbeat = asyncio.ensure_future(source._heartbeat_once(state))
        await asyncio.wait_for(_until(lambda: state.view.version == 8), 30)  # registered, view 8 taken
        await asyncio.sleep(0.05)  # its drain goes on
        assert not heartbeat.done()
        assert not state.lease_valid(), "a produce deadline while a write routed under view 7 is out"
        assert state.applied_version == 7  # not acked either
        inflight.by_version[7] -= 1  # answered
        await asyncio.wait_for(heartbeat, 30)
        assert state.lease_valid() and state.applied_version == 8
        await source.client.aclose()

    asyncio.run(run())


def test_registering_again_with_nothing_in_flight_produces_at_once():
    async def run(applied: int) -> ProxyState:
        state = fenced_proxy(7, applied=applied)
        drained: list[int] = []

        async def drain(version: int) -> None:
            drained.append(version)

        source = source_for(View(version=7), drain)
        await asyncio.wait_for(source._heartbeat_once(state), 30)
        await source.client.aclose()
        assert drained and set(drained) == {7}
        return state

    acked = asyncio.run(run(applied=7))
    assert acked.lease_valid() and acked.applied_version == 7
    # the stream took view 7 and had not acked it yet: nothing older is out, so the registration acks it
    taken = asyncio.run(run(applied=6))
    assert taken.lease_valid() and taken.applied_version == 7


def test_registering_again_while_a_write_upstream_never_answers_fails_it_then_produces():
    """A produce routed under view 4 is at a broker that never answers (it would time out at REQUEST_TIMEOUT_S);
    the stream took view 5 and the fence ran out. The registration's drain closes the write's connection after
    its patience (the client gets a retriable error), and only then does the proxy produce again: the wait is
    bounded and nothing routed under view 4 is out when it does."""
    async def run() -> None:
        async with SilentBroker() as broker:
            server, dispatcher = _proxy(broker.port)
            loop = asyncio.get_running_loop()
            server.state.lease_deadline = loop.time() + 3600
            pending = await dispatcher.start(_frame(), 0)  # routed under view 4, sent
            await asyncio.wait_for(_until(lambda: broker.received > 0), 30)
            current = dataclasses.replace(server.state.view, version=5)
            server.state.apply(current)  # the stream's; its drain and ack pending
            server.state.lease_deadline = loop.time() - 1  # the fence ran out
            source = source_for(current, functools.partial(server.inflight.drain_before, patience_s=0.05))
            early: list[bool] = []
            heartbeat = asyncio.ensure_future(source._heartbeat_once(server.state))
            while not heartbeat.done():
                early.append(server.state.lease_valid() and not pending.done())
                await asyncio.sleep(0)
            await heartbeat
            early.append(server.state.lease_valid() and not pending.done())
            assert not any(early), "a produce deadline while the write routed under view 4 was out"
            assert _error(pending.result()) == ErrorCode.request_timed_out  # retriable: the client retries
            assert server.inflight.older_than(5) == 0
            assert server.state.lease_valid() and server.state.applied_version == 5
            await source.client.aclose()
            server.pool.close()

    asyncio.run(run())


def test_a_renewal_by_the_other_task_during_a_registration_grants_no_deadline_before_its_drain():
    """The heartbeat task registers again and drains view 8's older writes; meanwhile the view stream's own
    heartbeat (after it acked a view) is renewed by the controller, which counts this proxy again. That renewal
    must not end the fence: a write under view 7 held while fenced would go to a segment sealed meanwhile."""
    async def run() -> None:
        state = fenced_proxy(7, applied=7)
        released = asyncio.Event()

        async def drain(version: int) -> None:
            if version == 8:
                await released.wait()

        source = source_for(View(version=8), drain)
        registering = asyncio.ensure_future(source._heartbeat_once(state))  # 404: registers again
        await asyncio.wait_for(_until(lambda: state.view.version == 8), 30)
        await source._heartbeat_once(state)  # the stream task's heartbeat: renewed
        assert not state.lease_valid(), "a renewal ended the fence before the registration's drain"
        released.set()
        await asyncio.wait_for(registering, 30)
        assert state.lease_valid() and state.applied_version == 8
        await source.client.aclose()

    asyncio.run(run())
