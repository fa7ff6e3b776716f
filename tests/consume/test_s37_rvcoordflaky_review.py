"""Review of s37-coordflaky: an OffsetFetch past the proxy's fence waits for the fence's renewal
(groups._wait_for_renewal), "then starts over with the view of then" (docs/DESIGN.md §4.9 F2).

Pure handler plans driven by hand, as tests/consume/test_s37_offset_fetch_waits_for_renewal_unit.py does; plus the
workflow tests' shared checker assertion against what docs/DESIGN.md §4.2 promises."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import pytest

from consume.test_handlers_unit import COORDINATOR, VIEW
from consume.test_s37_offset_fetch_waits_for_renewal_unit import (
    LIBRDKAFKA_FETCH,
    _context,
    _fenced_proxy,
    _wait_rounds,
)
from fedkafka.proxy.handlers import groups
from fedkafka.proxy.plan import AnyBroker, Plan

MOVED = dataclasses.replace(VIEW, version=VIEW.version + 3, coordination_cluster="c3")  # a coordination move c1 -> c3


def test_an_offset_fetch_resumed_after_a_coordination_move_reads_the_new_coordination_cluster():
    state, dispatcher, refusals = _fenced_proxy()
    state.lease_deadline = time.monotonic() + 3600
    lookup = groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH)
    assert isinstance(lookup, Plan) and [c.target for c in lookup.calls] == [AnyBroker("c1")]  # looked up on c1
    state.lease_deadline = time.monotonic() - 0.1  # the fence runs out while the coordinator is looked up

    def moved_then_renewed(rounds: int) -> None:
        if rounds == 2:  # the controller switched the groups to c3 meanwhile; the renewal comes with its view
            state.apply(MOVED)
            state.lease_deadline = time.monotonic() + 3600
    resumed, _ = _wait_rounds(lookup.finish([COORDINATOR]), moved_then_renewed)
    assert isinstance(resumed, Plan)
    clusters = {c.target.cluster for c in resumed.calls}
    # the view of then names c3: its coordinator is looked up there (or the fetch is refused), never c1's asked
    assert clusters == {"c3"}, f"OffsetFetch sent to {clusters} after the view moved the groups to c3"


def test_an_offset_fetch_resumed_before_its_lookup_after_a_coordination_move_looks_up_the_new_cluster():
    """The wait before the lookup does start over with the view of then (`_authorized`'s resume): fine, kept as
    the contrast to the one above."""
    state, dispatcher, refusals = _fenced_proxy()

    def moved_then_renewed(rounds: int) -> None:
        if rounds == 1:
            state.apply(MOVED)
            state.lease_deadline = time.monotonic() + 3600
    lookup, _ = _wait_rounds(groups.handle(_context(dispatcher, refusals), None, LIBRDKAFKA_FETCH),
                             moved_then_renewed)
    assert isinstance(lookup, Plan) and [c.target for c in lookup.calls] == [AnyBroker("c3")]


def _report(**changes) -> dict:
    """A checker report of a run with nothing lost: what tests/workflows/support.assert_as_promised reads."""
    report = {"acked": 1000, "consumed": 1000, "lost": 0, "lost_acks": [], "duplicates": 0,
              "duplicates_idempotent": 0, "order_violations": 0, "order_violations_idempotent": 0,
              "order_sample": [], "produce_errors": 0, "error_kinds": {}, "client_failures": [], "timeline": [],
              "marks": [], "producers": {"p0": {"idempotent": True, "order_violations": 0},
                                          "p1": {"idempotent": False, "order_violations": 0}}}
    return {**report, **changes}


def _federation(tmp_path, *listed: str) -> SimpleNamespace:
    """What `leadership_moves` reads of a federation of two proxies: the controller's log of committed views."""
    (tmp_path / "services.log").write_text("".join(f"view {v} committed (proxies [{p}])\n"
                                                   for v, p in enumerate(listed, 1)))
    return SimpleNamespace(tmp=tmp_path, proxies=[None, None])


def test_the_shared_workflow_assertion_takes_a_plain_producers_reorder_as_design_4_2_allows(tmp_path):
    from workflows.support import assert_as_promised
    assert_as_promised(_report(order_violations=21, producers={
        "p0": {"idempotent": True, "order_violations": 0}, "p1": {"idempotent": False, "order_violations": 21}}),
        _federation(tmp_path, "1", "1, 2"))


@pytest.mark.parametrize("broken", [{"lost": 1, "lost_acks": [("log", 0, 7)]}, {"order_violations_idempotent": 1},
                                    {"duplicates_idempotent": 3}, {"client_failures": ["fatal"]}, {"acked": 10}])
def test_the_shared_workflow_assertion_holds_what_design_4_2_promises(tmp_path, broken):
    """Nothing lost, an idempotent producer's order, and no idempotent duplicate without a leadership move."""
    from workflows.support import assert_as_promised
    with pytest.raises(AssertionError):
        assert_as_promised(_report(**broken), _federation(tmp_path, "1", "1, 2", "1, 2"))


def test_an_idempotent_duplicate_is_taken_only_after_a_leadership_move_between_proxies(tmp_path):
    """Retries that cross proxies are not deduplicated (docs/DESIGN.md §4.2, issue #12): a proxy whose lease ran out
    is dropped from the view (view 3) and listed again (view 4). The registrations before it are no move."""
    from workflows.support import assert_as_promised, leadership_moves
    fed = _federation(tmp_path, "1", "1, 2", "2", "1, 2")
    assert leadership_moves(fed) == ["view 3: proxies [2]", "view 4: proxies [1, 2]"]
    assert_as_promised(_report(duplicates_idempotent=3), fed)
