"""Review of s34-commitlease (committed offsets past the proxy's fence, docs/DESIGN.md §4.9 F2, §10.1): paths on
which a group offset request still reaches the coordination cluster after the fence ran out. Each test was a strict
xfail naming the defect.

The groups handler reads the fence when its FindCoordinator round answers and builds one call per coordinator; the
core writes them one after the other (`Dispatcher._send`) and checks the fence again only for a group offset *write*
whose *own* new connection finished opening (`_send_to`). A call written on an already open connection after an
earlier call of the same plan awaited a connection was written unchecked, however long that await took.

Fixed: the core reads the fence right before writing each call of a committed offsets request
(`dispatch.FENCED_OFFSETS_API_KEYS`, from `groups.OFFSETS_OF_THE_VIEW`: OffsetFetch included) and again once a new
connection opened for it (`Dispatcher._check_offsets_sendable`); the xfail markers are gone."""

from __future__ import annotations

import asyncio
import time

import pytest
from kio.schema.errors import ErrorCode
from proxy.test_send_deadline import _listening_broker

from consume.test_group_offsets_past_the_fence_unit import waits_for_renewal
from consume.test_handlers_unit import VIEW
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import Broker, Plan, UpstreamError
from fedkafka.proxy.state import ProxyState

SLOW_NODE, OPEN_NODE = 4, 5  # the first coordinator's connection is still to be opened; the second's is open


class _Physical:
    def __init__(self, ports: dict[int, int]):
        self.ports = ports

    def address(self, cluster, node):
        return "127.0.0.1", self.ports[node]


class _FenceRunsOutWhileTheFirstConnectionOpens:
    """The first coordinator's connection takes its login (TLS and SASL: seconds), during which the fence runs out;
    the second coordinator's connection is open already (another client's requests opened it)."""

    def __init__(self, state: ProxyState, real: UpstreamPool, slow_port: int):
        self.state, self.real, self.slow_port = state, real, slow_port

    def ready(self, host, port, slot):
        return None if port == self.slow_port else self.real.ready(host, port, slot)

    async def get(self, host, port, slot, cluster=""):
        conn = await self.real.get(host, port, slot, cluster)
        if port == self.slow_port:
            self.state.lease_deadline = time.monotonic() - 1  # the fence ran out during the login
        return conn

    def close(self):
        self.real.close()


def _two_coordinators(first: str, second: str):
    return build(response_type(10, 4), {"coordinators": [
        {"key": first, "node_id": SLOW_NODE, "host": "h", "port": 1, "error_code": ErrorCode.none},
        {"key": second, "node_id": OPEN_NODE, "host": "h", "port": 2, "error_code": ErrorCode.none}]})


_DELETE_GROUPS = build(request_type(42, 2), {"groups_names": ["g", "h"]})
_OFFSET_FETCH_V8 = build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": None},
                                                         {"group_id": "h", "topics": None}], "require_stable": False})


@pytest.mark.parametrize("request_", [_DELETE_GROUPS, _OFFSET_FETCH_V8], ids=["DeleteGroups", "OffsetFetch-v8"])
def test_the_second_coordinators_share_of_a_group_request_is_not_written_past_the_fence(request_):
    async def scenario():
        slow, slow_port, _ = await _listening_broker()
        open_, open_port, open_received = await _listening_broker()
        state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() + 3600)
        d = Dispatcher(state=state, physical=_Physical({SLOW_NODE: slow_port, OPEN_NODE: open_port}),
                       producer_ids=None, pool=UpstreamPool())  # type: ignore[arg-type]
        await d.pool.get("127.0.0.1", open_port, 0)  # the second coordinator's connection is open
        d.pool = _FenceRunsOutWhileTheFirstConnectionOpens(state, d.pool, slow_port)  # type: ignore[assignment]
        try:
            lookup = groups.handle(d.context(None, advertised={}), None, request_)
            assert isinstance(lookup, Plan) and lookup.barrier  # within the fence: the coordinators looked up
            plan = lookup.finish([_two_coordinators("g", "h")])  # answered within the fence: one call each
            assert isinstance(plan, Plan)
            assert [c.target for c in plan.calls] == [Broker("c1", SLOW_NODE), Broker("c1", OPEN_NODE)]
            results = await d._send(plan.calls, slot=0)
            for _ in range(20):  # let whatever was written arrive
                await asyncio.sleep(0.01)
            assert not state.lease_valid()
            assert open_received == b"", (
                f"{type(request_).__name__} of group h written to its coordinator past the fence: {results}")
            assert isinstance(results[1], UpstreamError), results  # refused, as the first call's share is
            answer = plan.finish(results)  # the client looks the coordinators up again
            if request_ is _OFFSET_FETCH_V8:  # it waits for the renewal, then starts over
                assert waits_for_renewal(answer), answer
                return
            entries = answer.results if isinstance(request_, type(_DELETE_GROUPS)) else answer.groups
            assert [(e.group_id, e.error_code) for e in entries] == [("g", ErrorCode.not_coordinator),
                                                                     ("h", ErrorCode.not_coordinator)]
        finally:
            d.pool.close()
            slow.close()
            open_.close()

    asyncio.run(scenario())


def test_an_offset_fetch_whose_fence_ran_out_while_its_connection_opened_is_not_sent():
    async def scenario():
        slow, slow_port, received = await _listening_broker()
        state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() + 3600)
        d = Dispatcher(state=state, physical=_Physical({SLOW_NODE: slow_port}), producer_ids=None,
                       pool=UpstreamPool())  # type: ignore[arg-type]
        d.pool = _FenceRunsOutWhileTheFirstConnectionOpens(state, d.pool, slow_port)  # type: ignore[assignment]
        fetch = build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": None}], "require_stable": False})
        try:
            lookup = groups.handle(d.context(None, advertised={}), None, fetch)
            plan = lookup.finish([build(response_type(10, 4), {"coordinators": [
                {"key": "g", "node_id": SLOW_NODE, "host": "h", "port": 1, "error_code": ErrorCode.none}]})])
            assert isinstance(plan, Plan) and [c.target for c in plan.calls] == [Broker("c1", SLOW_NODE)]
            (result,) = await d._send(plan.calls, slot=0)
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert not state.lease_valid()
            assert received == b"", f"OffsetFetch written to the coordinator past the fence: {result}"
            assert isinstance(result, UpstreamError), result
        finally:
            d.pool.close()
            slow.close()

    asyncio.run(scenario())
