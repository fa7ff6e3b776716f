"""Review rv2: two registrations of one member in flight at once (the view stream's ack heartbeat and the periodic
heartbeat both answered 404 after the lease ran out, or both 403, each task registers again: `_register` is not
serialized) answered in the other order than the controller committed them: the proxy keeps the secret of the
registration the controller superseded, and its next heartbeat is refused (403): its lease deadline is dropped to
now (produce refused) and it registers a third time.

Registrations serialized (the fix), the second is not sent before the first is answered: the first's answer is then
held only until the second caller is seen waiting behind it (the loop turned over without its request arriving),
else the test would wait for an answer the fix never lets come."""

from __future__ import annotations

import asyncio

import httpx

from fedkafka.controller.app import create_app
from proxy.test_member_secret_proxy import _controller, _heartbeat, _lease_runs_out, _source, _state


class SecondAnsweredFirst(httpx.AsyncBaseTransport):
    """The controller's app; the first registration's answer reaches the proxy only after the second's."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.armed = False  # from the re-registrations on
        self.registrations = 0
        self.second_answered = asyncio.Event()
        self.first_sent = asyncio.Event()
        self.second_waits = asyncio.Event()  # the second registration is held back until the first is answered

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        registration = request.method == "POST" and request.url.path == "/v1/proxies"
        if not registration or not self.armed:
            return await self.inner.handle_async_request(request)
        self.registrations += 1
        which = self.registrations
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if which == 1 and self.registrations < 3:
            self.first_sent.set()
            await _first_of(self.second_answered, self.second_waits)
        elif which == 2:
            self.second_answered.set()
        return response


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()


def test_two_registrations_in_flight_leave_the_proxy_with_the_secret_the_controller_holds(tmp_path):
    ctl = _controller(tmp_path / "ctl.db")

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        source, state = _source(ctl), _state()
        transport = SecondAnsweredFirst(httpx.ASGITransport(app=create_app(ctl, "member-secret-token",
                                                                           background=False)))
        source.client = httpx.AsyncClient(transport=transport, timeout=10)
        await source._register(state)  # registered once; its lease then ran out
        transport.armed = True
        # the two tasks' re-registrations after both heartbeats were answered 404 (or 403)
        first = asyncio.ensure_future(source._register(state))
        await transport.first_sent.wait()
        second = asyncio.ensure_future(source._register(state))
        for _ in range(100):  # loop turns, no clock: the second's request arrives at once unless held back
            await asyncio.sleep(0)
        if transport.registrations == 1:
            transport.second_waits.set()
        await asyncio.gather(first, second)
        assert transport.registrations == 2
        status = await _heartbeat(source, source.member_id, source.member_secret, ctl.view.version)
        await source.client.aclose()
        assert status == 200, f"the proxy's own heartbeat refused ({status}): it holds a superseded secret"

    try:
        asyncio.run(run())
    finally:
        ctl.stop()


class CountedRegistrations(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.registrations = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/proxies":
            self.registrations += 1
        return await self.inner.handle_async_request(request)


def test_two_heartbeats_refused_at_once_register_once_and_the_proxy_renews_with_the_controller_s_secret(tmp_path):
    """Both tasks' heartbeats refused (403: the member was registered again by another process once our lease ran
    out, whose lease then ran out too): the registrations are serialized, and the task that waited behind one
    taken after its heartbeat was sent does not register again; the proxy's heartbeats then count. (A registration
    whose answer the proxy lost leaves it no stale secret: it chose the secret, tests/proxy/
    test_member_secret_lost_answer.py.)"""
    ctl = _controller(tmp_path / "ctl.db")

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        source, state = _source(ctl), _state()
        transport = CountedRegistrations(httpx.ASGITransport(app=create_app(ctl, "member-secret-token",
                                                                            background=False)))
        source.client = httpx.AsyncClient(transport=transport, timeout=10)
        await source.start(state)
        _lease_runs_out(ctl, source.member_id)
        other = _source(ctl)  # another process of the identity takes the member (its own client: not counted)
        await other._register(_state())
        assert await _heartbeat(source, source.member_id, source.member_secret, 0) == 403
        _lease_runs_out(ctl, source.member_id)  # ... and is gone in turn
        registered = transport.registrations
        await asyncio.gather(source._heartbeat_once(state), source._heartbeat_once(state))
        assert transport.registrations == registered + 1
        status = await _heartbeat(source, source.member_id, source.member_secret, state.applied_version)
        await source.client.aclose()
        await other.client.aclose()
        assert status == 200

    try:
        asyncio.run(run())
    finally:
        ctl.stop()
