"""Review s34-rvf45 of s34-fixf45 (docs/DESIGN.md §9.2 "A cluster the proxy has not read yet"): strict xfail tests,
each a defect found.

The fix judges a physical topic missing only from metadata read since the proxy tracks the cluster with its current
bootstrap (`PhysicalClusters.topics_known`). A refresh of the OLD bootstrap still in flight when `PUT /v1/clusters`
changes it (`set_clusters` makes a fresh `ClusterInfo`) writes its outcome into the NEW one: `refresh`, `learn` and
`mark_unreachable` look the cluster up by id once the awaited answer (or failure) is in, not the `ClusterInfo` the
refresh started with. The new bootstrap's cluster is then judged from the old one's answer before its own first
refresh: "missing" (a sealed segment lost for good) or "dead" (a gap's tail skipped)."""

from __future__ import annotations

import asyncio

import pytest
from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import Physical, list_answers, list_request, skipped_to
from consume.test_lost_and_left_out_fixf45_unit import (
    AGAIN,
    DRAINING,
    FAILED_OVER,
    GAP,
    _context,
    _fetch_answer,
    _metadata,
    _versions,
    _view,
)
from fedkafka.proxy.core import physical as physical_module
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.handlers import list_offsets
from fedkafka.view.model import ClusterState


class _HeldConnection:
    """An upstream connection to a cluster's bootstrap whose connect waits for `held` to be set; then it fails
    (`fails`: the old address is gone) or answers ApiVersions and Metadata naming `topics` (the old address still
    serves a cluster, one rebuilt without the physical topic)."""

    held: asyncio.Event
    fails = False
    topics: tuple[str, ...] = ()

    def __init__(self, host, port, *_args) -> None:
        self.host = host

    async def connect(self) -> None:
        await self.held.wait()
        if self.fails:
            raise ConnectionRefusedError(f"{self.host}: connection refused")

    def send(self, request):
        answer = asyncio.get_running_loop().create_future()
        is_versions = type(request).__name__ == "ApiVersionsRequest"
        answer.set_result(_versions() if is_versions else _metadata(*self.topics))
        return answer

    def close(self) -> None:
        pass


def _refresh_across_a_bootstrap_change(fails: bool, topics: tuple[str, ...] = (),
                                       then: dict[str, str] | None = None) -> PhysicalClusters:
    """c1 tracked at c1-old:9092 (read once, naming `t`), c2 read; a refresh of c1 goes out to c1-old, then the view
    moves c1 to c1-new:9092 (`PUT /v1/clusters`; `then`: the clusters the view names instead), then the old address's
    answer (or failure) comes in. c1-new is never asked."""
    then = {"c1": "c1-new:9092", "c2": "c2:9092"} if then is None else then

    async def scenario() -> PhysicalClusters:
        physical = PhysicalClusters()
        physical.set_clusters({"c1": "c1-old:9092", "c2": "c2:9092"})
        physical.learn("c1", _versions(), _metadata("t"))
        physical.learn("c2", _versions(), _metadata("t"))
        _HeldConnection.held, _HeldConnection.fails, _HeldConnection.topics = asyncio.Event(), fails, topics
        refresh = asyncio.ensure_future(physical.refresh("c1"))
        await asyncio.sleep(0)  # the refresh is connecting to c1-old
        physical.set_clusters(then)
        _HeldConnection.held.set()
        await refresh
        return physical

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(physical_module, "UpstreamConnection", _HeldConnection)
        return asyncio.run(scenario())


def test_an_old_bootstraps_answer_arriving_after_a_bootstrap_change_does_not_make_a_sealed_segment_lost():
    """DRAINING c1 holds logical 0..29 (sealed, moved cleanly to c2 at 30). Its old address serves a cluster rebuilt
    without `t`; the operator points c1 at the restored cluster (c1-new) while a refresh of c1-old is out. Until
    c1-new answers a refresh, nothing is known missing there (§9.2): a reader at 10 waits. The old address's answer
    is learned as c1-new's: the reader is moved to 30, past records c1-new holds."""
    physical = _refresh_across_a_bootstrap_change(fails=False, topics=("other",))
    p = _fetch_answer(_context(DRAINING, physical), 10)
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records, skipped_to(p)


def test_an_old_bootstraps_failure_ending_after_a_bootstrap_change_does_not_skip_the_gaps_tail():
    """c1 failed over (read_only, the gap after 30); its brokers moved to new hosts, the old ones are gone. A refresh
    of c1-old is out when the view names c1-new. Until c1-new's first refresh answers, a reader of the gap at 35
    waits (§9.2: a cluster not read yet counts as reachable). The old address's failure marks c1-new unreachable: the
    reader is moved to 30 + GAP, past the tail c1-new holds, and never comes back for it."""
    physical = _refresh_across_a_bootstrap_change(fails=True)
    p = _fetch_answer(_context(FAILED_OVER, physical), 35)
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records, skipped_to(p) - (30 + GAP)


def test_by_timestamp_waits_for_a_cleanly_moved_segment_of_a_draining_cluster_through_a_blip():
    """c1 was failed over (S1, the gap), came back, was made active again, took the partition back (S3, logical
    36+GAP..45+GAP) and is now being decommissioned: S3 moved cleanly to c3. A decommission gives nothing up (it
    drains with no gap, by retention or by groups, §7.4), and a Fetch below S3's seal waits through c1's blip. A
    timestamp question leaves S3 out as if c1 had been failed over again (read_only): it answers c3's record
    (51+GAP), past S3's records at or after T."""
    values = {("c2", 0, 1500): (-1, -1), ("c3", 0, 1500): (5, 1600)}
    view = _view(AGAIN, {"c1": ClusterState.DRAINING, "c2": ClusterState.ACTIVE, "c3": ClusterState.ACTIVE})
    context = _context(view, Physical(down={"c1"}))
    below_the_seal = _fetch_answer(context, 36 + GAP + 3)  # Fetch waits for S3 (Physical names every topic there)
    assert below_the_seal.error_code == ErrorCode.not_leader_or_follower and not below_the_seal.records
    plan = list_offsets.handle(context, None, list_request((0, 1500)))
    (p,) = plan.finish(list_answers(plan.calls, values)).topics[0].partitions
    assert (p.error_code, p.offset) == (ErrorCode.not_leader_or_follower, -1)


# -- s34-fixrvf45: what `refresh` does with an answer from a bootstrap the view no longer names -----------------------


@pytest.mark.parametrize("fails", [False, True], ids=["answered", "failed"])
def test_an_old_bootstraps_outcome_is_dropped_and_the_new_bootstrap_asked(fails):
    """The old address's answer (or failure) says nothing of c1-new: c1 stays not read yet (reachable, no topic known
    missing) and its refresh stays asked for, so the refresher reads c1-new next (the failure path used to drop
    the request the view change made)."""
    physical = _refresh_across_a_bootstrap_change(fails=fails, topics=("other",))
    info = physical.clusters["c1"]
    assert (info.bootstrap, info.topics_read, info.reachable, info.topic_ids) == ("c1-new:9092", False, True, {})
    assert "c1" in physical._wanted


def test_a_refresh_answered_after_its_cluster_left_the_view_learns_nothing():
    """c1 leaves the view while its refresh is out: the answer is dropped and c1 stays gone. `learn` looked c1 up by
    id and raised KeyError out of the refresher's round (`PhysicalClusters.run`): the supervised task died, a
    traceback and a restart after its backoff."""
    physical = _refresh_across_a_bootstrap_change(fails=False, topics=("t",), then={"c2": "c2:9092"})
    assert set(physical.clusters) == {"c2"} and "c1" not in physical._wanted
