"""Review of s36-listoffsets (the failover's given-up mark, docs/DESIGN.md §9.2, §9.3): read-path findings."""

from __future__ import annotations

import dataclasses

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import list_answers, list_request
from consume.test_lost_and_left_out_fixf45_unit import DRAINED, _context, _fetch_answer, _tracked, _view
from fedkafka.proxy.handlers import list_offsets
from fedkafka.view.model import ClusterState, View


def _c1_lost_the_topic(state: ClusterState, given_up: bool) -> View:
    """c1 holds logical 0..29 (sealed, moved cleanly to c2 at 30) and answers without the physical topic (a lost
    disk being restored, docs/OPERATIONS.md "A cluster lost a topic's data"); c1 in `state`, with the mark."""
    view = _view(DRAINED, {"c1": state, "c2": ClusterState.ACTIVE})
    c1 = dataclasses.replace(view.clusters["c1"], given_up=given_up)
    return dataclasses.replace(view, clusters={**view.clusters, "c1": c1})


def _answers(view: View) -> tuple[tuple, tuple]:
    """A reader at 10 (its Fetch answer: error, whether moved on) and EARLIEST."""
    context = _context(view, _tracked(view, {"c1": ("other",), "c2": ("t",)}))
    p = _fetch_answer(context, 10)
    plan = list_offsets.handle(context, None, list_request((0, -2)))
    (e,) = plan.finish(list_answers(plan.calls, {("c2", 0, -2): (4, -1)})).topics[0].partitions
    return (p.error_code, bool(p.records), p.high_watermark), (e.error_code, e.offset)


def test_a_cluster_out_of_service_that_answers_without_a_topic_has_lost_it_for_good_given_up_or_not():
    """The ruling on finding 3 (docs/DESIGN.md §9.2, §9.3): the given-up mark is about a cluster that does not answer
    (a blip says nothing of its data). A cluster that answers without the physical topic has lost it, and once it is
    out of service (a decommission made it read_only or draining, or a failover gave it up) nothing brings it back
    for the federation, the mark or not: the reader at 10 is moved past c1's records and EARLIEST answers 30 at once.
    An active c1 is waited for (EARLIEST 0): the operator may restore the disk, or give it up with a failover. The
    review's xfail asked the read_only step to wait as the active c1 does; ruled otherwise, it is this test."""
    waited = _answers(_c1_lost_the_topic(ClusterState.ACTIVE, given_up=False))
    assert waited == ((ErrorCode.not_leader_or_follower, False, -1), (ErrorCode.none, 0))
    given_up = _answers(_c1_lost_the_topic(ClusterState.READ_ONLY, given_up=True))
    assert given_up == ((ErrorCode.none, True, 30), (ErrorCode.none, 30))
    for state in (ClusterState.READ_ONLY, ClusterState.DRAINING):
        assert _answers(_c1_lost_the_topic(state, given_up=False)) == given_up, state
