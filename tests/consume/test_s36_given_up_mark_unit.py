"""A failover's given-up mark on a cluster (docs/DESIGN.md §9.2): ListOffsets by timestamp tells a decommission's
read_only step (nothing given up: a cleanly moved segment of the cluster is waited for through a blip) from a
failover's (given up: left out). The views here go through their JSON, as a proxy receives them."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import GAP, Physical, list_answers, list_request
from consume.test_lost_and_left_out_fixf45_unit import AGAIN, _context, _view
from fedkafka.proxy.handlers import list_offsets
from fedkafka.view.delta import apply_delta, view_delta
from fedkafka.view.model import ClusterState, View

# c3 holds a record at or after T=1500 (logical 51+GAP); c1's S3 (36+GAP..45+GAP, moved off cleanly) may hold an
# earlier one, and c1 blips
VALUES = {("c2", 0, 1500): (-1, -1), ("c3", 0, 1500): (5, 1600)}
WAITED = (ErrorCode.not_leader_or_follower, -1)
LEFT_OUT = (ErrorCode.none, 51 + GAP)


def _received(state: ClusterState, given_up: bool | None) -> View:
    """The view a proxy receives with c1 in `state`, its mark `given_up` (None: a controller from before the mark
    names none)."""
    d = _view(AGAIN, {"c1": state, "c2": ClusterState.ACTIVE, "c3": ClusterState.ACTIVE}).to_dict()
    if given_up is not None:
        next(c for c in d["clusters"] if c["id"] == "c1")["given_up"] = given_up
    return View.from_dict(d)


def _by_timestamp(view: View) -> tuple[ErrorCode, int]:
    plan = list_offsets.handle(_context(view, Physical(down={"c1"})), None, list_request((0, 1500)))
    (p,) = plan.finish(list_answers(plan.calls, VALUES)).topics[0].partitions
    return p.error_code, p.offset


def test_a_decommissions_read_only_step_waits_for_a_cleanly_moved_segment_through_a_blip():
    """The decommission made c1 read_only (no mark) and moved S3 off cleanly; its run is still moving others or
    failed and waits to be run again. A timestamp question waits for S3 through c1's blip, as it does once c1 is
    draining and as Fetch does below S3's seal. It used to leave S3 out as a failover's read_only, answering c3's
    record (51+GAP), past S3's records at or after T."""
    assert _by_timestamp(_received(ClusterState.READ_ONLY, given_up=False)) == WAITED


@pytest.mark.parametrize("state", [ClusterState.READ_ONLY, ClusterState.DRAINING])
def test_a_cluster_a_failover_gave_up_has_its_segments_left_out(state):
    """A failover marked c1 given up (read_only; or draining, a decommission after the failover): S3 is left out as
    before, c3's record answered."""
    assert _by_timestamp(_received(state, given_up=True)) == LEFT_OUT


@pytest.mark.parametrize(("state", "want"), [(ClusterState.READ_ONLY, LEFT_OUT), (ClusterState.DRAINING, WAITED),
                                             (ClusterState.ACTIVE, WAITED)])
def test_a_view_from_before_the_mark_is_read_as_before(state, want):
    """A controller from before the mark names none (an older controller during an upgrade, a proxy's cached view):
    read_only is taken for given up, as before, so a failover's read_only cluster is not waited for meanwhile."""
    view = _received(state, given_up=None)
    assert view.clusters["c1"].given_up is None
    assert _by_timestamp(view) == want


def test_the_mark_survives_the_views_json_and_its_delta_and_is_left_out_of_a_view_without_it():
    """A view with the mark round-trips through its JSON and through a delta; one without it (None) has the JSON it
    had before the mark, key for key, so a proxy from before it reads either (it reads the keys it knows)."""
    old = _received(ClusterState.ACTIVE, given_up=None)
    marked = _received(ClusterState.READ_ONLY, given_up=True).with_version(8)
    assert set(next(c for c in old.to_dict()["clusters"] if c["id"] == "c1")) == {"id", "bootstrap", "state",
                                                                                    "reachable"}
    assert View.from_dict(marked.to_dict()) == marked and marked.clusters["c1"].given_up is True
    assert apply_delta(old, view_delta(old, marked)) == marked
    cleared = _received(ClusterState.ACTIVE, given_up=False).with_version(9)
    assert apply_delta(marked, view_delta(marked, cleared)).clusters["c1"].given_up is False
