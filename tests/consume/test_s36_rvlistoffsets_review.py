"""Review of s36-listoffsets (the failover's given-up mark, docs/DESIGN.md §9.2, §9.3): read-path findings."""

from __future__ import annotations

import dataclasses

import pytest
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


@pytest.mark.xfail(strict=True, reason="rv s36-listoffsets finding 3: lost_for_good still reads any state but active "
                                       "as given up; a decommission's read_only step gives a lost topic's records "
                                       "up at once, where the mark says nothing was given up")
def test_a_decommissions_read_only_step_does_not_give_up_a_topic_its_cluster_lost():
    """§9.2 now says a decommission gives nothing up (only the failover's mark does), and OPERATIONS says readers of
    a cluster that lost a topic's data wait until the operator gives it up (a failover). With c1 read_only by a
    decommission (not marked), the reader at 10 is moved past c1's records and EARLIEST answers 30, as after a
    failover; an active c1 is waited for (EARLIEST 0), and a restored disk is read again. Answered as for the
    active c1 here."""
    waited = _answers(_c1_lost_the_topic(ClusterState.ACTIVE, given_up=False))
    assert waited[1] == (ErrorCode.none, 0)
    assert _answers(_c1_lost_the_topic(ClusterState.READ_ONLY, given_up=False)) == waited
