"""Reviewer rvcli on s36-cli (8f4fd7d): the producer-id block request walking the listed controllers
(`ControllerViewSource.fetch_block`, `RoundWalk`) and the table's refill that calls it (docs/DESIGN.md §5.3)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fedkafka.controller.service import Controller
from fedkafka.proxy.core.producer_ids import ProducerIdTable
from proxy.test_member_secret_proxy import _app_transport, _close, _source, _with_controller


def test_the_table_asks_for_one_block_at_a_time():
    """Two InitProducerIds on two connections find the block used up in one turn of the loop (a burst of producers
    starting): each `next_logical` schedules a refill before the first refill task ran (the old code marked the ask
    under way only from then on)."""
    in_flight, most = [0], [0]  # blocks asked for and not answered yet; the most at once

    async def fetch_block() -> tuple[int, int]:
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        await asyncio.sleep(0)  # the call to the controller: other tasks run meanwhile
        in_flight[0] -= 1
        return 1000, 1000

    async def run() -> None:
        table = ProducerIdTable(fetch_block)

        async def init_producer_id() -> int | None:
            return table.next_logical()

        answers = await asyncio.gather(init_producer_id(), init_producer_id())  # two connections' handler tasks
        assert answers == [None, None]  # no block yet: COORDINATOR_NOT_AVAILABLE, a refill scheduled
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))  # the refills scheduled
        assert most[0] == 1, f"{most[0]} blocks asked for at once"

    asyncio.run(run())


@pytest.mark.parametrize("ends", ["failed", "cancelled before it ran"])
def test_an_ask_ended_any_way_does_not_stop_the_next(ends):
    """The ask under way counts from its scheduling until its task is done, whichever way: a failed ask, or one
    cancelled before its task ran (its body never runs), leaves the next InitProducerId past the block free to ask."""
    asked = [0]

    async def fetch_block() -> tuple[int, int]:
        asked[0] += 1
        if asked[0] == 1 and ends == "failed":
            raise ConnectionError("no controller granted a producer-id block")
        return 1000, 1000

    async def run() -> None:
        table = ProducerIdTable(fetch_block)
        assert table.next_logical() is None  # the first ask scheduled
        first = next(iter(asyncio.all_tasks() - {asyncio.current_task()}))
        if ends == "failed":
            await first
        else:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        assert table.next_logical() is None  # asks again
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))
        assert asked[0] == (2 if ends == "failed" else 1)
        assert table.next_logical() == 1000  # the block the second ask got

    asyncio.run(run())


class _GrantHeld(httpx.AsyncBaseTransport):
    """Controllers a and b on one database (the app): a's grant of a block is held until `release` is set, after
    `asked` is; the heartbeat meanwhile learns that b is the active controller."""

    def __init__(self, app: httpx.AsyncBaseTransport):
        self.app, self.asked, self.release = app, asyncio.Event(), asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.app.handle_async_request(request)
        if request.url.host == "a":
            self.asked.set()
            await self.release.wait()
        return resp


def test_a_block_granted_does_not_undo_the_heartbeat_s_move_to_the_active_controller(tmp_path):
    """a grants the block (it passed the gate: still active then), and loses the leader row; the heartbeat, answered
    503 naming b by a, moves the list to b (`_failed`); then a's grant arrives. Expected: the list stays at b, where
    the heartbeat found the active controller (the walk ran on a copy: it knows only what it was told before)."""
    async def run(ctl: Controller) -> None:
        transport = _GrantHeld(_app_transport(ctl))
        source = _source(ctl, "http://a,http://b", transport=transport)
        block = asyncio.create_task(source.fetch_block())
        await transport.asked.wait()
        source.controllers.failed("http://a", "http://b")  # what `_failed` does with a's 503 naming b
        assert source.controllers.current == "http://b"
        transport.release.set()
        _, size = await block
        assert size == ctl.producer_ids.block_size
        assert source.controllers.current == "http://b", source.controllers.current
        await _close(source)

    _with_controller(tmp_path / "ctl.db", run)
