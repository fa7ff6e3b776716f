"""fixrv8 (DESIGN §4.7, §5.2): a restart asks each listed controller once, the active one a standby names too, before
it falls back to its saved view; with the saved produce deadline unless one refused it (409: the refusals are in
tests/proxy/test_rv8_review.py). A standby's 503 refuses nothing (F5, as when none answers)."""

from __future__ import annotations

import asyncio

import httpx

from fedkafka.controllers import ACTIVE_HEADER
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource
from proxy.test_member_secret_proxy import INSTANCE, TOKEN, _controller, _source, _state


class _Controllers(httpx.AsyncBaseTransport):
    """`http://standby` answers 503 naming `http://controller` (when `standby` is set); every other URL (the
    controller the saved view was saved under) is unreachable: a connect error. Counts the requests per host."""

    def __init__(self, standby: bool):
        self.standby, self.asked = standby, {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked[request.url.host] = self.asked.get(request.url.host, 0) + 1
        if self.standby and request.url.host == "standby":
            return httpx.Response(503, headers={ACTIVE_HEADER: "http://controller"}, json={"detail": "standby"})
        raise httpx.ConnectError("connection refused", request=request)


def _restart(tmp_path, standby: bool) -> tuple[bool, dict[str, int]]:
    """A previous run registers and saves its view and deadline; a restart then meets `_Controllers`: whether it
    may produce once `start` returns, and the requests each controller was sent."""
    ctl = _controller(tmp_path / "ctl.db")
    cache = ViewCache(tmp_path / "view.json", INSTANCE)

    async def run() -> tuple[bool, dict[str, int]]:
        ctl.publisher.bind(asyncio.get_running_loop())
        old = _source(ctl)
        old.cache = cache
        await old.start(_state())
        await old.client.aclose()
        restarted, state = ControllerViewSource("http://standby,http://controller", TOKEN, INSTANCE,
                                                lambda start, size: None), _state()
        transport = _Controllers(standby)
        restarted.client = httpx.AsyncClient(transport=transport, timeout=10)
        restarted.cache = cache
        await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
        await restarted.client.aclose()
        assert not restarted._registered and state.view.version >= 1  # the saved view is served
        return state.lease_valid(), transport.asked

    try:
        return asyncio.run(run())
    finally:
        ctl.stop()


def test_a_restart_no_controller_answers_produces_until_its_saved_deadline(tmp_path):
    """F5: every listed controller unreachable: the saved view with its saved deadline, each asked once."""
    may_produce, asked = _restart(tmp_path, standby=False)
    assert may_produce
    assert asked == {"standby": 1, "controller": 1}


def test_a_restart_a_standby_answers_asks_the_active_one_it_names_before_its_saved_view(tmp_path):
    """The standby's 503 names the active controller, which is asked (it would refuse a restart whose previous run
    is alive, rv8); unreached, the saved view is served with its saved deadline, as when no controller answers: a
    controller that cannot register us cannot take another process's acks either."""
    may_produce, asked = _restart(tmp_path, standby=True)
    assert may_produce
    assert asked == {"standby": 1, "controller": 1}
