"""Committed offsets past the proxy's fence (docs/DESIGN.md §4.9 F2, §10.1). Pure handler calls, no brokers.

Committed offsets are logical (the shadow topic has P partitions): no segment is mapped. What the view decides is
where they live, its coordination cluster. Past its fence the controller no longer waits for this proxy's acks, so
a coordination move may have frozen the commits, copied them from A to B and switched without this proxy hearing
of it: an OffsetCommit it still sent to A is lost, a DeleteGroups or OffsetDelete undone by the copy on B, and an
OffsetFetch answers A's offsets, which the switch left behind (older than B's, or deleted or reset on B since).
The old code served all four from its last view. Now each is refused, nothing sent upstream, with a code Kafka
clients retry (as NOT_LEADER_OR_FOLLOWER for reads and produce past the fence): NOT_COORDINATOR, an OffsetFetch
COORDINATOR_LOAD_IN_PROGRESS (session 38: librdkafka does not retry its assignment's OffsetFetch answered
NOT_COORDINATOR, `groups.refused_offsets_code`). Membership and the other reads go on (static stability)."""

from __future__ import annotations

import dataclasses
import datetime
import time

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import COORDINATOR, VIEW, Physical, ctx
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.dispatch import OFFSETS_PAST_FENCE, Dispatcher
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import Broker, Context, Plan, UpstreamError
from fedkafka.proxy.state import ProxyState

NOT_COORDINATOR, UNKNOWN = ErrorCode.not_coordinator, ErrorCode.unknown_topic_or_partition
# what an OffsetFetch the proxy refuses on its fence is answered: retried by librdkafka and the Java consumer alike
FETCH_REFUSED = ErrorCode.coordinator_load_in_progress


def _fenced(refusals: list) -> Context:
    return dataclasses.replace(ctx(), lease_valid=False, on_refusal=lambda *a: refusals.append(a[:3]))


def _commit(version: int):
    partitions = [{"partition_index": p, "committed_offset": 5 + p, "committed_leader_epoch": -1,
                   "committed_metadata": None} for p in (0, 1, 7)]  # 7: beyond P
    return build(request_type(8, version), {
        "group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m", "group_instance_id": None,
        "retention_time": datetime.timedelta(milliseconds=-1), "topics": [{"name": "log", "partitions": partitions}]})


def test_past_its_fence_a_proxy_commits_no_offset_to_a_coordination_cluster_it_may_no_longer_have():
    for version in (2, 8, 9):
        refusals: list[tuple] = []
        answer = groups.handle(_fenced(refusals), None, _commit(version))
        assert not isinstance(answer, Plan), f"v{version}: committed through a view the controller no longer waits for"
        # 7, beyond P, UNKNOWN_TOPIC_OR_PARTITION as Kafka answers before it asks the coordinator (session 36)
        assert [(t.name, p.partition_index, p.error_code) for t in answer.topics for p in t.partitions] == [
            ("log", 0, NOT_COORDINATOR), ("log", 1, NOT_COORDINATOR), ("log", 7, UNKNOWN)], version
        assert refusals == [("lease", "g", -1)], version
        within = groups.handle(ctx(), None, _commit(version))
        assert isinstance(within, Plan) and within.calls, version  # within its fence: to the coordinator, as before


def test_past_its_fence_a_proxy_deletes_no_group_and_no_group_offsets():
    """A deletion sent to A after a move copied the offsets is undone by the switch: the group resumes at the
    deleted offsets. Each refused where the Java AdminClient reads the error (per group; OffsetDelete's top level)."""
    refusals: list[tuple] = []
    delete = build(request_type(42, 2), {"groups_names": ["g", "h"]})
    answer = groups.handle(_fenced(refusals), None, delete)
    assert not isinstance(answer, Plan)
    assert [(r.group_id, r.error_code) for r in answer.results] == [("g", NOT_COORDINATOR), ("h", NOT_COORDINATOR)]
    offsets = build(request_type(47, 0), {"group_id": "g", "topics": [
        {"name": "log", "partitions": [{"partition_index": 1}]}]})
    answer = groups.handle(_fenced(refusals), None, offsets)
    assert not isinstance(answer, Plan)
    assert answer.error_code == NOT_COORDINATOR
    assert refusals == [("lease", "g", -1), ("lease", "h", -1), ("lease", "g", -1)]
    assert isinstance(groups.handle(ctx(), None, delete), Plan)
    assert isinstance(groups.handle(ctx(), None, offsets), Plan)


