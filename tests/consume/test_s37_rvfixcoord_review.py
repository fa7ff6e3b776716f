"""Review of s37-fixcoordflaky (an OffsetFetch whose fence ran out or whose view moved the groups during its
coordinator lookup starts over from `groups._authorized`, docs/DESIGN.md §4.9 F2, §10.1). Each test was a strict
xfail naming the defect.

1. The view is read again when the lookup answers (`_via_coordinator.route`), but not once the call's connection
   opened: the core reads only the fence there (`Dispatcher._check_offsets_sendable`). An OffsetFetch is not
   drained, so the proxy acks a coordination move's switch while the fetch's new connection to the old cluster's
   coordinator takes its login (seconds, DESIGN §4.9): the fetch is then written to the old cluster, the very case
   the fix's own test closes for the lookup's round (the offsets the move left there, older than the commits made
   on the new cluster since: records consumed again).
2. The start-over after the lookup runs `_offsets_of_topics` again, whose topic ACL check calls `ctx.refused` per
   denied topic on each pass, into the same request's refusals (`Context.origin`): one denied topic is counted
   twice in fedkafka_proxy_refusals_total{reason="auth"} and its audit line says 2.

Fixed (s37-fixcoord2): the core's last check before a committed offsets call is written
(`Dispatcher._check_offsets_sendable`) refuses it, NOT_COORDINATOR, when the view names another coordination
cluster than the call's, for every API of `dispatch.FENCED_OFFSETS_API_KEYS` (an OffsetFetch starts over from its
lookup since s37-fixwhole, tests/consume/test_s37_rvwhole_review.py); a started-over pass does not count
the topics the first pass counted (`groups._offsets_of_topics`'s `count_denied`)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from kio.schema.errors import ErrorCode
from proxy.test_send_deadline import _listening_broker

from consume.test_group_offsets_past_the_fence_unit import _codes, _commit
from consume.test_handlers_unit import COORDINATOR, VIEW, Physical
from consume.test_s34_rvcommit_review import (
    _DELETE_GROUPS,
    _OFFSET_FETCH_V8,
    OPEN_NODE,
    SLOW_NODE,
    _Physical,
    _two_coordinators,
)
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import AnyBroker, Broker, Plan, Refused, UpstreamError
from fedkafka.proxy.state import ProxyState
from fedkafka.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session

MOVED = dataclasses.replace(VIEW, version=VIEW.version + 3, coordination_cluster="c3")  # a coordination move c1 -> c3
NODE = 4


class _SwitchWhileTheConnectionOpens:
    """The coordinator's connection takes its login; meanwhile the proxy applies (and, a fetch not being drained,
    acks) the coordination move's switch. Its fence stays valid."""

    def __init__(self, state: ProxyState, real: UpstreamPool):
        self.state, self.real = state, real

    def ready(self, host, port, slot):
        return self.real.ready(host, port, slot)  # none open but those a test opened first

    async def get(self, host, port, slot, cluster=""):
        conn = await self.real.get(host, port, slot, cluster)
        self.state.apply(MOVED)
        return conn

    def close(self):
        self.real.close()


def test_an_offset_fetch_is_not_written_to_the_old_cluster_once_the_view_moved_the_groups_while_its_connection_opened():
    async def scenario():
        server, port, received = await _listening_broker()
        state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() + 3600)
        d = Dispatcher(state=state, physical=_Physical({NODE: port}), producer_ids=None,
                       pool=UpstreamPool())  # type: ignore[arg-type]
        d.pool = _SwitchWhileTheConnectionOpens(state, d.pool)  # type: ignore[assignment]
        fetch = build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": [
            {"name": "log", "partition_indexes": [0, 1]}]}], "require_stable": True})
        result = None
        try:
            lookup = groups.handle(d.context(None, advertised={}), None, fetch)
            plan = lookup.finish([COORDINATOR])  # answered under the old view: one call to c1's coordinator
            assert isinstance(plan, Plan) and [c.target for c in plan.calls] == [Broker("c1", NODE)]
            (result,) = await d._send(plan.calls, slot=0)
            for _ in range(20):  # let whatever was written arrive
                await asyncio.sleep(0.01)
            assert state.lease_valid() and state.view.coordination_cluster == "c3"
            assert received == b"", f"OffsetFetch written to c1 after the view moved the groups to c3: {result}"
            assert isinstance(result, UpstreamError), result
            assert _looked_up_on_c3(plan.finish([result]))  # started over with the view of now
        finally:
            if isinstance(result, asyncio.Future):
                result.cancel()  # never answered: the broker records only
            d.pool.close()
            server.close()

    asyncio.run(scenario())


