"""s36: a proxy's producer-id block request (`ControllerViewSource.fetch_block`, the ProducerIdTable's refill,
docs/DESIGN.md §5.3) finds the active controller itself, as the start round does (`RoundWalk`): before, it asked
the current controller only and failed while that one was down or stood by, until the heartbeat moved the list
on (a lease third later); every InitProducerId past the block meanwhile was COORDINATOR_NOT_AVAILABLE. It goes on
only past a controller that surely granted nothing (never sent, a 503 naming the active one), so a block that may
have been granted is never asked for twice. The controller in process (tests/proxy/test_member_secret_proxy.py),
the fake failover of tests/proxy/test_rv10_review.py in front of it."""

from __future__ import annotations

import httpx
import pytest

from fedkafka.controller.service import Controller
from fedkafka.controllers import ACTIVE_HEADER
from proxy.test_member_secret_proxy import _app_transport, _close, _source, _with_controller
from proxy.test_rv10_review import _FailoverWithStaleHint


def test_a_block_is_taken_from_the_active_controller_past_a_dead_one_and_a_standby_naming_it(tmp_path):
    """urls old (down), standby (names old), controller (active). Before: ConnectError from old, no block."""
    async def run(ctl: Controller) -> None:
        transport = _FailoverWithStaleHint(_app_transport(ctl))
        source = _source(ctl, "http://old,http://standby,http://controller", transport=transport)
        start, size = await source.fetch_block()
        assert transport.asked == ["old", "standby", "controller"]  # each once, the stale hint skipped
        assert size == ctl.producer_ids.block_size and source.controllers.current == "http://controller"
        assert await source.fetch_block() == (start + size, size)  # the next one from where it is, at once
        assert transport.asked[3:] == ["controller"]
        await _close(source)

    _with_controller(tmp_path / "ctl.db", run)


def test_no_controller_granting_names_each_one_asked_and_leaves_the_heartbeat_s_controller(tmp_path):
    """Before: the first one's ConnectError, naming neither the standby nor why it did not grant."""
    def controllers(request: httpx.Request) -> httpx.Response:
        if request.url.host == "old":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(503, headers={ACTIVE_HEADER: "http://old"}, json={"detail": "standby"})

    async def run(ctl: Controller) -> None:
        source = _source(ctl, "http://old,http://standby", transport=httpx.MockTransport(controllers))
        with pytest.raises(ConnectionError) as failed:
            await source.fetch_block()
        assert str(failed.value) == ("no controller granted a producer-id block (http://old unreachable (connection "
                                     "refused); http://standby stands by (active: http://old))"), str(failed.value)
        assert source.controllers.current == "http://old"  # the heartbeat's walk, not this one's, moves the list
        await _close(source)

    _with_controller(tmp_path / "ctl.db", run)


class _GrantedThenLost(httpx.AsyncBaseTransport):
    """The active controller takes the first block request (the counter moves) and its answer is lost (a read timed
    out); `granted` holds the blocks the controller gave, `asked` the hosts asked."""

    def __init__(self, app: httpx.AsyncBaseTransport):
        self.app, self.asked, self.granted = app, [], []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.host)
        resp = await self.app.handle_async_request(request)
        await resp.aread()
        self.granted.append(resp.json())
        if len(self.granted) == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        return resp


def test_a_block_that_may_have_been_granted_is_not_asked_for_again_and_the_next_one_does_not_overlap_it(tmp_path):
    async def run(ctl: Controller) -> None:
        transport = _GrantedThenLost(_app_transport(ctl))
        source = _source(ctl, "http://controller,http://other", transport=transport)
        with pytest.raises(httpx.ReadTimeout):
            await source.fetch_block()
        assert transport.asked == ["controller"]  # neither again nor another controller: one block out at most
        lost = transport.granted[0]
        start, _ = await source.fetch_block()  # the refill of the next InitProducerId
        assert start >= lost["start"] + lost["size"]  # the lost block's ids are only wasted, never handed out twice
        await _close(source)

    _with_controller(tmp_path / "ctl.db", run)