def test_past_its_fence_a_proxy_reads_no_committed_offset_from_a_coordination_cluster_it_may_no_longer_have():
    """After a move the old cluster's offsets are the copy's: a consumer starting from them re-reads what the group
    committed on B since, or resumes at offsets deleted or reset there. Refused at the group level (v2+, where
    clients look first) and per partition (v1 has only those). The context has no proxy state to wait on
    (`groups._wait_for_renewal`): refused at once."""
    fetch_v1 = build(request_type(9, 1), {"group_id": "g", "topics": [{"name": "log", "partition_indexes": [0, 1]}]})
    fetch_v7 = build(request_type(9, 7), {"group_id": "g", "topics": None, "require_stable": True})
    fetch_v8 = build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": [
        {"name": "log", "partition_indexes": [1]}]}, {"group_id": "h", "topics": None}], "require_stable": False})
    refusals: list[tuple] = []
    answer = groups.handle(_fenced(refusals), None, fetch_v1)
    assert not isinstance(answer, Plan)
    assert [(p.partition_index, p.error_code, p.committed_offset) for t in answer.topics for p in t.partitions] == [
        (0, FETCH_REFUSED, -1), (1, FETCH_REFUSED, -1)]
    answer = groups.handle(_fenced(refusals), None, fetch_v7)
    assert not isinstance(answer, Plan) and (answer.error_code, answer.topics) == (FETCH_REFUSED, ())
    answer = groups.handle(_fenced(refusals), None, fetch_v8)
    assert not isinstance(answer, Plan)
    assert [(g.group_id, g.error_code) for g in answer.groups] == [("g", FETCH_REFUSED), ("h", FETCH_REFUSED)]
    assert [p.error_code for p in answer.groups[0].topics[0].partitions] == [FETCH_REFUSED]
    assert refusals == [("lease", "g", -1)] * 3 + [("lease", "h", -1)]
    for request in (fetch_v1, fetch_v7, fetch_v8):
        assert isinstance(groups.handle(ctx(), None, request), Plan), type(request).__name__


def test_past_its_fence_membership_and_group_reads_still_reach_the_coordinator():
    """Static stability (docs/DESIGN.md §4.7): members keep their sessions while no controller answers, so the
    groups do not rebalance when it is back. None of these reads or writes a committed offset."""
    requests = [build(request_type(12, 4), {"group_id": "g", "generation_id": 1, "member_id": "m",
                                            "group_instance_id": None}),
                build(request_type(13, 5), {"group_id": "g", "members": [{"member_id": "m", "group_instance_id": None,
                                                                          "reason": None}]}),
                build(request_type(15, 5), {"groups": ["g"], "include_authorized_operations": False}),
                build(request_type(16, 4), {"states_filter": []})]
    for request in requests:
        assert isinstance(groups.handle(_fenced([]), None, request), Plan), type(request).__name__


def test_a_commit_whose_fence_ran_out_while_its_coordinator_was_looked_up_is_not_sent():
    """The commit goes out after a FindCoordinator round (up to the upstream timeout): the fence is read again when
    its answer comes, from the proxy's state now, as the reads' answers are (`plan.as_now`). A commit sent past the
    fence could reach A after the controller stopped waiting for this proxy (fence + grace) and read the copy."""
    state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() + 3600)
    dispatcher = Dispatcher(state=state, physical=Physical(), producer_ids=None, pool=None)  # type: ignore[arg-type]
    for request in (_commit(8), build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": None}],
                                                           "require_stable": False})):
        state.lease_deadline = time.monotonic() + 3600
        refusals: list[tuple] = []
        context = dispatcher.context(None, advertised={})
        context.on_refusal, context.on_refusals = lambda *a, seen=refusals: seen.append(a[:3]), None
        lookup = groups.handle(context, None, request)
        assert isinstance(lookup, Plan) and lookup.barrier  # the FindCoordinator round, within the fence
        state.lease_deadline = time.monotonic() - 1  # the fence runs out meanwhile
        answer = lookup.finish([COORDINATOR])
        while isinstance(answer, Plan) and not answer.calls:  # an OffsetFetch first waits for a renewal (s37)
            answer = answer.finish([])
        assert not isinstance(answer, Plan), "sent to the coordinator past the fence"
        assert _codes(answer) == {FETCH_REFUSED if request.__api_key__ == 9 else NOT_COORDINATOR}, _codes(answer)
        assert refusals == [("lease", "g", -1)]
        state.lease_deadline = time.monotonic() + 3600  # renewed before the answer: sent, as before
        sent = groups.handle(dispatcher.context(None, advertised={}), None, request).finish([COORDINATOR])
        assert isinstance(sent, Plan) and [c.target for c in sent.calls] == [Broker("c1", 4)]


