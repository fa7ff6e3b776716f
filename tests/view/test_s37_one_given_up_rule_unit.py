"""s37: one rule says whether a cluster is given up (`view.model.marked_given_up`, docs/DESIGN.md §9.2), read by
the view (`Cluster.gave_up`) and by the controller of its database row (`models.cluster_given_up`, which the view
it composes carries). The two had been written apart and told an active cluster with the mark apart: the view
took it for given up, the controller (and so its views, status and module diffs) not."""

from __future__ import annotations

import itertools

import pytest

from fedkafka.controller.models import ClusterRow, cluster_given_up
from fedkafka.view.model import Cluster, ClusterState

MARKS = (None, False, True)
IN_THE_VIEW = [s for s in ClusterState if s != ClusterState.REMOVED]  # compose leaves removed clusters out


@pytest.mark.parametrize(("state", "mark"), list(itertools.product(IN_THE_VIEW, MARKS)))
def test_the_view_and_the_database_row_say_alike_whether_a_cluster_is_given_up(state, mark):
    row = ClusterRow(id="a", ordinal=0, bootstrap="a:9092", state=state.value, given_up=mark)
    assert Cluster("a", "a:9092", state, given_up=mark).gave_up == cluster_given_up(row)


@pytest.mark.parametrize("mark", MARKS)
def test_an_active_cluster_is_never_given_up_whatever_its_mark(mark):
    """The view's copy of the rule took an active cluster marked given up for given up; no controller composes such
    a view (the row's rule says false), so the copies differed in words only, and now cannot."""
    assert not Cluster("a", "a:9092", ClusterState.ACTIVE, given_up=mark).gave_up


@pytest.mark.parametrize("mark", MARKS)
def test_a_removed_cluster_is_given_up_whatever_its_mark(mark):
    assert Cluster("a", "a:9092", ClusterState.REMOVED, given_up=mark).gave_up


@pytest.mark.parametrize(("state", "mark", "given_up"), [
    (ClusterState.READ_ONLY, None, True), (ClusterState.DRAINING, None, False),  # no mark: as before the mark
    (ClusterState.READ_ONLY, False, False), (ClusterState.DRAINING, True, True),  # the mark
])
def test_out_of_service_the_mark_decides_and_no_mark_reads_read_only_as_given_up(state, mark, given_up):
    assert Cluster("a", "a:9092", state, given_up=mark).gave_up is given_up