class _SwitchWhileTheFirstConnectionOpens(_SwitchWhileTheConnectionOpens):
    """The switch comes while the first coordinator's connection takes its login; the second's is open already."""

    def __init__(self, state: ProxyState, real: UpstreamPool, slow_port: int):
        super().__init__(state, real)
        self.slow_port = slow_port

    async def get(self, host, port, slot, cluster=""):
        if port == self.slow_port:
            return await super().get(host, port, slot, cluster)
        return await self.real.get(host, port, slot, cluster)


_OFFSET_DELETE = build(request_type(47, 0), {"group_id": "g", "topics": [
    {"name": "log", "partitions": [{"partition_index": 1}]}]})


def _looked_up_on_c3(answer) -> bool:
    return isinstance(answer, Plan) and [c.target for c in answer.calls] == [AnyBroker("c3")]


def _refused_codes(answer) -> set:
    return {answer.error_code} if answer.__api_key__ == 47 else _codes(answer)


@pytest.mark.parametrize("request_", [_commit(9), _OFFSET_DELETE, _DELETE_GROUPS, _OFFSET_FETCH_V8],
                         ids=["OffsetCommit", "OffsetDelete", "DeleteGroups", "OffsetFetch-v8"])
def test_no_share_of_a_committed_offsets_request_is_written_to_the_old_cluster_once_the_view_moved_the_groups(
        request_):
    """Every API of dispatch.FENCED_OFFSETS_API_KEYS: the call whose own connection opened during the switch, and a
    later coordinator's share on an open connection (a request of groups on two coordinators). A commit or deletion
    routed before the switch is drained, not lost: refused at the write, nothing sent, it is answered (retriable)."""
    async def scenario():
        slow, slow_port, slow_received = await _listening_broker()
        open_, open_port, open_received = await _listening_broker()
        state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() + 3600)
        d = Dispatcher(state=state, physical=_Physical({SLOW_NODE: slow_port, OPEN_NODE: open_port}),
                       producer_ids=None, pool=UpstreamPool())  # type: ignore[arg-type]
        await d.pool.get("127.0.0.1", open_port, 0)  # the second coordinator's connection is open
        d.pool = _SwitchWhileTheFirstConnectionOpens(state, d.pool, slow_port)  # type: ignore[assignment]
        try:
            lookup = groups.handle(d.context(None, advertised={}), None, request_)
            assert isinstance(lookup, Plan) and lookup.barrier
            several = len(groups.group_ids(request_)) > 1  # a group per coordinator; one group: the slow one's
            answered = _two_coordinators("g", "h")
            if not several:
                answered = dataclasses.replace(answered, coordinators=answered.coordinators[:1])
            plan = lookup.finish([answered])  # answered under the old view: c1's coordinators
            assert isinstance(plan, Plan) and {c.target.cluster for c in plan.calls} == {"c1"}
            results = await d._send(plan.calls, slot=0)
            for _ in range(20):  # let whatever was written arrive
                await asyncio.sleep(0.01)
            assert state.lease_valid() and state.view.coordination_cluster == "c3"
            assert (slow_received, open_received) == (b"", b""), f"written to c1 after the switch: {results}"
            assert all(isinstance(r, UpstreamError) for r in results), results
            answer = plan.finish(results)
            if request_ is _OFFSET_FETCH_V8:  # started over with the view of now (librdkafka does not retry the error)
                assert _looked_up_on_c3(answer), answer
            else:
                assert _refused_codes(answer) == {ErrorCode.not_coordinator}
        finally:
            d.pool.close()
            slow.close()
            open_.close()

    asyncio.run(scenario())


def _acl(rtype: ResourceType, name: str) -> AclBinding:
    return AclBinding(rtype, name, PatternType.LITERAL, "User:alice", "*", Operation.DESCRIBE, Permission.ALLOW)


def test_an_offset_fetch_started_over_after_its_lookup_counts_a_denied_topic_once():
    state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() + 3600)
    d = Dispatcher(state=state, physical=Physical(), producer_ids=None, pool=None)  # type: ignore[arg-type]
    reported: list[Refused] = []
    ctx = dataclasses.replace(  # alice may describe group g and topic log, not topic secret
        d.context(None, advertised={}), session=Session(principal="User:alice"),
        authorizer=Authorizer((_acl(ResourceType.GROUP, "g"), _acl(ResourceType.TOPIC, "log"))),
        on_refusals=lambda refused, client_id, session: reported.append(refused))
    fetch = build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": [
        {"name": "log", "partition_indexes": [0]}, {"name": "secret", "partition_indexes": [0]}]}],
        "require_stable": True})
    lookup = groups.handle(ctx, None, fetch)
    assert isinstance(lookup, Plan) and lookup.calls
    state.apply(MOVED)  # the switch while the lookup is out: the fetch starts over on c3
    again = lookup.finish([COORDINATOR])
    assert isinstance(again, Plan) and again.calls
    ctx.report_refusals()  # as the core does once the request is answered
    assert [(r.reason, r.count) for r in reported] == [("auth", 1)], \
        [(r.reason, r.count, r.examples) for r in reported]