def test_a_call_the_core_refused_past_the_fence_is_answered_not_coordinator_but_a_fetch_waits_for_the_renewal():
    """The core reads the fence again before writing each call of a committed offsets request (`Dispatcher._send`,
    `_check_offsets_sendable`) and refuses it, an UpstreamError, once the fence ran out. The client gets
    NOT_COORDINATOR then, as when the handler refuses the request, not COORDINATOR_NOT_AVAILABLE (a broker that
    could not be reached): it looks the coordinator up again, through a proxy the current view lists. An OffsetFetch
    instead waits for the renewal as after its lookup (`groups.FENCE_RENEWAL_ROUNDS`), and a broker not reached is
    answered COORDINATOR_LOAD_IN_PROGRESS, no code that sends it to look up (s38: `groups._retried_here`)."""
    state = ProxyState(view=VIEW, me=VIEW.proxies[0], lease_deadline=time.monotonic() + 3600)
    dispatcher = Dispatcher(state=state, physical=Physical(), producer_ids=None, pool=None)  # type: ignore[arg-type]
    fetch = build(request_type(9, 8), {"groups": [{"group_id": "g", "topics": None}], "require_stable": False})
    for request in (_commit(8), build(request_type(42, 2), {"groups_names": ["g"]}), fetch):
        state.lease_deadline = time.monotonic() + 3600
        plan = groups.handle(dispatcher.context(None, advertised={}), None, request).finish([COORDINATOR])
        assert isinstance(plan, Plan) and [c.target for c in plan.calls] == [Broker("c1", 4)]
        refused = UpstreamError("c1", OFFSETS_PAST_FENCE)
        state.lease_deadline = time.monotonic() - 1  # ran out before the call was written: the core refused it
        answer = plan.finish([refused])
        if request is fetch:  # it waits for the renewal and starts over (a lookup's worth of rounds left)
            assert waits_for_renewal(answer), answer
        else:
            assert _codes(answer) == {NOT_COORDINATOR}, type(request).__name__
        state.lease_deadline = time.monotonic() + 3600  # a broker not reached within the fence: as before, but an
        # OffsetFetch gets no code that sends the client to look up again (s38: groups._retried_here)
        assert _codes(plan.finish([UpstreamError("c1", "cannot reach cluster c1")])) == {
            FETCH_REFUSED if request is fetch else ErrorCode.coordinator_not_available}, type(request).__name__


def waits_for_renewal(answer) -> bool:
    """An OffsetFetch refused past the fence: a round of `groups.FENCE_RENEWAL_STEP_S`, nothing sent, before it
    starts over with the proxy's state of then."""
    return isinstance(answer, Plan) and not answer.calls and answer.delay_s == groups.FENCE_RENEWAL_STEP_S


def _codes(answer) -> set:
    """The codes of an answer's groups, or of an OffsetCommit's partitions below P (`_commit`'s partition 7, beyond
    it, is UNKNOWN_TOPIC_OR_PARTITION whatever the condition: tests/consume/test_s36_commit_beyond_p_unit.py)."""
    key = answer.__api_key__
    if key == 8:
        partitions = [p for t in answer.topics for p in t.partitions]
        assert [p.error_code for p in partitions if p.partition_index == 7] == [UNKNOWN]
        return {p.error_code for p in partitions if p.partition_index != 7}
    return {r.error_code for r in (answer.results if key == 42 else answer.groups)}
