"""Review s37-rvwhole of the session's whole change to main (0d15e1a8..16782f99), across its parts.

s37-coordflaky made an OffsetFetch past the fence wait for the renewal and start over (`groups._authorized`), since
librdkafka does not retry the NOT_COORDINATOR of its assignment's OffsetFetch and fetches those partitions no more
until the group's next rebalance (docs/DESIGN.md §4.9 F2). s37-fixcoord2 then made the core refuse a committed
offsets call at the write once the view moved the groups (`Dispatcher._check_offsets_sendable`, reason
"coordination"): a fetch is not drained, so the proxy acks the switch while the fetch's connection logs in. That
refusal reaches the handler's `finish` as an UpstreamError, and `finish` answers NOT_COORDINATOR for every API, the
fetch too: the very answer the first part exists to avoid, at the one point the second part added. The start-over
of `route` (`start_over`) is not used there."""

from __future__ import annotations

import time

from consume.test_group_offsets_past_the_fence_unit import _codes
from consume.test_handlers_unit import COORDINATOR
from consume.test_s37_offset_fetch_waits_for_renewal_unit import LIBRDKAFKA_FETCH, _context, _fenced_proxy
from consume.test_s37_offsets_after_a_move_during_the_lookup_unit import COMMIT, MOVED
from fedkafka.proxy.core.dispatch import OFFSETS_MOVED
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import AnyBroker, Broker, Plan, UpstreamError


def test_an_offset_fetch_refused_at_the_write_because_the_view_moved_the_groups_starts_over_on_the_new_cluster():
    state, dispatcher, refusals = _fenced_proxy()
    state.lease_deadline = time.monotonic() + 3600  # the fence stays valid throughout
    lookup = groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH)
    assert isinstance(lookup, Plan) and [c.target for c in lookup.calls] == [AnyBroker("c1")]
    plan = lookup.finish([COORDINATOR])  # answered under the old view: one call to c1's coordinator
    assert isinstance(plan, Plan) and [c.target.cluster for c in plan.calls] == ["c1"]
    assert all(isinstance(c.target, Broker) for c in plan.calls)
    state.apply(MOVED)  # the switch, acked while the call's connection logs in; the core then refuses the write
    answer = plan.finish([UpstreamError("c1", OFFSETS_MOVED)])
    assert isinstance(answer, Plan) and [c.target for c in answer.calls] == [AnyBroker("c3")], \
        f"answered {_codes(answer) if not isinstance(answer, Plan) else answer} instead of a lookup on c3"


def test_a_commit_refused_after_its_lookup_because_the_view_moved_the_groups_is_counted():
    state, dispatcher, refusals = _fenced_proxy()
    state.lease_deadline = time.monotonic() + 3600
    lookup = groups.handle(_context(dispatcher, refusals), None, COMMIT)
    assert isinstance(lookup, Plan) and [c.target for c in lookup.calls] == [AnyBroker("c1")]
    state.apply(MOVED)
    answer = lookup.finish([COORDINATOR])
    assert not isinstance(answer, Plan)
    assert [r[0] for r in refusals] == ["coordination"], refusals
