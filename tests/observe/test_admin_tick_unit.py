"""The admin listener's uvicorn server ticks once a second, not ten times (every proxy worker runs one, and its
ticks were half of an idle worker's wake-ups and a third of its CPU), and `exit_now` still stops a running one."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn

from fedkafka.observe.admin import SignallessServer, admin_app, start_admin


def _app():
    return admin_app(lambda: b"", lambda: (True, {}), lambda: (True, {}))


def test_the_server_waits_a_second_between_ticks_and_refreshes_the_date_header_each_time(monkeypatch):
    waits: list[float] = []

    async def recorded_sleep(delay, result=None):
        waits.append(delay)

    async def recorded_wait_for(awaitable, timeout):
        waits.append(timeout)
        awaitable.close()  # the exit event's wait, never started: no exit asked
        raise TimeoutError

    server = SignallessServer(uvicorn.Config(_app(), lifespan="off"))
    ticks: list[int] = []

    async def on_tick(counter: int) -> bool:
        ticks.append(counter)
        return len(ticks) == 6

    server.on_tick = on_tick  # type: ignore[method-assign]
    monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
    monkeypatch.setattr(asyncio, "wait_for", recorded_wait_for)
    asyncio.run(server.main_loop())
    assert waits == [1.0] * 5
    # on_tick refreshes the Date header when counter % 10 == 0: on every tick now
    assert ticks == [0, 10, 20, 30, 40, 50]


def test_exit_now_stops_a_running_admin_listener():
    async def scenario():
        listener = await start_admin(_app(), "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as http:
            for _ in range(200):
                if listener.server.started:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get("/healthz")).json() == {"ok": True}
            listener.server.exit_now()
            await asyncio.wait_for(listener.task, 30)
            with pytest.raises(httpx.ConnectError):
                await http.get("/healthz")

    asyncio.run(scenario())
