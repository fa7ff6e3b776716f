"""The supervisor alone: restarts, backoff, health, stop."""

from __future__ import annotations

import asyncio

from fedkafka.observe.supervise import Supervisor


def test_a_task_that_dies_or_returns_is_restarted_and_counted():
    async def scenario():
        runs = {"dies": 0, "returns": 0}
        forever = asyncio.Event()

        async def dies():
            runs["dies"] += 1
            if runs["dies"] <= 2:
                raise KeyError("boom")
            await forever.wait()

        async def returns():
            runs["returns"] += 1
            if runs["returns"] == 1:
                return
            await forever.wait()

        sup = Supervisor(initial_backoff_s=0.001, max_backoff_s=0.002)
        sup.spawn("dies", dies)
        sup.spawn("returns", returns)
        while runs["dies"] < 3 or runs["returns"] < 2:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)
        assert sup.healthy()
        report = sup.report()
        assert report["dies"] == {"running": True, "restarts": 2, "last_error": "KeyError: 'boom'"}
        assert report["returns"] == {"running": True, "restarts": 1, "last_error": "returned"}
        await sup.stop()
        assert not sup.healthy()

    asyncio.run(scenario())


def test_a_task_in_its_backoff_is_not_healthy():
    async def scenario():
        async def always_dies():
            raise RuntimeError("down")

        sup = Supervisor(initial_backoff_s=3600)  # it stays in its first backoff
        sup.spawn("down", always_dies)
        while not sup.tasks["down"].restarts:
            await asyncio.sleep(0.001)
        assert not sup.healthy()
        assert sup.report()["down"]["last_error"] == "RuntimeError: down"
        await sup.stop()

    asyncio.run(scenario())


def test_backoff_doubles_up_to_its_cap():
    async def scenario():
        slept: list[float] = []
        real_sleep = asyncio.sleep

        async def recording_sleep(seconds, *args):
            slept.append(seconds)
            await real_sleep(0)

        async def always_dies():
            raise RuntimeError("down")

        asyncio.sleep = recording_sleep
        try:
            sup = Supervisor(initial_backoff_s=1.0, max_backoff_s=4.0, stable_after_s=3600)
            sup.spawn("down", always_dies)
            while len(slept) < 5:
                await real_sleep(0)
            await sup.stop()
        finally:
            asyncio.sleep = real_sleep
        assert slept[:5] == [1.0, 2.0, 4.0, 4.0, 4.0]

    asyncio.run(scenario())
