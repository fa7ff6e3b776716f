"""A request of committed offsets whose view moved the groups to another coordination cluster while its coordinator
was looked up is never sent to the old cluster's coordinator (docs/DESIGN.md §4.9 F2, §10.1). Found by the review of
s37-coordflaky (tests/consume/test_s37_rvcoordflaky_review.py); the same stale lookup answer served a fetch whose
fence stayed valid: past the switch the old cluster holds the offsets the move copied, older than the commits made
on the new one since, so the consumer reads them again. Pure handler plans driven by hand, no brokers."""

from __future__ import annotations

import dataclasses
import time

from kio.schema.errors import ErrorCode

from consume.test_group_offsets_past_the_fence_unit import _codes
from consume.test_handlers_unit import COORDINATOR, VIEW
from consume.test_s37_offset_fetch_waits_for_renewal_unit import LIBRDKAFKA_FETCH, _context, _fenced_proxy, _wait_rounds
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import AnyBroker, Plan

MOVED = dataclasses.replace(VIEW, version=VIEW.version + 3, coordination_cluster="c3")  # a coordination move c1 -> c3
COMMIT = build(request_type(8, 9), {
    "group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m", "group_instance_id": None,
    "topics": [{"name": "log", "partitions": [{"partition_index": 0, "committed_offset": 5,
                                               "committed_leader_epoch": -1, "committed_metadata": None}]}]})


def test_an_offset_fetch_whose_view_moved_the_groups_during_the_lookup_looks_them_up_on_the_new_cluster():
    state, dispatcher, refusals = _fenced_proxy()
    state.lease_deadline = time.monotonic() + 3600  # the fence stays valid throughout
    lookup = groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH)
    assert isinstance(lookup, Plan) and [c.target for c in lookup.calls] == [AnyBroker("c1")]
    state.apply(MOVED)  # the switch, acked by this proxy (a fetch is not drained) while the lookup is out
    again = lookup.finish([COORDINATOR])
    assert isinstance(again, Plan) and [c.target for c in again.calls] == [AnyBroker("c3")], \
        f"sent to {[c.target for c in getattr(again, 'calls', ())]} after the view moved the groups to c3"
    assert refusals == []


def test_an_offset_commit_whose_view_moved_the_groups_during_the_lookup_is_refused_not_sent_to_the_old_cluster():
    """Its view's drain keeps a switch from being acked under a commit within the fence; past it the controller no
    longer waits, and a renewal may come with the switched view before the lookup answers. Refused (retriable),
    not started over: a drained request takes no second lookup round (dispatch.DrainedLaterRound)."""
    state, dispatcher, refusals = _fenced_proxy()
    state.lease_deadline = time.monotonic() + 3600
    lookup = groups.handle(_context(dispatcher, refusals), None, COMMIT)
    assert isinstance(lookup, Plan) and [c.target for c in lookup.calls] == [AnyBroker("c1")]
    state.apply(MOVED)  # the fence ran out, the move switched without this proxy, a renewal brought the new view
    answer = lookup.finish([COORDINATOR])
    assert not isinstance(answer, Plan), f"commit sent to {[c.target for c in answer.calls]} after the switch"
    assert [q.error_code for t in answer.topics for q in t.partitions] == [ErrorCode.not_coordinator]


def test_an_offset_fetch_started_over_after_its_lookup_waits_only_the_rounds_it_has_left():
    """The wait's rounds are the request's (groups.FENCE_RENEWAL_ROUNDS), before and after its lookups together: a
    fence that runs out again during the lookup after a late renewal does not buy the fetch a second full wait."""
    state, dispatcher, refusals = _fenced_proxy()
    late = groups.FENCE_RENEWAL_ROUNDS - 1

    def renewed_late(rounds: int) -> None:
        if rounds == late:
            state.lease_deadline = time.monotonic() + 3600
    lookup, before = _wait_rounds(groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH), renewed_late)
    assert before == late and isinstance(lookup, Plan) and lookup.calls
    state.lease_deadline = time.monotonic() - 0.1  # runs out again, for good
    answer, after = _wait_rounds(lookup.finish([COORDINATOR]))
    assert not isinstance(answer, Plan) and _codes(answer) == {ErrorCode.coordinator_load_in_progress}
    assert before + after == groups.FENCE_RENEWAL_ROUNDS and refusals == [("lease", "g", -1)]
